//! How each kind of answer is shown to people. Key-value views show a typed
//! answer's fields in its struct's order (the contract's); tables pick
//! columns, each a function of the typed row. Pure functions.

use crate::render::{decimal, job_output, key_values, one_line, optional, table, text, time, Column, EMPTY};
use orchestrator_shared::api::{
    AgentCredential, CancelBatchResult, Isolation, Job, JobEvent, JobOutput, Resources, Schedule,
    ScheduleRun, SearchPage, TokenResponse, UserAccount, UserUsage, Worker,
};
use serde::Serialize;
use serde_json::Value;

/// Columns of the job list.
pub const JOB_COLUMNS: &[Column<Job>] = &[
    ("JOB_ID", |j| j.job_id.to_string()),
    ("STATUS", |j| j.status.to_string()),
    ("PRIO", |j| j.priority.to_string()),
    ("WORKERS", |j| j.required_workers.to_string()),
    ("ATTEMPTS", |j| j.attempts.to_string()),
    ("CREATED", |j| time(&j.created_at)),
    ("TASK", |j| j.task_description.clone()),
];

/// Columns of a job's transitions.
pub const EVENT_COLUMNS: &[Column<JobEvent>] = &[
    ("AT", |e| time(&e.at)),
    ("FROM", |e| optional(e.from)),
    ("TO", |e| e.to.to_string()),
    ("WORKER", |e| optional(e.worker_id.as_deref())),
    ("REASON", |e| optional(e.reason.as_deref())),
];

/// Columns of the worker list.
pub const WORKER_COLUMNS: &[Column<Worker>] = &[
    ("WORKER_ID", |w| w.worker_id.clone()),
    ("STATUS", |w| w.status.to_string()),
    ("HOST", |w| w.hostname.clone()),
    ("CAPACITY", |w| w.capacity.to_string()),
    ("RUNNING", |w| w.running_jobs.to_string()),
    ("VERSION", |w| w.version.clone()),
    ("LAST_HEARTBEAT", |w| time(&w.last_heartbeat_at)),
    ("RESOURCES", |w| resources(&w.resources)),
    ("ISOLATION", |w| isolation(w.isolation.as_ref())),
    ("POOLS", |w| w.pools.join(",")),
    ("LABELS", |w| labels(&w.labels)),
];

/// Labels as `k=v,k=v`, `-` when there are none.
fn labels(labels: &orchestrator_shared::api::Labels) -> String {
    if labels.is_empty() {
        EMPTY.to_owned()
    } else {
        orchestrator_shared::pools::selector_text(labels)
    }
}

/// Columns of the per-user usage.
pub const USAGE_COLUMNS: &[Column<UserUsage>] = &[
    ("USER", |u| u.username.clone()),
    ("ALLOCATED_WORKERS", |u| u.allocated_workers.to_string()),
    ("RUNNING_JOBS", |u| u.running_jobs.to_string()),
    ("WORKER_SECONDS", |u| decimal(u.worker_seconds)),
];

/// Columns of the user list.
pub const USER_COLUMNS: &[Column<UserAccount>] = &[
    ("USER_ID", |u| u.user_id.to_string()),
    ("USERNAME", |u| u.username.clone()),
    ("SCOPES", |u| text(&u.scopes)),
    ("DISABLED", |u| u.disabled.to_string()),
    ("CREATED", |u| time(&u.created_at)),
];

/// Columns of `agents credentials list`.
pub const CREDENTIAL_COLUMNS: &[Column<AgentCredential>] = &[
    ("CREDENTIAL_ID", |c| c.credential_id.to_string()),
    ("WORKER_ID", |c| c.worker_id.clone()),
    ("CREATED", |c| time(&c.created_at)),
    ("REVOKED", |c| {
        c.revoked_at.as_ref().map_or_else(|| "-".to_owned(), time)
    }),
];

/// Columns of `schedules list`.
pub const SCHEDULE_COLUMNS: &[Column<Schedule>] = &[
    ("SCHEDULE_ID", |s| s.schedule_id.to_string()),
    ("NAME", |s| s.name.clone()),
    ("CRON", |s| s.cron.clone()),
    ("TIMEZONE", |s| s.timezone.clone()),
    ("ENABLED", |s| s.enabled.to_string()),
    ("OVERLAP", |s| s.overlap.as_str().to_owned()),
    ("NEXT", |s| {
        s.next_fire_times.first().map_or_else(|| "-".to_owned(), time)
    }),
];

