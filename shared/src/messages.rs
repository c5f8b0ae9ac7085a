//! Messages that travel through the broker. The controller writes them into
//! its outbox and the relay publishes them; agents consume them. Every field
//! an agent needs to run a shard is here, so agents never ask Postgres.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Durable exchange that work is published to.
pub const WORK_EXCHANGE: &str = "orchestrator.work";
/// Routing key of ordinary job shards on [`WORK_EXCHANGE`].
pub const WORK_ROUTING_KEY: &str = "job";

/// Durable exchange of per-agent control messages; the routing key is the
/// worker id, bound to that agent's own control queue.
pub const CONTROL_EXCHANGE: &str = "orchestrator.control";

/// What an operator (or a cancel) asks of one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum ControlCommand {
    /// Stop taking new work; running jobs finish.
    Pause,
    /// Take work again.
    Resume,
    /// Drain (finish or hand back running jobs) and exit.
    Terminate,
    /// Stop this job's child process and report it cancelled.
    CancelJob {
        /// The job to stop.
        job_id: Uuid,
    },
}

/// One shard of one attempt of a job, as handed to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDispatch {
    /// The job.
    pub job_id: Uuid,
    /// Attempt this message belongs to; reports for older attempts are stale.
    pub attempt: i32,
    /// 0-based shard index (`SHARD_INDEX`).
    pub shard_index: i32,
    /// Total shards (`SHARD_COUNT`).
    pub shard_count: i32,
    /// Free text given to the executor on stdin (`TASK_DESCRIPTION`).
    pub task_description: String,
    /// Argument vector to run instead of the executor, if any.
    pub command: Option<Vec<String>>,
    /// Per-attempt run-time limit.
    pub timeout_seconds: Option<i32>,
    /// Broker priority, 0..=9.
    pub priority: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_commands_are_tagged() {
        let c = ControlCommand::CancelJob { job_id: Uuid::nil() };
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["command"], "cancel_job");
        assert_eq!(
            serde_json::to_string(&ControlCommand::Pause).unwrap(),
            r#"{"command":"pause"}"#
        );
        assert_eq!(serde_json::from_value::<ControlCommand>(json).unwrap(), c);
    }

    #[test]
    fn dispatch_round_trips_through_json() {
        let d = JobDispatch {
            job_id: Uuid::new_v4(),
            attempt: 1,
            shard_index: 2,
            shard_count: 3,
            task_description: "echo".into(),
            command: Some(vec!["/bin/true".into()]),
            timeout_seconds: None,
            priority: 5,
        };
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<JobDispatch>(&json).unwrap(), d);
    }
}
