//! Job and worker statuses. Their wire spelling (lower-case) is fixed by the
//! API contract and by the check constraints in the database schema, so it is
//! defined once here and nowhere else.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A status string that names no known status; returned instead of panicking
/// when a client or a database row holds something unexpected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} status: {value:?}")]
pub struct StatusParseError {
    /// Which machine the value was meant for ("job" or "worker").
    pub kind: &'static str,
    /// The rejected text.
    pub value: String,
}

/// Where a job is in its life. Spelled lower-case on the wire and in Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Accepted and stored, not yet published to the broker.
    Pending,
    /// Published to the broker, waiting for an agent.
    Queued,
    /// At least one shard has started on an agent.
    Running,
    /// Every shard succeeded.
    Completed,
    /// A shard failed with no retries left.
    Failed,
    /// Cancelled by a user before it could finish.
    Cancelled,
    /// Ran past its `timeout_seconds`.
    TimedOut,
}

/// Where a worker agent is in its life, as the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    /// Registered, heartbeating, running nothing.
    Idle,
    /// Running at least one job.
    Busy,
    /// Told by an operator to take no new work; running jobs finish.
    Paused,
    /// Draining before exit.
    Terminating,
    /// Exited after draining.
    Terminated,
    /// Reported an unrecoverable error.
    Failed,
    /// Missed too many heartbeats.
    Offline,
}

/// Where one shard of one attempt of a job is, as the controller records
/// it (`job_shards.status`). Not shown by the API; the job flow decides on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardStatus {
    /// Claimed by an agent and running there.
    Running,
    /// Exited with code 0.
    Completed,
    /// Failed (non-zero exit, a signal, or it could not start).
    Failed,
    /// Stopped by a cancel, or because another shard of its attempt failed.
    Cancelled,
    /// Killed after its timeout.
    TimedOut,
}

macro_rules! wire_names {
    ($ty:ident, $kind:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every status, in declaration order (for tests and metrics).
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The wire and database spelling.
            pub const fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = StatusParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(StatusParseError { kind: $kind, value: s.to_owned() }),
                }
            }
        }
    };
}

wire_names!(JobStatus, "job", {
    Pending => "pending",
    Queued => "queued",
    Running => "running",
    Completed => "completed",
    Failed => "failed",
    Cancelled => "cancelled",
    TimedOut => "timed_out",
});

wire_names!(WorkerStatus, "worker", {
    Idle => "idle",
    Busy => "busy",
    Paused => "paused",
    Terminating => "terminating",
    Terminated => "terminated",
    Failed => "failed",
    Offline => "offline",
});

wire_names!(ShardStatus, "shard", {
    Running => "running",
    Completed => "completed",
    Failed => "failed",
    Cancelled => "cancelled",
    TimedOut => "timed_out",
});

impl JobStatus {
    /// True once the job can never change again; finished jobs are what
    /// cancel must refuse and what redelivered messages must skip.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled | JobStatus::TimedOut
        )
    }
}

impl WorkerStatus {
    /// True when the worker may be handed new work (quota's `available_workers`).
    pub const fn accepts_work(self) -> bool {
        matches!(self, WorkerStatus::Idle | WorkerStatus::Busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip_through_serde_and_from_str() {
        for s in JobStatus::ALL {
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), *s);
        }
        for s in WorkerStatus::ALL {
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(s.as_str().parse::<WorkerStatus>().unwrap(), *s);
        }
        for s in ShardStatus::ALL {
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(s.as_str().parse::<ShardStatus>().unwrap(), *s);
        }
    }

    #[test]
    fn unknown_status_is_an_error_naming_the_value() {
        let err = "done".parse::<JobStatus>().unwrap_err();
        assert_eq!(err.to_string(), "unknown job status: \"done\"");
        assert!("IDLE".parse::<WorkerStatus>().is_err());
    }

    #[test]
    fn terminal_job_statuses_are_the_four_finished_ones() {
        let terminal: Vec<_> = JobStatus::ALL.iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal.len(), 4);
        assert!(!JobStatus::Running.is_terminal());
        assert!(WorkerStatus::Idle.accepts_work());
        assert!(!WorkerStatus::Paused.accepts_work());
    }
}
