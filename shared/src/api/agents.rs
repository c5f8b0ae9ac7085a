//! `/api/agents/*`: what worker agents send over HTTP (registration and
//! claims) and the token an admin issues them. An extension of the
//! original contract.

use super::error::FieldError;
use super::Labels;
use crate::validate::{is_valid_worker_id, WORKER_ID_RULE};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Most jobs one agent may run at once.
pub const MAX_CAPACITY: i32 = 1024;
/// Longest hostname, in bytes.
pub const MAX_HOSTNAME: usize = 255;

/// A new agent token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentToken {
    /// JWT with scope `agent`; give it to agents as `AGENT_TOKEN`.
    pub agent_token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

impl std::fmt::Debug for AgentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentToken")
            .field("agent_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// `POST /api/agents/register` body: an agent announcing itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterRequest {
    /// Unique id (see [`crate::validate::is_valid_worker_id`]).
    pub worker_id: String,
    /// Host it runs on.
    pub hostname: String,
    /// Jobs it runs at once.
    pub capacity: i32,
    /// Free-form labels.
    #[serde(default)]
    pub labels: Labels,
    /// Agent version.
    #[serde(default)]
    pub version: String,
}

impl RegisterRequest {
    /// Every rule of the contract this registration breaks.
    pub fn problems(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if !is_valid_worker_id(&self.worker_id) {
            errors.push(FieldError::body("worker_id", WORKER_ID_RULE));
        }
        if !(1..=MAX_CAPACITY).contains(&self.capacity) {
            errors.push(FieldError::body(
                "capacity",
                format!("must be between 1 and {MAX_CAPACITY}"),
            ));
        }
        if self.hostname.is_empty() || self.hostname.len() > MAX_HOSTNAME {
            errors.push(FieldError::body(
                "hostname",
                format!("must be 1 to {MAX_HOSTNAME} bytes"),
            ));
        }
        errors
    }
}

/// `POST /api/agents/claim` body: may this agent run this shard now?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimRequest {
    /// The asking agent.
    pub worker_id: String,
    /// The job.
    pub job_id: Uuid,
    /// The attempt in the message.
    pub attempt: i32,
    /// The shard in the message.
    pub shard_index: i32,
    /// Whether the broker marked the delivery as redelivered (its previous
    /// holder's channel closed), which lets this agent take the shard over.
    pub redelivered: bool,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimResponse {
    /// What to do.
    pub decision: ClaimDecision,
    /// Why, for logs.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        let locs: Vec<String> = req.problems().iter().map(FieldError::location).collect();
        assert_eq!(locs, ["body.worker_id", "body.capacity", "body.hostname"]);
    }
}
