//! `/api/resources/*`: quotas, allocations of workers, and usage.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::FieldError;

/// Most workers one allocation may hold.
pub const MAX_ALLOCATION_WORKERS: i32 = 1024;
/// Longest allocation lifetime: 30 days.
pub const MAX_TTL_SECONDS: i64 = 30 * 24 * 3600;

/// A user's limits (the stored quota; users without one get the
/// controller's configured default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quota {
    /// Workers allocated at once.
    pub max_workers: i32,
    /// Jobs running at once.
    pub max_concurrent_jobs: i32,
    /// Jobs pending or queued at once.
    pub max_queued_jobs: i32,
}

/// The caller's limits and what is left of them (`GET /api/resources/quotas`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuotaView {
    /// Workers the caller may hold allocated.
    pub max_workers: i64,
    /// Workers the caller holds now.
    pub allocated_workers: i64,
    /// Live, unallocated workers the caller could still allocate.
    pub available_workers: i64,
    /// Jobs the caller may run at once.
    pub max_concurrent_jobs: i64,
    /// The caller's jobs running now.
    pub running_jobs: i64,
    /// Jobs the caller may have waiting.
    pub max_queued_jobs: i64,
    /// The caller's jobs pending or queued now.
    pub queued_jobs: i64,
    /// The caller's per-pool limits, one entry per pool it has a limit
    /// for (empty: no pool is limited beyond `max_workers`).
    #[serde(default)]
    pub pools: Vec<PoolQuotaView>,
}

/// A user's limit in one pool and what is left of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PoolQuotaView {
    /// The pool.
    pub pool: String,
    /// Workers of the pool the user may hold allocated.
    pub max_workers: i64,
    /// Workers of the pool the user holds now.
    pub allocated_workers: i64,
    /// Live, unallocated workers of the pool the user could still allocate.
    pub available_workers: i64,
}

/// `POST /api/resources/allocate` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AllocateRequest {
    /// Workers wanted, 1..=1024.
    #[serde(deserialize_with = "super::number::i32")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1024))]
    pub workers: i32,
    /// The job they are for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
    /// Lifetime in seconds, 1..=2592000; none means until released.
    #[serde(
        default,
        deserialize_with = "super::number::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 2592000))]
    pub ttl_seconds: Option<i64>,
    /// Workers of this pool only (its per-pool quota applies); absent:
    /// any live workers, as before pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"))]
    pub pool: Option<String>,
}

impl AllocateRequest {
    /// Every rule of the contract this request breaks.
    pub fn problems(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if !(1..=MAX_ALLOCATION_WORKERS).contains(&self.workers) {
            errors.push(FieldError::body(
                "workers",
                format!("must be between 1 and {MAX_ALLOCATION_WORKERS}"),
            ));
        }
        if self
            .ttl_seconds
            .is_some_and(|t| !(1..=MAX_TTL_SECONDS).contains(&t))
        {
            errors.push(FieldError::body(
                "ttl_seconds",
                format!("must be between 1 and {MAX_TTL_SECONDS}"),
            ));
        }
        errors.extend(crate::pools::placement_problems(
            self.pool.as_deref(),
            &Default::default(),
        ));
        errors
    }
}

/// `POST /api/resources/release` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseRequest {
    /// The allocation to release.
    pub allocation_id: Uuid,
}

/// Lifecycle of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AllocationStatus {
    /// Holding workers.
    Active,
    /// Given back by its owner.
    Released,
    /// Ran past its `expires_at`.
    Expired,
}

impl AllocationStatus {
    /// Database and wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            AllocationStatus::Active => "active",
            AllocationStatus::Released => "released",
            AllocationStatus::Expired => "expired",
        }
    }

    /// Parses the database spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(AllocationStatus::Active),
            "released" => Some(AllocationStatus::Released),
            "expired" => Some(AllocationStatus::Expired),
            _ => None,
        }
    }
}

/// Workers reserved by a user, optionally for one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Allocation {
    /// Id given at allocation.
    pub allocation_id: Uuid,
    /// Number of workers reserved.
    pub workers: i32,
    /// The job they are for, if any.
    pub job_id: Option<Uuid>,
    /// When the reservation lapses, if it does.
    pub expires_at: Option<DateTime<Utc>>,
    /// Active, released or expired.
    pub status: AllocationStatus,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was released.
    pub released_at: Option<DateTime<Utc>>,
    /// The pool its workers are of (`null`: any pool).
    #[serde(default)]
    pub pool: Option<String>,
}

/// One user's consumption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserUsage {
    /// The user.
    pub user_id: Uuid,
    /// Their login name.
    pub username: String,
    /// Workers held in active allocations.
    pub allocated_workers: i64,
    /// Their jobs running now.
    pub running_jobs: i64,
    /// Sum over their finished jobs of run time × shards, in seconds.
    pub worker_seconds: f64,
}

/// Per-user usage (`GET /api/resources/usage`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageView {
    /// One entry per user (only the caller unless admin).
    pub users: Vec<UserUsage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_status_round_trips_and_rejects_unknown() {
        for s in [
            AllocationStatus::Active,
            AllocationStatus::Released,
            AllocationStatus::Expired,
        ] {
            assert_eq!(AllocationStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::json!(s.as_str()));
        }
        assert_eq!(AllocationStatus::parse("gone"), None);
    }

    #[test]
    fn allocation_limits_name_their_fields() {
        let req = AllocateRequest {
            workers: 0,
            job_id: None,
            ttl_seconds: Some(0),
            pool: Some("GPU".into()),
        };
        let locs: Vec<String> = req.problems().iter().map(FieldError::location).collect();
        assert_eq!(locs, ["body.workers", "body.ttl_seconds", "body.pool"]);
    }
}
