//! Job and worker statuses as they appear on the wire, and which job statuses
//! are final.

use serde_json::Value;

/// Every job status of the contract, in the order a job usually goes through them.
pub const JOB_STATUSES: [&str; 7] = [
    "pending",
    "queued",
    "running",
    "completed",
    "failed",
    "cancelled",
    "timed_out",
];

/// Job statuses after which a job never changes again (a failed job with
/// retries left goes back to `queued` instead of becoming `failed`).
pub const TERMINAL_JOB_STATUSES: [&str; 4] = ["completed", "failed", "cancelled", "timed_out"];

/// Every worker status of the contract.
pub const WORKER_STATUSES: [&str; 7] = [
    "idle",
    "busy",
    "paused",
    "terminating",
    "terminated",
    "failed",
    "offline",
];

/// Whether a job in `status` has ended for good.
pub fn is_terminal(status: &str) -> bool {
    TERMINAL_JOB_STATUSES
        .iter()
        .any(|terminal| terminal.eq_ignore_ascii_case(status))
}

/// Whether a job in `status` ended successfully.
pub fn is_success(status: &str) -> bool {
    status.eq_ignore_ascii_case("completed")
}

/// The `status` field of a job (or of anything else that has one).
pub fn status_of(value: &Value) -> Option<&str> {
    value.get("status").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn terminal_statuses_are_the_four_final_ones() {
        for status in ["completed", "failed", "cancelled", "timed_out", "COMPLETED"] {
            assert!(is_terminal(status), "{status}");
        }
        for status in ["pending", "queued", "running", "", "unknown"] {
            assert!(!is_terminal(status), "{status}");
        }
    }

    #[test]
    fn every_terminal_status_is_a_job_status() {
        assert!(TERMINAL_JOB_STATUSES.iter().all(|s| JOB_STATUSES.contains(s)));
    }

    #[test]
    fn only_completed_is_success() {
        assert!(is_success("completed"));
        assert!(!is_success("failed"));
        assert!(!is_success("timed_out"));
    }

    #[test]
    fn status_of_reads_the_status_field() {
        assert_eq!(status_of(&json!({"status": "running"})), Some("running"));
        assert_eq!(status_of(&json!({"status": 3})), None);
        assert_eq!(status_of(&json!([])), None);
    }
}
