//! What travels between the controller and the agents, and the broker
//! topology both sides declare. The controller writes work and control
//! messages into its outbox and a relay publishes them; agents consume them,
//! and publish [`AgentEvent`]s back. Every field an agent needs to run a
//! shard is in [`JobDispatch`], so agents never ask Postgres.
//!
//! Broker names all start with a configurable prefix (default
//! `orchestrator`), so several clusters (or tests) can share one broker.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Logical exchange of job shards (the outbox's `exchange` column).
pub const WORK_EXCHANGE: &str = "work";
/// Routing key of job shards on the work exchange.
pub const WORK_ROUTING_KEY: &str = "job";
/// Logical exchange of per-agent control messages; the routing key is the
/// worker id, bound to that agent's own control queue.
pub const CONTROL_EXCHANGE: &str = "control";
/// Logical name of the exchange agent events (and the reaper's liveness
/// probes) are published to.
pub const EVENTS_EXCHANGE: &str = "events";
/// Highest message priority (jobs' `priority` 0..=9 maps onto it directly).
pub const MAX_PRIORITY: u8 = 9;

/// The names of every exchange and queue, derived from one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    /// Names under `prefix` (e.g. `orchestrator`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Topology {
            prefix: prefix.into(),
        }
    }

    /// The broker exchange behind a logical name (`work`, `control`, `events`).
    pub fn exchange(&self, logical: &str) -> String {
        format!("{}.{logical}", self.prefix)
    }

    /// The shared, durable, priority queue of job shards.
    pub fn jobs_queue(&self) -> String {
        format!("{}.jobs", self.prefix)
    }

    /// Exchange that receives messages agents reject as unprocessable.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }

    /// Queue that keeps dead-lettered messages for inspection.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// One agent's control queue.
    pub fn control_queue(&self, worker_id: &str) -> String {
        format!("{}.control.{worker_id}", self.prefix)
    }

    /// Exchange agents publish [`AgentEvent`]s to.
    pub fn events_exchange(&self) -> String {
        self.exchange(EVENTS_EXCHANGE)
    }

    /// Queue the controller consumes [`AgentEvent`]s from.
    pub fn events_queue(&self) -> String {
        format!("{}.events", self.prefix)
    }
}

/// What an operator (or a cancel) asks of one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum ControlCommand {
    /// Stop taking new work; running jobs finish.
    Pause,
    /// Take work again.
    Resume,
    /// Drain (finish running jobs) and exit.
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
    /// Attempt this message belongs to; reports for other attempts are stale.
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

/// How a shard ended on its agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardOutcome {
    /// Exit code 0.
    Succeeded,
    /// Non-zero exit, a signal, or it could not start.
    Failed,
    /// Stopped by a cancel command.
    Cancelled,
    /// Killed after its timeout.
    TimedOut,
}

impl ShardOutcome {
    /// The status the controller records on the shard for this outcome.
    pub const fn shard_status(self) -> crate::ShardStatus {
        match self {
            ShardOutcome::Succeeded => crate::ShardStatus::Completed,
            ShardOutcome::Failed => crate::ShardStatus::Failed,
            ShardOutcome::Cancelled => crate::ShardStatus::Cancelled,
            ShardOutcome::TimedOut => crate::ShardStatus::TimedOut,
        }
    }
}

/// A shard an agent is running now (reported in heartbeats).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningShard {
    /// The job.
    pub job_id: Uuid,
    /// Its attempt.
    pub attempt: i32,
    /// The shard.
    pub shard_index: i32,
}

/// What agents report to the controller through the events queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// Periodic liveness and load report.
    Heartbeat {
        /// Reporting agent.
        worker_id: String,
        /// Shards it runs now.
        running: Vec<RunningShard>,
        /// Whether it is paused (consumes no work).
        paused: bool,
    },
    /// A shard ended.
    ShardFinished {
        /// Reporting agent.
        worker_id: String,
        /// The job.
        job_id: Uuid,
        /// The attempt it ran.
        attempt: i32,
        /// The shard.
        shard_index: i32,
        /// How it ended.
        outcome: ShardOutcome,
        /// Exit code, when the process exited by itself.
        exit_code: Option<i32>,
        /// Last bytes of stdout.
        stdout_tail: String,
        /// Last bytes of stderr.
        stderr_tail: String,
        /// Why it failed, when it did.
        error: Option<String>,
    },
    /// The agent drained and is exiting.
    Stopped {
        /// Reporting agent.
        worker_id: String,
    },
    /// Published by the controller's reaper, never by an agent: `worker_id`
    /// has been silent since `since`. The events queue is first in, first
    /// out, so when this is applied every event the worker sent before it
    /// has been applied too. Only if none of them was a heartbeat is the
    /// worker lost; a controller that is merely behind on its events never
    /// mistakes that for silence.
    LivenessProbe {
        /// The silent agent.
        worker_id: String,
        /// When the reaper found it silent (the database's clock).
        since: chrono::DateTime<chrono::Utc>,
    },
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
    fn events_round_trip_and_names_are_prefixed() {
        let e = AgentEvent::ShardFinished {
            worker_id: "w".into(),
            job_id: Uuid::new_v4(),
            attempt: 2,
            shard_index: 0,
            outcome: ShardOutcome::TimedOut,
            exit_code: None,
            stdout_tail: String::new(),
            stderr_tail: "boom".into(),
            error: Some("timed out".into()),
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "shard_finished");
        assert_eq!(json["outcome"], "timed_out");
        assert_eq!(serde_json::from_value::<AgentEvent>(json).unwrap(), e);
        let t = Topology::new("t1");
        assert_eq!(t.exchange(WORK_EXCHANGE), "t1.work");
        assert_eq!(t.control_queue("w-1"), "t1.control.w-1");
        assert_eq!(t.events_queue(), "t1.events");
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
