//! `/api/jobs*`: what a submission may hold, and how jobs, their pages,
//! transitions and output look.

use super::error::{check_no_nul, check_range, count_problem, FieldError};
use super::limits::{check_limits, Resources};
use super::{number, Labels};
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
/// Longest label key, in characters.
pub const MAX_LABEL_KEY: usize = 128;
/// Longest label value, in characters.
pub const MAX_LABEL_VALUE: usize = 1024;
/// Most jobs in one batch submission: a whole graph of 10,000 jobs with
/// their dependencies is submitted at once (it was 1,000 before
/// dependencies).
pub const MAX_BATCH: usize = 10_000;
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
    /// Why it is not running yet though queued (e.g. a shard waits for a
    /// worker of its own: more shards than live workers); `null` otherwise.
    #[serde(default)]
    pub waiting_for: Option<String>,
    /// Its resource limits (`memory_mb`, `cpu`, `max_pids`), each `null`
    /// when the submission set none (the agent's default applies).
    #[serde(flatten)]
    pub limits: Resources,
    /// The schedule that submitted it (`null` for a job submitted by hand).
    #[serde(default)]
    pub schedule_id: Option<Uuid>,
    /// The pool of agents that may run it (`default` unless submitted
    /// with another).
    #[serde(default = "crate::pools::default_pool")]
    pub pool: String,
    /// Labels an agent must carry to run it (`{}`: any agent of the pool).
    #[serde(default)]
    pub selector: Labels,
    /// The jobs it waits for, by id in id order (`[]`: none), so a client
    /// sees a job's dependencies where it reads the job; their statuses
    /// and the rest of the graph are `GET /api/jobs/{job_id}/graph`'s.
    #[serde(default)]
    pub depends_on: Vec<Uuid>,
    /// Whether it runs once its dependencies finished however they ended
    /// (`false`: one that failed, was cancelled or timed out cancels it).
    #[serde(default)]
    pub run_on_failure: bool,
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
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct ListQuery {
    /// Only jobs in this status.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<JobStatus>))]
    pub status: Option<String>,
    /// Page size, 1..=500 (default 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 500))]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page (empty: the first page).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(pattern = "^([0-9]{1,17}_[0-9a-f]{32})?$"))]
    pub cursor: Option<String>,
    /// Only jobs submitted by this schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<Uuid>, format = Uuid))]
    pub schedule: Option<String>,
}

/// A job's stdout and stderr (whole, up to the agent's cap, or the byte
/// range asked for) and its exit code (`GET /api/jobs/{job_id}/output`).
/// Output of agents that do not stream it is the last 64 KiB of each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobOutput {
    /// The job.
    pub job_id: Uuid,
    /// Its status.
    pub status: JobStatus,
    /// Standard output (invalid UTF-8 as U+FFFD).
    pub stdout: Option<String>,
    /// Standard error (invalid UTF-8 as U+FFFD).
    pub stderr: Option<String>,
    /// Exit code, once finished.
    pub exit_code: Option<i32>,
    /// The attempt whose output this is (the job's latest); `null` before
    /// the first.
    #[serde(default)]
    pub attempt: Option<i32>,
    /// The shard whose output this is (`?shard=`, default 0).
    #[serde(default)]
    pub shard: i32,
    /// All the bytes of standard output kept (up to the agent's cap), of
    /// which `stdout` holds the range asked for.
    #[serde(default)]
    pub stdout_bytes: i64,
    /// All the bytes of standard error kept.
    #[serde(default)]
    pub stderr_bytes: i64,
    /// Whether the output reached the agent's cap: what followed the
    /// marker was dropped (the job went on).
    #[serde(default)]
    pub truncated: bool,
}

