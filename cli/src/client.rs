//! The HTTP client: builds route URLs, sends the bearer token, turns
//! error answers into [`ApiError`]s, and reads every page of a paged list
//! ([`every_page`]).
//!
//! The controller may be given as a comma-separated list of its replicas'
//! URLs: a request that cannot connect to one is sent to the next (it never
//! reached a server); one that reached a server is never sent to another,
//! by [`orchestrator_shared::replicas`]'s rule, so a submission is not made
//! twice.

use crate::error::{ApiError, TlsRefused, UnexpectedAnswer, UsageError};
use anyhow::{anyhow, bail, Context, Result};
use orchestrator_shared::api::{Job, JobPage, Schedule, ScheduleList};
use orchestrator_shared::replicas::{self, Failover, Preferred};
use orchestrator_shared::tls::{tls_failure, CaBundle};
use reqwest::header::RETRY_AFTER;
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashSet;
use std::future::Future;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Longest time one request may take; an answer slower than this means the
/// controller is unwell, and a script should hear about it rather than hang.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Connection set-up limit, so an unreachable host fails fast.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an idle connection is kept for reuse: less than the
/// controller's header-read timeout, after which it closes it.
pub const IDLE_CONNECTION: Duration = Duration::from_secs(5);

/// Longest non-JSON error body quoted in a message (a proxy's HTML page can be long).
const MAX_QUOTED_BODY_CHARS: usize = 200;

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status code (2xx).
    pub status: u16,
    /// The JSON body (`null` when empty).
    pub body: Value,
}

impl Reply {
    /// Reads the body as the contract's type `T`; a body of another shape is
    /// an [`UnexpectedAnswer`], never a panic.
    pub fn read<T: DeserializeOwned>(self) -> Result<Answer<T>, UnexpectedAnswer> {
        let typed = T::deserialize(&self.body).map_err(|source| UnexpectedAnswer {
            expected: short_type_name::<T>(),
            source,
        })?;
        Ok(Answer {
            status: self.status,
            raw: self.body,
            typed,
        })
    }
}

/// A successful answer read as its contract type. Commands work on `typed`;
/// `raw`, the JSON as the server sent it, is only for `--json`. No `Debug`:
/// a login answer holds a token.
#[derive(Clone, PartialEq)]
pub struct Answer<T> {
    /// HTTP status code (2xx).
    pub status: u16,
    /// The body as sent.
    pub raw: Value,
    /// The body as the contract's type.
    pub typed: T,
}

/// `Job` for `orchestrator_shared::api::jobs::Job`: the name people know.
fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// A client of one controller (through any of its replicas), with or
/// without a token.
#[derive(Clone)]
pub struct ApiClient {
    /// Connection pool and timeouts.
    http: reqwest::Client,
    /// The replicas' base URLs, in the order given; routes are appended to
    /// their paths.
    bases: Arc<[Url]>,
    /// The replica in use.
    preferred: Arc<Preferred>,
    /// Bearer token sent with every request, when known.
    token: Option<String>,
}

