//! The API as tests call it: one named method on [`TestApp`] per route
//! (`app.submit_job(&token, &body)`, `app.pause_worker(&token, "w-1")`), so
//! a test reads as what it does and a route's path is spelled once, here.
//! Each answers a [`Reply`], the response read to the end.

use super::TestApp;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use std::fmt::Display;
use std::net::IpAddr;

/// A response read to the end: status, headers, text and (if any) JSON, so
/// a failing assertion can print the body it saw.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body as text.
    pub text: String,
    /// The body as JSON (`Null` if it is not JSON).
    pub json: Value,
}

impl Reply {
    /// Reads `resp` to the end.
    pub async fn read(resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    /// The value of header `name`, or "" if it is absent or not text.
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
}

/// `path` with `pairs` as its percent-encoded query string.
fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return path.to_owned();
    }
    let mut url = reqwest::Url::parse("http://query.invalid/").unwrap_or_else(|e| panic!("{e}"));
    url.query_pairs_mut().extend_pairs(pairs);
    format!("{path}?{}", url.query().unwrap_or_default())
}

/// Generic requests, for tests that walk the route table or send what no
/// client would.
impl TestApp {
    /// Sends `method path` with an optional bearer token and JSON body.
    pub async fn send(&self, method: Method, path: &str, token: Option<&str>, body: Option<&Value>) -> Reply {
        let mut req = self.http.request(method.clone(), self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        Reply::read(resp).await
    }

    /// Sends a request built by the caller (odd headers, malformed bodies).
    pub async fn send_request(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("sending a request: {e}"));
        Reply::read(resp).await
    }

    /// A raw TCP connection to the app, for what no HTTP client sends
    /// (headers a line at a time, a body shorter than declared, idle
    /// connections).
    pub async fn connect_raw(&self) -> tokio::net::TcpStream {
        let addr = self.base_url.trim_start_matches("http://");
        tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
    }

    /// GET `path` with a bearer token.
    async fn read(&self, path: &str, token: &str) -> Reply {
        self.send(Method::GET, path, Some(token), None).await
    }

    /// POST to `path` with a bearer token and an optional JSON body.
    async fn write(&self, path: &str, token: &str, body: Option<&Value>) -> Reply {
        self.send(Method::POST, path, Some(token), body).await
    }

    /// GET `path` with no token, as probes and scrapers call.
    pub async fn get_open(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, None).await
    }
}

/// The body of `POST /api/auth/login`.
fn login_body(username: &str, password: &str) -> Value {
    json!({"username": username, "password": password})
}

/// `/api/auth/*`.
impl TestApp {
    /// `POST /api/auth/login`.
    pub async fn login(&self, username: &str, password: &str) -> Reply {
        let body = login_body(username, password);
        self.send(Method::POST, "/api/auth/login", None, Some(&body))
            .await
    }

    /// `POST /api/auth/login` over a new connection from `source` (every
    /// address of 127.0.0.0/8 reaches the app), with `forwarded_for` as its
    /// `X-Forwarded-For` header if given: a login from another client, or
    /// through a proxy at `source`.
    pub async fn login_from(
        &self,
        source: IpAddr,
        forwarded_for: Option<&str>,
        username: &str,
        password: &str,
    ) -> Reply {
        let http = reqwest::Client::builder()
            .local_address(source)
            .build()
            .unwrap_or_else(|e| panic!("a client bound to {source}: {e}"));
        let mut req = http
            .post(self.url("/api/auth/login"))
            .json(&login_body(username, password));
        if let Some(forwarded_for) = forwarded_for {
            req = req.header("x-forwarded-for", forwarded_for);
        }
        self.send_request(req).await
    }

    /// `GET /api/auth/me`.
    pub async fn me(&self, token: &str) -> Reply {
        self.read("/api/auth/me", token).await
    }

    /// `POST /api/auth/users` with `body` (username, password, scopes).
    pub async fn create_user(&self, token: &str, body: &Value) -> Reply {
        self.write("/api/auth/users", token, Some(body)).await
    }

    /// `GET /api/auth/users`.
    pub async fn list_users(&self, token: &str) -> Reply {
        self.read("/api/auth/users", token).await
    }

    /// `GET /api/auth/users/{user_id}`.
    pub async fn get_user(&self, token: &str, user_id: impl Display) -> Reply {
        self.read(&format!("/api/auth/users/{user_id}"), token).await
    }

