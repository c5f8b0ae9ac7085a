//! The allowed transitions of jobs and workers, one table per machine.
//!
//! The tables are the single source of truth: the controller checks every
//! persisted change against them before its compare-and-set `UPDATE`, and the
//! property tests below check that no sequence of attempted changes can leave
//! them. A self-transition (same status) is never in a table: it changes
//! nothing and is refused, so a duplicated report cannot look like progress.

use crate::status::{JobStatus, WorkerStatus};
use std::fmt;

/// A transition that the machine's table does not allow. Its `Display` is the
/// API's 409 detail, e.g. `Invalid job transition: completed -> cancelled`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid {machine} transition: {from} -> {to}")]
pub struct StateTransitionError {
    /// "job" or "worker".
    pub machine: &'static str,
    /// The status the entity was in.
    pub from: String,
    /// The status that was asked for.
    pub to: String,
}

/// A status type governed by a fixed table of allowed transitions.
pub trait StateMachine: Copy + Eq + fmt::Display + 'static {
    /// The machine's name in error messages ("job", "worker").
    const MACHINE: &'static str;
    /// Every allowed `(from, to)` pair; anything absent is forbidden.
    const TRANSITIONS: &'static [(Self, Self)];

    /// Whether the table allows going from `self` to `to`.
    fn can_transition_to(self, to: Self) -> bool {
        Self::TRANSITIONS.contains(&(self, to))
    }

    /// `to` if the table allows it, else the typed error the API maps to 409.
    fn transition(self, to: Self) -> Result<Self, StateTransitionError> {
        if self.can_transition_to(to) {
            Ok(to)
        } else {
            Err(StateTransitionError {
                machine: Self::MACHINE,
                from: self.to_string(),
                to: to.to_string(),
            })
        }
    }
}

impl StateMachine for JobStatus {
    const MACHINE: &'static str = "job";
    const TRANSITIONS: &'static [(Self, Self)] = {
        use JobStatus::*;
        &[
            // Stored → published to the broker, or cancelled before that.
            (Pending, Queued),
            (Pending, Cancelled),
            // Waiting in the queue: an agent starts it, a user cancels it,
            // or the broker dead-letters it as unprocessable.
            (Queued, Running),
            (Queued, Cancelled),
            (Queued, Failed),
            // Running: its outcome, a cancel, a timeout, or back to the queue
            // for a retry (failure with retries left, or its agent was lost).
            (Running, Completed),
            (Running, Failed),
            (Running, Cancelled),
            (Running, TimedOut),
            (Running, Queued),
        ]
    };
}

impl StateMachine for WorkerStatus {
    const MACHINE: &'static str = "worker";
    const TRANSITIONS: &'static [(Self, Self)] = {
        use WorkerStatus::*;
        &[
            (Idle, Busy),
            (Idle, Paused),
            (Idle, Terminating),
            (Idle, Failed),
            (Idle, Offline),
            (Busy, Idle),
            (Busy, Paused),
            (Busy, Terminating),
            (Busy, Failed),
            (Busy, Offline),
            // Resume goes back to idle, or to busy while jobs still run.
            (Paused, Idle),
            (Paused, Busy),
            (Paused, Terminating),
            (Paused, Failed),
            (Paused, Offline),
            (Terminating, Terminated),
            (Terminating, Failed),
            (Terminating, Offline),
            // An agent that comes back (heartbeats again) starts over as
            // idle or busy.
            (Offline, Idle),
            (Offline, Busy),
            (Offline, Terminated),
            (Failed, Idle),
            (Failed, Offline),
            (Failed, Terminated),
            // Nothing leaves `terminated`: that incarnation is over. An agent
            // registering again under the id is a new incarnation (a new
            // generation), recorded as such, not a move of this table.
        ]
    };
}