impl ApiClient {
    /// A client of the controller at `base_url`, or of its replicas at a
    /// comma-separated list of URLs (a usage error if one is not an
    /// http(s) URL), whose certificates (for `https://`) are signed by a CA
    /// of the system's roots (or `SSL_CERT_FILE`'s) or of `ca_file`.
    pub fn new(base_url: &str, token: Option<String>, ca_file: Option<&Path>) -> Result<Self> {
        let bases: Arc<[Url]> = parse_base_urls(base_url)?.into();
        let ca = ca_file
            .map(CaBundle::read)
            .transpose()
            .map_err(|err| UsageError(err.to_string()))?;
        let certificates = ca
            .iter()
            .flat_map(CaBundle::certificates)
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .context("reading the CA file's certificates")?;
        let http = reqwest::Client::builder()
            .tls_certs_merge(certificates)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // Under the controller's header-read timeout (10 s by default),
            // which also closes idle kept-alive connections.
            .pool_idle_timeout(IDLE_CONNECTION)
            .user_agent(concat!("orchestrator-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("setting up the HTTP client")?;
        let len = NonZeroUsize::new(bases.len()).unwrap_or(NonZeroUsize::MIN);
        Ok(Self {
            http,
            bases,
            preferred: Arc::new(Preferred::new(len)),
            token,
        })
    }

    /// The same client without its token (for login).
    pub fn anonymous(&self) -> Self {
        Self {
            token: None,
            ..self.clone()
        }
    }

    /// The controller's base URLs, as given.
    pub fn bases(&self) -> &[Url] {
        &self.bases
    }

    /// `GET` the route made of `path` segments, read as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &[&str]) -> Result<Answer<T>> {
        self.get_with(path, &()).await
    }

    /// `GET` the route made of `path` segments with the query string of
    /// `query` (a contract type such as `ListQuery`), read as `T`.
    pub async fn get_with<T: DeserializeOwned>(
        &self,
        path: &[&str],
        query: &impl Serialize,
    ) -> Result<Answer<T>> {
        let query = query_pairs(query)?;
        Ok(self.send(Method::GET, path, &query, None::<&()>).await?.read()?)
    }

    /// `POST` `body` (a contract type) as JSON to the route made of `path`
    /// segments, read the answer as `T`.
    pub async fn post<T: DeserializeOwned>(&self, path: &[&str], body: &impl Serialize) -> Result<Answer<T>> {
        Ok(self.send(Method::POST, path, &[], Some(body)).await?.read()?)
    }

    /// `PATCH` `body` (a contract type) as JSON to the route made of `path`
    /// segments, read the answer as `T`.
    pub async fn patch<T: DeserializeOwned>(
        &self,
        path: &[&str],
        body: &impl Serialize,
    ) -> Result<Answer<T>> {
        Ok(self.send(Method::PATCH, path, &[], Some(body)).await?.read()?)
    }

    /// `DELETE` the route made of `path` segments (its answer has no body).
    pub async fn delete(&self, path: &[&str]) -> Result<Reply> {
        self.send(Method::DELETE, path, &[], None::<&()>).await
    }

    /// Sends a request with `method` to the route made of `path` segments
    /// (with `query`, and `body` as JSON), to the replica in use or, when
    /// it cannot be reached, to the next ones; reads the answer.
    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &[&str],
        query: &[(String, String)],
        body: Option<&B>,
    ) -> Result<Reply> {
        let attempt = |i: usize| {
            let base = self.bases.get(i).or(self.bases.first());
            let url = base.map_or_else(|| Err(anyhow!("no controller URL")), |b| endpoint(b, path, query));
            let method = method.clone();
            async move {
                let url = url?;
                let request = self.http.request(method, url.clone());
                let request = match body {
                    Some(body) => request.json(body),
                    None => request,
                };
                self.send_once(request, &url).await
            }
        };
        replicas::send(&self.preferred, attempt, failover).await.result
    }

    /// Sends a request and reads its answer.
    async fn send_once(&self, request: RequestBuilder, url: &Url) -> Result<Reply> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.map_err(|err| network_error(err, url))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.map_err(|err| network_error(err, url))?;
        interpret(status, &text, retry_after)
    }
}

/// A list answer that comes in pages linked by `next_cursor`
/// (`GET /api/jobs`, `GET /api/schedules`), so that [`every_page`] reads
/// every page of any of them with one loop.
pub trait Paged {
    /// What the page lists.
    type Row;
    /// The body's key of the page's rows (`jobs`, `schedules`).
    const ROWS: &'static str;
    /// The page's rows, and where the next page starts (`None` on the
    /// last), for [`every_page`] to follow and append to.
    fn rows_and_cursor(&mut self) -> (&mut Vec<Self::Row>, &mut Option<String>);
}

impl Paged for JobPage {
    type Row = Job;
    const ROWS: &'static str = "jobs";
    fn rows_and_cursor(&mut self) -> (&mut Vec<Job>, &mut Option<String>) {
        (&mut self.jobs, &mut self.next_cursor)
    }
}

impl Paged for ScheduleList {
    type Row = Schedule;
    const ROWS: &'static str = "schedules";
    fn rows_and_cursor(&mut self) -> (&mut Vec<Schedule>, &mut Option<String>) {
        (&mut self.schedules, &mut self.next_cursor)
    }
}

/// Every page of a paged list from the one at cursor `first` on, as one
/// answer (see [`merge_pages`]); `fetch` reads the page at a cursor. A
/// cursor the controller sends twice is an error, not an endless loop.
pub async fn every_page<T, F, Fut>(first: Option<String>, mut fetch: F) -> Result<Answer<T>>
where
    T: Paged,
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Answer<T>>>,
{
    let mut seen = HashSet::new();
    let mut all = None;
    let mut cursor = first;
    loop {
        let mut page = fetch(cursor).await?;
        let next = page.typed.rows_and_cursor().1.clone();
        let merged = merge_pages(all, page);
        match next {
            None => return Ok(merged),
            Some(next) if !seen.insert(next.clone()) => {
                bail!("the controller sent cursor {next} twice")
            }
            Some(next) => (all, cursor) = (Some(merged), Some(next)),
        }
    }
}

