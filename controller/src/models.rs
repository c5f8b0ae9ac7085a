//! The rows the API hands out, in the contract's JSON shape. Kept apart from
//! the queries so that handlers, tests and (later) the OpenAPI document share
//! one definition.

use chrono::{DateTime, Utc};
use orchestrator_shared::{JobStatus, WorkerStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

/// Free-form string labels on jobs and workers.
pub type Labels = BTreeMap<String, String>;

/// An account that can log in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    /// Stable id, the JWT `sub`.
    pub user_id: Uuid,
    /// Unique login name.
    pub username: String,
    /// Scopes granted to tokens issued to this user.
    pub scopes: Vec<String>,
    /// Argon2id PHC string; never serialised.
    #[serde(skip)]
    pub password_hash: String,
    /// When the account was made.
    pub created_at: DateTime<Utc>,
}

/// A worker agent as the supervisor API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Worker {
    /// Agent-chosen unique id (`[A-Za-z0-9._:-]{1,128}`).
    pub worker_id: String,
    /// Current status.
    pub status: WorkerStatus,
    /// Host the agent runs on.
    pub hostname: String,
    /// Jobs it runs at once.
    pub capacity: i32,
    /// Jobs it runs now.
    pub running_jobs: i32,
    /// Operator-defined labels.
    pub labels: Labels,
    /// Agent version string.
    pub version: String,
    /// First registration.
    pub registered_at: DateTime<Utc>,
    /// Last heartbeat received.
    pub last_heartbeat_at: DateTime<Utc>,
}

/// What an agent tells the controller when it registers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NewWorker {
    /// Agent-chosen unique id.
    pub worker_id: String,
    /// Host the agent runs on.
    pub hostname: String,
    /// Jobs it runs at once.
    pub capacity: i32,
    /// Operator-defined labels.
    pub labels: Labels,
    /// Agent version string.
    pub version: String,
}

/// A job as the job API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    /// Id given at submission.
    pub job_id: Uuid,
    /// Current status.
    pub status: JobStatus,
    /// What to do, free text (stdin of the agent's executor).
    pub task_description: String,
    /// Shards, each on a different worker.
    pub required_workers: i32,
    /// Argument vector to run instead of the executor, if any.
    pub command: Option<Vec<String>>,
    /// 0 (lowest) to 9.
    pub priority: i32,
    /// User-defined labels.
    pub labels: Labels,
    /// Times it has been started.
    pub attempts: i32,
    /// Retries allowed after a failure.
    pub max_retries: i32,
    /// Run-time limit per attempt.
    pub timeout_seconds: Option<i32>,
    /// The submitter's de-duplication key.
    pub idempotency_key: Option<String>,
    /// Id of the submitting user.
    pub submitted_by: Uuid,
    /// Workers running (or that last ran) its shards.
    pub assigned_workers: Vec<String>,
    /// Submission time.
    pub created_at: DateTime<Utc>,
    /// When its first shard started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a final status.
    pub finished_at: Option<DateTime<Utc>>,
    /// Exit code of the deciding shard.
    pub exit_code: Option<i32>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// A validated submission (the API checks ranges before building one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// What to do.
    pub task_description: String,
    /// Shards.
    pub required_workers: i32,
    /// Argument vector, if any.
    pub command: Option<Vec<String>>,
    /// 0..=9.
    pub priority: i32,
    /// Per-attempt run-time limit.
    pub timeout_seconds: Option<i32>,
    /// Retries after failure.
    pub max_retries: i32,
    /// De-duplication key, unique per user.
    pub idempotency_key: Option<String>,
    /// User labels.
    pub labels: Labels,
}

/// One recorded transition of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobEvent {
    /// Previous status (`null` for the submission itself).
    pub from: Option<JobStatus>,
    /// New status.
    pub to: JobStatus,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The worker involved, if any.
    pub worker_id: Option<String>,
    /// Why, in words.
    pub reason: Option<String>,
}

/// Lifecycle of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
    /// Database spelling.
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Allocation {
    /// Id given at allocation.
    pub allocation_id: Uuid,
    /// Owner.
    #[serde(skip_serializing)]
    pub user_id: Uuid,
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
}

/// A user's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Quota {
    /// Workers allocated at once.
    pub max_workers: i32,
    /// Jobs running at once.
    pub max_concurrent_jobs: i32,
    /// Jobs pending or queued at once.
    pub max_queued_jobs: i32,
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
}