impl WorkerStatus {
    /// Where an operator's resume takes a worker in this status. Resume
    /// undoes a pause and nothing else: only a paused worker resumes, to
    /// busy while it still runs shards, else idle. The table also lets busy,
    /// offline and failed workers become idle, but those moves belong to
    /// heartbeats, which report what the agent really does; a resume must
    /// not make a stopped or lost agent look available (it made a
    /// terminated worker idle, and so terminable again, with nobody left to
    /// obey). Refused otherwise, with the move it would have been.
    pub fn resumed(self, running_jobs: i32) -> Result<WorkerStatus, StateTransitionError> {
        let to = if running_jobs > 0 {
            WorkerStatus::Busy
        } else {
            WorkerStatus::Idle
        };
        if self == WorkerStatus::Paused {
            self.transition(to)
        } else {
            Err(StateTransitionError {
                machine: Self::MACHINE,
                from: self.to_string(),
                to: to.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn job_status() -> impl Strategy<Value = JobStatus> {
        proptest::sample::select(JobStatus::ALL.to_vec())
    }

    fn worker_status() -> impl Strategy<Value = WorkerStatus> {
        proptest::sample::select(WorkerStatus::ALL.to_vec())
    }

    #[test]
    fn error_text_is_the_contract_409_detail() {
        let err = JobStatus::Completed.transition(JobStatus::Cancelled).unwrap_err();
        assert_eq!(err.to_string(), "Invalid job transition: completed -> cancelled");
        let err = WorkerStatus::Terminated
            .transition(WorkerStatus::Paused)
            .unwrap_err();
        assert_eq!(err.to_string(), "Invalid worker transition: terminated -> paused");
    }

    #[test]
    fn only_a_paused_worker_resumes() {
        use WorkerStatus::*;
        assert_eq!(Paused.resumed(0), Ok(Idle));
        assert_eq!(Paused.resumed(2), Ok(Busy));
        for from in WorkerStatus::ALL.iter().filter(|s| **s != Paused) {
            let err = from.resumed(0).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("Invalid worker transition: {from} -> idle")
            );
        }
        assert_eq!(
            Terminated.resumed(0).unwrap_err().to_string(),
            "Invalid worker transition: terminated -> idle"
        );
        assert!(
            WorkerStatus::TRANSITIONS
                .iter()
                .all(|(from, _)| *from != Terminated),
            "a terminated incarnation is over"
        );
    }

    #[test]
    fn terminal_jobs_have_no_way_out_and_tables_have_no_self_loops() {
        for (from, to) in JobStatus::TRANSITIONS {
            assert!(!from.is_terminal(), "{from} is terminal but leads to {to}");
            assert_ne!(from, to);
        }
        for (from, to) in WorkerStatus::TRANSITIONS {
            assert_ne!(from, to);
        }
    }

    #[test]
    fn every_status_is_reachable_from_the_start() {
        fn reachable<S: StateMachine + std::hash::Hash>(start: S) -> std::collections::HashSet<S> {
            let mut seen = std::collections::HashSet::from([start]);
            let mut frontier = vec![start];
            while let Some(s) = frontier.pop() {
                for (from, to) in S::TRANSITIONS {
                    if *from == s && seen.insert(*to) {
                        frontier.push(*to);
                    }
                }
            }
            seen
        }
        assert_eq!(reachable(JobStatus::Pending).len(), JobStatus::ALL.len());
        assert_eq!(reachable(WorkerStatus::Idle).len(), WorkerStatus::ALL.len());
    }

    proptest! {
        /// Applying any sequence of requested transitions, accepting only
        /// those `transition` allows, never yields a pair outside the table.
        #[test]
        fn job_sequences_stay_inside_the_table(steps in proptest::collection::vec(job_status(), 0..64)) {
            let mut current = JobStatus::Pending;
            for next in steps {
                match current.transition(next) {
                    Ok(to) => {
                        prop_assert!(JobStatus::TRANSITIONS.contains(&(current, to)));
                        current = to;
                    }
                    Err(e) => {
                        prop_assert!(!JobStatus::TRANSITIONS.contains(&(current, next)));
                        prop_assert_eq!(e.from, current.to_string());
                    }
                }
            }
        }

        #[test]
        fn worker_sequences_stay_inside_the_table(steps in proptest::collection::vec(worker_status(), 0..64)) {
            let mut current = WorkerStatus::Idle;
            for next in steps {
                match current.transition(next) {
                    Ok(to) => {
                        prop_assert!(WorkerStatus::TRANSITIONS.contains(&(current, to)));
                        current = to;
                    }
                    Err(e) => {
                        prop_assert!(!WorkerStatus::TRANSITIONS.contains(&(current, next)));
                        prop_assert_eq!(e.machine, "worker");
                    }
                }
            }
        }

        /// Once a job is finished, no request moves it.
        #[test]
        fn finished_jobs_never_move(from in job_status(), to in job_status()) {
            if from.is_terminal() {
                prop_assert!(from.transition(to).is_err());
            }
        }
    }
}
