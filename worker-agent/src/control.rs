//! Commands from the controller on the agent's own control queue: pause,
//! resume, terminate, cancel a job. Each one only flips shared state (the
//! session loop reacts to the switches at once), so handling is immediate;
//! the message is acknowledged after.

use crate::state::State;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use orchestrator_shared::messages::ControlCommand;

/// Applies one control message and settles it: acknowledged when handled,
/// rejected (without requeue) when it is not a command.
pub async fn handle(state: &State, delivery: Delivery) {
    let result = match serde_json::from_slice::<ControlCommand>(&delivery.data) {
        Ok(command) => {
            apply(state, command);
            delivery.ack(BasicAckOptions::default()).await
        }
        Err(e) => {
            tracing::warn!(error = %e, "malformed control message; dropping it");
            delivery.reject(BasicRejectOptions { requeue: false }).await
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "settling a control message failed; it may come again");
    }
}

/// What a command changes.
pub fn apply(state: &State, command: ControlCommand) {
    match command {
        ControlCommand::Pause => {
            tracing::info!("pause requested: taking no new work");
            state.paused.send_replace(true);
        }
        ControlCommand::Resume => {
            tracing::info!("resume requested: taking work again");
            state.paused.send_replace(false);
        }
        ControlCommand::Terminate => {
            tracing::info!("terminate requested: draining");
            state.stopping.send_replace(true);
        }
        ControlCommand::CancelJob { job_id } => {
            let n = state.cancel_job(job_id);
            tracing::info!(%job_id, running_shards = n, "cancel requested");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;
    use crate::runner::CancelHandle;
    use orchestrator_shared::messages::RunningShard;
    use std::sync::Arc;

    #[test]
    fn commands_flip_the_switches_and_cancel_jobs() {
        let config = AgentConfig::try_parse_from(["worker-agent", "--agent-token=t", "--worker-id=w"]);
        let state = Arc::new(State::new(config.unwrap()).unwrap());
        apply(&state, ControlCommand::Pause);
        assert!(*state.paused.borrow());
        apply(&state, ControlCommand::Resume);
        assert!(!*state.paused.borrow());
        let job_id = uuid::Uuid::new_v4();
        let cancel = CancelHandle::new();
        let shard = RunningShard {
            job_id,
            attempt: 1,
            shard_index: 0,
        };
        let _running = state.track(shard, cancel.clone());
        apply(&state, ControlCommand::CancelJob { job_id });
        assert!(cancel.is_cancelled());
        assert!(!state.is_stopping());
        apply(&state, ControlCommand::Terminate);
        assert!(state.is_stopping());
    }
}
