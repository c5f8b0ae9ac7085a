//! The agent's HTTP side: registering with the controller and asking it,
//! for every delivery, whether to run it (the claim). Both use the agent
//! token as a bearer token. Retrying is left to the callers, which know how
//! long they may wait.
//!
//! With several controller replicas (`--controller-url a,b`), the client
//! uses the one that last answered and moves on by
//! [`orchestrator_shared::replicas`]'s rule: a request that never reached a
//! replica is sent to the next at once; one that may have reached it is
//! not sent again elsewhere (its caller retries as it always did, and that
//! retry goes to the next replica). A claim retried after a timeout is
//! what the agent already did on one controller: the same worker asking
//! again for a shard it holds is answered `run` ("resumed after
//! redelivery"), and it runs only the answer it received.

use crate::config::{ControllerUrls, Secret};
use orchestrator_shared::api::{
    ClaimBatchRequest, ClaimBatchResponse, ClaimRequest, ClaimResponse, OutputChunk, OutputStored,
    RegisterRequest, Registration, WorkClasses,
};
use orchestrator_shared::replicas::{self, Failover, Preferred};
use orchestrator_shared::tls::{tls_failure, CaBundle, TlsFailure};
use reqwest::Method;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

/// Longest time one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time to establish a connection to the controller.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an idle connection to the controller is kept for reuse: less
/// than the controller's header-read timeout, after which it closes it.
const IDLE_CONNECTION: Duration = Duration::from_secs(5);
/// Most characters of an error body kept for the log.
const MAX_ERROR_BODY: usize = 512;

/// Why a request to the controller did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The controller could not be reached, did not answer in time, or sent
    /// a body that is not what the contract says.
    #[error("controller request failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// The TLS handshake with the controller failed: its certificate is not
    /// trusted, or it does not speak TLS (retrying will not help until an
    /// operator fixes the CA file or the URL).
    #[error("the controller at {base}: {failure}{hint}", hint = tls_hint(failure))]
    Tls {
        /// The controller's base URL.
        base: String,
        /// What went wrong.
        failure: TlsFailure,
    },
    /// A request went out but its answer never came to this caller (a
    /// batch of claims abandoned, or answered with the wrong count).
    #[error("controller request failed: {0}")]
    Abandoned(&'static str),
    /// The controller answered with an error status.
    #[error("controller answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The start of the answer's body.
        body: String,
    },
}

impl ClientError {
    /// Whether the controller refused the agent's credentials (retrying
    /// will not help until an operator fixes the token).
    pub fn is_auth(&self) -> bool {
        matches!(self, ClientError::Status { status, .. }
            if *status == reqwest::StatusCode::UNAUTHORIZED || *status == reqwest::StatusCode::FORBIDDEN)
    }

    /// Whether the controller does not know the route (an older one).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Status { status, .. } if *status == reqwest::StatusCode::NOT_FOUND)
    }

    /// Whether the TLS handshake failed (an operator must fix the CA file
    /// or the URL).
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientError::Tls { .. })
    }

    /// What this failure means for the replica that gave it (see
    /// [`orchestrator_shared::replicas`]): no connection, or a refused TLS
    /// handshake, never reached it; a timeout or a connection lost after
    /// sending may have.
    pub fn failover(&self) -> Failover {
        match self {
            ClientError::Tls { .. } => Failover::RetryElsewhere,
            ClientError::Transport(e) => {
                Failover::for_transport(e.is_connect(), e.is_timeout() || e.is_request())
            }
            ClientError::Status { status, .. } => Failover::for_status(status.as_u16()),
            ClientError::Abandoned(_) => Failover::Stay,
        }
    }
}

/// What to do about a TLS failure, after its description.
fn tls_hint(failure: &TlsFailure) -> &'static str {
    match failure {
        TlsFailure::Untrusted(_) => "; set --ca-file (AGENT_CA_FILE) to the CA that signed it",
        TlsFailure::NotTls => "; is the controller URL http:// rather than https://?",
    }
}