    /// `PATCH /api/auth/users/{user_id}` with `body` (scopes, disabled, password).
    pub async fn update_user(&self, token: &str, user_id: impl Display, body: &Value) -> Reply {
        let path = format!("/api/auth/users/{user_id}");
        self.send(Method::PATCH, &path, Some(token), Some(body)).await
    }

    /// `DELETE /api/auth/users/{user_id}`.
    pub async fn delete_user(&self, token: &str, user_id: impl Display) -> Reply {
        let path = format!("/api/auth/users/{user_id}");
        self.send(Method::DELETE, &path, Some(token), None).await
    }
}

/// `/api/supervisor/*`.
impl TestApp {
    /// `GET /api/supervisor/workers` with `query` (e.g. `[("status", "idle")]`).
    pub async fn list_workers(&self, token: &str, query: &[(&str, &str)]) -> Reply {
        self.read(&with_query("/api/supervisor/workers", query), token)
            .await
    }

    /// `GET /api/supervisor/workers/{worker_id}`.
    pub async fn get_worker(&self, token: &str, worker_id: &str) -> Reply {
        self.read(&format!("/api/supervisor/workers/{worker_id}"), token)
            .await
    }

    /// `POST /api/supervisor/workers/{worker_id}/{action}`: `pause`,
    /// `resume` or `terminate`.
    async fn worker_action(&self, token: &str, worker_id: &str, action: &str) -> Reply {
        self.write(
            &format!("/api/supervisor/workers/{worker_id}/{action}"),
            token,
            None,
        )
        .await
    }

    /// `POST /api/supervisor/workers/{worker_id}/pause`.
    pub async fn pause_worker(&self, token: &str, worker_id: &str) -> Reply {
        self.worker_action(token, worker_id, "pause").await
    }

    /// `POST /api/supervisor/workers/{worker_id}/resume`.
    pub async fn resume_worker(&self, token: &str, worker_id: &str) -> Reply {
        self.worker_action(token, worker_id, "resume").await
    }

    /// `POST /api/supervisor/workers/{worker_id}/terminate`.
    pub async fn terminate_worker(&self, token: &str, worker_id: &str) -> Reply {
        self.worker_action(token, worker_id, "terminate").await
    }

    /// `GET /api/supervisor/metrics`.
    pub async fn fleet_metrics(&self, token: &str) -> Reply {
        self.read("/api/supervisor/metrics", token).await
    }
}

/// `/api/resources/*`.
impl TestApp {
    /// `GET /api/resources/quotas`.
    pub async fn quotas(&self, token: &str) -> Reply {
        self.read("/api/resources/quotas", token).await
    }

    /// `GET /api/resources/usage`.
    pub async fn usage(&self, token: &str) -> Reply {
        self.read("/api/resources/usage", token).await
    }

    /// `POST /api/resources/allocate` with `body` (workers, job_id, ttl_seconds).
    pub async fn allocate(&self, token: &str, body: &Value) -> Reply {
        self.write("/api/resources/allocate", token, Some(body)).await
    }

    /// `POST /api/resources/release` of `allocation_id` (any JSON, so tests
    /// can send a malformed one).
    pub async fn release(&self, token: &str, allocation_id: &Value) -> Reply {
        let body = json!({"allocation_id": allocation_id});
        self.write("/api/resources/release", token, Some(&body)).await
    }
}

/// `/api/jobs*`.
impl TestApp {
    /// `POST /api/jobs/submit` with `body`.
    pub async fn submit_job(&self, token: &str, body: &Value) -> Reply {
        self.write("/api/jobs/submit", token, Some(body)).await
    }

    /// `POST /api/jobs/submit_batch` of `jobs`.
    pub async fn submit_batch(&self, token: &str, jobs: &[Value]) -> Reply {
        let body = json!({ "jobs": jobs });
        self.write("/api/jobs/submit_batch", token, Some(&body)).await
    }

    /// `GET /api/jobs` with `query` (e.g. `[("limit", "3")]`).
    pub async fn list_jobs(&self, token: &str, query: &[(&str, &str)]) -> Reply {
        self.read(&with_query("/api/jobs", query), token).await
    }

    /// `GET /api/jobs/{job_id}` (any text as the id, so tests can send a
    /// malformed one).
    pub async fn get_job(&self, token: &str, job_id: impl Display) -> Reply {
        self.read(&format!("/api/jobs/{job_id}"), token).await
    }