/// The pages read so far and the next one as one answer, in order, with
/// the next page's `next_cursor`; its JSON is made of the rows as sent
/// (one page stays exactly as the server sent it).
fn merge_pages<T: Paged>(earlier: Option<Answer<T>>, mut next: Answer<T>) -> Answer<T> {
    let Some(mut all) = earlier else {
        return next;
    };
    if let (Some(Value::Array(rows)), Some(Value::Array(more))) =
        (all.raw.get_mut(T::ROWS), next.raw.get(T::ROWS))
    {
        rows.extend(more.iter().cloned());
    }
    if let Some(body) = all.raw.as_object_mut() {
        let cursor = next.raw.get("next_cursor").cloned().unwrap_or(Value::Null);
        body.insert("next_cursor".to_owned(), cursor);
    }
    let (rows, cursor) = all.typed.rows_and_cursor();
    let (more, last) = next.typed.rows_and_cursor();
    rows.append(more);
    *cursor = last.take();
    all
}

/// What a failed request means for the replica that gave it: a refused
/// TLS handshake or no connection never reached it; a timeout or a lost
/// connection may have; an error answer is by its status.
fn failover(err: &anyhow::Error) -> Failover {
    if err.downcast_ref::<TlsRefused>().is_some() {
        return Failover::RetryElsewhere;
    }
    if let Some(api) = err.downcast_ref::<ApiError>() {
        return Failover::for_status(api.status);
    }
    match err.downcast_ref::<reqwest::Error>() {
        Some(e) => Failover::for_transport(e.is_connect(), e.is_timeout() || e.is_request()),
        None => Failover::Stay,
    }
}

/// A failed exchange, with what kind of failure it was in words. A TLS
/// failure is said in one line of its own, without the transport's chain.
fn network_error(err: reqwest::Error, url: &Url) -> anyhow::Error {
    if let Some(failure) = tls_failure(&err) {
        let origin = url.origin().ascii_serialization();
        return TlsRefused { origin, failure }.into();
    }
    let what = if err.is_timeout() {
        format!("the controller did not answer in time ({url})")
    } else if err.is_connect() {
        format!(
            "cannot connect to the controller at {}",
            url.origin().ascii_serialization()
        )
    } else {
        format!("request to {url} failed")
    };
    anyhow::Error::new(err).context(what)
}

/// Parses the controller's base URL, or a comma-separated list of its
/// replicas' (none may be empty); each is read by [`parse_base_url`].
pub fn parse_base_urls(raw: &str) -> Result<Vec<Url>> {
    let entries = replicas::split_urls(raw)
        .map_err(|err| UsageError(format!("invalid controller URL {raw:?}: {err}")))?;
    entries.into_iter().map(parse_base_url).collect()
}

/// Parses the controller's base URL; only `http` and `https` are accepted.
pub fn parse_base_url(raw: &str) -> Result<Url> {
    let url =
        Url::parse(raw.trim()).map_err(|err| UsageError(format!("invalid controller URL {raw:?}: {err}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(UsageError(format!(
            "invalid controller URL {raw:?}: expected http:// or https://"
        ))
        .into());
    }
    Ok(url)
}

/// The query string of `query` as name-value pairs, in its fields' order;
/// absent (`null`) fields are left out, `()` has none.
pub fn query_pairs(query: &impl Serialize) -> Result<Vec<(String, String)>> {
    match serde_json::to_value(query).context("encoding the query string")? {
        Value::Null => Ok(Vec::new()),
        Value::Object(fields) => Ok(fields
            .into_iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(name, value)| match value {
                Value::String(text) => (name, text),
                other => (name, other.to_string()),
            })
            .collect()),
        other => bail!("a query string is made of named fields, not {other}"),
    }
}

/// The URL of a route: `base`'s path followed by the `path` segments (each
/// percent-encoded, so an id cannot change the route), then `query`.
pub fn endpoint(base: &Url, path: &[&str], query: &[(String, String)]) -> Result<Url> {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| anyhow!("{base} cannot be a base URL"))?
        .pop_if_empty()
        .extend(path);
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

