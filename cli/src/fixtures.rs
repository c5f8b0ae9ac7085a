//! Typed answers for the unit tests, as the controller would send them.

use chrono::{DateTime, Utc};
use orchestrator_shared::api::{Job, JobOutput, Worker};
use orchestrator_shared::{JobStatus, WorkerStatus};
use uuid::Uuid;

/// The placement flags `submit` and `schedules create` share: pool `gpu`,
/// selector `zone=eu-1,os=linux`.
pub const PLACEMENT_FLAGS: [&str; 6] = [
    "--pool",
    "gpu",
    "--selector",
    "zone=eu-1",
    "--selector",
    "os=linux",
];

/// A fixed instant with a fraction of a second (as the controller sends them).
pub fn at() -> DateTime<Utc> {
    "2026-11-05T10:00:00.123456Z".parse().unwrap_or_default()
}

/// A job in `status`, with every optional field empty.
pub fn job(status: JobStatus) -> Job {
    Job {
        job_id: Uuid::nil(),
        status,
        task_description: "train".into(),
        required_workers: 1,
        command: None,
        priority: 5,
        labels: Default::default(),
        attempts: 0,
        max_retries: 0,
        timeout_seconds: None,
        idempotency_key: None,
        submitted_by: Uuid::nil(),
        assigned_workers: Vec::new(),
        created_at: at(),
        started_at: None,
        finished_at: None,
        exit_code: None,
        error: None,
        waiting_for: None,
        limits: Default::default(),
        schedule_id: None,
        pool: "default".into(),
        selector: Default::default(),
        depends_on: Vec::new(),
        run_on_failure: false,
    }
}

/// An idle worker `w1`.
pub fn worker() -> Worker {
    Worker {
        worker_id: "w1".into(),
        status: WorkerStatus::Idle,
        hostname: "host-1".into(),
        capacity: 2,
        running_jobs: 0,
        labels: Default::default(),
        version: "0.1.0".into(),
        registered_at: at(),
        last_heartbeat_at: at(),
        generation: 1,
        resources: Default::default(),
        isolation: None,
        pools: vec!["default".into()],
    }
}

/// The output of a job that has not run.
pub fn output() -> JobOutput {
    JobOutput {
        job_id: Uuid::nil(),
        status: JobStatus::Queued,
        stdout: None,
        stderr: None,
        exit_code: None,
        attempt: None,
        shard: 0,
        stdout_bytes: 0,
        stderr_bytes: 0,
        truncated: false,
    }
}
