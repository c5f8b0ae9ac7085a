//! The HTTP API of `../shared/spec/api.md`. Routes and their scopes are
//! declared in one table ([`protected_routes`]); one layer ([`extract::authorize`])
//! checks tokens and scopes; one module ([`error`]) maps errors to responses.

pub mod agents;
pub mod auth_routes;
pub mod error;
pub mod extract;
pub mod jobs;
pub mod limiter;
pub mod openapi;
pub mod ops;
pub mod resources;
pub mod supervisor;

use crate::auth::TokenIssuer;
use crate::broker::BrokerStatus;
use crate::db::Database;
use crate::models::Quota;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
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
    /// Largest accepted body, in bytes (named in 413 bodies).
    pub body_limit: usize,
    /// Per-IP and per-username login attempt limits.
    pub login_limiter: Arc<limiter::LoginLimiter>,
    /// Whether the broker connection is up (for `/readyz`).
    pub broker: BrokerStatus,
    /// Renders `/metrics`.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Woken after a commit that wrote outbox rows (the relay publishes at once).
    pub wake: Arc<tokio::sync::Notify>,
    /// Lifetime of issued agent tokens, in seconds.
    pub agent_token_ttl: u64,
}

/// Every authenticated route with the scope it requires (`None`: any valid
/// token). Adding a route means adding a line here, so no route can forget
/// its check.
pub fn protected_routes() -> Vec<(&'static str, MethodRouter<AppState>, Option<Scope>)> {
    use Scope::*;
    vec![
        ("/api/auth/me", get(auth_routes::me), None),
        ("/api/auth/users", post(auth_routes::create_user), Some(Admin)),
        (
            "/api/supervisor/workers",
            get(supervisor::list_workers),
            Some(SupervisorRead),
        ),
        (
            "/api/supervisor/workers/{worker_id}",
            get(supervisor::get_worker),
            Some(SupervisorRead),
        ),
        (
            "/api/supervisor/workers/{worker_id}/pause",
            post(supervisor::pause),
            Some(SupervisorWrite),
        ),
        (
            "/api/supervisor/workers/{worker_id}/resume",
            post(supervisor::resume),
            Some(SupervisorWrite),
        ),
        (
            "/api/supervisor/workers/{worker_id}/terminate",
            post(supervisor::terminate),
            Some(SupervisorWrite),
        ),
        (
            "/api/supervisor/metrics",
            get(supervisor::metrics),
            Some(SupervisorRead),
        ),
        (
            "/api/resources/quotas",
            get(resources::quotas),
            Some(ResourcesRead),
        ),
        (
            "/api/resources/allocate",
            post(resources::allocate),
            Some(ResourcesWrite),
        ),
        (
            "/api/resources/release",
            post(resources::release),
            Some(ResourcesWrite),
        ),
        ("/api/resources/usage", get(resources::usage), Some(ResourcesRead)),
        ("/api/jobs", get(jobs::list), Some(JobsRead)),
        ("/api/jobs/submit", post(jobs::submit), Some(JobsWrite)),
        (
            "/api/jobs/submit_batch",
            post(jobs::submit_batch),
            Some(JobsWrite),
        ),
        ("/api/jobs/{job_id}", get(jobs::get_job), Some(JobsRead)),
        ("/api/jobs/{job_id}/cancel", post(jobs::cancel), Some(JobsWrite)),
        ("/api/jobs/{job_id}/events", get(jobs::events), Some(JobsRead)),
        ("/api/jobs/{job_id}/output", get(jobs::output), Some(JobsRead)),
        ("/api/agents/tokens", post(agents::issue_token), Some(Admin)),
        ("/api/agents/register", post(agents::register), Some(Agent)),
        ("/api/agents/claim", post(agents::claim), Some(Agent)),
    ]
}

/// The whole application: API routes behind their guards, the open
/// operational routes, and the layers every request passes (request id,
/// tracing, metrics, timeout, body limit).
pub fn router(state: AppState, timeout: Duration) -> Router {
    let mut app = Router::new()
        .route("/api/auth/login", post(auth_routes::login))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .merge(openapi::routes());
    for (path, route, scope) in protected_routes() {
        let guard = Guard {
            state: state.clone(),
            scope,
        };
        app = app.route(
            path,
            route.route_layer(middleware::from_fn_with_state(guard, authorize)),
        );
    }
    let request_id = HeaderName::from_static("x-request-id");
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(timeout, enforce_timeout))
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

/// Counts requests and records their latency by route template and status.
async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}