/// Columns of a schedule's runs.
pub const RUN_COLUMNS: &[Column<ScheduleRun>] = &[
    ("FIRE_TIME", |r| time(&r.fire_time)),
    ("OUTCOME", |r| r.outcome.as_str().to_owned()),
    ("JOB_ID", |r| optional(r.job_id)),
    ("JOB_STATUS", |r| optional(r.job_status)),
    ("ERROR", |r| optional(r.error.as_deref())),
];

/// `rows` as a table, or `empty` when there are none.
pub fn list_of<T>(rows: &[T], columns: &[Column<T>], empty: &str) -> String {
    if rows.is_empty() {
        empty.to_owned()
    } else {
        table(columns, rows)
    }
}

/// A page of a search: its jobs as `list` shows them, then how many jobs
/// match in all, which a page of `list` cannot say.
pub fn search_page(page: &SearchPage) -> String {
    let noun = if page.total == 1 { "job" } else { "jobs" };
    format!(
        "{}\ntotal: {} matching {noun}",
        list_of(&page.jobs, JOB_COLUMNS, "no jobs"),
        page.total
    )
}

/// What a bulk cancel did, a line per job: those cancelled, then those
/// refused with the server's reason, whole (a table cell would cut it).
pub fn cancel_batch(result: &CancelBatchResult) -> String {
    let cancelled = result.cancelled.iter().map(|id| format!("cancelled {id}"));
    let refused = result
        .refused
        .iter()
        .map(|r| format!("refused   {}: {}", r.job_id, one_line(&r.detail)));
    let lines: Vec<String> = cancelled.chain(refused).collect();
    if lines.is_empty() {
        "no jobs".to_owned()
    } else {
        lines.join("\n")
    }
}

/// A typed answer (a job, a worker, quotas, metrics, an allocation, the
/// caller) as key-value lines, in its struct's field order: the contract's,
/// kept by serde_json's `preserve_order`. (A contract type always turns into
/// JSON; were it not to, the view says so rather than showing nothing.)
pub fn fields<T: Serialize>(answer: &T) -> String {
    match serde_json::to_value(answer) {
        Ok(value) => key_values(&value),
        Err(err) => format!("(the answer cannot be shown: {err})"),
    }
}

/// A job as key-value lines, like [`fields`], but its resource limits, its
/// schedule, its placement and its dependencies only when set: most jobs
/// have none, and lines of `-` say nothing.
pub fn job(job: &Job) -> String {
    let mut value = serde_json::to_value(job).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.retain(|key, v| !(UNLESS_SET_KEYS.contains(&key.as_str()) && v.is_null()));
        // Placement only when it is not the default (any agent of the
        // default pool), as before pools existed. (`shift_remove` keeps
        // the order of the keys after it.)
        if map.get("pool").and_then(Value::as_str) == Some(orchestrator_shared::pools::DEFAULT_POOL) {
            map.shift_remove("pool");
        }
        if map
            .get("selector")
            .and_then(Value::as_object)
            .is_some_and(serde_json::Map::is_empty)
        {
            map.shift_remove("selector");
        }
        // Dependencies only when it has some, as before dependencies existed.
        if job.depends_on.is_empty() {
            map.shift_remove("depends_on");
            map.shift_remove("run_on_failure");
        }
    }
    key_values(&value)
}

/// The keys of a job's JSON shown only when set: its limits (flattened
/// into the job) and the schedule that submitted it.
const UNLESS_SET_KEYS: [&str; 4] = ["memory_mb", "cpu", "max_pids", "schedule_id"];

/// A worker as key-value lines, like [`fields`], with what it offers and
/// its isolation in words rather than as raw objects.
pub fn worker(worker: &Worker) -> String {
    let mut value = serde_json::to_value(worker).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert("resources".into(), Value::String(resources(&worker.resources)));
        map.insert(
            "isolation".into(),
            Value::String(isolation(worker.isolation.as_ref())),
        );
    }
    key_values(&value)
}