    /// `POST /api/jobs/{job_id}/cancel`.
    pub async fn cancel_job(&self, token: &str, job_id: impl Display) -> Reply {
        self.write(&format!("/api/jobs/{job_id}/cancel"), token, None)
            .await
    }

    /// `GET /api/jobs/{job_id}/events`.
    pub async fn job_events(&self, token: &str, job_id: impl Display) -> Reply {
        self.read(&format!("/api/jobs/{job_id}/events"), token).await
    }

    /// `GET /api/jobs/{job_id}/output?{query}` (`query` as written, so
    /// tests can send bad values).
    pub async fn job_output_with(&self, token: &str, job_id: impl Display, query: &str) -> Reply {
        self.read(&format!("/api/jobs/{job_id}/output?{query}"), token)
            .await
    }

    /// `GET /api/jobs/{job_id}/output`.
    pub async fn job_output(&self, token: &str, job_id: impl Display) -> Reply {
        self.read(&format!("/api/jobs/{job_id}/output"), token).await
    }

    /// `GET /api/jobs/{job_id}/graph`.
    pub async fn job_graph(&self, token: &str, job_id: impl Display) -> Reply {
        self.read(&format!("/api/jobs/{job_id}/graph"), token).await
    }
}

/// `/api/agents/*`.
impl TestApp {
    /// `POST /api/agents/credentials` for `worker_id`.
    pub async fn issue_agent_credential(&self, token: &str, worker_id: &str) -> Reply {
        let body = serde_json::json!({ "worker_id": worker_id });
        self.write("/api/agents/credentials", token, Some(&body)).await
    }

    /// `GET /api/agents/credentials`.
    pub async fn list_agent_credentials(&self, token: &str) -> Reply {
        self.read("/api/agents/credentials", token).await
    }

    /// `DELETE /api/agents/credentials/{credential_id}`.
    pub async fn revoke_agent_credential(&self, token: &str, credential_id: impl Display) -> Reply {
        let path = format!("/api/agents/credentials/{credential_id}");
        self.send(Method::DELETE, &path, Some(token), None).await
    }

    /// `POST /api/agents/register` with `body` (any JSON, so tests can send
    /// what no agent would).
    pub async fn register_agent(&self, token: &str, body: &Value) -> Reply {
        self.write("/api/agents/register", token, Some(body)).await
    }

    /// `POST /api/agents/claim` with `body` (worker_id, job_id, attempt,
    /// shard_index, redelivered).
    pub async fn claim_shard(&self, token: &str, body: &Value) -> Reply {
        self.write("/api/agents/claim", token, Some(body)).await
    }

    /// `POST /api/agents/claims` with `body` (worker_id, claims).
    pub async fn claim_shards(&self, token: &str, body: &Value) -> Reply {
        self.write("/api/agents/claims", token, Some(body)).await
    }

    /// `POST /api/agents/output` with `body` (a piece of a shard's output).
    pub async fn post_output(&self, token: &str, body: &Value) -> Reply {
        self.write("/api/agents/output", token, Some(body)).await
    }

    /// `GET /api/agents/classes` (the credential's own worker's).
    pub async fn agent_classes(&self, token: &str) -> Reply {
        self.read("/api/agents/classes", token).await
    }
}

/// `/api/schedules*`.
impl TestApp {
    /// `POST /api/schedules` with `body` (name, cron, timezone, template, ...).
    pub async fn create_schedule(&self, token: &str, body: &Value) -> Reply {
        self.write("/api/schedules", token, Some(body)).await
    }

    /// `GET /api/schedules`.
    pub async fn list_schedules(&self, token: &str) -> Reply {
        self.read("/api/schedules", token).await
    }

    /// `GET /api/schedules/{schedule_id}`.
    pub async fn get_schedule(&self, token: &str, schedule_id: impl Display) -> Reply {
        self.read(&format!("/api/schedules/{schedule_id}"), token).await
    }

    /// `PATCH /api/schedules/{schedule_id}` with `body`.
    pub async fn update_schedule(&self, token: &str, schedule_id: impl Display, body: &Value) -> Reply {
        let path = format!("/api/schedules/{schedule_id}");
        self.send(Method::PATCH, &path, Some(token), Some(body)).await
    }

    /// `DELETE /api/schedules/{schedule_id}`.
    pub async fn delete_schedule(&self, token: &str, schedule_id: impl Display) -> Reply {
        let path = format!("/api/schedules/{schedule_id}");
        self.send(Method::DELETE, &path, Some(token), None).await
    }
}
