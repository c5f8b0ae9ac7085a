//! `/api/agents/*`: what worker agents send over HTTP (registration and
//! claims) and the token an admin issues them. An extension of the
//! original contract.

use super::error::{check_no_nul, count_problem, FieldError};
use super::jobs::check_labels;
use super::limits::{Isolation, Resources};
use super::workers::Worker;
use super::Labels;
use crate::validate::{is_valid_worker_id, WORKER_ID_RULE};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Most jobs one agent may run at once.
pub const MAX_CAPACITY: i32 = 1024;
/// Longest hostname, in characters.
pub const MAX_HOSTNAME: usize = 255;
/// Longest agent version, in characters: a version string is short (`0.3.1`,
/// a git describe), and each registration stores it on the worker's row.
pub const MAX_VERSION: usize = 128;

/// The prefix of every agent credential, so a leaked one is recognisable
/// (secret scanners, logs) and the API tells it from a user's JWT.
pub const CREDENTIAL_PREFIX: &str = "orca_";

/// The problem with a body's `worker_id`, if it breaks the worker-id rule.
fn worker_id_problems(worker_id: &str) -> Vec<FieldError> {
    if is_valid_worker_id(worker_id) {
        Vec::new()
    } else {
        vec![FieldError::body("worker_id", WORKER_ID_RULE)]
    }
}

/// `POST /api/agents/credentials` body: the worker a new credential names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CredentialRequest {
    /// The worker id the agent holding the credential registers, claims and
    /// reports as (and no other).
    #[cfg_attr(feature = "openapi", schema(pattern = "^(?!\\.\\.?$)[A-Za-z0-9._:-]{1,128}$"))]
    pub worker_id: String,
}

impl CredentialRequest {
    /// Every rule of the contract this request breaks.
    pub fn problems(&self) -> Vec<FieldError> {
        worker_id_problems(&self.worker_id)
    }
}

/// An agent credential as listed: who it names and whether it still
/// works. The secret is never shown again after it is issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentCredential {
    /// Its id (the one to revoke it by; also the second part of the token).
    pub credential_id: Uuid,
    /// The one worker it names.
    pub worker_id: String,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it was revoked (explicitly, or by a newer credential for the
    /// same worker); `null` while it works.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// `POST /api/agents/credentials` answer: the new credential and its
/// token, shown this once (the controller keeps only a hash). Give it to
/// the agent as `AGENT_TOKEN_FILE` (or `AGENT_TOKEN`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssuedCredential {
    /// Its id.
    pub credential_id: Uuid,
    /// The one worker it names.
    pub worker_id: String,
    /// The bearer token: `orca_<credential id, 32 hex>_<secret>`.
    pub token: String,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for IssuedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCredential")
            .field("credential_id", &self.credential_id)
            .field("worker_id", &self.worker_id)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// `GET /api/agents/credentials`: every credential, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CredentialList {
    /// The credentials, live and revoked.
    pub credentials: Vec<AgentCredential>,
    /// How many.
    pub total: usize,
}

/// `POST /api/agents/register` body: an agent announcing itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterRequest {
    /// Unique id (see [`crate::validate::is_valid_worker_id`]).
    #[cfg_attr(feature = "openapi", schema(pattern = "^(?!\\.\\.?$)[A-Za-z0-9._:-]{1,128}$"))]
    pub worker_id: String,
    /// Host it runs on (1..=255 characters, no NUL).
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 255, pattern = "^[^\\u0000]*$")
    )]
    pub hostname: String,
    /// Jobs it runs at once (1..=1024).
    #[serde(deserialize_with = "super::number::i32")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1024))]
    pub capacity: i32,
    /// Free-form labels, held to the same rule as a job's.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = super::schema::labels))]
    pub labels: Labels,
    /// Agent version (at most 128 characters, no NUL).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 128, pattern = "^[^\\u0000]*$"))]
    pub version: String,
    /// What it offers its jobs in all (memory, CPUs, processes); each
    /// `null` when it sets no ceiling of its own.
    #[serde(default)]
    pub resources: Resources,
    /// Which protections it enforces between jobs, itself and the host;
    /// absent from agents that predate isolation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
    /// The pools it serves (at most 16 pool names); absent or empty:
    /// `["default"]`, as for agents that predate pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(schema_with = super::schema::pools))]
    pub pools: Vec<String>,
}

