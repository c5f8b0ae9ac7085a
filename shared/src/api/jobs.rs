//! `/api/jobs*`: what a submission may hold, and how jobs, their pages,
//! transitions and output look.

use super::error::{check_range, FieldError};
use super::{present, Labels};
use crate::JobStatus;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest task description, in characters.
pub const MAX_DESCRIPTION: usize = 10_000;
/// Most shards of one job.
pub const MAX_WORKERS: i64 = 64;
/// Shards of a job that does not say.
pub const DEFAULT_WORKERS: i64 = 1;
/// Highest priority (0 is the lowest); the broker's priority range.
pub const MAX_PRIORITY: i64 = 9;
/// Priority of a job that does not say.
pub const DEFAULT_PRIORITY: i64 = 5;
/// Longest per-attempt timeout: one week.
pub const MAX_TIMEOUT_SECONDS: i64 = 7 * 24 * 3600;
/// Most retries of one job.
pub const MAX_RETRIES: i64 = 100;
/// Most arguments of a job's command.
pub const MAX_COMMAND_ARGS: usize = 4096;
/// Longest idempotency key, in characters.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Most labels on one job.
pub const MAX_LABELS: usize = 64;
/// Longest label key, in bytes.
pub const MAX_LABEL_KEY: usize = 128;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE: usize = 1024;
/// Most jobs in one batch submission.
pub const MAX_BATCH: usize = 1000;
/// Page size of `GET /api/jobs` when the client does not say.
pub const DEFAULT_PAGE_LIMIT: i64 = 50;
/// Largest page of `GET /api/jobs`.
pub const MAX_PAGE_LIMIT: i64 = 500;

/// A job as the job API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Job {
    /// Id given at submission.
    pub job_id: Uuid,
    /// Current status.
    pub status: JobStatus,
    /// What to do, free text (stdin of the agent's executor).
    pub task_description: String,
    /// Shards, each on a different worker.
    pub required_workers: i32,
    /// Argument vector to run instead of the executor, if any.
    pub command: Option<Vec<String>>,
    /// 0 (lowest) to 9.
    pub priority: i32,
    /// User-defined labels.
    pub labels: Labels,
    /// Times it has been started.
    pub attempts: i32,
    /// Retries allowed after a failure.
    pub max_retries: i32,
    /// Run-time limit per attempt.
    pub timeout_seconds: Option<i32>,
    /// The submitter's de-duplication key.
    pub idempotency_key: Option<String>,
    /// Id of the submitting user.
    pub submitted_by: Uuid,
    /// Workers running (or that last ran) its shards.
    pub assigned_workers: Vec<String>,
    /// Submission time.
    pub created_at: DateTime<Utc>,
    /// When its first shard started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a final status.
    pub finished_at: Option<DateTime<Utc>>,
    /// Exit code of the deciding shard.
    pub exit_code: Option<i32>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// One recorded transition of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobEvent {
    /// Previous status (`null` for the submission itself).
    pub from: Option<JobStatus>,
    /// New status.
    pub to: JobStatus,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The worker involved, if any.
    pub worker_id: Option<String>,
    /// Why, in words.
    pub reason: Option<String>,
}

/// A job's transitions (`GET /api/jobs/{job_id}/events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventList {
    /// Oldest first.
    pub events: Vec<JobEvent>,
}

/// A page of jobs (`GET /api/jobs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobPage {
    /// Newest first.
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// `GET /api/jobs` query. The status stays text so that an unknown one is
/// the contract's 422 naming the allowed values, not a parse failure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct ListQuery {
    /// Only jobs in this status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Page size, 1..=500 (default 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// The tail of a job's stdout and stderr and its exit code
/// (`GET /api/jobs/{job_id}/output`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobOutput {
    /// The job.
    pub job_id: Uuid,
    /// Its status.
    pub status: JobStatus,
    /// Last bytes of standard output.
    pub stdout: Option<String>,
    /// Last bytes of standard error.
    pub stderr: Option<String>,
    /// Exit code, once finished.
    pub exit_code: Option<i32>,
}

/// `POST /api/jobs/submit` body. Numbers are read wide and range-checked by
/// [`SubmitRequest::problems`], so an out-of-range value is a 422 naming the
/// range, not a type error. A field left out takes the server's default (a
/// client sends only what its user chose); `null` is a type error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubmitRequest {
    /// What to do (1..=10000 characters); the executor's stdin.
    pub task_description: String,
    /// Shards, each on a different worker (1..=64, default 1).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = i64, default = 1))]
    pub required_workers: Option<i64>,
    /// Argument vector to run instead of the executor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// 0 (lowest) ..= 9, default 5.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = i64, default = 5))]
    pub priority: Option<i64>,
    /// Per-attempt limit in seconds (1..=604800).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    /// Retries after a failure (0..=100, default 0).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = i64, default = 0))]
    pub max_retries: Option<i64>,
    /// De-duplication key, unique per user (1..=255 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Free-form labels (at most 64; keys 1..=128 bytes, values up to 1024).
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

impl SubmitRequest {
    /// Shards, defaulted.
    pub fn required_workers(&self) -> i64 {
        self.required_workers.unwrap_or(DEFAULT_WORKERS)
    }

    /// Priority, defaulted.
    pub fn priority(&self) -> i64 {
        self.priority.unwrap_or(DEFAULT_PRIORITY)
    }

    /// Retries, defaulted.
    pub fn max_retries(&self) -> i64 {
        self.max_retries.unwrap_or(0)
    }

