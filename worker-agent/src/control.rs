//! Commands from the controller on the agent's own control queue: pause,
//! resume, terminate, cancel a job. Each one only flips shared state (the
//! session loop reacts to the switches at once), so handling is immediate;
//! the message is acknowledged after. The queue is named by the worker id
//! and outlives agents, so it may hold messages queued for an earlier
//! incarnation (a `Terminate` sent while the previous agent was down):
//! those carry an older generation than this agent's registration and are
//! acknowledged and dropped, never obeyed.

use crate::state::State;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use orchestrator_shared::messages::{ControlCommand, ControlMessage};

/// Applies one control message and settles it: acknowledged when handled
/// or dropped as stale, rejected (without requeue) when it is not a command.
pub async fn handle(state: &State, delivery: Delivery) {
    let result = match serde_json::from_slice::<ControlMessage>(&delivery.data) {
        Ok(message) => {
            obey_unless_stale(state, message);
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

/// Applies `message` unless it was meant for an earlier incarnation of this
/// worker; returns whether it applied it.
pub fn obey_unless_stale(state: &State, message: ControlMessage) -> bool {
    let own = state.generation();
    if message.is_stale_for(own) {
        tracing::info!(
            command = message.command.name(),
            message_generation = message.generation,
            own_generation = own,
            "control message for an earlier incarnation of this worker; dropping it"
        );
        return false;
    }
    apply(state, message.command);
    true
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
    use crate::runner::CancelHandle;
    use orchestrator_shared::messages::RunningShard;

    #[test]
    fn commands_flip_the_switches_and_cancel_jobs() {
        let state = crate::state::tests::state();
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

    fn at(command: ControlCommand, generation: Option<i64>) -> ControlMessage {
        ControlMessage { command, generation }
    }

    #[test]
    fn a_terminate_for_an_earlier_incarnation_is_dropped() {
        let state = crate::state::tests::state();
        state.set_generation(2);
        assert!(!obey_unless_stale(&state, at(ControlCommand::Terminate, Some(1))));
        assert!(!state.is_stopping(), "a stale terminate must not stop the agent");
        assert!(!obey_unless_stale(&state, at(ControlCommand::Pause, Some(1))));
        assert!(!*state.paused.borrow());
        assert!(obey_unless_stale(&state, at(ControlCommand::Pause, Some(2))));
        assert!(*state.paused.borrow());
        // No generation: a controller that predates them; obeyed as before.
        assert!(obey_unless_stale(&state, at(ControlCommand::Resume, None)));
        assert!(!*state.paused.borrow());
        assert!(obey_unless_stale(&state, at(ControlCommand::Terminate, Some(3))));
        assert!(state.is_stopping());
    }
}