impl RegisterRequest {
    /// Every rule of the contract this registration breaks.
    pub fn problems(&self) -> Vec<FieldError> {
        let mut errors = worker_id_problems(&self.worker_id);
        if !(1..=MAX_CAPACITY).contains(&self.capacity) {
            errors.push(FieldError::body(
                "capacity",
                format!("must be between 1 and {MAX_CAPACITY}"),
            ));
        }
        if self.hostname.is_empty() || self.hostname.chars().count() > MAX_HOSTNAME {
            errors.push(FieldError::body(
                "hostname",
                format!("must be 1 to {MAX_HOSTNAME} characters"),
            ));
        }
        check_no_nul(&mut errors, "hostname", [self.hostname.as_str()]);
        check_labels(&mut errors, &self.labels);
        if self.version.chars().count() > MAX_VERSION {
            errors.push(FieldError::body(
                "version",
                format!("must be at most {MAX_VERSION} characters"),
            ));
        }
        check_no_nul(&mut errors, "version", [self.version.as_str()]);
        errors.extend(self.resources.problems());
        errors.extend(self.isolation.iter().flat_map(Isolation::problems));
        errors.extend(crate::pools::pools_problems(&self.pools));
        errors
    }
}

/// An agent's own broker login, made anew at each registration: the
/// broker user the controller created for this worker id, and its fresh
/// password. The agent connects to the broker with it (its broker URL then
/// carries no login) and stamps the username as `user_id` on every event it
/// publishes. Never logged: `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BrokerLogin {
    /// The agent's broker user, `<broker prefix>.agent.<worker_id>`.
    pub username: String,
    /// Its password; the previous registration's stops working.
    pub password: String,
}

impl std::fmt::Debug for BrokerLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerLogin")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// One job class an agent consumes: a pool, a selector its labels
/// satisfy, and the routing key whose queue carries the class's jobs
/// (`<broker prefix>.jobs` for `job`, `<broker prefix>.jobs.<rest>` for
/// `job.<rest>`; see `orchestrator_shared::pools`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkClass {
    /// The class's routing key on the work exchange.
    pub routing_key: String,
    /// Its pool.
    pub pool: String,
    /// Labels its jobs require.
    #[cfg_attr(feature = "openapi", schema(schema_with = super::schema::selector))]
    pub selector: Labels,
}

/// `GET /api/agents/classes` answer: every job class whose
/// queue the worker should consume now. Agents poll it, so a class first
/// submitted after they started reaches them within a poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkClasses {
    /// The classes, by routing key.
    pub classes: Vec<WorkClass>,
}

/// `POST /api/agents/register` answer: the worker as registered (every
/// field of the `Worker` object) and, when the controller gives each agent
/// its own broker user, that user's login.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Registration {
    /// The worker, as `GET /api/supervisor/workers/{worker_id}` shows it.
    #[serde(flatten)]
    pub worker: Worker,
    /// The agent's broker login; absent when the controller runs on a
    /// shared broker login (`--insecure-shared-broker`), in which case the
    /// agent connects with the login in its own broker URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerLogin>,
    /// Whether the controller takes several events in one message on the
    /// events exchange (a JSON array, see
    /// [`crate::messages::encode_events`]). `false` from controllers that
    /// predate it (absent) and from one told not to (during a rolling
    /// upgrade from such a controller, whose replicas would refuse an
    /// array); the agent then sends one event a message.
    #[serde(default)]
    pub event_batches: bool,
}

