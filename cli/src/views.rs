//! How each kind of answer is shown to people: which fields, in which order,
//! under which headers. Pure functions over the API's JSON.

use crate::render::{cell, job_output, key_values, table, Column};
use serde_json::Value;

/// A job's fields in the contract's order.
pub const JOB_FIELDS: &[&str] = &[
    "job_id",
    "status",
    "task_description",
    "required_workers",
    "command",
    "priority",
    "labels",
    "attempts",
    "max_retries",
    "timeout_seconds",
    "idempotency_key",
    "submitted_by",
    "assigned_workers",
    "created_at",
    "started_at",
    "finished_at",
    "exit_code",
    "error",
];

/// Columns of the job list.
pub const JOB_COLUMNS: &[Column] = &[
    ("JOB_ID", "job_id"),
    ("STATUS", "status"),
    ("PRIO", "priority"),
    ("WORKERS", "required_workers"),
    ("ATTEMPTS", "attempts"),
    ("CREATED", "created_at"),
    ("TASK", "task_description"),
];

/// Columns of a job's transitions.
pub const EVENT_COLUMNS: &[Column] = &[
    ("AT", "at"),
    ("FROM", "from"),
    ("TO", "to"),
    ("WORKER", "worker_id"),
    ("REASON", "reason"),
];

/// A worker's fields in the contract's order.
pub const WORKER_FIELDS: &[&str] = &[
    "worker_id",
    "status",
    "hostname",
    "capacity",
    "running_jobs",
    "labels",
    "version",
    "registered_at",
    "last_heartbeat_at",
];

/// Columns of the worker list.
pub const WORKER_COLUMNS: &[Column] = &[
    ("WORKER_ID", "worker_id"),
    ("STATUS", "status"),
    ("HOST", "hostname"),
    ("CAPACITY", "capacity"),
    ("RUNNING", "running_jobs"),
    ("VERSION", "version"),
    ("LAST_HEARTBEAT", "last_heartbeat_at"),
];

/// The supervisor's metrics in a readable order.
pub const METRICS_FIELDS: &[&str] = &[
    "workers_by_status",
    "jobs_by_status",
    "queue_depth",
    "completed_last_minute",
    "failed_last_minute",
    "submit_to_start_seconds",
    "start_to_finish_seconds",
];

/// Quota fields in the contract's order.
pub const QUOTA_FIELDS: &[&str] = &[
    "max_workers",
    "allocated_workers",
    "available_workers",
    "max_concurrent_jobs",
    "running_jobs",
    "max_queued_jobs",
    "queued_jobs",
];

/// Allocation fields in the contract's order.
pub const ALLOCATION_FIELDS: &[&str] = &["allocation_id", "status", "workers", "job_id", "expires_at"];

/// Columns of the per-user usage.
pub const USAGE_COLUMNS: &[Column] = &[
    ("USER", "username"),
    ("ALLOCATED_WORKERS", "allocated_workers"),
    ("RUNNING_JOBS", "running_jobs"),
    ("WORKER_SECONDS", "worker_seconds"),
];

/// Fields of `GET /api/auth/me`.
pub const ME_FIELDS: &[&str] = &["username", "user_id", "scopes"];

/// The array under `key` (or the value itself when it is an array) as a
/// table, `empty` when there are no rows; key-value lines for any other shape.
pub fn list_of(value: &Value, key: &str, columns: &[Column], empty: &str) -> String {
    match value
        .get(key)
        .and_then(Value::as_array)
        .or_else(|| value.as_array())
    {
        Some(rows) if rows.is_empty() => empty.to_owned(),
        Some(rows) => table(columns, rows),
        None => key_values(value, &[]),
    }
}

/// One job as key-value lines.
pub fn job(value: &Value) -> String {
    key_values(value, JOB_FIELDS)
}

/// One worker as key-value lines.
pub fn worker(value: &Value) -> String {
    key_values(value, WORKER_FIELDS)
}

/// How a waited-for job ended, its error if any, then its output.
pub fn outcome(job: &Value, output: &Value) -> String {
    let mut text = format!("job {} {}", cell(job.get("job_id")), cell(job.get("status")));
    if let Some(error) = job.get("error").filter(|e| !e.is_null()) {
        text.push_str(&format!("\nerror: {}", cell(Some(error))));
    }
    text.push('\n');
    text.push_str(&job_output(output));
    text
}

/// What `login` says: who, where, for how long, and where the token went.
pub fn login(answer: &Value, username: &str, url: &str, path: &str) -> String {
    let lifetime = answer
        .get("expires_in")
        .and_then(Value::as_u64)
        .map_or_else(String::new, |secs| format!(" for {secs} s"));
    format!(
        "logged in to {url} as {username}; token valid{lifetime}, scopes: {}\nsaved to {path}",
        cell(answer.get("scopes"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn list_of_renders_rows_or_the_empty_message() {
        let page = json!({"jobs": [{"job_id": "j1", "status": "queued"}], "next_cursor": null});
        let text = list_of(
            &page,
            "jobs",
            &[("JOB_ID", "job_id"), ("STATUS", "status")],
            "no jobs",
        );
        assert_eq!(text, "JOB_ID  STATUS\nj1      queued");
        assert_eq!(
            list_of(&json!({"jobs": []}), "jobs", JOB_COLUMNS, "no jobs"),
            "no jobs"
        );
        let bare = json!([{"username": "alice", "worker_seconds": 12.25}]);
        assert!(list_of(&bare, "users", USAGE_COLUMNS, "-").starts_with("USER "));
        assert_eq!(
            list_of(&json!({"total": 0}), "workers", WORKER_COLUMNS, "-"),
            "total: 0"
        );
    }

    #[test]
    fn job_lines_follow_the_contract_order() {
        let value =
            json!({"status": "running", "job_id": "j1", "command": ["sh", "-c", "echo hi"], "extra": 1});
        assert_eq!(
            job(&value),
            "job_id:  j1\nstatus:  running\ncommand: sh -c 'echo hi'\nextra:   1"
        );
    }

    #[test]
    fn outcome_shows_status_error_and_output() {
        let finished = json!({"job_id": "j1", "status": "failed", "error": "exit code 3"});
        let output = json!({"stdout": "", "stderr": "boom\n", "exit_code": 3});
        assert_eq!(
            outcome(&finished, &output),
            "job j1 failed\nerror: exit code 3\n== stdout ==\n(empty)\n== stderr ==\nboom\nexit code: 3"
        );
        let done = json!({"job_id": "j2", "status": "completed", "error": null});
        assert!(outcome(&done, &json!({})).starts_with("job j2 completed\n== stdout =="));
    }

    #[test]
    fn login_message_never_shows_the_token() {
        let answer = json!({"access_token": "secret", "expires_in": 3600, "scopes": ["jobs:write", "admin"]});
        let text = login(&answer, "alice", "http://h:8000", "/c.json");
        assert_eq!(
            text,
            "logged in to http://h:8000 as alice; token valid for 3600 s, scopes: jobs:write admin\nsaved to /c.json"
        );
    }
}
