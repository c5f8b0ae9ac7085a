//! The controller's resident memory sampled through the run, to show
//! whether anything on the job path grows with the number of jobs.

use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the controller's RSS is read.
pub const EVERY: Duration = Duration::from_secs(2);

/// A task reading one process's RSS every [`EVERY`] until finished.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<f64>>,
}

impl Sampler {
    /// Starts sampling process `pid` (`self` for this one).
    pub fn start(pid: &str) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let path = format!("/proc/{pid}/status");
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                samples.push(rss_mib(&path));
                tokio::time::sleep(EVERY).await;
            }
            samples.push(rss_mib(&path));
            samples
        });
        Sampler { stop, task }
    }

    /// Stops sampling; answers the samples (MiB) and a summary: the peak,
    /// the last sample, and the range over the run's second half (flat
    /// when nothing grows with the jobs done).
    pub async fn finish(self) -> Value {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.task.await.unwrap_or_default();
        let second_half = &samples[samples.len() / 2..];
        let min = second_half.iter().copied().fold(f64::INFINITY, f64::min);
        let max = |s: &[f64]| s.iter().copied().fold(0.0, f64::max);
        json!({
            "every_seconds": EVERY.as_secs(),
            "peak": max(&samples),
            "last": samples.last(),
            "second_half_min": min.is_finite().then_some(min),
            "second_half_max": max(second_half),
            "samples": samples,
        })
    }
}

/// The summary line of the report's `controller_rss_mib`.
pub fn print_summary(report: &Value) {
    let rss = &report["controller_rss_mib"];
    let mib = |key: &str| {
        rss[key]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
    };
    println!(
        "controller RSS MiB{}: peak {}, second half of the run {} to {}, at the end {}",
        if report["controller"]["note"].is_null() {
            ""
        } else {
            " (with the load generator)"
        },
        mib("peak"),
        mib("second_half_min"),
        mib("second_half_max"),
        mib("last")
    );
}

/// VmRSS of the process whose status file is at `path`, in MiB (0 when
/// it cannot be read).
fn rss_mib(path: &str) -> f64 {
    let status = std::fs::read_to_string(path).unwrap_or_default();
    status_kib(&status, "VmRSS:") as f64 / 1024.0
}

/// The figure (KiB) of the line of `/proc/PID/status` text `status` that
/// starts with `key` (e.g. `VmRSS:`), or 0.
pub fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