/// `POST /api/agents/claim` body: may this agent run this shard now?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimRequest {
    /// The asking agent.
    #[cfg_attr(feature = "openapi", schema(pattern = "^(?!\\.\\.?$)[A-Za-z0-9._:-]{1,128}$"))]
    pub worker_id: String,
    /// The job.
    pub job_id: Uuid,
    /// The attempt in the message.
    #[serde(deserialize_with = "super::number::i32")]
    pub attempt: i32,
    /// The shard in the message.
    #[serde(deserialize_with = "super::number::i32")]
    pub shard_index: i32,
    /// Whether the broker marked the delivery as redelivered (its previous
    /// holder's channel closed), which lets this agent take the shard over.
    pub redelivered: bool,
}

impl ClaimRequest {
    /// Every rule of the contract this claim breaks: the worker id is
    /// stored with the shard it claims, so it meets the registration's
    /// rule (a NUL in it was a 500 from Postgres).
    pub fn problems(&self) -> Vec<FieldError> {
        worker_id_problems(&self.worker_id)
    }
}

/// Most claims in one `POST /api/agents/claims`: more than an agent's
/// deliveries in hand at once would ever need in one go at the usual
/// capacities, small enough that one transaction stays short.
pub const MAX_CLAIMS_PER_REQUEST: usize = 256;

/// One shard an agent asks about in a batch of claims: what a
/// [`ClaimRequest`] says besides the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShardClaim {
    /// The job.
    pub job_id: Uuid,
    /// The attempt in the message.
    #[serde(deserialize_with = "super::number::i32")]
    pub attempt: i32,
    /// The shard in the message.
    #[serde(deserialize_with = "super::number::i32")]
    pub shard_index: i32,
    /// Whether the broker marked the delivery as redelivered.
    pub redelivered: bool,
}

impl ShardClaim {
    /// The single claim this is, made by `worker_id`.
    pub fn by(&self, worker_id: &str) -> ClaimRequest {
        ClaimRequest {
            worker_id: worker_id.to_owned(),
            job_id: self.job_id,
            attempt: self.attempt,
            shard_index: self.shard_index,
            redelivered: self.redelivered,
        }
    }
}

/// `POST /api/agents/claims` body: several claims of one agent answered by
/// one request and one transaction, so a busy agent pays a fraction of a
/// round trip per shard instead of one each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimBatchRequest {
    /// The asking agent.
    #[cfg_attr(feature = "openapi", schema(pattern = "^(?!\\.\\.?$)[A-Za-z0-9._:-]{1,128}$"))]
    pub worker_id: String,
    /// The shards, 1 to [`MAX_CLAIMS_PER_REQUEST`] of them; answered in
    /// this order.
    pub claims: Vec<ShardClaim>,
}

impl ClaimBatchRequest {
    /// Every rule of the contract this batch breaks: the worker id's rule,
    /// and between 1 and [`MAX_CLAIMS_PER_REQUEST`] claims.
    pub fn problems(&self) -> Vec<FieldError> {
        let mut problems = worker_id_problems(&self.worker_id);
        let (len, max) = (self.claims.len(), MAX_CLAIMS_PER_REQUEST);
        problems.extend(count_problem("claims", len, max, "hold", "claims"));
        problems
    }
}

/// `POST /api/agents/claims` answer: one answer per claim, in the
/// request's order, each what `POST /api/agents/claim` would have said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimBatchResponse {
    /// The answers.
    pub answers: Vec<ClaimResponse>,
}

/// What the agent does with a delivery after claiming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ClaimDecision {
    /// Run it.
    Run,
    /// Acknowledge and drop it: finished, cancelled or stale.
    Skip,
    /// Give it back to the queue (e.g. this agent already runs another shard
    /// of the same job); retry after a short pause.
    Requeue,
}

/// `POST /api/agents/claim` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimResponse {
    /// What to do.
    pub decision: ClaimDecision,
    /// Why, for logs.
    pub reason: String,
    /// With `run`: what to run, as the controller has it. The agent runs
    /// this, never what the broker message said, so a message published by
    /// anyone but the controller cannot choose a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work: Option<ShardWork>,
}

