//! Resource limits and isolation: how much memory, CPU and how many
//! processes one job may use (`memory_mb`, `cpu`, `max_pids` on a
//! submission and on the job), how much of each an agent offers, and which
//! protections an agent enforces. An extension of the original contract:
//! every field is optional, so clients that never send them are unchanged.

use super::error::{check_no_nul, FieldError};
use serde::{Deserialize, Serialize};

/// Smallest memory limit, in MiB: below this not even a shell starts.
pub const MIN_MEMORY_MB: i64 = 4;
/// Largest memory limit, in MiB (1 TiB).
pub const MAX_MEMORY_MB: i64 = 1_048_576;
/// Smallest CPU limit, in CPUs (10 ms of CPU time per second).
pub const MIN_CPU: f64 = 0.01;
/// Largest CPU limit, in CPUs.
pub const MAX_CPU: f64 = 1024.0;
/// Largest process limit (the kernel's own ceiling on `pid_max`).
pub const MAX_PIDS: i64 = 4_194_304;
/// Most entries in [`Isolation::disabled`].
pub const MAX_DISABLED: usize = 16;
/// Longest text in [`Isolation`], in characters.
pub const MAX_ISOLATION_TEXT: usize = 256;

/// Limits on one job's processes (on a job), or what an agent offers its
/// jobs in all (on a worker). `null` means no limit of the job's own: the
/// agent's default applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resources {
    /// Memory, in MiB (4..=1048576). A job that goes past it is killed and
    /// fails with "memory limit of N MB exceeded".
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 4, maximum = 1048576))]
    pub memory_mb: Option<i32>,
    /// CPU time, in CPUs (0.01..=1024): `0.5` is half of one core's time.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0.01, maximum = 1024))]
    pub cpu: Option<f64>,
    /// Processes and threads at once (1..=4194304); a fork past it fails.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 4194304))]
    pub max_pids: Option<i32>,
}

impl Resources {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.memory_mb.is_none() && self.cpu.is_none() && self.max_pids.is_none()
    }

    /// Every rule these values break, at `["body", <field>]`.
    pub fn problems(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_limits(
            &mut errors,
            self.memory_mb.map(i64::from),
            self.cpu,
            self.max_pids.map(i64::from),
        );
        errors
    }

    /// The values as submitted (wide integers), once they are valid.
    /// `None` if any is out of range.
    pub fn from_submitted(memory_mb: Option<i64>, cpu: Option<f64>, max_pids: Option<i64>) -> Option<Self> {
        let mut errors = Vec::new();
        check_limits(&mut errors, memory_mb, cpu, max_pids);
        if !errors.is_empty() {
            return None;
        }
        Some(Resources {
            memory_mb: memory_mb.and_then(|m| i32::try_from(m).ok()),
            cpu: cpu.map(round_cpu),
            max_pids: max_pids.and_then(|p| i32::try_from(p).ok()),
        })
    }

    /// The CPU limit in thousandths of a CPU, as it is stored.
    pub fn cpu_millis(&self) -> Option<i32> {
        self.cpu.map(|c| (c * 1000.0).round() as i32)
    }

    /// The CPU limit from its stored thousandths.
    pub fn cpu_from_millis(millis: Option<i32>) -> Option<f64> {
        millis.map(|m| f64::from(m) / 1000.0)
    }
}

/// A CPU figure kept to the thousandth it is stored at.
fn round_cpu(cpu: f64) -> f64 {
    (cpu * 1000.0).round() / 1000.0
}

/// The one rule for the three limits, on submissions, jobs and agents.
pub(crate) fn check_limits(
    errors: &mut Vec<FieldError>,
    memory_mb: Option<i64>,
    cpu: Option<f64>,
    max_pids: Option<i64>,
) {
    if memory_mb.is_some_and(|m| !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&m)) {
        errors.push(FieldError::body(
            "memory_mb",
            format!("must be between {MIN_MEMORY_MB} and {MAX_MEMORY_MB} (MiB)"),
        ));
    }
    if cpu.is_some_and(|c| !c.is_finite() || !(MIN_CPU..=MAX_CPU).contains(&c)) {
        errors.push(FieldError::body(
            "cpu",
            format!("must be between {MIN_CPU} and {MAX_CPU} (CPUs)"),
        ));
    }
    if max_pids.is_some_and(|p| !(1..=MAX_PIDS).contains(&p)) {
        errors.push(FieldError::body(
            "max_pids",
            format!("must be between 1 and {MAX_PIDS}"),
        ));
    }
}

/// Which protections an agent enforces between its jobs, itself and the
/// host, as it reported them at registration. Operators see at a glance an
/// agent that runs jobs unconfined (an unprivileged container, a host
/// without a writable cgroup hierarchy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Isolation {
    /// The user jobs run as; `null` when they run as the agent's own user
    /// (and could then read its memory and credentials).
    #[serde(default)]
    pub job_user: Option<String>,
    /// `v1` or `v2` when each job runs in a cgroup of its own (limits
    /// enforced, nothing it starts outlives it); `null` otherwise.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// Each protection that is off, in words; empty when none is.
    #[serde(default)]
    pub disabled: Vec<String>,
}

impl Isolation {
    /// Every rule of the contract this report breaks, at
    /// `["body", "isolation"]`.
    pub fn problems(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let texts: Vec<&str> = self
            .job_user
            .iter()
            .chain(self.cgroup.iter())
            .chain(self.disabled.iter())
            .map(String::as_str)
            .collect();
        let too_long = texts.iter().any(|t| t.chars().count() > MAX_ISOLATION_TEXT);
        if too_long || self.disabled.len() > MAX_DISABLED {
            errors.push(FieldError::body(
                "isolation",
                format!("at most {MAX_DISABLED} entries in disabled, texts of at most {MAX_ISOLATION_TEXT} characters"),
            ));
        }
        check_no_nul(&mut errors, "isolation", texts);
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn each_limit_out_of_range_is_named() {
        let fields = |m, c, p| {
            let mut errors = Vec::new();
            check_limits(&mut errors, m, c, p);
            errors.iter().map(FieldError::location).collect::<Vec<_>>()
        };
        assert!(fields(Some(4), Some(0.01), Some(1)).is_empty());
        assert!(fields(None, None, None).is_empty());
        assert_eq!(fields(Some(3), None, None), ["body.memory_mb"]);
        assert_eq!(fields(None, Some(f64::NAN), None), ["body.cpu"]);
        assert_eq!(fields(None, Some(0.0), Some(0)), ["body.cpu", "body.max_pids"]);
        assert_eq!(fields(Some(MAX_MEMORY_MB + 1), None, None), ["body.memory_mb"]);
    }

    #[test]
    fn an_isolation_report_is_bounded() {
        let mut report = Isolation {
            job_user: Some("nobody".into()),
            cgroup: Some("v1".into()),
            disabled: vec![],
        };
        assert!(report.problems().is_empty());
        report.disabled = vec!["x".into(); MAX_DISABLED + 1];
        assert_eq!(report.problems().len(), 1);
        report.disabled = vec!["a\0b".into()];
        assert_eq!(report.problems().len(), 1);
    }

    proptest! {
        #[test]
        fn valid_cpu_survives_its_storage(millis in 10i32..=1_024_000) {
            let limits = Resources::from_submitted(None, Some(f64::from(millis) / 1000.0), None)
                .expect("in range");
            prop_assert_eq!(limits.cpu_millis(), Some(millis));
            prop_assert_eq!(Resources::cpu_from_millis(limits.cpu_millis()), limits.cpu);
        }
    }
}
