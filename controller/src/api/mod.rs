//! The HTTP API of `docs/api.md`. Routes and their scopes are
//! declared in one table ([`protected_routes`]); one layer ([`extract::authorize`])
//! checks tokens and scopes; one module ([`error`]) maps errors to responses.

pub mod agents;
pub mod allocation_list;
pub mod auth_routes;
pub mod client_ip;
pub mod error;
pub mod extract;
pub mod job_search;
pub mod jobs;
pub mod limiter;
pub mod openapi;
pub mod ops;
pub mod resources;
pub mod schedules;
pub mod session;
pub mod stats;
pub mod stream;
pub mod supervisor;
pub mod users;

use crate::auth::TokenIssuer;
use crate::broker::BrokerStatus;
use crate::db::Database;
use crate::models::Quota;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderName, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use error::ApiError;
use extract::{authorize, Guard};
use orchestrator_shared::Scope;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// Everything a handler may need, cloned cheaply into each request.
#[derive(Clone)]
pub struct AppState {
    /// Postgres.
    pub db: Database,
    /// Issues and verifies tokens.
    pub tokens: Arc<TokenIssuer>,
    /// Limits of users without their own quota row.
    pub default_quota: Quota,
    /// Default and longest lifetimes of allocations.
    pub allocation_ttl: crate::config::AllocationTtl,
    /// Largest accepted body, in bytes (named in 413 bodies).
    pub body_limit: usize,
    /// Login attempt limits per (username, client) and per client.
    pub login_limiter: Arc<limiter::LoginLimiter>,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Arc<client_ip::TrustedProxies>,
    /// Whether the broker connection is up (for `/readyz`).
    pub broker: BrokerStatus,
    /// Renders `/metrics`.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Woken after a commit that wrote outbox rows (the relay publishes at once).
    pub wake: Arc<tokio::sync::Notify>,
    /// Concurrent submissions, written in shared transactions.
    pub submissions: Arc<crate::db::jobs::gather::Gather>,
    /// Concurrent agents' claim requests, answered in shared transactions.
    pub claims: Arc<crate::db::flow::ClaimGather>,
    /// How long an agent may stay silent before it counts as lost (a
    /// claim may then take over its shards).
    pub heartbeat_timeout: Duration,
    /// Creates each registering agent's own broker user (`None` when the
    /// agents share one broker login).
    pub accounts: Option<Arc<crate::broker::BrokerAccounts>>,
    /// Recent readings of users' rows, against which every token is
    /// checked (disabled, deleted, revoked, scopes cut).
    pub standing: Arc<crate::auth::standing::StandingCache>,
    /// Recent readings of agent credentials, against which every agent
    /// request is checked (revoked within the same bound as users' tokens).
    pub credentials: Arc<crate::auth::agent_credential::CredentialCache>,
    /// Set to `true` when the controller shuts down, so that long-lived
    /// answers (the output stream) end and the shutdown need not wait.
    pub stopping: Arc<tokio::sync::watch::Sender<bool>>,
    /// Largest accepted body of [`BATCH_PATH`], in bytes: a whole job
    /// graph is one request.
    pub batch_body_limit: usize,
    /// Whether the API is served over HTTPS, so browser session cookies
    /// carry `Secure` (see [`session`]).
    pub secure_cookies: bool,
    /// Whether registering agents may send several events in one message
    /// (`--agent-event-batches`).
    pub event_batches: bool,
    /// Most bytes of output stored for one shard run
    /// (`--max-shard-output-bytes`).
    pub max_shard_output: i64,
}

/// The route whose bodies may be as large as [`AppState::batch_body_limit`].
pub const BATCH_PATH: &str = "/api/jobs/submit_batch";

impl AppState {
    /// The largest body accepted at `path`, in bytes.
    pub fn body_limit_for(&self, path: &str) -> usize {
        if path == BATCH_PATH {
            self.batch_body_limit
        } else {
            self.body_limit
        }
    }
}