/// What an agent offers, in words (`memory 2048 MB, cpu 1.5, pids 512`);
/// `-` when it sets no ceiling.
pub fn resources(offer: &Resources) -> String {
    let parts: Vec<String> = [
        offer.memory_mb.map(|m| format!("memory {m} MB")),
        offer.cpu.map(|c| format!("cpu {}", decimal(c))),
        offer.max_pids.map(|p| format!("pids {p}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        EMPTY.to_owned()
    } else {
        parts.join(", ")
    }
}

/// An agent's isolation at a glance: what it enforces (`cgroup v1, job
/// user orchestrator-job`), `OFF (<why>)` when it enforces nothing, both
/// when only part is off, `unknown` for an agent that does not report it.
pub fn isolation(report: Option<&Isolation>) -> String {
    let Some(report) = report else {
        return "unknown (not reported)".to_owned();
    };
    let on: Vec<String> = [
        report.cgroup.as_ref().map(|c| format!("cgroup {c}")),
        report.job_user.as_ref().map(|u| format!("job user {u}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let off = report.disabled.join("; ");
    match (on.is_empty(), report.disabled.is_empty()) {
        (true, true) => EMPTY.to_owned(),
        (false, true) => on.join(", "),
        (true, false) => format!("OFF ({off})"),
        (false, false) => format!("{}, partly OFF ({off})", on.join(", ")),
    }
}

/// How a waited-for job ended, its error if any, then its output.
pub fn outcome(job: &Job, output: &JobOutput) -> String {
    let mut text = format!("job {} {}", job.job_id, job.status);
    if let Some(error) = &job.error {
        text.push_str(&format!("\nerror: {error}"));
    }
    text.push('\n');
    text.push_str(&job_output(output));
    text
}

/// What `login` says: who, where, for how long, and where the token went.
pub fn login(answer: &TokenResponse, username: &str, url: &str, path: &str) -> String {
    format!(
        "logged in to {url} as {username}; token valid for {} s, scopes: {}\nsaved to {path}",
        answer.expires_in,
        text(&answer.scopes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use orchestrator_shared::api::{Allocation, AllocationStatus};
    use orchestrator_shared::JobStatus;
    use uuid::Uuid;

    /// The keys of key-value lines, in order.
    fn keys(lines: &str) -> Vec<&str> {
        lines
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn a_search_page_is_the_job_table_and_the_total() {
        let page = SearchPage {
            jobs: vec![fixtures::job(JobStatus::Failed)],
            next_cursor: Some("c".into()),
            total: 7,
        };
        let text = search_page(&page);
        assert!(
            text.starts_with(&list_of(&page.jobs, JOB_COLUMNS, "no jobs")),
            "{text}"
        );
        assert!(text.ends_with("\ntotal: 7 matching jobs"), "{text}");
        let none = SearchPage {
            jobs: Vec::new(),
            next_cursor: None,
            total: 1,
        };
        assert_eq!(search_page(&none), "no jobs\ntotal: 1 matching job");
    }

    #[test]
    fn a_bulk_cancel_shows_each_job_and_each_refusals_whole_reason() {
        let gone = Uuid::from_u128(2);
        let reason = format!("Job {gone} not found, a reason longer than a table cell");
        let result = CancelBatchResult {
            cancelled: vec![Uuid::from_u128(1)],
            refused: vec![orchestrator_shared::api::CancelRefusal {
                job_id: gone,
                detail: reason.clone(),
            }],
        };
        let expected = format!("cancelled {}\nrefused   {gone}: {reason}", Uuid::from_u128(1));
        assert_eq!(cancel_batch(&result), expected);
        assert_eq!(cancel_batch(&CancelBatchResult::default()), "no jobs");
    }

    #[test]
    fn list_of_renders_rows_or_the_empty_message() {
        let jobs = [fixtures::job(JobStatus::Queued)];
        let text = list_of(&jobs, &JOB_COLUMNS[..2], "no jobs");
        assert_eq!(
            text,
            "JOB_ID                                STATUS\n00000000-0000-0000-0000-000000000000  queued"
        );
        assert_eq!(list_of(&[], JOB_COLUMNS, "no jobs"), "no jobs");
        let usage = [UserUsage {
            user_id: Uuid::nil(),
            username: "alice".into(),
            allocated_workers: 2,
            running_jobs: 1,
            worker_seconds: 12.25,
        }];
        assert_eq!(
            list_of(&usage, USAGE_COLUMNS, "-"),
            "USER   ALLOCATED_WORKERS  RUNNING_JOBS  WORKER_SECONDS\nalice  2                  1             12.25"
        );
    }

    #[test]
    fn worker_table_shows_heartbeats_to_the_second() {
        let text = list_of(&[fixtures::worker()], WORKER_COLUMNS, "no workers");
        let row = text.lines().nth(1).unwrap_or_default();
        assert_eq!(
            row,
            "w1         idle    host-1  2         0        0.1.0    2026-11-05T10:00:00Z  -          unknown (not reported)  default  -"
        );
        let gpu = Worker {
            pools: vec!["gpu".into(), "default".into()],
            labels: [("zone".to_owned(), "a".to_owned())].into(),
            ..fixtures::worker()
        };
        let text = list_of(&[gpu], WORKER_COLUMNS, "no workers");
        let row = text.lines().nth(1).unwrap_or_default();
        assert!(row.ends_with("gpu,default  zone=a"), "{row}");
    }

    #[test]
    fn isolation_says_what_is_enforced_and_what_is_off() {
        let report = |cgroup: Option<&str>, user: Option<&str>, disabled: &[&str]| Isolation {
            cgroup: cgroup.map(str::to_owned),
            job_user: user.map(str::to_owned),
            disabled: disabled.iter().map(|d| (*d).to_owned()).collect(),
        };
        assert_eq!(isolation(None), "unknown (not reported)");
        let full = report(Some("v1"), Some("orchestrator-job"), &[]);
        assert_eq!(isolation(Some(&full)), "cgroup v1, job user orchestrator-job");
        let off = report(None, None, &["jobs run as the agent's user", "no per-job cgroup"]);
        assert_eq!(
            isolation(Some(&off)),
            "OFF (jobs run as the agent's user; no per-job cgroup)"
        );
        let part = report(Some("v2"), None, &["jobs run as the agent's user"]);
        assert_eq!(
            isolation(Some(&part)),
            "cgroup v2, partly OFF (jobs run as the agent's user)"
        );
        assert_eq!(isolation(Some(&report(None, None, &[]))), "-");
    }

    #[test]
    fn a_worker_shows_its_offer_and_isolation_in_words() {
        let w = Worker {
            resources: Resources {
                memory_mb: Some(2048),
                cpu: Some(1.5),
                max_pids: None,
            },
            isolation: Some(Isolation {
                job_user: None,
                cgroup: None,
                disabled: vec!["no per-job cgroup".into()],
            }),
            ..fixtures::worker()
        };
        let text = worker(&w);
        assert!(
            text.contains("\nresources:         memory 2048 MB, cpu 1.5\n"),
            "{text}"
        );
        assert!(
            text.ends_with("\nisolation:         OFF (no per-job cgroup)\npools:             default"),
            "{text}"
        );
        let row = list_of(&[w], WORKER_COLUMNS, "no workers");
        assert!(
            row.ends_with("memory 2048 MB, cpu 1.5  OFF (no per-job cgroup)  default  -"),
            "{row}"
        );
        assert_eq!(resources(&Resources::default()), "-");
    }

    #[test]
    fn a_job_shows_its_limits_only_when_set() {
        let plain = fixtures::job(JobStatus::Queued);
        assert_eq!(
            job(&plain),
            fields(&plain).replace(
                "\nmemory_mb:        -\ncpu:              -\nmax_pids:         -\nschedule_id:      -\npool:             default\nselector:         -\ndepends_on:       -\nrun_on_failure:   false",
                ""
            )
        );
        let waits = Job {
            depends_on: vec![Uuid::nil()],
            run_on_failure: true,
            ..plain.clone()
        };
        assert!(
            job(&waits).ends_with(&format!(
                "\ndepends_on:       {}\nrun_on_failure:   true",
                Uuid::nil()
            )),
            "{}",
            job(&waits)
        );
        let placed = Job {
            pool: "gpu".into(),
            selector: [("zone".into(), "a".into())].into(),
            ..plain.clone()
        };
        assert!(
            job(&placed).ends_with("\npool:             gpu\nselector:         zone=a"),
            "{}",
            job(&placed)
        );
        assert!(job(&plain).ends_with("\nwaiting_for:      -"), "{}", job(&plain));
        let limited = Job {
            limits: Resources {
                memory_mb: Some(512),
                cpu: Some(0.5),
                max_pids: None,
            },
            ..plain
        };
        let text = job(&limited);
        assert!(
            text.ends_with("\nwaiting_for:      -\nmemory_mb:        512\ncpu:              0.5"),
            "{text}"
        );
    }

    #[test]
    fn a_typed_job_shows_its_fields_in_contract_order() {
        let running = Job {
            command: Some(vec!["sh".into(), "-c".into(), "echo hi".into()]),
            labels: [("team".into(), "ml".into()), ("env".into(), "dev".into())].into(),
            ..fixtures::job(JobStatus::Running)
        };
        let text = fields(&running);
        let contract = [
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
            "waiting_for",
            "memory_mb",
            "cpu",
            "max_pids",
            "schedule_id",
            "pool",
            "selector",
            "depends_on",
            "run_on_failure",
        ];
        assert_eq!(keys(&text), contract);
        assert!(text.contains("\nstatus:           running\n"), "{text}");
        assert!(text.contains("\ncommand:          sh -c 'echo hi'\n"), "{text}");
        assert!(text.contains("\nlabels:           env=dev team=ml\n"), "{text}");
        assert!(
            text.ends_with(
                "\nmax_pids:         -\nschedule_id:      -\npool:             default\nselector:         -\ndepends_on:       -\nrun_on_failure:   false"
            ),
            "{text}"
        );
        assert!(
            job(&running).ends_with("\nwaiting_for:      -"),
            "{}",
            job(&running)
        );
    }

    #[test]
    fn other_answers_show_their_fields_in_contract_order() {
        let allocation = Allocation {
            allocation_id: Uuid::nil(),
            workers: 3,
            job_id: None,
            expires_at: None,
            status: AllocationStatus::Active,
            created_at: fixtures::at(),
            released_at: None,
            pool: None,
        };
        let expected = [
            "allocation_id",
            "workers",
            "job_id",
            "expires_at",
            "status",
            "created_at",
            "released_at",
            "pool",
        ];
        assert_eq!(keys(&fields(&allocation)), expected);
        let worker = fields(&fixtures::worker());
        assert!(
            worker.starts_with("worker_id:         w1\nstatus:            idle\n"),
            "{worker}"
        );
    }

    #[test]
    fn outcome_shows_status_error_and_output() {
        let finished = Job {
            error: Some("exit code 3".into()),
            ..fixtures::job(JobStatus::Failed)
        };
        let output = JobOutput {
            stdout: Some(String::new()),
            stderr: Some("boom\n".into()),
            exit_code: Some(3),
            attempt: None,
            shard: 0,
            stdout_bytes: 0,
            stderr_bytes: 0,
            truncated: false,
            ..fixtures::output()
        };
        assert_eq!(
            outcome(&finished, &output),
            "job 00000000-0000-0000-0000-000000000000 failed\nerror: exit code 3\n== stdout ==\n(empty)\n== stderr ==\nboom\nexit code: 3"
        );
        let done = fixtures::job(JobStatus::Completed);
        let text = outcome(&done, &fixtures::output());
        assert!(text.ends_with(" completed\n== stdout ==\n(empty)\n== stderr ==\n(empty)\nexit code: -"));
    }

    #[test]
    fn login_message_never_shows_the_token() {
        let answer = TokenResponse {
            access_token: "secret".into(),
            token_type: "bearer".into(),
            expires_in: 3600,
            scopes: vec!["jobs:write".into(), "admin".into()],
        };
        let text = login(&answer, "alice", "http://h:8000", "/c.json");
        assert_eq!(
            text,
            "logged in to http://h:8000 as alice; token valid for 3600 s, scopes: jobs:write admin\nsaved to /c.json"
        );
    }
}
