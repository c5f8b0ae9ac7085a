//! `quotas`, `allocate`, `release` and `usage`.

use super::Ctx;
use crate::args::AllocateArgs;
use crate::client::Answer;
use crate::error::UsageError;
use crate::views;
use anyhow::Result;
use orchestrator_shared::api::{AllocateRequest, Allocation, QuotaView, ReleaseRequest, UsageView};
use uuid::Uuid;

/// `GET /api/resources/quotas`.
pub async fn quotas(ctx: &Ctx) -> Result<()> {
    let quotas: Answer<QuotaView> = ctx.client.get(&["api", "resources", "quotas"]).await?;
    ctx.out.show(&quotas, views::fields)
}

/// The allocation the command line asks for, checked against the
/// contract's rules before it is sent.
pub fn allocation(args: &AllocateArgs) -> Result<AllocateRequest, UsageError> {
    let request = AllocateRequest {
        workers: args.workers,
        job_id: args.job_id,
        ttl_seconds: args.ttl,
        pool: args.pool.clone(),
    };
    UsageError::check(&request.problems())?;
    Ok(request)
}

/// `POST /api/resources/allocate`.
pub async fn allocate(ctx: &Ctx, args: AllocateArgs) -> Result<()> {
    let request = allocation(&args)?;
    let allocated: Answer<Allocation> = ctx
        .client
        .post(&["api", "resources", "allocate"], &request)
        .await?;
    ctx.out.show(&allocated, views::fields)
}

/// `POST /api/resources/release`.
pub async fn release(ctx: &Ctx, allocation_id: Uuid) -> Result<()> {
    let request = ReleaseRequest { allocation_id };
    let released: Answer<Allocation> = ctx
        .client
        .post(&["api", "resources", "release"], &request)
        .await?;
    ctx.out.show(&released, views::fields)
}

/// `GET /api/resources/usage`.
pub async fn usage(ctx: &Ctx) -> Result<()> {
    let usage: Answer<UsageView> = ctx.client.get(&["api", "resources", "usage"]).await?;
    ctx.out.show(&usage, |usage| {
        views::list_of(&usage.users, views::USAGE_COLUMNS, "no usage")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn allocate_body_has_optional_job_and_ttl() -> Result<()> {
        let mut args = AllocateArgs {
            workers: 3,
            job_id: None,
            ttl: None,
            pool: None,
        };
        assert_eq!(serde_json::to_value(allocation(&args)?)?, json!({"workers": 3}));
        args.job_id = Some(Uuid::nil());
        args.ttl = Some(600);
        assert_eq!(
            serde_json::to_value(allocation(&args)?)?,
            json!({"workers": 3, "job_id": "00000000-0000-0000-0000-000000000000", "ttl_seconds": 600})
        );
        args.pool = Some("gpu".into());
        assert_eq!(serde_json::to_value(allocation(&args)?)?["pool"], "gpu");
        Ok(())
    }

    #[test]
    fn an_allocation_breaking_the_contract_is_not_sent() {
        let args = AllocateArgs {
            workers: 0,
            job_id: None,
            ttl: Some(0),
            pool: None,
        };
        let err = allocation(&args).err().map(|e| e.0).unwrap_or_default();
        assert!(
            err.starts_with("invalid request (not sent):\n  body.workers: must be between 1 and"),
            "{err}"
        );
        assert!(err.contains("\n  body.ttl_seconds: "), "{err}");
    }
}