/// What one shard runs, from the job's row: the part of a dispatch that
/// decides what executes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShardWork {
    /// Free text given to the executor on stdin (`TASK_DESCRIPTION`).
    pub task_description: String,
    /// Argument vector to run instead of the executor, if any.
    pub command: Option<Vec<String>>,
    /// Total shards (`SHARD_COUNT`).
    pub shard_count: i32,
    /// Per-attempt run-time limit.
    pub timeout_seconds: Option<i32>,
    /// The job's own resource limits (the agent's defaults fill the gaps).
    #[serde(default)]
    pub limits: Resources,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::jobs::{MAX_LABELS, MAX_LABEL_VALUE};

    #[test]
    fn a_broker_login_never_prints_its_password() {
        let login = BrokerLogin {
            username: "p.agent.w".into(),
            password: "hunter2-long-secret".into(),
        };
        let shown = format!("{login:?}");
        assert!(
            shown.contains("p.agent.w") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn claim_decisions_are_snake_case() {
        assert_eq!(
            serde_json::to_string(&ClaimDecision::Requeue).unwrap(),
            "\"requeue\""
        );
    }

    #[test]
    fn registration_rules_name_each_field() {
        let req = RegisterRequest {
            worker_id: "..".into(),
            hostname: String::new(),
            capacity: 0,
            labels: Labels::new(),
            version: String::new(),
            resources: Resources {
                memory_mb: Some(0),
                ..Resources::default()
            },
            isolation: None,
            pools: vec!["GPU".into()],
        };
        let locs: Vec<String> = req.problems().iter().map(FieldError::location).collect();
        assert_eq!(
            locs,
            [
                "body.worker_id",
                "body.capacity",
                "body.hostname",
                "body.memory_mb",
                "body.pools"
            ]
        );
    }

    /// A registration that breaks no rule, every field at its limit.
    fn at_the_limits() -> RegisterRequest {
        RegisterRequest {
            worker_id: "w".repeat(128),
            hostname: "h".repeat(MAX_HOSTNAME),
            capacity: MAX_CAPACITY,
            labels: (0..MAX_LABELS)
                .map(|i| (format!("{i:0128}"), "v".repeat(MAX_LABEL_VALUE)))
                .collect(),
            version: "9".repeat(MAX_VERSION),
            resources: Resources {
                memory_mb: Some(1_048_576),
                cpu: Some(1024.0),
                max_pids: Some(4_194_304),
            },
            isolation: Some(Isolation {
                job_user: Some("u".repeat(256)),
                cgroup: Some("v1".into()),
                disabled: vec!["d".repeat(256); 16],
            }),
            pools: (0..16).map(|i| format!("{i:063}")).collect(),
        }
    }

    #[test]
    fn registration_is_bounded_like_a_job_and_refuses_nul() {
        assert_eq!(at_the_limits().problems(), []);
        let mut over = at_the_limits();
        over.hostname.push('h');
        over.labels.insert("one-too-many".into(), String::new());
        over.version.push('9');
        over.pools.push("one-too-many".into());
        let locs: Vec<String> = over.problems().iter().map(FieldError::location).collect();
        assert_eq!(
            locs,
            ["body.hostname", "body.labels", "body.version", "body.pools"]
        );
        let nul = RegisterRequest {
            hostname: "h\0".into(),
            labels: [("k".to_owned(), "\0".to_owned())].into(),
            version: "\0".into(),
            ..at_the_limits()
        };
        let locs: Vec<String> = nul.problems().iter().map(FieldError::location).collect();
        assert_eq!(locs, ["body.hostname", "body.labels", "body.version"]);
    }

    #[test]
    fn a_claim_names_a_valid_worker() {
        let claim = |worker_id: &str| ClaimRequest {
            worker_id: worker_id.into(),
            job_id: Uuid::nil(),
            attempt: 1,
            shard_index: 0,
            redelivered: false,
        };
        assert_eq!(claim("agent-1").problems(), []);
        for bad in ["", "..", "a\0b", "a b"] {
            let locs: Vec<String> = claim(bad).problems().iter().map(FieldError::location).collect();
            assert_eq!(locs, ["body.worker_id"], "{bad:?}");
        }
    }
}