/// One route of the API: what it answers, where, and the scope it
/// requires. The tables below are the router's only source, so tests can
/// check every route (tokens refused, documented in OpenAPI and in
/// `docs/api.md`) without a hand-kept list.
pub struct Route {
    /// The HTTP method it answers.
    pub method: Method,
    /// Its path template (`/api/jobs/{job_id}`).
    pub path: &'static str,
    /// Scope it requires: `None` on a protected route means any valid token.
    pub scope: Option<Scope>,
    /// The handler, bound to `method`.
    pub handler: MethodRouter<AppState>,
}

/// The methods the API uses; a closed set, so each maps to axum's filter
/// without a failure case.
#[derive(Clone, Copy)]
enum Verb {
    Get,
    Post,
    Patch,
    Delete,
}

/// A route answering `verb` at `path` with `handler`.
fn route<H, T>(verb: Verb, path: &'static str, handler: H, scope: Option<Scope>) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let (method, filter) = match verb {
        Verb::Get => (Method::GET, MethodFilter::GET),
        Verb::Post => (Method::POST, MethodFilter::POST),
        Verb::Patch => (Method::PATCH, MethodFilter::PATCH),
        Verb::Delete => (Method::DELETE, MethodFilter::DELETE),
    };
    Route {
        method,
        path,
        scope,
        handler: on(filter, handler),
    }
}

/// Every authenticated route with the scope it requires (`None`: any valid
/// token). Adding a route means adding a line here, so no route can forget
/// its check.
#[rustfmt::skip] // a table: one line per route reads best
pub fn protected_routes() -> Vec<Route> {
    use Scope::*;
    use Verb::{Delete as DELETE, Get as GET, Patch as PATCH, Post as POST};
    vec![
        route(GET, "/api/auth/me", auth_routes::me, None),
        route(POST, "/api/auth/users", auth_routes::create_user, Some(Admin)),
        route(GET, "/api/auth/users", users::list, Some(Admin)),
        route(GET, "/api/auth/users/{user_id}", users::get, Some(Admin)),
        route(PATCH, "/api/auth/users/{user_id}", users::update, Some(Admin)),
        route(DELETE, "/api/auth/users/{user_id}", users::delete, Some(Admin)),
        route(GET, "/api/supervisor/workers", supervisor::list_workers, Some(SupervisorRead)),
        route(GET, "/api/supervisor/workers/{worker_id}", supervisor::get_worker, Some(SupervisorRead)),
        route(POST, "/api/supervisor/workers/{worker_id}/pause", supervisor::pause, Some(SupervisorWrite)),
        route(POST, "/api/supervisor/workers/{worker_id}/resume", supervisor::resume, Some(SupervisorWrite)),
        route(POST, "/api/supervisor/workers/{worker_id}/terminate", supervisor::terminate, Some(SupervisorWrite)),
        route(GET, "/api/supervisor/metrics", supervisor::metrics, Some(SupervisorRead)),
        route(GET, "/api/stats/timeline", stats::timeline, Some(SupervisorRead)),
        route(GET, "/api/stats/stream", stats::overview_stream, Some(SupervisorRead)),
        route(GET, "/api/resources/quotas", resources::quotas, Some(ResourcesRead)),
        route(POST, "/api/resources/allocate", resources::allocate, Some(ResourcesWrite)),
        route(POST, "/api/resources/release", resources::release, Some(ResourcesWrite)),
        route(GET, "/api/resources/usage", resources::usage, Some(ResourcesRead)),
        route(GET, "/api/resources/allocations", allocation_list::list, Some(ResourcesRead)),
        route(GET, "/api/jobs", jobs::list, Some(JobsRead)),
        route(GET, "/api/jobs/search", job_search::search, Some(JobsRead)),
        route(POST, "/api/jobs/cancel_batch", job_search::cancel_batch, Some(JobsWrite)),
        route(POST, "/api/jobs/submit", jobs::submit, Some(JobsWrite)),
        route(POST, BATCH_PATH, jobs::submit_batch, Some(JobsWrite)),
        route(GET, "/api/jobs/{job_id}", jobs::get_job, Some(JobsRead)),
        route(POST, "/api/jobs/{job_id}/cancel", jobs::cancel, Some(JobsWrite)),
        route(GET, "/api/jobs/{job_id}/events", jobs::events, Some(JobsRead)),
        route(GET, "/api/jobs/{job_id}/output", jobs::output, Some(JobsRead)),
        route(GET, "/api/jobs/{job_id}/graph", jobs::graph, Some(JobsRead)),
        route(POST, "/api/schedules", schedules::create, Some(JobsWrite)),
        route(GET, "/api/schedules", schedules::list, Some(JobsRead)),
        route(GET, "/api/schedules/{schedule_id}", schedules::get, Some(JobsRead)),
        route(PATCH, "/api/schedules/{schedule_id}", schedules::update, Some(JobsWrite)),
        route(DELETE, "/api/schedules/{schedule_id}", schedules::delete, Some(JobsWrite)),
        route(GET, "/api/jobs/{job_id}/output/stream", stream::output_stream, Some(JobsRead)),
        route(POST, "/api/agents/credentials", agents::issue_credential, Some(Admin)),
        route(GET, "/api/agents/credentials", agents::list_credentials, Some(Admin)),
        route(DELETE, "/api/agents/credentials/{credential_id}", agents::revoke_credential, Some(Admin)),
        route(POST, "/api/agents/register", agents::register, Some(Agent)),
        route(POST, "/api/agents/claim", agents::claim, Some(Agent)),
        route(POST, "/api/agents/claims", agents::claim_batch, Some(Agent)),
        route(GET, "/api/agents/classes", agents::classes, Some(Agent)),
        route(POST, "/api/agents/output", agents::output, Some(Agent)),
    ]
}

