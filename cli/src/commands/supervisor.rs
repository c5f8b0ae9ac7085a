//! `workers`, `worker`, `pause`, `resume`, `terminate` and `metrics`.

use super::Ctx;
use crate::client::Answer;
use crate::views;
use anyhow::Result;
use orchestrator_shared::api::{FleetStats, Worker, WorkerFilter, WorkerList};
use orchestrator_shared::WorkerStatus;
use serde_json::json;

/// `GET /api/supervisor/workers`, optionally of one status.
pub async fn workers(ctx: &Ctx, status: Option<WorkerStatus>) -> Result<()> {
    let filter = WorkerFilter {
        status: status.map(|s| s.as_str().to_owned()),
    };
    let list: Answer<WorkerList> = ctx
        .client
        .get_with(&["api", "supervisor", "workers"], &filter)
        .await?;
    ctx.out.show(&list, |list| {
        views::list_of(&list.workers, views::WORKER_COLUMNS, "no workers")
    })
}

/// `GET /api/supervisor/workers/{id}`.
pub async fn worker(ctx: &Ctx, worker_id: &str) -> Result<()> {
    let worker: Answer<Worker> = ctx
        .client
        .get(&["api", "supervisor", "workers", worker_id])
        .await?;
    ctx.out.show(&worker, views::worker)
}

/// `POST /api/supervisor/workers/{id}/{action}`: `pause`, `resume` or `terminate`.
pub async fn act(ctx: &Ctx, worker_id: &str, action: &str) -> Result<()> {
    let path = ["api", "supervisor", "workers", worker_id, action];
    let worker: Answer<Worker> = ctx.client.post(&path, &json!({})).await?;
    ctx.out.show(&worker, views::worker)
}

/// `GET /api/supervisor/metrics`.
pub async fn metrics(ctx: &Ctx) -> Result<()> {
    let stats: Answer<FleetStats> = ctx.client.get(&["api", "supervisor", "metrics"]).await?;
    ctx.out.show(&stats, views::fields)
}
