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

    /// The queue of the job class whose work routing key is `routing_key`
    /// (see [`crate::pools::JobClass::routing_key`]): [`Self::jobs_queue`]
    /// for the default class, `<prefix>.jobs.<pool>[.<selector hash>]`
    /// otherwise; `None` for a key that names no class.
    pub fn class_queue(&self, routing_key: &str) -> Option<String> {
        crate::pools::class_queue_suffix(routing_key).map(|suffix| format!("{}{suffix}", self.jobs_queue()))
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

    /// The broker user of one agent: the controller creates it when the
    /// agent registers, RabbitMQ stamps it (as `user_id`) on every event
    /// the agent publishes, and the controller applies an event about a
    /// worker only when it comes from that worker's user.
    pub fn agent_user(&self, worker_id: &str) -> String {
        format!("{}.agent.{worker_id}", self.prefix)
    }
}

/// What an operator (or a cancel) asks of one agent; it travels inside a
/// [`ControlMessage`].
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

impl ControlCommand {
    /// The command's wire name (its `command` tag), for logs and the
    /// reasons of recorded worker events.
    pub const fn name(&self) -> &'static str {
        match self {
            ControlCommand::Pause => "pause",
            ControlCommand::Resume => "resume",
            ControlCommand::Terminate => "terminate",
            ControlCommand::CancelJob { .. } => "cancel_job",
        }
    }
}

/// A [`ControlCommand`] as it travels to one agent: the command's fields
/// and, beside them, the registration generation of the worker it is meant
/// for (`{"command": "terminate", "generation": 3}`).
///
/// Why: an agent's control queue is named by its worker id and is durable,
/// so it outlives the agent. Without the generation, a command queued for
/// an agent that has since died (a `Terminate` sent while it was down) is
/// consumed by the next agent to start under that id, which then obeys it.
/// The controller stamps every message with the worker's generation at the
/// time it is queued, and [`ControlMessage::is_stale_for`] tells an agent
/// which messages predate its own registration.
///
/// Compatibility: the generation is an extra field of the same object, so
/// an agent that predates it reads the command and ignores the field; a
/// message without one (from a controller that predates it) is not stale
/// for anyone, i.e. it is obeyed as before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlMessage {
    /// What the agent is asked to do.
    #[serde(flatten)]
    pub command: ControlCommand,
    /// Registration generation of the worker when the message was queued;
    /// `None` only from a controller that predates generations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

impl ControlMessage {
    /// Whether this message was meant for an earlier incarnation of the
    /// worker than the one registered as `own` generation: such a message
    /// must be dropped, not obeyed. A message without a generation is never
    /// stale (an older controller sent it; obeying it is what agents always
    /// did). A message for a *later* generation is not stale either: the
    /// controller has seen a newer registration of this id than the agent's
    /// own answer (a retried registration whose first answer was lost), and
    /// the controller's view wins.
    pub fn is_stale_for(&self, own: i64) -> bool {
        self.generation.is_some_and(|g| g < own)
    }
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
        /// The registration generation of the agent's incarnation (0 from
        /// an agent that predates generations): a heartbeat of an earlier
        /// incarnation, applied late, changes nothing.
        #[serde(default)]
        generation: i64,
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
        /// The registration generation of the incarnation that stopped (0
        /// from an agent that predates generations): a late `Stopped` of an
        /// earlier incarnation must not terminate the current one.
        #[serde(default)]
        generation: i64,
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

impl AgentEvent {
    /// The worker the event is about (for a probe, the silent one).
    pub fn worker_id(&self) -> &str {
        match self {
            AgentEvent::Heartbeat { worker_id, .. }
            | AgentEvent::ShardFinished { worker_id, .. }
            | AgentEvent::Stopped { worker_id, .. }
            | AgentEvent::LivenessProbe { worker_id, .. } => worker_id,
        }
    }

    /// The event's wire name (its `type` tag), for logs and metrics.
    pub const fn kind(&self) -> &'static str {
        match self {
            AgentEvent::Heartbeat { .. } => "heartbeat",
            AgentEvent::ShardFinished { .. } => "shard_finished",
            AgentEvent::Stopped { .. } => "stopped",
            AgentEvent::LivenessProbe { .. } => "liveness_probe",
        }
    }
}

