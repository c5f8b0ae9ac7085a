//! `submit`, `status`, `list`, `cancel`, `events` and `output`.

use super::Ctx;
use crate::args::{ListArgs, SubmitArgs};
use crate::client::ApiClient;
use crate::input::labels_map;
use crate::output::note;
use crate::status::{is_success, status_of};
use crate::views;
use crate::wait::{self, Progress, WaitPolicy};
use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;
use uuid::Uuid;

/// The body of `POST /api/jobs/submit`; options left out are left to the server's defaults.
pub fn submit_body(args: &SubmitArgs) -> Result<Value> {
    let mut body = Map::new();
    body.insert("task_description".into(), json!(args.task_description));
    let optional = [
        ("required_workers", args.workers.map(Value::from)),
        ("priority", args.priority.map(Value::from)),
        ("timeout_seconds", args.timeout.map(Value::from)),
        ("max_retries", args.max_retries.map(Value::from)),
        ("idempotency_key", args.idempotency_key.clone().map(Value::from)),
    ];
    body.extend(optional.into_iter().filter_map(|(k, v)| Some((k.to_owned(), v?))));
    if !args.command_args().is_empty() {
        body.insert("command".into(), json!(args.command_args()));
    }
    if !args.labels.is_empty() {
        body.insert("labels".into(), json!(labels_map(&args.labels)?));
    }
    Ok(Value::Object(body))
}

