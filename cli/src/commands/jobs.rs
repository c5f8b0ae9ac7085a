//! `submit`, `status`, `list`, `search`, `cancel`, `events` and `output`.

use super::Ctx;
use crate::args::{CancelArgs, ListArgs, LogsArgs, SearchArgs, SubmitArgs};
use crate::client::{every_page, Answer, ApiClient};
use crate::error::UsageError;
use crate::input::{labels_map, placement};
use crate::output::note;
use crate::render::job_output;
use crate::views;
use crate::wait::{self, Progress, WaitPolicy};
use anyhow::{Context, Result};
use chrono::SecondsFormat;
use orchestrator_shared::api::{
    CancelBatchRequest, CancelBatchResult, EventList, Job, JobOutput, JobPage, ListQuery, OutputQuery,
    SearchPage, SearchQuery, SubmitRequest, MAX_CANCEL_BATCH,
};
use orchestrator_shared::JobStatus;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;
use uuid::Uuid;

/// The submission the command line asks for, checked against the contract's
/// rules before it is sent (a usage error lists what is wrong). Options left
/// out stay `None`, so the server's defaults apply.
pub fn submission(args: &SubmitArgs) -> Result<SubmitRequest, UsageError> {
    let command = args.command_args();
    let (pool, selector) = placement(&args.placement)?;
    let request = SubmitRequest {
        task_description: args.task_description.clone(),
        required_workers: args.workers,
        command: (!command.is_empty()).then(|| command.to_vec()),
        priority: args.priority,
        timeout_seconds: args.timeout,
        max_retries: args.max_retries,
        idempotency_key: args.idempotency_key.clone(),
        labels: labels_map(&args.labels)?,
        memory_mb: args.memory_mb,
        cpu: args.cpu,
        max_pids: args.max_pids,
        depends_on: args.depends_on.iter().map(Uuid::to_string).collect(),
        run_on_failure: args.run_on_failure,
        key: None,
        pool,
        selector,
    };
    UsageError::check(&request.problems())?;
    Ok(request)
}

