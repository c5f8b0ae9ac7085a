//! The kinds of job the soak submits, what each is asked to do, and the
//! final status each must end in whatever the faults.

use serde_json::{json, Value};

/// One kind of job in the soak's mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `/bin/true`: completes.
    Noop,
    /// Sleeps 1 to 5 s: completes.
    Sleep,
    /// Fails its first attempt and succeeds on the next: completes.
    FailsOnce,
    /// Always fails, one retry: ends `failed`.
    AlwaysFails,
    /// Three shards on three agents: completes.
    Sharded,
    /// Sleeps a minute and is cancelled a second after submission.
    Cancelled,
    /// Sleeps a minute with a timeout of 2 s: ends `timed_out`.
    TimesOut,
}

/// Every kind, in the order of the report.
pub const ALL: [Kind; 7] = [
    Kind::Noop,
    Kind::Sleep,
    Kind::FailsOnce,
    Kind::AlwaysFails,
    Kind::Sharded,
    Kind::Cancelled,
    Kind::TimesOut,
];

/// Retries for the kinds that must complete: enough that agents lost
/// under them (each loss costs an attempt) never exhaust them.
const RETRIES: u32 = 8;

impl Kind {
    /// The kind for a draw `n` in 0..100: mostly no-ops and sleeps.
    pub fn pick(n: u32) -> Kind {
        match n {
            0..=34 => Kind::Noop,
            35..=59 => Kind::Sleep,
            60..=69 => Kind::FailsOnce,
            70..=77 => Kind::AlwaysFails,
            78..=87 => Kind::Sharded,
            88..=93 => Kind::Cancelled,
            _ => Kind::TimesOut,
        }
    }

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Noop => "no-op",
            Kind::Sleep => "sleep 1-5 s",
            Kind::FailsOnce => "fails once",
            Kind::AlwaysFails => "always fails",
            Kind::Sharded => "3 shards",
            Kind::Cancelled => "cancelled",
            Kind::TimesOut => "times out",
        }
    }

    /// The submission body (`sleep_s` is used by the sleeping kind;
    /// `key` makes a retried submission idempotent).
    pub fn body(self, sleep_s: u32, key: &str) -> Value {
        let sh = |script: &str| json!(["/bin/sh", "-c", script]);
        let (command, retries, extra) = match self {
            Kind::Noop => (json!(["/bin/true"]), RETRIES, json!({})),
            Kind::Sleep => (sh(&format!("sleep {sleep_s}")), RETRIES, json!({})),
            Kind::FailsOnce => (sh("test \"$ATTEMPT\" -gt 1"), RETRIES, json!({})),
            Kind::AlwaysFails => (json!(["/bin/false"]), 1, json!({})),
            Kind::Sharded => (sh("sleep 1"), RETRIES, json!({"required_workers": 3})),
            Kind::Cancelled => (sh("sleep 60"), RETRIES, json!({})),
            Kind::TimesOut => (sh("sleep 60"), 0, json!({"timeout_seconds": 2})),
        };
        let mut body = json!({
            "task_description": format!("soak {}", self.name()),
            "command": command,
            "max_retries": retries,
            "idempotency_key": key,
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    }

    /// Whether `status` (with the reason of the job's last event) is the
    /// end this kind implies. A job whose last attempt lost its agent ends
    /// `failed` when it has no retries left: the timing-out kind has none,
    /// and that end is right for it too.
    pub fn accepts(self, status: &str, last_reason: &str) -> bool {
        match self {
            Kind::AlwaysFails => status == "failed",
            Kind::Cancelled => status == "cancelled",
            Kind::TimesOut => status == "timed_out" || status == "failed" && last_reason.ends_with(" lost"),
            _ => status == "completed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_draw_picks_a_kind_and_every_kind_is_drawn() {
        let drawn: std::collections::HashSet<Kind> = (0..100).map(Kind::pick).collect();
        assert_eq!(drawn.len(), ALL.len());
    }

    #[test]
    fn bodies_carry_the_kinds_settings() {
        let b = Kind::Sharded.body(0, "k1");
        assert_eq!(b["required_workers"], 3);
        assert_eq!(b["idempotency_key"], "k1");
        assert_eq!(Kind::TimesOut.body(0, "k")["timeout_seconds"], 2);
        assert_eq!(Kind::Sleep.body(4, "k")["command"][2], "sleep 4");
    }

    #[test]
    fn a_timing_out_job_may_end_failed_only_through_a_lost_agent() {
        assert!(Kind::TimesOut.accepts("failed", "worker a-1 lost"));
        assert!(!Kind::TimesOut.accepts("failed", "exit code 1"));
        assert!(!Kind::Noop.accepts("failed", "worker a-1 lost"));
    }
}