/// An HTTP client with the agent's timeouts that trusts the system's roots
/// (or `SSL_CERT_FILE`) and `ca`'s certificates.
fn http_client(ca: Option<&CaBundle>) -> Result<reqwest::Client, reqwest::Error> {
    let extra = ca.map(CaBundle::certificates).unwrap_or_default();
    let certificates = extra
        .iter()
        .map(|der| reqwest::Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()?;
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        // The controller closes a connection idle for its header-read
        // timeout (10 s by default); dropping ours sooner means a request
        // never goes out on a connection the server is closing.
        .pool_idle_timeout(IDLE_CONNECTION)
        .tls_certs_merge(certificates)
        .build()
}

/// A handle on the controller's agent API. Cheap to clone; clones share
/// the replica in use.
#[derive(Clone)]
pub struct ControllerClient {
    /// Pooled HTTP client with timeouts (and the one CA bundle, for every
    /// replica).
    http: reqwest::Client,
    /// The replicas' base URLs without a trailing slash, in the order given.
    bases: Arc<[String]>,
    /// The same as logs and errors show them (no password).
    shown: Arc<[String]>,
    /// The replica in use.
    preferred: Arc<Preferred>,
    /// The bearer token, the same for every replica.
    token: Secret,
}

impl ControllerClient {
    /// A client for the controller's replicas at `urls`, whose certificates
    /// (for `https://`) are signed by a CA of the system's roots or of `ca`.
    pub fn new(urls: &ControllerUrls, token: Secret, ca: Option<&CaBundle>) -> Result<Self, ClientError> {
        let http = http_client(ca)?;
        let bases: Arc<[String]> = urls.bases().into();
        let len = NonZeroUsize::new(bases.len()).unwrap_or(NonZeroUsize::MIN);
        Ok(ControllerClient {
            http,
            bases,
            shown: urls.shown().into(),
            preferred: Arc::new(Preferred::new(len)),
            token,
        })
    }

    /// The base URL of the replica in use, as logs show it.
    pub fn current_base(&self) -> &str {
        nth(&self.shown, self.preferred.current())
    }

    /// `POST /api/agents/register`; returns the controller's view of the
    /// worker, whose generation and status the agent starts from, and the
    /// agent's own broker login (if the controller gives agents one).
    pub async fn register(&self, body: &RegisterRequest) -> Result<Registration, ClientError> {
        self.send(Method::POST, "/api/agents/register", Some(body)).await
    }

    /// `POST /api/agents/claim`: may this agent run this shard now?
    pub async fn claim(&self, body: &ClaimRequest) -> Result<ClaimResponse, ClientError> {
        self.send(Method::POST, "/api/agents/claim", Some(body)).await
    }

    /// `POST /api/agents/claims`: several claims in one request, answered
    /// in order.
    pub async fn claim_batch(&self, body: &ClaimBatchRequest) -> Result<ClaimBatchResponse, ClientError> {
        self.send(Method::POST, "/api/agents/claims", Some(body)).await
    }

    /// `POST /api/agents/output`: a piece of a running shard's output.
    pub async fn post_output(&self, body: &OutputChunk) -> Result<OutputStored, ClientError> {
        self.send(Method::POST, "/api/agents/output", Some(body)).await
    }

    /// `GET /api/agents/classes`: the job classes (pools and selectors)
    /// whose queues this agent (its credential's worker) should consume now.
    pub async fn classes(&self) -> Result<WorkClasses, ClientError> {
        self.send(Method::GET, "/api/agents/classes", None::<&()>).await
    }

    /// Sends `method` to `path` (with `body` as JSON, if any) to the
    /// replica in use, or to the next ones when it cannot be reached (see
    /// the module's doc), and logs a move.
    async fn send<B, R>(&self, method: Method, path: &str, body: Option<&B>) -> Result<R, ClientError>
    where
        B: serde::Serialize + ?Sized,
        R: serde::de::DeserializeOwned,
    {
        let sent = replicas::send(
            &self.preferred,
            |i| self.send_to(i, method.clone(), path, body),
            ClientError::failover,
        )
        .await;
        if let Some(i) = sent.moved_to {
            let controller = nth(&self.shown, i);
            match &sent.result {
                Ok(_) => tracing::info!(controller, "using the controller at this URL from now on"),
                Err(e) => tracing::info!(controller, error = %e,
                    "the controller in use cannot serve; using the one at this URL from now on"),
            }
        }
        sent.result
    }

    /// Sends `method` to `path` of replica `i`, with `body` as JSON if any.
    async fn send_to<B, R>(
        &self,
        i: usize,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<R, ClientError>
    where
        B: serde::Serialize + ?Sized,
        R: serde::de::DeserializeOwned,
    {
        let mut request = self
            .http
            .request(method, format!("{}{path}", nth(&self.bases, i)))
            .bearer_auth(self.token.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(nth(&self.shown, i), e))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let body = text.chars().take(MAX_ERROR_BODY).collect();
            return Err(ClientError::Status { status, body });
        }
        Ok(response.json().await?)
    }
}

/// The `i`th of `urls` (the first, should there be no `i`th).
fn nth(urls: &[String], i: usize) -> &str {
    urls.get(i).or(urls.first()).map_or("", String::as_str)
}

/// A failed exchange with the replica at `base` as a [`ClientError`],
/// naming a TLS failure.
fn transport_error(base: &str, err: reqwest::Error) -> ClientError {
    match tls_failure(&err) {
        Some(failure) => ClientError::Tls {
            base: base.to_owned(),
            failure,
        },
        None => ClientError::Transport(err),
    }
}

impl std::fmt::Debug for ControllerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerClient")
            .field("replicas", &self.bases.len())
            .field("current", &self.preferred.current())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_shared::api::{ClaimRequest, ClaimResponse};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use uuid::Uuid;

    /// A URL where nothing listens.
    async fn dead_url() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        url
    }

    /// Answers every request with `status` and `body`; counts the requests.
    async fn serve(
        status: &'static str,
        body: &'static str,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buffer = vec![0; 16384];
                let _ = socket.read(&mut buffer).await;
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        (url, seen)
    }

    fn client(urls: &[&str]) -> ControllerClient {
        let urls: ControllerUrls = urls.join(",").parse().unwrap();
        ControllerClient::new(&urls, Secret::new("orca_x"), None).unwrap()
    }

    fn a_claim() -> ClaimRequest {
        ClaimRequest {
            worker_id: "w".into(),
            job_id: Uuid::nil(),
            attempt: 1,
            shard_index: 0,
            redelivered: false,
        }
    }

    const RUN: &str = r#"{"decision":"run","reason":"started"}"#;

    #[tokio::test]
    async fn a_replica_that_refuses_connections_is_passed_over_and_the_next_kept() {
        let (live, seen) = serve("200 OK", RUN).await;
        let dead = dead_url().await;
        let c = client(&[dead.as_str(), live.as_str()]);
        let answer: ClaimResponse = c.claim(&a_claim()).await.unwrap();
        assert_eq!(answer.reason, "started");
        assert_eq!(c.current_base(), live);
        c.claim(&a_claim()).await.unwrap();
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_answer_is_not_sent_elsewhere_and_an_unavailable_replica_is_left_for_the_next_request() {
        let (conflict, _) = serve("409 Conflict", r#"{"detail":"no"}"#).await;
        let (other, seen) = serve("200 OK", RUN).await;
        let c = client(&[conflict.as_str(), other.as_str()]);
        let refused = c.claim(&a_claim()).await.unwrap_err();
        assert_eq!(refused.failover(), Failover::Stay);
        assert_eq!(
            (c.current_base(), seen.load(std::sync::atomic::Ordering::SeqCst)),
            (conflict.as_str(), 0)
        );

        let (unavailable, _) = serve("503 Service Unavailable", r#"{"detail":"stopping"}"#).await;
        let c = client(&[unavailable.as_str(), other.as_str()]);
        let refused = c.claim(&a_claim()).await.unwrap_err();
        assert_eq!(refused.failover(), Failover::NextTime);
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "sent again elsewhere"
        );
        assert_eq!(
            c.current_base(),
            other,
            "the next request goes to the next replica"
        );
        c.claim(&a_claim()).await.unwrap();
    }

    #[tokio::test]
    async fn a_request_left_unanswered_is_not_sent_again() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent = format!("http://{}", listener.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(socket);
        });
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let err = http.get(&silent).send().await.unwrap_err();
        assert_eq!(ClientError::Transport(err).failover(), Failover::NextTime);
        held.abort();
        let refused = http.get(dead_url().await).send().await.unwrap_err();
        assert_eq!(
            ClientError::Transport(refused).failover(),
            Failover::RetryElsewhere
        );
    }
}
