//! Unauthenticated operational routes: liveness, readiness (naming what is
//! down) and Prometheus metrics.

use super::AppState;
use crate::db::stats;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// Readiness of each dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, or what is down in words (the contract's `detail` on 503).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `up` or `down`.
    pub postgres: &'static str,
    /// `up` or `down`.
    pub broker: &'static str,
}

fn up(ok: bool) -> &'static str {
    if ok {
        "up"
    } else {
        "down"
    }
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "alive")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// 200 when Postgres and the broker answer, else 503 naming which is down.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let postgres = state.db.ping().await;
    let broker = state.broker.is_up();
    let down: Vec<&str> = [("postgres", postgres), ("broker", broker)]
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| *name)
        .collect();
    let status = if down.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let detail = (!down.is_empty()).then(|| format!("Not ready: {} down", down.join(" and ")));
    (
        status,
        Json(Readiness {
            detail,
            postgres: up(postgres),
            broker: up(broker),
        }),
    )
}

/// Prometheus text: request counts and latencies by route and status, jobs
/// and workers by status (read from Postgres at scrape time).
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Ok(client) = state.db.client().await {
        if let Ok(jobs) = stats::jobs_by_status(&client).await {
            for (status, n) in jobs {
                metrics::gauge!("orchestrator_jobs", "status" => status).set(n as f64);
            }
        }
        if let Ok(workers) = stats::workers_by_status(&client).await {
            for (status, n) in workers {
                metrics::gauge!("orchestrator_workers", "status" => status).set(n as f64);
            }
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
        .into_response()
}