/// `POST /api/jobs/submit` body. Numbers are read wide and range-checked by
/// [`SubmitRequest::problems`], so an out-of-range value is a 422 naming the
/// range, not a type error. A field left out takes the server's default (a
/// client sends only what its user chose); `null` is a type error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubmitRequest {
    /// What to do (1..=10000 characters, no NUL); the executor's stdin.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 10000, pattern = "^[^\\u0000]*$")
    )]
    pub task_description: String,
    /// Shards, each on a different worker (1..=64, default 1).
    #[serde(
        default,
        deserialize_with = "number::present_i64",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = i64, default = 1, minimum = 1, maximum = 64))]
    pub required_workers: Option<i64>,
    /// Argument vector to run instead of the executor (1..=4096 arguments,
    /// the first non-empty, none holding NUL).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = super::schema::command))]
    pub command: Option<Vec<String>>,
    /// 0 (lowest) ..= 9, default 5.
    #[serde(
        default,
        deserialize_with = "number::present_i64",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = i64, default = 5, minimum = 0, maximum = 9))]
    pub priority: Option<i64>,
    /// Per-attempt limit in seconds (1..=604800).
    #[serde(
        default,
        deserialize_with = "number::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 604800))]
    pub timeout_seconds: Option<i64>,
    /// Retries after a failure (0..=100, default 0).
    #[serde(
        default,
        deserialize_with = "number::present_i64",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = i64, default = 0, minimum = 0, maximum = 100))]
    pub max_retries: Option<i64>,
    /// De-duplication key, unique per user (1..=255 characters, no NUL).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 255, pattern = "^[^\\u0000]*$")
    )]
    pub idempotency_key: Option<String>,
    /// Free-form labels (at most 64; keys 1..=128 characters, values up to 1024;
    /// no NUL).
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    #[cfg_attr(feature = "openapi", schema(schema_with = super::schema::labels))]
    pub labels: Labels,
    /// Memory limit in MiB (4..=1048576); past it the job fails with "memory
    /// limit of N MB exceeded". Absent: the agent's default.
    #[serde(
        default,
        deserialize_with = "number::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 4, maximum = 1048576))]
    pub memory_mb: Option<i64>,
    /// CPU limit in CPUs (0.01..=1024, kept to the thousandth): `0.5` is half
    /// of one core's time. Absent: the agent's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0.01, maximum = 1024))]
    pub cpu: Option<f64>,
    /// Most processes and threads at once (1..=4194304); a fork past it
    /// fails. Absent: the agent's default.
    #[serde(
        default,
        deserialize_with = "number::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 4194304))]
    pub max_pids: Option<i64>,
    /// Jobs this one waits for (at most 10,000, none twice): ids of the
    /// submitter's own jobs, or in a batch the `key` of another job of the
    /// same batch. It stays `pending` until every one has completed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(max_items = 10000))]
    pub depends_on: Vec<String>,
    /// Run once every dependency has finished, however it ended (by
    /// default a dependency that failed, was cancelled or timed out
    /// cancels this job).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub run_on_failure: bool,
    /// The name other jobs of the same batch use for this one in their
    /// `depends_on` (1..=128 characters, not a UUID, unique in the batch);
    /// not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub key: Option<String>,
    /// The pool of agents that may run it (1..=63 characters: lowercase
    /// letters, digits, `-`, `_`); absent: `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(default = "default", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")
    )]
    pub pool: Option<String>,
    /// Labels an agent must carry to run it (`{"zone": "eu-1"}`): at most
    /// 16 pairs, see the contract for the characters allowed.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    #[cfg_attr(feature = "openapi", schema(schema_with = super::schema::selector))]
    pub selector: Labels,
}

impl SubmitRequest {
    /// The resource limits, once [`SubmitRequest::problems`] found none
    /// (out of range: no limits).
    pub fn limits(&self) -> Resources {
        Resources::from_submitted(self.memory_mb, self.cpu, self.max_pids).unwrap_or_default()
    }

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
        check_limits(&mut errors, self.memory_mb, self.cpu, self.max_pids);
        super::deps::check_fields(&mut errors, self);
        errors.extend(crate::pools::placement_problems(
            self.pool.as_deref(),
            &self.selector,
        ));
        errors
    }

    /// Pool, defaulted.
    pub fn pool(&self) -> &str {
        self.pool.as_deref().unwrap_or(crate::pools::DEFAULT_POOL)
    }

    fn check_texts(&self, errors: &mut Vec<FieldError>) {
        let len = self.task_description.chars().count();
        if len == 0 || len > MAX_DESCRIPTION {
            errors.push(FieldError::body(
                "task_description",
                format!("must be 1 to {MAX_DESCRIPTION} characters"),
            ));
        }
        check_no_nul(errors, "task_description", [self.task_description.as_str()]);
        if let Some(cmd) = &self.command {
            if cmd.first().is_none_or(String::is_empty) || cmd.len() > MAX_COMMAND_ARGS {
                errors.push(FieldError::body(
                    "command",
                    format!("must be 1 to {MAX_COMMAND_ARGS} arguments, the first non-empty"),
                ));
            }
            check_no_nul(errors, "command", cmd.iter().map(String::as_str));
        }
        if let Some(key) = &self.idempotency_key {
            let n = key.chars().count();
            if n == 0 || n > MAX_IDEMPOTENCY_KEY {
                errors.push(FieldError::body(
                    "idempotency_key",
                    format!("must be 1 to {MAX_IDEMPOTENCY_KEY} characters"),
                ));
            }
            check_no_nul(errors, "idempotency_key", [key.as_str()]);
        }
        check_labels(errors, &self.labels);
    }
}

/// The one rule for labels, on jobs and on workers alike: at most
/// [`MAX_LABELS`], keys of 1 to [`MAX_LABEL_KEY`] bytes, values of at most
/// [`MAX_LABEL_VALUE`] bytes, and no NUL in either (they are stored as
/// `jsonb`, which refuses it). Appends its problems at `["body", "labels"]`.
pub(crate) fn check_labels(errors: &mut Vec<FieldError>, labels: &Labels) {
    let chars = |s: &String| s.chars().count();
    let bad =
        |(k, v): (&String, &String)| k.is_empty() || chars(k) > MAX_LABEL_KEY || chars(v) > MAX_LABEL_VALUE;
    if labels.len() > MAX_LABELS || labels.iter().any(bad) {
        errors.push(FieldError::body(
            "labels",
            format!(
                "at most {MAX_LABELS} labels, keys 1..={MAX_LABEL_KEY} characters, values up to {MAX_LABEL_VALUE}"
            ),
        ));
    }
    let texts = labels.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]);
    check_no_nul(errors, "labels", texts);
}

