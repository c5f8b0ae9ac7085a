//! `quotas`, `allocate`, `release` and `usage`.

use super::Ctx;
use crate::args::AllocateArgs;
use crate::render::key_values;
use crate::views;
use anyhow::Result;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// `GET /api/resources/quotas`.
pub async fn quotas(ctx: &Ctx) -> Result<()> {
    let reply = ctx.client.get(&["api", "resources", "quotas"], &[]).await?;
    ctx.out
        .show(&reply.body, |body| key_values(body, views::QUOTA_FIELDS))
}

/// The body of `POST /api/resources/allocate`.
pub fn allocate_body(args: &AllocateArgs) -> Value {
    let mut body = Map::new();
    body.insert("workers".into(), json!(args.workers));
    if let Some(job_id) = args.job_id {
        body.insert("job_id".into(), json!(job_id));
    }
    if let Some(ttl) = args.ttl {
        body.insert("ttl_seconds".into(), json!(ttl));
    }
    Value::Object(body)
}

/// `POST /api/resources/allocate`.
pub async fn allocate(ctx: &Ctx, args: AllocateArgs) -> Result<()> {
    let reply = ctx
        .client
        .post(&["api", "resources", "allocate"], &allocate_body(&args))
        .await?;
    ctx.out
        .show(&reply.body, |body| key_values(body, views::ALLOCATION_FIELDS))
}

/// `POST /api/resources/release`.
pub async fn release(ctx: &Ctx, allocation_id: Uuid) -> Result<()> {
    let body = json!({"allocation_id": allocation_id});
    let reply = ctx.client.post(&["api", "resources", "release"], &body).await?;
    ctx.out
        .show(&reply.body, |body| key_values(body, views::ALLOCATION_FIELDS))
}

/// `GET /api/resources/usage`.
pub async fn usage(ctx: &Ctx) -> Result<()> {
    let reply = ctx.client.get(&["api", "resources", "usage"], &[]).await?;
    ctx.out.show(&reply.body, |body| {
        views::list_of(body, "users", views::USAGE_COLUMNS, "no usage")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_body_has_optional_job_and_ttl() {
        let mut args = AllocateArgs {
            workers: 3,
            job_id: None,
            ttl: None,
        };
        assert_eq!(allocate_body(&args), json!({"workers": 3}));
        args.job_id = Some(Uuid::nil());
        args.ttl = Some(600);
        assert_eq!(
            allocate_body(&args),
            json!({"workers": 3, "job_id": "00000000-0000-0000-0000-000000000000", "ttl_seconds": 600})
        );
    }
}
