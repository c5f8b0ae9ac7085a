//! Who may send which event. RabbitMQ refuses a message whose `user_id`
//! property differs from the user that published it, so a delivery's
//! `user_id` names its sender. An event about worker W is applied only if
//! it comes from W's own broker user (`Topology::agent_user`); a liveness
//! probe only if it comes from the controllers' broker user (the relay
//! stamps its `user_id` on everything it publishes). Anything else is
//! acknowledged and dropped, logged without its payload, and counted in
//! [`REFUSED_METRIC`]. On a shared broker login (`--insecure-shared-broker`)
//! the check is off: every sender is the same user.

use lapin::types::ShortString;
use orchestrator_shared::messages::{AgentEvent, Topology};

/// Counter of events dropped because of who sent them, by `reason`.
pub const REFUSED_METRIC: &str = "broker_events_refused_total";

/// Why an event was refused (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An agent event not published by the broker user of the worker it
    /// names (another agent's, the controller's, or none).
    NotFromItsAgent,
    /// A liveness probe not published by the controller.
    ProbeNotFromController,
}

impl Refusal {
    /// Every refusal, for showing each counter at 0 from the start.
    const ALL: [Refusal; 2] = [Refusal::NotFromItsAgent, Refusal::ProbeNotFromController];

    /// The metric label.
    pub const fn label(self) -> &'static str {
        match self {
            Refusal::NotFromItsAgent => "not_from_its_agent",
            Refusal::ProbeNotFromController => "probe_not_from_controller",
        }
    }
}

/// The senders the events consumer accepts, and the controller's own
/// broker user (which the relay stamps on what it publishes).
#[derive(Debug, Clone)]
pub struct Senders {
    /// The controller's broker user (the AMQP URL's).
    controller: ShortString,
    /// Broker names, for each worker's user.
    topology: Topology,
    /// Whether events are checked at all (off on a shared login).
    enforced: bool,
}

impl Senders {
    /// The rule for a controller publishing as `controller`; `enforced`
    /// is false only on a shared broker login.
    pub fn new(controller: ShortString, topology: Topology, enforced: bool) -> Senders {
        Senders {
            controller,
            topology,
            enforced,
        }
    }

    /// The controller's own broker user, the `user_id` of its messages.
    pub fn controller(&self) -> &ShortString {
        &self.controller
    }

    /// Whether `sender` (a delivery's `user_id`) may send `event`.
    pub fn check(&self, sender: Option<&str>, event: &AgentEvent) -> Result<(), Refusal> {
        if !self.enforced {
            return Ok(());
        }
        match event {
            AgentEvent::LivenessProbe { .. } if sender == Some(self.controller.as_str()) => Ok(()),
            AgentEvent::LivenessProbe { .. } => Err(Refusal::ProbeNotFromController),
            other if sender == Some(self.topology.agent_user(other.worker_id()).as_str()) => Ok(()),
            _ => Err(Refusal::NotFromItsAgent),
        }
    }

    /// [`Senders::check`], logging and counting a refusal; true if the
    /// event may be applied.
    pub fn admits(&self, sender: Option<&ShortString>, event: &AgentEvent) -> bool {
        let sender = sender.map(ShortString::as_str);
        match self.check(sender, event) {
            Ok(()) => true,
            Err(refusal) => {
                tracing::warn!(
                    reason = refusal.label(),
                    kind = event.kind(),
                    worker_id = event.worker_id(),
                    sender = sender.unwrap_or("<none>"),
                    "agent event refused: not from its sender; dropped"
                );
                metrics::counter!(REFUSED_METRIC, "reason" => refusal.label()).increment(1);
                false
            }
        }
    }
}

/// Shows each refusal counter at 0 before any refusal, so an alert on its
/// increase fires on the first one. Idempotent.
pub fn register_metrics() {
    metrics::describe_counter!(
        REFUSED_METRIC,
        "Agent events dropped because their sender (the delivery's user_id) may not send them."
    );
    for refusal in Refusal::ALL {
        metrics::counter!(REFUSED_METRIC, "reason" => refusal.label()).increment(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(worker_id: &str) -> AgentEvent {
        AgentEvent::Heartbeat {
            worker_id: worker_id.into(),
            running: Vec::new(),
            paused: false,
            generation: 1,
        }
    }

    fn probe(worker_id: &str) -> AgentEvent {
        AgentEvent::LivenessProbe {
            worker_id: worker_id.into(),
            since: chrono::DateTime::UNIX_EPOCH,
        }
    }

    fn senders(enforced: bool) -> Senders {
        Senders::new("ctl".into(), Topology::new("p"), enforced)
    }

    #[test]
    fn an_event_is_accepted_only_from_its_workers_user() {
        let s = senders(true);
        assert_eq!(s.check(Some("p.agent.w1"), &heartbeat("w1")), Ok(()));
        for sender in [Some("p.agent.w2"), Some("ctl"), Some("q.agent.w1"), None] {
            assert_eq!(
                s.check(sender, &heartbeat("w1")),
                Err(Refusal::NotFromItsAgent),
                "{sender:?}"
            );
        }
    }

    #[test]
    fn a_probe_is_accepted_only_from_the_controller() {
        let s = senders(true);
        assert_eq!(s.check(Some("ctl"), &probe("w1")), Ok(()));
        for sender in [Some("p.agent.w1"), None] {
            assert_eq!(
                s.check(sender, &probe("w1")),
                Err(Refusal::ProbeNotFromController)
            );
        }
    }

    #[test]
    fn on_a_shared_login_everything_passes() {
        let s = senders(false);
        assert_eq!(s.check(None, &probe("w1")), Ok(()));
        assert_eq!(s.check(Some("p.agent.w2"), &heartbeat("w1")), Ok(()));
    }
}
