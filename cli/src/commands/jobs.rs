//! `submit`, `status`, `list`, `cancel`, `events` and `output`.

use super::Ctx;
use crate::args::{ListArgs, LogsArgs, SubmitArgs};
use crate::client::{Answer, ApiClient};
use crate::error::UsageError;
use crate::input::{labels_map, placement};
use crate::output::note;
use crate::render::job_output;
use crate::views;
use crate::wait::{self, Progress, WaitPolicy};
use anyhow::{bail, Context, Result};
use orchestrator_shared::api::{EventList, Job, JobOutput, JobPage, ListQuery, OutputQuery, SubmitRequest};
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

/// `POST /api/jobs/{id}/cancel`.
pub async fn cancel(ctx: &Ctx, job_id: Uuid) -> Result<()> {
    let path = ["api", "jobs", &job_id.to_string(), "cancel"];
    let job: Answer<Job> = ctx.client.post(&path, &json!({})).await?;
    ctx.out.show(&job, views::job)
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

/// One page, or with `--all-pages` all of them merged into one
/// `{"jobs": [...], "next_cursor": null}` (its JSON made of the jobs as sent).
async fn fetch_pages(client: &ApiClient, args: &ListArgs) -> Result<Answer<JobPage>> {
    let mut cursor = args.cursor.clone();
    let mut seen = HashSet::new();
    let (mut jobs, mut raw_jobs) = (Vec::new(), Vec::new());
    loop {
        let page: Answer<JobPage> = client
            .get_with(&["api", "jobs"], &list_query(args, cursor.clone()))
            .await?;
        if !args.all_pages {
            return Ok(page);
        }
        if let Some(Value::Array(rows)) = page.raw.get("jobs") {
            raw_jobs.extend(rows.iter().cloned());
        }
        jobs.extend(page.typed.jobs);
        match page.typed.next_cursor {
            None => {
                let raw = json!({"jobs": raw_jobs, "next_cursor": null});
                let typed = JobPage {
                    jobs,
                    next_cursor: None,
                };
                return Ok(Answer {
                    status: page.status,
                    raw,
                    typed,
                });
            }
            Some(next) if !seen.insert(next.clone()) => bail!("the controller sent cursor {next} twice"),
            Some(next) => cursor = Some(next),
        }
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