/// Turns an answer into a [`Reply`] (2xx) or an [`ApiError`] carrying the
/// body's `detail` (or the body itself, shortened, when it is not the API's JSON).
pub fn interpret(status: u16, text: &str, retry_after: Option<String>) -> Result<Reply> {
    if (200..300).contains(&status) {
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(text).context("the controller's answer is not valid JSON")?
        };
        return Ok(Reply { status, body });
    }
    let detail = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|body| body.get("detail").cloned())
        .unwrap_or_else(|| Value::String(fallback_detail(status, text)));
    Err(ApiError {
        status,
        detail,
        retry_after,
    }
    .into())
}

/// What to say about an error answer that has no `detail`.
fn fallback_detail(status: u16, text: &str) -> String {
    let text = crate::render::one_line(text.trim());
    if text.is_empty() {
        let reason = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason());
        return reason.unwrap_or("error").to_owned();
    }
    let mut short: String = text.chars().take(MAX_QUOTED_BODY_CHARS).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_shared::api::{ListQuery, WorkerFilter, WorkerList};
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn base(raw: &str) -> Result<Url> {
        parse_base_url(raw)
    }

    /// A complete HTTP/1.1 answer with a JSON body.
    fn answer(status_line: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn endpoint_appends_encoded_segments() -> Result<()> {
        let url = endpoint(
            &base("http://h:8000")?,
            &["api", "supervisor", "workers", "a/b?c"],
            &[],
        )?;
        assert_eq!(url.as_str(), "http://h:8000/api/supervisor/workers/a%2Fb%3Fc");
        Ok(())
    }

    #[test]
    fn endpoint_keeps_a_base_path_prefix() -> Result<()> {
        for raw in ["http://h/orch", "http://h/orch/"] {
            let url = endpoint(&base(raw)?, &["api", "jobs"], &[])?;
            assert_eq!(url.as_str(), "http://h/orch/api/jobs");
        }
        Ok(())
    }

    #[test]
    fn endpoint_adds_the_query() -> Result<()> {
        let query = ListQuery {
            status: Some("running".into()),
            limit: None,
            cursor: Some("a b&c".into()),
            schedule: None,
        };
        let url = endpoint(
            &base("http://h:8000/?x=1")?,
            &["api", "jobs"],
            &query_pairs(&query)?,
        )?;
        assert_eq!(
            url.as_str(),
            "http://h:8000/api/jobs?status=running&cursor=a+b%26c"
        );
        Ok(())
    }

    #[test]
    fn query_pairs_follow_the_fields_and_skip_absent_ones() -> Result<()> {
        let query = ListQuery {
            status: None,
            limit: Some(500),
            cursor: Some("c1".into()),
            schedule: None,
        };
        let pairs = [
            ("limit".to_owned(), "500".to_owned()),
            ("cursor".to_owned(), "c1".to_owned()),
        ];
        assert_eq!(query_pairs(&query)?, pairs);
        assert!(query_pairs(&())?.is_empty());
        assert!(query_pairs(&json!({"a": null}))?.is_empty());
        assert!(query_pairs(&[1, 2]).is_err());
        Ok(())
    }

    #[test]
    fn a_body_of_another_shape_is_not_understood() {
        let reply = Reply {
            status: 200,
            body: json!({"job_id": 3}),
        };
        let text = reply.read::<Job>().err().map(|e| e.to_string());
        assert_eq!(
            text.as_deref(),
            Some("the controller's answer was not understood (expected a Job)")
        );
        let reply = Reply {
            status: 201,
            body: json!({"workers": [], "total": 0, "extra": true}),
        };
        let answer = reply.clone().read::<WorkerList>().ok();
        assert_eq!(
            answer.map(|a| (a.status, a.typed.total, a.raw)),
            Some((201, 0, reply.body))
        );
    }

    /// A page of jobs with ids `ids`, as the controller sends it.
    fn job_page(ids: &[u128], next: Option<&str>) -> Answer<JobPage> {
        let job = |id: &u128| Job {
            job_id: uuid::Uuid::from_u128(*id),
            ..crate::fixtures::job(orchestrator_shared::JobStatus::Queued)
        };
        let typed = JobPage {
            jobs: ids.iter().map(job).collect(),
            next_cursor: next.map(str::to_owned),
        };
        let raw = serde_json::to_value(&typed).unwrap_or_default();
        Answer {
            status: 200,
            raw,
            typed,
        }
    }

    /// Reads every page from `first` on out of `pages` (keyed by cursor),
    /// and the cursors asked for, in order.
    async fn read_all(
        pages: &[(Option<&str>, Answer<JobPage>)],
        first: Option<&str>,
    ) -> (Result<Answer<JobPage>>, Vec<Option<String>>) {
        let asked = std::cell::RefCell::new(Vec::new());
        let fetch = |cursor: Option<String>| {
            asked.borrow_mut().push(cursor.clone());
            let page = pages.iter().find(|(c, _)| c.map(str::to_owned) == cursor);
            let page = page.map(|(_, page)| page.clone());
            async move { page.context("no such page") }
        };
        let all = every_page(first.map(str::to_owned), fetch).await;
        (all, asked.into_inner())
    }

    #[tokio::test]
    async fn every_page_is_read_from_the_first_cursor_into_one_last_page() -> Result<()> {
        let pages = [
            (Some("c0"), job_page(&[1, 2], Some("c1"))),
            (Some("c1"), job_page(&[3], Some("c2"))),
            (Some("c2"), job_page(&[], None)),
        ];
        let (all, asked) = read_all(&pages, Some("c0")).await;
        let all = all?;
        let cursors = ["c0", "c1", "c2"].map(|c| Some(c.to_owned()));
        assert_eq!(asked, cursors);
        let ids: Vec<u128> = all.typed.jobs.iter().map(|j| j.job_id.as_u128()).collect();
        assert_eq!((ids, all.typed.next_cursor.clone()), (vec![1, 2, 3], None));
        let expected = serde_json::to_value(&all.typed)?;
        assert_eq!(all.raw, expected, "--json shows every job as sent, then null");
        Ok(())
    }

    #[tokio::test]
    async fn a_single_page_stays_as_sent() -> Result<()> {
        let mut one = job_page(&[1], None);
        if let Some(body) = one.raw.as_object_mut() {
            body.insert("extra".to_owned(), json!(true));
        }
        let (all, asked) = read_all(&[(None, one.clone())], None).await;
        assert!(all? == one, "one page stays as sent");
        assert_eq!(asked, [None]);
        Ok(())
    }

    #[tokio::test]
    async fn a_cursor_sent_twice_ends_the_reading() {
        let pages = [
            (None, job_page(&[1], Some("c1"))),
            (Some("c1"), job_page(&[2], Some("c1"))),
        ];
        let (all, asked) = read_all(&pages, None).await;
        let text = all.err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(text, "the controller sent cursor c1 twice");
        assert_eq!(asked, [None, Some("c1".to_owned())]);
    }

    #[test]
    fn base_url_must_be_http_or_https() {
        assert!(parse_base_url("https://orch.example.com").is_ok());
        for bad in ["ftp://h", "h:8000", "not a url", "mailto:x@y"] {
            let err = parse_base_url(bad).err();
            assert!(
                err.is_some_and(|e| e.downcast_ref::<UsageError>().is_some()),
                "{bad}"
            );
        }
    }

    #[test]
    fn interpret_parses_success_bodies() -> Result<()> {
        assert_eq!(interpret(200, r#"{"a":1}"#, None)?.body, json!({"a": 1}));
        assert_eq!(interpret(201, "", None)?.status, 201);
        assert_eq!(interpret(204, "", None)?.body, Value::Null);
        assert!(interpret(200, "<html>", None).is_err());
        Ok(())
    }

    #[test]
    fn interpret_extracts_the_detail_of_errors() {
        let err = interpret(404, r#"{"detail":"Job x not found"}"#, None).err();
        let api = err.as_ref().and_then(|e| e.downcast_ref::<ApiError>());
        assert_eq!(
            api.map(|a| (a.status, a.detail.clone())),
            Some((404, json!("Job x not found")))
        );
    }

    #[test]
    fn interpret_quotes_bodies_without_detail() {
        let detail = |status, text: &str| {
            let err = interpret(status, text, None).err();
            err.and_then(|e| e.downcast_ref::<ApiError>().map(|a| a.detail.clone()))
        };
        assert_eq!(detail(502, "Bad gateway\n"), Some(json!("Bad gateway")));
        assert_eq!(detail(503, ""), Some(json!("Service Unavailable")));
        let long = detail(500, &"x".repeat(500)).and_then(|d| d.as_str().map(str::len));
        assert_eq!(long, Some(MAX_QUOTED_BODY_CHARS + '…'.len_utf8()));
    }

    /// Serves one canned HTTP answer and hands back the request it received.
    async fn serve_once(answer: String) -> Result<(String, tokio::task::JoinHandle<String>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let Ok((mut socket, _)) = listener.accept().await else {
                return String::new();
            };
            let mut buffer = vec![0; 8192];
            let read = socket.read(&mut buffer).await.unwrap_or(0);
            let _ = socket.write_all(answer.as_bytes()).await;
            String::from_utf8_lossy(&buffer[..read]).into_owned()
        });
        Ok((url, task))
    }

    #[tokio::test]
    async fn requests_carry_the_bearer_token() -> Result<()> {
        let (url, server) = serve_once(answer("200 OK", r#"{"workers":[],"total":0}"#)).await?;
        let client = ApiClient::new(&url, Some("t0k".into()), None)?;
        let filter = WorkerFilter {
            status: Some("idle".into()),
        };
        let reply: Answer<WorkerList> = client
            .get_with(&["api", "supervisor", "workers"], &filter)
            .await?;
        assert_eq!(reply.raw, json!({"workers": [], "total": 0}));
        assert!(reply.typed.workers.is_empty());
        let request = server.await?.to_lowercase();
        assert!(
            request.starts_with("get /api/supervisor/workers?status=idle http/1.1"),
            "{request}"
        );
        assert!(request.contains("authorization: bearer t0k"), "{request}");
        Ok(())
    }

    #[tokio::test]
    async fn error_answers_become_api_errors() -> Result<()> {
        let body = r#"{"detail":"Invalid authentication credentials"}"#;
        let (url, _server) = serve_once(answer("401 Unauthorized", body)).await?;
        let err = ApiClient::new(&url, None, None)?
            .anonymous()
            .post::<Job>(&["api", "jobs", "submit"], &json!({}))
            .await;
        let api = err.as_ref().err().and_then(|e| e.downcast_ref::<ApiError>());
        let expected = json!("Invalid authentication credentials");
        assert_eq!(api.map(|a| (a.status, &a.detail)), Some((401, &expected)));
        Ok(())
    }

    #[test]
    fn a_list_of_replicas_is_read_in_order_and_each_checked() -> Result<()> {
        let urls = parse_base_urls("https://a:8000, https://b:8000/orch")?;
        let shown: Vec<&str> = urls.iter().map(Url::as_str).collect();
        assert_eq!(shown, ["https://a:8000/", "https://b:8000/orch"]);
        for (bad, says) in [
            ("https://a:8000,", "entry 2 of the controller URL list is empty"),
            (
                "https://a:8000,,https://b",
                "entry 2 of the controller URL list is empty",
            ),
            ("https://a:8000,ftp://b", "invalid controller URL \"ftp://b\""),
        ] {
            let err = parse_base_urls(bad).err();
            let usage = err.as_ref().and_then(|e| e.downcast_ref::<UsageError>());
            assert!(usage.is_some_and(|u| u.0.contains(says)), "{bad}: {err:?}");
        }
        Ok(())
    }

    /// A URL where nothing listens.
    async fn dead_url() -> Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Ok(format!("http://{}", listener.local_addr()?))
    }

    #[tokio::test]
    async fn a_replica_that_cannot_be_reached_is_passed_over() -> Result<()> {
        let (live, server) = serve_once(answer("200 OK", r#"{"a":1}"#)).await?;
        let client = ApiClient::new(&format!("{},{live}", dead_url().await?), None, None)?;
        let reply: Answer<Value> = client.get(&["healthz"]).await?;
        assert_eq!(reply.raw, json!({"a": 1}));
        assert!(server.await?.starts_with("GET /healthz"));
        Ok(())
    }

    #[tokio::test]
    async fn a_request_that_reached_a_replica_is_not_sent_to_another() -> Result<()> {
        let (unavailable, first) = serve_once(answer("503 Service Unavailable", "{}")).await?;
        let (other, second) = serve_once(answer("201 Created", "{}")).await?;
        let client = ApiClient::new(&format!("{unavailable},{other}"), None, None)?;
        let err = client
            .post::<Value>(&["api", "jobs", "submit"], &json!({}))
            .await
            .err();
        let status = err
            .as_ref()
            .and_then(|e| e.downcast_ref::<ApiError>())
            .map(|a| a.status);
        assert_eq!(status, Some(503));
        assert!(first.await?.starts_with("POST /api/jobs/submit"));
        assert!(!second.is_finished(), "the submission went to a second replica");
        second.abort();
        Ok(())
    }

    #[tokio::test]
    async fn refused_connections_say_so() -> Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        drop(listener);
        let err = ApiClient::new(&url, None, None)?
            .get::<Value>(&["healthz"])
            .await
            .err();
        let text = err.map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(
            text.starts_with("cannot connect to the controller at http://127.0.0.1:"),
            "{text}"
        );
        Ok(())
    }
}
