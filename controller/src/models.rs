//! The controller's own rows (users, registrations, validated submissions)
//! and the contract's shapes it stores, re-exported from
//! [`orchestrator_shared::api`], their one definition.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use orchestrator_shared::api::{
    Allocation, AllocationStatus, Dependency, Isolation, Job, JobEvent, Labels, Quota, Resources, Worker,
};

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
    /// Whether the account is refused: it cannot log in, and its tokens
    /// are refused (a deleted account is disabled too).
    pub disabled: bool,
    /// When the account was deleted; its row stays, for its jobs' history.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Written into every token issued to the user (claim `ver`); bumped
    /// when the user is disabled, deleted or given a new password, which
    /// takes back every token issued before, and when it is enabled again.
    pub token_version: i64,
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
    /// What it offers its jobs in all (each `None`: no ceiling of its own).
    #[serde(default)]
    pub resources: Resources,
    /// Which protections it enforces; `None` from an agent that predates
    /// the report.
    #[serde(default)]
    pub isolation: Option<Isolation>,
    /// The pools it serves (never empty: `default` when it named none).
    #[serde(default = "default_pools")]
    pub pools: Vec<String>,
}

/// The pools of an agent that names none.
fn default_pools() -> Vec<String> {
    vec![orchestrator_shared::pools::default_pool()]
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
    /// Resource limits, validated. Left out of the serialised form when
    /// none is set, so the idempotency hash of a submission without limits
    /// is the one stored before limits existed.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub limits: Resources,
    /// The jobs it waits for, resolved (earlier jobs by id, jobs of the
    /// same batch by index). Left out of the serialised form when empty,
    /// so the idempotency hash of a submission without dependencies is the
    /// one stored before dependencies existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Dependency>,
    /// Whether it runs after a dependency that did not complete; left out
    /// of the serialised form when false, as `depends_on`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub run_on_failure: bool,
    /// The pool of agents that may run it. Left out of the serialised form
    /// when it is `default`, so the idempotency hash of a submission that
    /// names no pool is the one stored before pools existed.
    #[serde(
        default = "orchestrator_shared::pools::default_pool",
        skip_serializing_if = "orchestrator_shared::pools::is_default_pool_ref"
    )]
    pub pool: String,
    /// Labels an agent must carry to run it (left out when empty, as `pool`).
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub selector: Labels,
}
