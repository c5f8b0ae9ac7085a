//! Which job queues the agent consumes. Jobs are routed by class (a pool
//! and a selector, see `orchestrator_shared::pools`) into queues of their
//! own; the controller knows which classes exist and which of them this
//! agent's pools and labels match, so the agent asks it now and then
//! (`GET /api/agents/classes`) and the broker session consumes
//! every queue named in the answer. A class first submitted while the
//! agent runs thus reaches it within one `--classes-poll-ms`.

use crate::state::State;
use orchestrator_shared::api::WorkClasses;
use orchestrator_shared::messages::Topology;
use orchestrator_shared::pools::{agent_pools, is_default_pool};
use std::sync::Arc;

/// The queues to consume before the controller has answered (and for good
/// with a controller that predates pools, which has no such route): the
/// original jobs queue if the agent serves pool `default`, else none.
pub(crate) fn initial(topology: &Topology, pools: &[String]) -> Vec<String> {
    if agent_pools(pools).iter().any(|p| is_default_pool(p)) {
        vec![topology.jobs_queue()]
    } else {
        Vec::new()
    }
}

/// The queues of the classes in `answer`, sorted; a routing key that names
/// no class (a newer controller's, say) is left out.
pub(crate) fn queues(topology: &Topology, answer: &WorkClasses) -> Vec<String> {
    let mut queues: Vec<String> = answer
        .classes
        .iter()
        .filter_map(|c| topology.class_queue(&c.routing_key))
        .collect();
    queues.sort();
    queues.dedup();
    queues
}

/// Asks the controller for this agent's classes every
/// `--classes-poll-ms`, and hands the session any queue it does not
/// consume yet. A failed request is logged and tried at the next tick.
pub(crate) async fn poll(state: Arc<State>) {
    let mut ticks = tokio::time::interval(state.config.classes_poll);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match state.client.classes().await {
            Ok(answer) => {
                let wanted = queues(&state.topology, &answer);
                state.queues.send_if_modified(|current| {
                    let added: Vec<String> =
                        wanted.iter().filter(|q| !current.contains(q)).cloned().collect();
                    if !added.is_empty() {
                        tracing::info!(queues = ?added, "new job classes to consume");
                    }
                    current.extend(added.iter().cloned());
                    !added.is_empty()
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "asking the controller for this agent's job classes failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_shared::api::WorkClass;

    #[test]
    fn an_agent_of_the_default_pool_starts_on_the_original_queue() {
        let t = Topology::new("p");
        assert_eq!(initial(&t, &[]), ["p.jobs"]);
        assert_eq!(initial(&t, &["gpu".to_owned(), "default".to_owned()]), ["p.jobs"]);
        assert!(initial(&t, &["gpu".to_owned()]).is_empty());
    }

    #[test]
    fn classes_name_their_queues_and_unknown_keys_are_left_out() {
        let class = |key: &str| WorkClass {
            routing_key: key.to_owned(),
            pool: "gpu".to_owned(),
            selector: Default::default(),
        };
        let answer = WorkClasses {
            classes: vec![class("job.gpu"), class("job"), class("weird"), class("job.gpu")],
        };
        assert_eq!(queues(&Topology::new("p"), &answer), ["p.jobs", "p.jobs.gpu"]);
    }
}
