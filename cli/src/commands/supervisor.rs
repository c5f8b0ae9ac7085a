//! `workers`, `worker`, `pause`, `resume`, `terminate` and `metrics`.

use super::Ctx;
use crate::render::key_values;
use crate::views;
use anyhow::Result;
use serde_json::json;

/// `GET /api/supervisor/workers`, optionally of one status.
pub async fn workers(ctx: &Ctx, status: Option<String>) -> Result<()> {
    let query: Vec<(&str, String)> = status.into_iter().map(|s| ("status", s)).collect();
    let reply = ctx.client.get(&["api", "supervisor", "workers"], &query).await?;
    ctx.out.show(&reply.body, |body| {
        views::list_of(body, "workers", views::WORKER_COLUMNS, "no workers")
    })
}

/// `GET /api/supervisor/workers/{id}`.
pub async fn worker(ctx: &Ctx, worker_id: &str) -> Result<()> {
    let reply = ctx
        .client
        .get(&["api", "supervisor", "workers", worker_id], &[])
        .await?;
    ctx.out.show(&reply.body, views::worker)
}

/// `POST /api/supervisor/workers/{id}/{action}`: `pause`, `resume` or `terminate`.
pub async fn act(ctx: &Ctx, worker_id: &str, action: &str) -> Result<()> {
    let path = ["api", "supervisor", "workers", worker_id, action];
    let reply = ctx.client.post(&path, &json!({})).await?;
    ctx.out.show(&reply.body, views::worker)
}

/// `GET /api/supervisor/metrics`.
pub async fn metrics(ctx: &Ctx) -> Result<()> {
    let reply = ctx.client.get(&["api", "supervisor", "metrics"], &[]).await?;
    ctx.out
        .show(&reply.body, |body| key_values(body, views::METRICS_FIELDS))
}