/// `POST /api/jobs/submit`; with `--wait`, then polls the job until it ends
/// and prints its output (exit code 0 only if it completed).
pub async fn submit(ctx: &Ctx, args: SubmitArgs) -> Result<ExitCode> {
    let request = submission(&args)?;
    let submitted: Answer<Job> = ctx.client.post(&["api", "jobs", "submit"], &request).await?;
    if submitted.status == 200 {
        note("note: a job with this idempotency key already exists; this is that job");
    }
    if !args.wait {
        ctx.out.show(&submitted, views::job)?;
        return Ok(ExitCode::SUCCESS);
    }
    let job_id = submitted.typed.job_id.to_string();
    note(&format!("submitted job {job_id}"));
    let policy = WaitPolicy {
        interval: wait::POLL_INTERVAL,
        timeout: Duration::from_secs(args.wait_timeout),
        max_outage: wait::MAX_OUTAGE,
    };
    let job = wait_with_spinner(&ctx.client, &job_id, policy)
        .await
        .with_context(|| format!("waiting for job {job_id} (see `orchestrator status {job_id}`)"))?;
    let output: Answer<JobOutput> = ctx.client.get(&["api", "jobs", &job_id, "output"]).await?;
    let both = json!({"job": job.raw, "output": output.raw});
    ctx.out
        .print(&both, || views::outcome(&job.typed, &output.typed))?;
    Ok(if job.typed.status == JobStatus::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Polls `GET /api/jobs/{id}` under `policy`, showing the status in a spinner.
async fn wait_with_spinner(client: &ApiClient, job_id: &str, policy: WaitPolicy) -> Result<Answer<Job>> {
    let spinner = wait::spinner(format!("job {job_id}: submitted"));
    let poll = move || async move { client.get(&["api", "jobs", job_id]).await };
    let report = |progress: Progress<'_>| match progress {
        Progress::Status(status) => spinner.set_message(format!("job {job_id}: {status}")),
        Progress::Retrying(err) => spinner.set_message(format!("job {job_id}: retrying ({err})")),
    };
    let job = wait::wait_for_end(policy, poll, report).await;
    spinner.finish_and_clear();
    job
}

/// `GET /api/jobs/{id}`.
pub async fn status(ctx: &Ctx, job_id: Uuid) -> Result<()> {
    let job: Answer<Job> = ctx.client.get(&["api", "jobs", &job_id.to_string()]).await?;
    ctx.out.show(&job, views::job)
}

/// `cancel`: one job (an id given twice counts once) by
/// `POST /api/jobs/{id}/cancel`, shown as it always was; several by
/// `POST /api/jobs/cancel_batch`, which cancels those it can and says why
/// it left the others (exit code 1 when it left any).
pub async fn cancel(ctx: &Ctx, args: CancelArgs) -> Result<ExitCode> {
    let ids = distinct(&args.job_ids);
    if let [one] = ids.as_slice() {
        cancel_one(ctx, *one).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let done = cancel_many(ctx, &ids).await?;
    let refused = done.typed.refused.len();
    if refused == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    note(&format!("error: {refused} of {} jobs not cancelled", ids.len()));
    Ok(ExitCode::FAILURE)
}

/// `ids` without repeats, in the order first given: the bulk route would
/// refuse the second cancel of a job it just cancelled.
fn distinct(ids: &[Uuid]) -> Vec<Uuid> {
    let mut seen = HashSet::new();
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

/// `POST /api/jobs/{id}/cancel`: the job, now cancelled.
async fn cancel_one(ctx: &Ctx, job_id: Uuid) -> Result<()> {
    let path = ["api", "jobs", &job_id.to_string(), "cancel"];
    let job: Answer<Job> = ctx.client.post(&path, &json!({})).await?;
    ctx.out.show(&job, views::job)
}

/// `POST /api/jobs/cancel_batch` of `ids`, at most [`MAX_CANCEL_BATCH`] per
/// request; prints what was cancelled and what was refused, and answers it.
/// When a request fails after others were answered, what they did is
/// printed before the error, which says which ids it left unhandled.
async fn cancel_many(ctx: &Ctx, ids: &[Uuid]) -> Result<Answer<CancelBatchResult>> {
    let mut done: Option<Answer<CancelBatchResult>> = None;
    for (chunk, sent) in ids.chunks(MAX_CANCEL_BATCH).zip((0..).step_by(MAX_CANCEL_BATCH)) {
        let body = CancelBatchRequest {
            job_ids: chunk.to_vec(),
        };
        match ctx.client.post(&["api", "jobs", "cancel_batch"], &body).await {
            Ok(answer) => done = Some(merge_cancels(done, answer)),
            Err(err) => {
                if let Some(partial) = &done {
                    ctx.out.show(partial, views::cancel_batch)?;
                }
                return Err(err.context(failed_chunk(sent, chunk.len(), ids.len())));
            }
        }
    }
    let done = done.context("no job to cancel")?;
    ctx.out.show(&done, views::cancel_batch)?;
    Ok(done)
}

/// What a failed bulk cancel request was doing: which of the `total` ids
/// it carried (`len` of them past the first `sent`), and whether later ones
/// were left unsent.
fn failed_chunk(sent: usize, len: usize, total: usize) -> String {
    let end = sent + len;
    match (sent, end < total) {
        (0, false) => format!("cancelling {total} jobs"),
        (_, false) => format!("cancelling jobs {} to {end} of {total}", sent + 1),
        (_, true) => format!(
            "cancelling jobs {} to {end} of {total} (the later ones were not sent)",
            sent + 1
        ),
    }
}

/// The answers of two bulk cancels as one, in order, its JSON made of the
/// entries as sent (one answer stays exactly as the server sent it).
fn merge_cancels(
    earlier: Option<Answer<CancelBatchResult>>,
    next: Answer<CancelBatchResult>,
) -> Answer<CancelBatchResult> {
    let Some(mut all) = earlier else {
        return next;
    };
    for key in ["cancelled", "refused"] {
        if let (Some(Value::Array(rows)), Some(Value::Array(more))) =
            (all.raw.get_mut(key), next.raw.get(key))
        {
            rows.extend(more.iter().cloned());
        }
    }
    all.typed.cancelled.extend(next.typed.cancelled);
    all.typed.refused.extend(next.typed.refused);
    all
}

/// `GET /api/jobs/{id}/events`.
pub async fn events(ctx: &Ctx, job_id: Uuid) -> Result<()> {
    let path = ["api", "jobs", &job_id.to_string(), "events"];
    let events: Answer<EventList> = ctx.client.get(&path).await?;
    ctx.out.show(&events, |list| {
        views::list_of(&list.events, views::EVENT_COLUMNS, "no events")
    })
}

/// `GET /api/jobs/{id}/output`.
pub async fn output(ctx: &Ctx, job_id: Uuid) -> Result<()> {
    let path = ["api", "jobs", &job_id.to_string(), "output"];
    let output: Answer<JobOutput> = ctx.client.get(&path).await?;
    ctx.out.show(&output, job_output)
}

/// How often `logs -f` asks for new output.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);

/// `logs`: the job's stdout to standard output and stderr to standard
/// error, as the job printed them; with `-f`, asks every
/// [`FOLLOW_INTERVAL`] for the bytes past those printed, until the job has
/// ended and nothing new came. Exit code 0 unless following a job that did
/// not complete.
pub async fn logs(ctx: &Ctx, args: LogsArgs) -> Result<ExitCode> {
    let path = ["api", "jobs", &args.job_id.to_string(), "output"];
    let mut seen = (0i64, 0i64);
    loop {
        let query = OutputQuery {
            shard: Some(args.shard),
            offset: Some(seen.0.min(seen.1)).filter(|o| *o > 0),
            limit: None,
        };
        let answer: Answer<JobOutput> = ctx.client.get_with(&path, &query).await?;
        let out = &answer.typed;
        let offset = query.offset.unwrap_or(0);
        let fresh = (
            print_past(out.stdout.as_deref(), seen.0 - offset, &mut std::io::stdout())?,
            print_past(out.stderr.as_deref(), seen.1 - offset, &mut std::io::stderr())?,
        );
        seen = (seen.0 + fresh.0, seen.1 + fresh.1);
        let quiet = fresh == (0, 0);
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        if quiet && out.status.is_terminal() {
            return Ok(if out.status == JobStatus::Completed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        if quiet {
            tokio::time::sleep(FOLLOW_INTERVAL).await;
        }
    }
}

/// Writes what of `text` lies past its first `skip` bytes to `to`;
/// answers how many bytes that was.
fn print_past(text: Option<&str>, skip: i64, to: &mut impl std::io::Write) -> Result<i64> {
    let bytes = text.unwrap_or_default().as_bytes();
    let skip = usize::try_from(skip).unwrap_or(0).min(bytes.len());
    let fresh = &bytes[skip..];
    to.write_all(fresh)
        .and_then(|()| to.flush())
        .context("writing the job's output")?;
    Ok(i64::try_from(fresh.len()).unwrap_or(i64::MAX))
}

/// The query of one page of `GET /api/jobs`: only the given parameters.
pub fn list_query(args: &ListArgs, cursor: Option<String>) -> ListQuery {
    ListQuery {
        status: args.status.map(|status| status.as_str().to_owned()),
        limit: args.limit,
        cursor,
        schedule: args.schedule.map(|id| id.to_string()),
    }
}

/// `GET /api/jobs`; with `--all-pages`, every page, as one list.
pub async fn list(ctx: &Ctx, args: ListArgs) -> Result<()> {
    let page = fetch_pages(&ctx.client, &args).await?;
    ctx.out.show(&page, |page| {
        views::list_of(&page.jobs, views::JOB_COLUMNS, "no jobs")
    })?;
    if let Some(next) = &page.typed.next_cursor {
        if !ctx.out.json {
            note(&format!("more jobs: --cursor {next} (or --all-pages)"));
        }
    }
    Ok(())
}

/// The query of one page of `GET /api/jobs/search`: only the given
/// filters, the times as RFC 3339 (`Z` for UTC).
pub fn search_query(args: &SearchArgs) -> SearchQuery {
    let time = |at: &chrono::DateTime<chrono::FixedOffset>| at.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    SearchQuery {
        status: args.status.map(|status| status.as_str().to_owned()),
        user: args.user.clone(),
        label: args.label.as_ref().map(|(key, value)| format!("{key}={value}")),
        since: args.since.as_ref().map(time),
        until: args.until.as_ref().map(time),
        worker: args.worker.clone(),
        limit: args.limit,
        cursor: args.cursor.clone(),
    }
}

/// `GET /api/jobs/search`: one page of the jobs matching every filter, as
/// `list` shows them, with how many match in all; like `list`, a note says
/// how to get the next page.
pub async fn search(ctx: &Ctx, args: SearchArgs) -> Result<()> {
    let page: Answer<SearchPage> = ctx
        .client
        .get_with(&["api", "jobs", "search"], &search_query(&args))
        .await?;
    ctx.out.show(&page, views::search_page)?;
    if let Some(next) = &page.typed.next_cursor {
        if !ctx.out.json {
            note(&format!("more jobs: --cursor {next} (with the same filters)"));
        }
    }
    Ok(())
}

/// One page, or with `--all-pages` all of them merged into one
/// `{"jobs": [...], "next_cursor": null}` (its JSON made of the jobs as sent).
async fn fetch_pages(client: &ApiClient, args: &ListArgs) -> Result<Answer<JobPage>> {
    let page =
        move |cursor| async move { client.get_with(&["api", "jobs"], &list_query(args, cursor)).await };
    if args.all_pages {
        every_page(args.cursor.clone(), page).await
    } else {
        page(args.cursor.clone()).await
    }
}

#[cfg(test)]
mod logs_tests {
    use super::print_past;

    #[test]
    fn only_the_bytes_past_those_printed_are_written() {
        let mut out = Vec::new();
        assert_eq!(print_past(Some("hello world"), 6, &mut out).unwrap(), 5);
        assert_eq!(out, b"world");
        assert_eq!(print_past(Some("abc"), 9, &mut out).unwrap(), 0);
        assert_eq!(print_past(None, 0, &mut out).unwrap(), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use crate::client::query_pairs;
    use anyhow::bail;
    use clap::Parser;

    fn submit_args(line: &[&str]) -> Option<SubmitArgs> {
        let cli = Cli::try_parse_from(["orchestrator", "submit"].iter().chain(line)).ok()?;
        match cli.command {
            Command::Submit(args) => Some(*args),
            _ => None,
        }
    }

    /// The JSON body `submit` would send for `line`.
    fn body(line: &[&str]) -> Result<Value> {
        let args = submit_args(line).context("parse")?;
        Ok(serde_json::to_value(submission(&args)?)?)
    }

    #[test]
    fn submit_body_sends_only_what_was_given() -> Result<()> {
        assert_eq!(body(&["train"])?, json!({"task_description": "train"}));
        Ok(())
    }

    #[test]
    fn typed_submission_leaves_unset_options_to_the_server() -> Result<()> {
        let args = submit_args(&["train", "--priority", "0"]).context("parse")?;
        let request = submission(&args)?;
        let expected = SubmitRequest {
            task_description: "train".into(),
            priority: Some(0),
            ..SubmitRequest::default()
        };
        assert_eq!(request, expected);
        let sent = serde_json::to_value(&request)?;
        assert_eq!(sent, json!({"task_description": "train", "priority": 0}));
        Ok(())
    }

    #[test]
    fn submit_body_maps_every_option_to_its_field() -> Result<()> {
        let line = [
            "train",
            "--workers",
            "4",
            "--priority",
            "9",
            "--timeout",
            "60",
            "--max-retries",
            "2",
            "--idempotency-key",
            "k1",
            "--label",
            "team=ml",
            "--label",
            "env=dev",
            "--",
            "python",
            "-m",
            "t",
        ];
        let expected = json!({
            "task_description": "train", "required_workers": 4, "priority": 9, "timeout_seconds": 60,
            "max_retries": 2, "idempotency_key": "k1", "labels": {"team": "ml", "env": "dev"},
            "command": ["python", "-m", "t"]
        });
        assert_eq!(body(&line)?, expected);
        Ok(())
    }

    #[test]
    fn submit_body_carries_the_resource_limits() -> Result<()> {
        let line = ["train", "--memory-mb", "512", "--cpu", "0.5", "--max-pids", "64"];
        let expected = json!({"task_description": "train", "memory_mb": 512, "cpu": 0.5, "max_pids": 64});
        assert_eq!(body(&line)?, expected);
        assert!(submit_args(&["x", "--memory-mb", "3"]).is_none(), "below 4 MiB");
        assert!(submit_args(&["x", "--max-pids", "0"]).is_none());
        assert!(submit_args(&["x", "--cpu", "half"]).is_none());
        let args = submit_args(&["x", "--cpu", "2000"]).context("parse")?;
        let err = submission(&args).err().map(|e| e.0).unwrap_or_default();
        assert!(err.contains("body.cpu: must be between 0.01 and 1024"), "{err}");
        Ok(())
    }

    #[test]
    fn submit_body_carries_the_pool_and_selector_checked_before_sending() -> Result<()> {
        let mut line = vec!["train"];
        line.extend(crate::fixtures::PLACEMENT_FLAGS);
        let expected = json!({"task_description": "train", "pool": "gpu",
                              "selector": {"zone": "eu-1", "os": "linux"}});
        assert_eq!(body(&line)?, expected);
        for bad in [["x", "--pool", "GPU"], ["x", "--selector", "zone=a,b"]] {
            let args = submit_args(&bad).context("parse")?;
            let err = submission(&args).err().map(|e| e.0).unwrap_or_default();
            assert!(
                err.contains("body.pool") || err.contains("body.selector"),
                "{err}"
            );
        }
        Ok(())
    }

    #[test]
    fn submit_body_refuses_a_label_given_twice() -> Result<()> {
        let args = submit_args(&["x", "--label", "a=1", "--label", "a=2"]).context("parse")?;
        assert!(submission(&args).is_err());
        Ok(())
    }

    #[test]
    fn a_submission_breaking_the_contract_is_not_sent() -> Result<()> {
        let long_key = "k".repeat(256);
        let args = submit_args(&["", "--idempotency-key", &long_key]).context("parse")?;
        let err = submission(&args).err().map(|e| e.0);
        let expected = "invalid request (not sent):\n  body.task_description: must be 1 to 10000 characters\n  body.idempotency_key: must be 1 to 255 characters";
        assert_eq!(err.as_deref(), Some(expected));
        Ok(())
    }

    fn search_args(line: &[&str]) -> Result<SearchArgs> {
        let cli = Cli::try_parse_from(["orchestrator", "search"].iter().chain(line))?;
        match cli.command {
            Command::Search(args) => Ok(args),
            other => bail!("not a search: {other:?}"),
        }
    }

    #[test]
    fn search_query_has_only_the_given_filters_as_the_server_reads_them() -> Result<()> {
        assert_eq!(query_pairs(&search_query(&search_args(&[])?))?, []);
        let line = [
            "--label",
            "team=a=b",
            "--status",
            "timed_out",
            "--since",
            "2025-03-01t09:30:00.25z",
            "--until",
            "2025-03-02T00:00:00+02:00",
            "--user",
            "bob",
            "--worker",
            "w1",
            "--limit",
            "5",
            "--cursor",
            "c",
        ];
        let pairs = query_pairs(&search_query(&search_args(&line)?))?;
        let expected = [
            ("status", "timed_out"),
            ("user", "bob"),
            ("label", "team=a=b"),
            ("since", "2025-03-01T09:30:00.250Z"),
            ("until", "2025-03-02T00:00:00+02:00"),
            ("worker", "w1"),
            ("limit", "5"),
            ("cursor", "c"),
        ];
        let expected: Vec<(String, String)> =
            expected.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        assert_eq!(pairs, expected);
        Ok(())
    }

    #[test]
    fn repeated_ids_are_cancelled_once_in_the_order_given() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(distinct(&[b, a, b, b, a]), [b, a]);
    }

    fn cancelled(ids: &[u128], refused: &[u128]) -> Answer<CancelBatchResult> {
        let raw = json!({
            "cancelled": ids.iter().map(|i| Uuid::from_u128(*i)).collect::<Vec<_>>(),
            "refused": refused.iter().map(|i| json!({"job_id": Uuid::from_u128(*i), "detail": "no"})).collect::<Vec<_>>(),
        });
        let typed = serde_json::from_value(raw.clone()).unwrap_or_default();
        Answer {
            status: 200,
            raw,
            typed,
        }
    }

    #[test]
    fn a_failed_bulk_cancel_says_which_ids_it_carried() {
        assert_eq!(failed_chunk(0, 3, 3), "cancelling 3 jobs");
        assert_eq!(failed_chunk(500, 1, 501), "cancelling jobs 501 to 501 of 501");
        assert_eq!(
            failed_chunk(0, 500, 501),
            "cancelling jobs 1 to 500 of 501 (the later ones were not sent)"
        );
    }

    #[test]
    fn answers_of_several_bulk_cancels_add_up_in_order() {
        let one = merge_cancels(None, cancelled(&[1], &[2]));
        assert!(one == cancelled(&[1], &[2]), "one answer stays as sent");
        let both = merge_cancels(Some(one), cancelled(&[3], &[4]));
        assert!(both == cancelled(&[1, 3], &[2, 4]));
    }

    #[test]
    fn list_query_has_only_the_given_parameters() -> Result<()> {
        let args = ListArgs {
            status: Some(JobStatus::TimedOut),
            limit: None,
            cursor: None,
            schedule: None,
            all_pages: false,
        };
        let pairs = query_pairs(&list_query(&args, None))?;
        assert_eq!(pairs, [("status".to_owned(), "timed_out".to_owned())]);
        let args = ListArgs {
            status: None,
            limit: Some(500),
            ..args
        };
        let pairs = query_pairs(&list_query(&args, Some("c1".into())))?;
        assert_eq!(
            pairs,
            [
                ("limit".to_owned(), "500".to_owned()),
                ("cursor".to_owned(), "c1".to_owned())
            ]
        );
        Ok(())
    }
}