    /// Every rule of the contract this submission breaks (none: it is valid).
    /// The server answers 422 with these; the client checks before sending.
    pub fn problems(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        self.check_texts(&mut errors);
        check_range(
            &mut errors,
            "required_workers",
            self.required_workers(),
            1,
            MAX_WORKERS,
        );
        check_range(&mut errors, "priority", self.priority(), 0, MAX_PRIORITY);
        check_range(&mut errors, "max_retries", self.max_retries(), 0, MAX_RETRIES);
        if let Some(t) = self.timeout_seconds {
            check_range(&mut errors, "timeout_seconds", t, 1, MAX_TIMEOUT_SECONDS);
        }
        errors
    }

    fn check_texts(&self, errors: &mut Vec<FieldError>) {
        let len = self.task_description.chars().count();
        if len == 0 || len > MAX_DESCRIPTION {
            errors.push(FieldError::body(
                "task_description",
                format!("must be 1 to {MAX_DESCRIPTION} characters"),
            ));
        }
        if let Some(cmd) = &self.command {
            let bad = cmd.first().is_none_or(String::is_empty)
                || cmd.len() > MAX_COMMAND_ARGS
                || cmd.iter().any(|a| a.contains('\0'));
            if bad {
                errors.push(FieldError::body(
                    "command",
                    format!("must be 1 to {MAX_COMMAND_ARGS} arguments, the first non-empty, no NUL"),
                ));
            }
        }
        if let Some(key) = &self.idempotency_key {
            let n = key.chars().count();
            if n == 0 || n > MAX_IDEMPOTENCY_KEY {
                errors.push(FieldError::body(
                    "idempotency_key",
                    format!("must be 1 to {MAX_IDEMPOTENCY_KEY} characters"),
                ));
            }
        }
        let bad_label =
            |(k, v): (&String, &String)| k.is_empty() || k.len() > MAX_LABEL_KEY || v.len() > MAX_LABEL_VALUE;
        if self.labels.len() > MAX_LABELS || self.labels.iter().any(bad_label) {
            errors.push(FieldError::body(
                "labels",
                format!("at most {MAX_LABELS} labels, keys 1..={MAX_LABEL_KEY} bytes, values up to {MAX_LABEL_VALUE}"),
            ));
        }
    }
}

/// `POST /api/jobs/submit_batch` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchRequest {
    /// 1..=1000 submissions, each as for `/api/jobs/submit`.
    pub jobs: Vec<SubmitRequest>,
}

impl BatchRequest {
    /// Every rule the batch breaks, each located at its job
    /// (`["body", "jobs", "3", "priority"]`).
    pub fn problems(&self) -> Vec<FieldError> {
        if self.jobs.is_empty() || self.jobs.len() > MAX_BATCH {
            return vec![FieldError::body(
                "jobs",
                format!("must hold 1 to {MAX_BATCH} jobs"),
            )];
        }
        let located = |(i, job): (usize, &SubmitRequest)| {
            job.problems().into_iter().map(move |mut e| {
                e.loc.splice(1..1, ["jobs".to_owned(), i.to_string()]);
                e
            })
        };
        self.jobs.iter().enumerate().flat_map(located).collect()
    }
}

/// The jobs of a batch, in the order submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchResponse {
    /// One job per submission (an earlier job for a reused idempotency key).
    pub jobs: Vec<Job>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn submit(json: serde_json::Value) -> Result<SubmitRequest, serde_json::Error> {
        serde_json::from_value(json)
    }

    #[test]
    fn absent_options_take_the_defaults_and_are_not_sent() {
        let req = submit(serde_json::json!({"task_description": "x"})).unwrap();
        assert_eq!(
            (req.required_workers(), req.priority(), req.max_retries()),
            (1, 5, 0)
        );
        assert!(req.problems().is_empty());
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            serde_json::json!({"task_description": "x"})
        );
    }

    #[test]
    fn null_for_a_defaulted_number_is_a_type_error() {
        let err = submit(serde_json::json!({"task_description": "x", "priority": null})).unwrap_err();
        assert!(err.to_string().starts_with("invalid type: null"), "{err}");
    }

    #[test]
    fn each_limit_is_reported_on_its_field() {
        let req = SubmitRequest {
            task_description: String::new(),
            required_workers: Some(65),
            priority: Some(10),
            max_retries: Some(101),
            timeout_seconds: Some(MAX_TIMEOUT_SECONDS + 1),
            command: Some(vec![String::new()]),
            idempotency_key: Some(String::new()),
            labels: [(String::new(), String::new())].into(),
        };
        let fields: Vec<String> = req.problems().into_iter().map(|e| e.location()).collect();
        let expected = [
            "task_description",
            "command",
            "idempotency_key",
            "labels",
            "required_workers",
            "priority",
            "max_retries",
            "timeout_seconds",
        ];
        assert_eq!(fields, expected.map(|f| format!("body.{f}")));
    }

    #[test]
    fn batch_problems_are_located_at_their_job() {
        let ok = SubmitRequest {
            task_description: "x".into(),
            ..SubmitRequest::default()
        };
        let bad = SubmitRequest {
            priority: Some(-1),
            ..ok.clone()
        };
        let batch = BatchRequest { jobs: vec![ok, bad] };
        let locs: Vec<String> = batch.problems().iter().map(FieldError::location).collect();
        assert_eq!(locs, ["body.jobs.1.priority"]);
        assert_eq!(BatchRequest::default().problems()[0].location(), "body.jobs");
    }

    proptest! {
        #[test]
        fn priority_is_valid_exactly_in_its_range(p in -20i64..30) {
            let req = SubmitRequest { task_description: "x".into(), priority: Some(p), ..SubmitRequest::default() };
            prop_assert_eq!(req.problems().is_empty(), (0..=MAX_PRIORITY).contains(&p));
        }
    }
}