/// Most events one message may carry. An agent gathers the reports that
/// finish while its previous message waits for its confirm (see the
/// agent's `reports`), so a busy agent sends a few messages of many
/// reports rather than one message each; the bound keeps one message's
/// work, and what one malformed message can make the controller parse, small.
pub const MAX_EVENTS_PER_MESSAGE: usize = 256;

/// Most bytes of a job's stdout, and of its stderr, that a shard report
/// carries and the controller stores (the last ones). Agents refuse a
/// larger `--output-tail-bytes`; the controller keeps only the last this
/// many of a longer tail, so no agent can make one report's row, or what
/// every reader of the job's output fetches, grow without bound. The
/// whole output, when streamed, is bounded by the agent's output cap
/// instead.
pub const MAX_TAIL_BYTES: usize = 1024 * 1024;

/// The last `max` bytes of `text` or fewer: the suffix that starts at the
/// first character boundary at or after `text.len() - max` (so a
/// character is never cut in two).
pub fn last_bytes(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Why a message on the events queue holds no events the controller can
/// apply.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// Not one event, nor an array of events.
    #[error("not an agent event or an array of them: {0}")]
    Malformed(#[from] serde_json::Error),
    /// An array with no event, or more than [`MAX_EVENTS_PER_MESSAGE`].
    #[error("a message must carry 1 to {MAX_EVENTS_PER_MESSAGE} events, not {0}")]
    Count(usize),
}

/// The body of an events message: one event as an object (what every
/// agent sends alone, and what a controller that predates batches
/// takes), several as a JSON array of them, in the order they happened.
pub fn encode_events(events: &[AgentEvent]) -> Result<Vec<u8>, serde_json::Error> {
    match events {
        [one] => serde_json::to_vec(one),
        many => serde_json::to_vec(many),
    }
}

/// The events of a message [`encode_events`] wrote: one, or the array's
/// (1..=[`MAX_EVENTS_PER_MESSAGE`] of them) in order.
pub fn decode_events(body: &[u8]) -> Result<Vec<AgentEvent>, EventsError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'[') {
        return Ok(vec![serde_json::from_slice(body)?]);
    }
    let events: Vec<AgentEvent> = serde_json::from_slice(body)?;
    if events.is_empty() || events.len() > MAX_EVENTS_PER_MESSAGE {
        return Err(EventsError::Count(events.len()));
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopped(worker: &str) -> AgentEvent {
        AgentEvent::Stopped {
            worker_id: worker.into(),
            generation: 3,
        }
    }

    #[test]
    fn last_bytes_keeps_the_end_and_never_cuts_a_character() {
        assert_eq!(last_bytes("abcdef", 3), "def");
        assert_eq!(last_bytes("abc", 10), "abc");
        assert_eq!(last_bytes("abc", 0), "");
        // "é" is two bytes: keeping 3 of "aéb" starts after the cut one.
        assert_eq!(last_bytes("xéb", 3), "éb");
        assert_eq!(last_bytes("xéb", 2), "b");
    }

    proptest::proptest! {
        #[test]
        fn last_bytes_is_the_longest_suffix_that_fits(text in ".{0,40}", max in 0usize..64) {
            let kept = last_bytes(&text, max);
            proptest::prop_assert!(text.ends_with(kept));
            proptest::prop_assert!(kept.len() <= max);
            // One more character would not fit (or there is none).
            let longer = text[..text.len() - kept.len()].chars().next_back();
            proptest::prop_assert!(longer.is_none_or(|c| kept.len() + c.len_utf8() > max));
        }
    }

    #[test]
    fn one_event_travels_as_an_object_and_several_as_an_array_in_order() {
        let one = encode_events(&[stopped("a")]).unwrap();
        assert_eq!(one[0], b'{', "an old controller reads a lone event as before");
        assert_eq!(serde_json::from_slice::<AgentEvent>(&one).unwrap(), stopped("a"));
        assert_eq!(decode_events(&one).unwrap(), vec![stopped("a")]);
        let many = vec![stopped("a"), stopped("b"), stopped("c")];
        let body = encode_events(&many).unwrap();
        assert_eq!(body[0], b'[');
        assert_eq!(decode_events(&body).unwrap(), many);
        assert_eq!(
            decode_events(b" \n[{\"type\":\"stopped\",\"worker_id\":\"a\"}]")
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn empty_oversized_or_foreign_bodies_are_refused() {
        assert!(matches!(decode_events(b"[]"), Err(EventsError::Count(0))));
        let too_many = vec![stopped("a"); MAX_EVENTS_PER_MESSAGE + 1];
        let body = serde_json::to_vec(&too_many).unwrap();
        assert!(
            matches!(decode_events(&body), Err(EventsError::Count(n)) if n == MAX_EVENTS_PER_MESSAGE + 1)
        );
        let most = serde_json::to_vec(&vec![stopped("a"); MAX_EVENTS_PER_MESSAGE]).unwrap();
        assert_eq!(decode_events(&most).unwrap().len(), MAX_EVENTS_PER_MESSAGE);
        for bad in [
            &b""[..],
            b"{}",
            b"[1]",
            b"[{\"type\":\"stopped\"}]",
            b"null",
            b"\xff",
        ] {
            assert!(
                matches!(decode_events(bad), Err(EventsError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn control_commands_are_tagged() {
        let c = ControlCommand::CancelJob { job_id: Uuid::nil() };
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["command"], "cancel_job");
        assert_eq!(
            serde_json::to_string(&ControlCommand::Pause).unwrap(),
            r#"{"command":"pause"}"#
        );
        assert_eq!(serde_json::from_value::<ControlCommand>(json.clone()).unwrap(), c);
        assert_eq!(json["command"], c.name());
        for c in [
            ControlCommand::Pause,
            ControlCommand::Resume,
            ControlCommand::Terminate,
        ] {
            assert_eq!(serde_json::to_value(&c).unwrap()["command"], c.name());
        }
    }

    #[test]
    fn control_messages_carry_the_generation_beside_the_command() {
        let m = ControlMessage {
            command: ControlCommand::Terminate,
            generation: Some(3),
        };
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json, serde_json::json!({"command": "terminate", "generation": 3}));
        assert_eq!(serde_json::from_value::<ControlMessage>(json).unwrap(), m);
        let cancel = ControlMessage {
            command: ControlCommand::CancelJob { job_id: Uuid::nil() },
            generation: Some(1),
        };
        let json = serde_json::to_string(&cancel).unwrap();
        assert_eq!(serde_json::from_str::<ControlMessage>(&json).unwrap(), cancel);
    }

    #[test]
    fn control_messages_stay_readable_across_versions() {
        // An agent that predates generations reads the command and ignores
        // the extra field.
        let new = r#"{"command":"pause","generation":2}"#;
        assert_eq!(
            serde_json::from_str::<ControlCommand>(new).unwrap(),
            ControlCommand::Pause
        );
        let job_id = Uuid::new_v4();
        let new = format!(r#"{{"command":"cancel_job","job_id":"{job_id}","generation":2}}"#);
        assert_eq!(
            serde_json::from_str::<ControlCommand>(&new).unwrap(),
            ControlCommand::CancelJob { job_id }
        );
        // A controller that predates generations sends none: never stale.
        let old: ControlMessage = serde_json::from_str(r#"{"command":"terminate"}"#).unwrap();
        assert_eq!(old.generation, None);
        assert!(!old.is_stale_for(7));
    }

    #[test]
    fn only_messages_for_an_earlier_generation_are_stale() {
        let at = |generation| ControlMessage {
            command: ControlCommand::Terminate,
            generation: Some(generation),
        };
        assert!(at(1).is_stale_for(2));
        assert!(!at(2).is_stale_for(2));
        assert!(!at(3).is_stale_for(2));
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
        assert_eq!(json["type"], e.kind());
        assert_eq!(e.worker_id(), "w");
        assert_eq!(json["outcome"], "timed_out");
        assert_eq!(serde_json::from_value::<AgentEvent>(json).unwrap(), e);
        let t = Topology::new("t1");
        assert_eq!(t.exchange(WORK_EXCHANGE), "t1.work");
        assert_eq!(t.control_queue("w-1"), "t1.control.w-1");
        assert_eq!(t.events_queue(), "t1.events");
        assert_eq!(t.agent_user("w-1"), "t1.agent.w-1");
        assert_eq!(t.class_queue(WORK_ROUTING_KEY).as_deref(), Some("t1.jobs"));
        assert_eq!(t.class_queue("job.gpu").as_deref(), Some("t1.jobs.gpu"));
        assert_eq!(t.class_queue("control"), None);
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
