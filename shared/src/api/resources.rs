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

/// Most pools one change of a user's per-pool quotas names.
pub const MAX_POOL_QUOTA_CHANGES: usize = 64;
/// Largest per-pool quota: workers of one pool a user may hold allocated.
pub const MAX_POOL_QUOTA: i64 = 1_000_000;

/// A change of a user's per-pool quotas (`pool_quotas` of `PATCH
/// /api/auth/users/{user_id}`): pool name to the most workers of that pool
/// the user may hold allocated, or `null` to lift that pool's limit. Pools
/// it does not name keep their limits. Values stay JSON numbers until
/// [`PoolQuotaChanges::problems`] checks them, so a fraction or an
/// out-of-range number is a 422 naming the pool, not a type error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PoolQuotaChanges(pub std::collections::BTreeMap<String, Option<serde_json::Number>>);

impl PoolQuotaChanges {
    /// Every rule the change breaks, located at `["body", "pool_quotas",
    /// pool]`: a pool name outside the pool rule, a limit that is not a
    /// whole number from 0 to [`MAX_POOL_QUOTA`], more than
    /// [`MAX_POOL_QUOTA_CHANGES`] pools.
    pub fn problems(&self) -> Vec<FieldError> {
        if self.0.len() > MAX_POOL_QUOTA_CHANGES {
            return vec![FieldError::body(
                "pool_quotas",
                format!("at most {MAX_POOL_QUOTA_CHANGES} pools at once"),
            )];
        }
        let at = |pool: &str, msg: String| {
            let mut e = FieldError::body("pool_quotas", msg);
            e.loc.push(pool.to_owned());
            e
        };
        let mut errors = Vec::new();
        for (pool, limit) in &self.0 {
            if !crate::pools::is_valid_pool(pool) {
                errors.push(at(pool, format!("a pool name {}", crate::pools::POOL_RULE)));
            }
            if limit.as_ref().is_some_and(|n| whole(n).is_none()) {
                errors.push(at(
                    pool,
                    format!("must be a whole number between 0 and {MAX_POOL_QUOTA}, or null"),
                ));
            }
        }
        errors
    }

    /// The change as pairs of pool and new limit (`None`: lifted), once
    /// [`PoolQuotaChanges::problems`] found none (a bad limit reads as
    /// lifted, so check first).
    pub fn limits(&self) -> Vec<(String, Option<i32>)> {
        self.0
            .iter()
            .map(|(pool, limit)| (pool.clone(), limit.as_ref().and_then(whole)))
            .collect()
    }
}

/// `n` as a per-pool limit: a whole number (`2` or `2.0`) from 0 to
/// [`MAX_POOL_QUOTA`].
fn whole(n: &serde_json::Number) -> Option<i32> {
    let value = n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() <= MAX_POOL_QUOTA as f64)
            .map(|f| f as i64)
    })?;
    i32::try_from(value)
        .ok()
        .filter(|v| (0..=MAX_POOL_QUOTA).contains(&i64::from(*v)))
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
    fn pool_quota_changes_take_whole_limits_in_range_and_null_lifts() {
        let read = |json: &str| serde_json::from_str::<PoolQuotaChanges>(json).unwrap_or_default();
        let good = read(r#"{"gpu": 2, "cpu-big": 0, "old": null, "f": 3.0}"#);
        assert!(good.problems().is_empty(), "{:?}", good.problems());
        assert_eq!(
            good.limits(),
            [
                ("cpu-big".to_owned(), Some(0)),
                ("f".to_owned(), Some(3)),
                ("gpu".to_owned(), Some(2)),
                ("old".to_owned(), None)
            ]
        );
        let bad = read(r#"{"GPU": 1, "a": -1, "b": 2.5, "c": 1000001, "d": 1e300}"#);
        let locs: Vec<String> = bad.problems().iter().map(FieldError::location).collect();
        assert_eq!(
            locs,
            [
                "body.pool_quotas.GPU",
                "body.pool_quotas.a",
                "body.pool_quotas.b",
                "body.pool_quotas.c",
                "body.pool_quotas.d"
            ]
        );
        let many = PoolQuotaChanges(
            (0..=MAX_POOL_QUOTA_CHANGES)
                .map(|i| (format!("p{i}"), Some(1.into())))
                .collect(),
        );
        assert_eq!(many.problems().len(), 1);
        assert!(serde_json::from_str::<PoolQuotaChanges>(r#"{"gpu": "2"}"#).is_err());
    }

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