/// `POST /api/jobs/submit`; with `--wait`, then polls the job until it ends
/// and prints its output (exit code 0 only if it completed).
pub async fn submit(ctx: &Ctx, args: SubmitArgs) -> Result<ExitCode> {
    let reply = ctx
        .client
        .post(&["api", "jobs", "submit"], &submit_body(&args)?)
        .await?;
    if reply.status == 200 {
        note("note: a job with this idempotency key already exists; this is that job");
    }
    if !args.wait {
        ctx.out.show(&reply.body, views::job)?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(job_id) = reply.body.get("job_id").and_then(Value::as_str) else {
        bail!("the submit answer has no job_id");
    };
    note(&format!("submitted job {job_id}"));
    let policy = WaitPolicy {
        interval: wait::POLL_INTERVAL,
        timeout: Duration::from_secs(args.wait_timeout),
        max_outage: wait::MAX_OUTAGE,
    };
    let job = wait_with_spinner(&ctx.client, job_id, policy)
        .await
        .with_context(|| format!("waiting for job {job_id} (see `orchestrator status {job_id}`)"))?;
    let output = ctx
        .client
        .get(&["api", "jobs", job_id, "output"], &[])
        .await?
        .body;
    let both = json!({"job": job, "output": output});
    ctx.out.show(&both, |_| views::outcome(&job, &output))?;
    let completed = status_of(&job).is_some_and(is_success);
    Ok(if completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Polls `GET /api/jobs/{id}` under `policy`, showing the status in a spinner.
async fn wait_with_spinner(client: &ApiClient, job_id: &str, policy: WaitPolicy) -> Result<Value> {
    let spinner = wait::spinner(format!("job {job_id}: submitted"));
    let poll = move || async move { client.get(&["api", "jobs", job_id], &[]).await.map(|r| r.body) };
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
    let reply = ctx.client.get(&["api", "jobs", &job_id.to_string()], &[]).await?;
    ctx.out.show(&reply.body, views::job)
}

/// `POST /api/jobs/{id}/cancel`.
pub async fn cancel(ctx: &Ctx, job_id: Uuid) -> Result<()> {
    let path = ["api", "jobs", &job_id.to_string(), "cancel"];
    let reply = ctx.client.post(&path, &json!({})).await?;
    ctx.out.show(&reply.body, views::job)
}

/// `GET /api/jobs/{id}/events`.
pub async fn events(ctx: &Ctx, job_id: Uuid) -> Result<()> {
    let reply = ctx
        .client
        .get(&["api", "jobs", &job_id.to_string(), "events"], &[])
        .await?;
    ctx.out.show(&reply.body, |body| {
        views::list_of(body, "events", views::EVENT_COLUMNS, "no events")
    })
}

/// `GET /api/jobs/{id}/output`.
pub async fn output(ctx: &Ctx, job_id: Uuid) -> Result<()> {
    let reply = ctx
        .client
        .get(&["api", "jobs", &job_id.to_string(), "output"], &[])
        .await?;
    ctx.out.show(&reply.body, crate::render::job_output)
}

/// The query string of one page of `GET /api/jobs`.
pub fn list_query(args: &ListArgs, cursor: Option<&str>) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    if let Some(status) = &args.status {
        query.push(("status", status.clone()));
    }
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    if let Some(cursor) = cursor {
        query.push(("cursor", cursor.to_owned()));
    }
    query
}

/// `GET /api/jobs`; with `--all-pages`, every page, as one list.
pub async fn list(ctx: &Ctx, args: ListArgs) -> Result<()> {
    let page = fetch_pages(&ctx.client, &args).await?;
    ctx.out.show(&page, |page| {
        views::list_of(page, "jobs", views::JOB_COLUMNS, "no jobs")
    })?;
    if let Some(next) = page.get("next_cursor").and_then(Value::as_str) {
        if !ctx.out.json {
            note(&format!("more jobs: --cursor {next} (or --all-pages)"));
        }
    }
    Ok(())
}

/// One page, or with `--all-pages` all of them merged into one
/// `{"jobs": [...], "next_cursor": null}`.
async fn fetch_pages(client: &ApiClient, args: &ListArgs) -> Result<Value> {
    let mut cursor = args.cursor.clone();
    let mut seen = HashSet::new();
    let mut jobs = Vec::new();
    loop {
        let page = client
            .get(&["api", "jobs"], &list_query(args, cursor.as_deref()))
            .await?
            .body;
        if !args.all_pages {
            return Ok(page);
        }
        let rows = page
            .get("jobs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        jobs.extend(rows);
        match page.get("next_cursor").and_then(Value::as_str) {
            None => return Ok(json!({"jobs": jobs, "next_cursor": null})),
            Some(next) if !seen.insert(next.to_owned()) => bail!("the controller sent cursor {next} twice"),
            Some(next) => cursor = Some(next.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;

    fn submit_args(line: &[&str]) -> Option<SubmitArgs> {
        let cli = Cli::try_parse_from(["orchestrator", "submit"].iter().chain(line)).ok()?;
        match cli.command {
            Command::Submit(args) => Some(args),
            _ => None,
        }
    }

    #[test]
    fn submit_body_sends_only_what_was_given() -> Result<()> {
        let args = submit_args(&["train"]).context("parse")?;
        assert_eq!(submit_body(&args)?, json!({"task_description": "train"}));
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
        let args = submit_args(&line).context("parse")?;
        let expected = json!({
            "task_description": "train", "required_workers": 4, "priority": 9, "timeout_seconds": 60,
            "max_retries": 2, "idempotency_key": "k1", "labels": {"team": "ml", "env": "dev"},
            "command": ["python", "-m", "t"]
        });
        assert_eq!(submit_body(&args)?, expected);
        Ok(())
    }

    #[test]
    fn submit_body_refuses_a_label_given_twice() -> Result<()> {
        let args = submit_args(&["x", "--label", "a=1", "--label", "a=2"]).context("parse")?;
        assert!(submit_body(&args).is_err());
        Ok(())
    }

    #[test]
    fn list_query_has_only_the_given_parameters() {
        let args = ListArgs {
            status: Some("running".into()),
            limit: None,
            cursor: None,
            all_pages: false,
        };
        assert_eq!(list_query(&args, None), [("status", "running".to_owned())]);
        let args = ListArgs {
            status: None,
            limit: Some(500),
            ..args
        };
        let query = list_query(&args, Some("c1"));
        assert_eq!(query, [("limit", "500".to_owned()), ("cursor", "c1".to_owned())]);
    }
}