/// The routes anyone may call: login, and the operational endpoints that
/// probes and scrapers call without a token. (`/api/openapi.json` and
/// `/docs` are served by [`openapi::routes`].)
pub fn open_routes() -> Vec<Route> {
    vec![
        route(Verb::Post, "/api/auth/login", auth_routes::login, None),
        route(Verb::Post, "/api/auth/session", session::start, None),
        route(Verb::Delete, "/api/auth/session", session::end, None),
        route(Verb::Get, "/healthz", ops::healthz, None),
        route(Verb::Get, "/readyz", ops::readyz, None),
        route(Verb::Get, "/metrics", ops::metrics, None),
    ]
}

/// The whole application: API routes behind their guards, the open
/// operational routes, and the layers every request passes (request id,
/// tracing, metrics, declared and actual body limit, timeout).
pub fn router(state: AppState, timeout: Duration) -> Router {
    let mut app = Router::new().merge(openapi::routes()).merge(crate::ui::routes());
    for open in open_routes() {
        app = app.route(open.path, open.handler);
    }
    for protected in protected_routes() {
        let guard = Guard {
            state: state.clone(),
            scope: protected.scope,
        };
        let mut handler = protected
            .handler
            .route_layer(middleware::from_fn_with_state(guard, authorize));
        if protected.path == BATCH_PATH {
            handler = handler.layer(DefaultBodyLimit::max(state.batch_body_limit));
        }
        app = app.route(protected.path, handler);
    }
    let request_id = HeaderName::from_static("x-request-id");
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(timeout, enforce_timeout))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_declared_oversize,
        ))
        .layer(middleware::from_fn(record_metrics))
        .layer(DefaultBodyLimit::max(state.body_limit))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), uri = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("Not Found".to_owned())
}

async fn method_not_allowed() -> Response {
    let body = error::ErrorBody {
        detail: "Method Not Allowed".to_owned(),
    };
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

/// Answers 503 in the contract's shape when a request runs too long.
async fn enforce_timeout(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable("Request timed out".to_owned()).into_response(),
    }
}

/// Answers 413 at once when the declared `Content-Length` is over the
/// body limit, instead of waiting for a body that may never come (the
/// limit on the body read catches bodies without a length).
async fn refuse_declared_oversize(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.body_limit_for(req.uri().path());
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(length) if length > u64::try_from(limit).unwrap_or(u64::MAX) => {
            ApiError::PayloadTooLarge(limit).into_response()
        }
        _ => next.run(req).await,
    }
}

/// The `method` label of a request: the standard methods by name, anything
/// else `other`, so clients cannot add label values (each a time series
/// kept for good) by inventing methods.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Counts requests and records their latency by method, route template
/// and status: a fixed label set (unmatched paths are `unmatched`, unknown
/// methods `other`).
async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method()).to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}