/// `POST /api/jobs/submit_batch` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchRequest {
    /// 1..=10000 submissions, each as for `/api/jobs/submit`; their
    /// `depends_on` may also name each other by `key`.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 10000))]
    pub jobs: Vec<SubmitRequest>,
}

impl BatchRequest {
    /// Every rule the batch breaks, each located at its job
    /// (`["body", "jobs", "3", "priority"]`).
    pub fn problems(&self) -> Vec<FieldError> {
        if let Some(problem) = count_problem("jobs", self.jobs.len(), MAX_BATCH, "hold", "jobs") {
            return vec![problem];
        }
        let located = |(i, job): (usize, &SubmitRequest)| {
            job.problems().into_iter().map(move |mut e| {
                e.loc.splice(1..1, ["jobs".to_owned(), i.to_string()]);
                e
            })
        };
        let mut errors: Vec<FieldError> = self.jobs.iter().enumerate().flat_map(located).collect();
        if errors.is_empty() {
            errors.extend(super::deps::resolve_batch(&self.jobs).err().unwrap_or_default());
        }
        errors
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
            memory_mb: Some(0),
            cpu: Some(2000.0),
            max_pids: Some(0),
            pool: None,
            selector: Labels::new(),
            ..SubmitRequest::default()
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
            "memory_mb",
            "cpu",
            "max_pids",
        ];
        assert_eq!(fields, expected.map(|f| format!("body.{f}")));
    }

    #[test]
    fn a_bad_pool_or_selector_is_named_and_their_absence_is_the_default() {
        let ok = SubmitRequest {
            task_description: "x".into(),
            ..SubmitRequest::default()
        };
        assert_eq!(ok.pool(), "default");
        let json = serde_json::to_value(&ok).unwrap();
        assert!(
            json.get("pool").is_none() && json.get("selector").is_none(),
            "{json}"
        );
        let placed = SubmitRequest {
            pool: Some("gpu".into()),
            selector: [("zone".into(), "eu-1".into())].into(),
            ..ok.clone()
        };
        assert_eq!(placed.problems(), []);
        let bad = SubmitRequest {
            pool: Some("GPU pool".into()),
            selector: [("zone".into(), "eu 1".into())].into(),
            ..ok
        };
        let locs: Vec<String> = bad.problems().iter().map(FieldError::location).collect();
        assert_eq!(locs, ["body.pool", "body.selector"]);
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

    #[test]
    fn a_nul_in_any_stored_text_is_reported_on_its_field() {
        let req = SubmitRequest {
            task_description: "a\0b".into(),
            command: Some(vec!["/bin/echo".into(), "\0".into()]),
            idempotency_key: Some("k\0".into()),
            labels: [("k".into(), "v\0".into())].into(),
            ..SubmitRequest::default()
        };
        let problems = req.problems();
        let fields: Vec<String> = problems.iter().map(FieldError::location).collect();
        let expected = ["task_description", "command", "idempotency_key", "labels"];
        assert_eq!(fields, expected.map(|f| format!("body.{f}")));
        assert!(problems.iter().all(|e| e.msg == crate::api::error::NO_NUL));
        let key_only = Labels::from([("a\0".to_owned(), "v".to_owned())]);
        let mut errors = Vec::new();
        check_labels(&mut errors, &key_only);
        assert_eq!(errors.len(), 1, "a NUL in a key counts as well");
    }

    proptest! {
        #[test]
        fn labels_are_valid_exactly_within_their_bounds(
            count in 0usize..=MAX_LABELS + 2,
            key_len in 0usize..=MAX_LABEL_KEY + 2,
            value_len in 0usize..=MAX_LABEL_VALUE + 2,
        ) {
            // Distinct keys: the first of `key_len` bytes (maybe empty), the
            // others one or two digits longer.
            let key = |i: usize| format!("{}{}", "k".repeat(key_len), if i == 0 { String::new() } else { i.to_string() });
            let labels: Labels = (0..count).map(|i| (key(i), "v".repeat(value_len))).collect();
            let mut errors = Vec::new();
            check_labels(&mut errors, &labels);
            let within = labels.len() <= MAX_LABELS
                && labels.iter().all(|(k, v)| {
                    (1..=MAX_LABEL_KEY).contains(&k.chars().count()) && v.chars().count() <= MAX_LABEL_VALUE
                });
            prop_assert_eq!(errors.is_empty(), within);
        }

        #[test]
        fn priority_is_valid_exactly_in_its_range(p in -20i64..30) {
            let req = SubmitRequest { task_description: "x".into(), priority: Some(p), ..SubmitRequest::default() };
            prop_assert_eq!(req.problems().is_empty(), (0..=MAX_PRIORITY).contains(&p));
        }
    }
}
