//! `schedules list|show|create|pause|resume|delete`: jobs submitted on a
//! cron expression by the controller's leader.

use super::Ctx;
use crate::args::{CreateScheduleArgs, SchedulesCommand};
use crate::client::{every_page, Answer, ApiClient};
use crate::error::UsageError;
use crate::input::{labels_map, placement};
use crate::views;
use anyhow::Result;
use orchestrator_shared::api::jobs::MAX_PAGE_LIMIT;
use orchestrator_shared::api::schedules::ScheduleListQuery;
use orchestrator_shared::api::{
    CreateScheduleRequest, Overlap, Schedule, ScheduleDetail, ScheduleList, SubmitRequest,
    UpdateScheduleRequest,
};
use uuid::Uuid;

/// Runs a `schedules` subcommand.
pub async fn run(ctx: &Ctx, command: SchedulesCommand) -> Result<()> {
    match command {
        SchedulesCommand::List => list(ctx).await,
        SchedulesCommand::Show(s) => show(ctx, s.schedule_id).await,
        SchedulesCommand::Create(args) => create(ctx, &args).await,
        SchedulesCommand::Pause(s) => set_enabled(ctx, s.schedule_id, false).await,
        SchedulesCommand::Resume(s) => set_enabled(ctx, s.schedule_id, true).await,
        SchedulesCommand::Delete(s) => delete(ctx, s.schedule_id).await,
    }
}

/// `GET /api/schedules`, every page: the caller's schedules, all of them.
async fn list(ctx: &Ctx) -> Result<()> {
    let list = fetch_all(&ctx.client).await?;
    ctx.out.show(&list, |list| {
        views::list_of(&list.schedules, views::SCHEDULE_COLUMNS, "no schedules")
    })
}

/// Every page of `GET /api/schedules` (of the largest size the controller
/// allows, so a long list takes few requests) as one answer. A controller
/// that predates paging answers everything with no `next_cursor`: one
/// request, as before.
async fn fetch_all(client: &ApiClient) -> Result<Answer<ScheduleList>> {
    every_page(None, move |cursor| async move {
        let query = ScheduleListQuery {
            limit: Some(MAX_PAGE_LIMIT),
            cursor,
        };
        client.get_with(&["api", "schedules"], &query).await
    })
    .await
}

/// `GET /api/schedules/{id}`: the schedule, then its last runs.
async fn show(ctx: &Ctx, schedule_id: Uuid) -> Result<()> {
    let id = schedule_id.to_string();
    let detail: Answer<ScheduleDetail> = ctx.client.get(&["api", "schedules", &id]).await?;
    ctx.out.show(&detail, |d| {
        format!(
            "{}\n\n{}",
            views::fields(&d.schedule),
            views::list_of(&d.runs, views::RUN_COLUMNS, "no runs yet")
        )
    })
}

/// The request `schedules create` asks for, checked against the contract's
/// rules (cron, zone and template included) before it is sent.
pub fn creation(args: &CreateScheduleArgs) -> Result<CreateScheduleRequest, UsageError> {
    let (pool, selector) = placement(&args.placement)?;
    let request = CreateScheduleRequest {
        name: args.name.clone(),
        cron: args.cron.clone(),
        timezone: args.timezone.clone(),
        template: SubmitRequest {
            task_description: args.task_description.clone(),
            command: (!args.command.is_empty()).then(|| args.command.clone()),
            priority: args.priority,
            labels: labels_map(&args.labels)?,
            pool,
            selector,
            ..SubmitRequest::default()
        },
        enabled: !args.paused,
        overlap: Overlap::parse(&args.overlap).unwrap_or_default(),
        catch_up: args.catch_up,
    };
    if let Err(problems) = request.check() {
        UsageError::check(&problems)?;
    }
    Ok(request)
}

/// `POST /api/schedules`.
async fn create(ctx: &Ctx, args: &CreateScheduleArgs) -> Result<()> {
    let request = creation(args)?;
    let made: Answer<Schedule> = ctx.client.post(&["api", "schedules"], &request).await?;
    ctx.out.show(&made, views::fields)
}

/// `PATCH /api/schedules/{id}` of `enabled` only.
async fn set_enabled(ctx: &Ctx, schedule_id: Uuid, enabled: bool) -> Result<()> {
    let id = schedule_id.to_string();
    let change = UpdateScheduleRequest {
        enabled: Some(enabled),
        ..UpdateScheduleRequest::default()
    };
    let changed: Answer<Schedule> = ctx.client.patch(&["api", "schedules", &id], &change).await?;
    ctx.out.show(&changed, |s| {
        let state = if s.enabled { "resumed" } else { "paused" };
        format!("schedule {} {state}", s.schedule_id)
    })
}

/// `DELETE /api/schedules/{id}`.
async fn delete(ctx: &Ctx, schedule_id: Uuid) -> Result<()> {
    let id = schedule_id.to_string();
    ctx.client.delete(&["api", "schedules", &id]).await?;
    if !ctx.out.json {
        println!("schedule {schedule_id} deleted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use crate::client::query_pairs;
    use anyhow::Context;
    use clap::Parser;
    use serde_json::{json, Value};
    use std::collections::HashMap;

    fn create_args(line: &[&str]) -> Option<CreateScheduleArgs> {
        let argv = ["orchestrator", "schedules", "create"].iter().chain(line);
        match Cli::try_parse_from(argv).ok()?.command {
            Command::Schedules(SchedulesCommand::Create(args)) => Some(*args),
            _ => None,
        }
    }

    #[test]
    fn create_builds_the_request_and_checks_it_before_sending() {
        let line = [
            "--name",
            "n",
            "--cron",
            "0 9 * * *",
            "--overlap",
            "skip",
            "--label",
            "a=b",
            "report",
            "--",
            "/bin/true",
        ];
        let args = create_args(&line).unwrap_or_else(|| panic!("parses"));
        let req = creation(&args).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (req.overlap, req.enabled, req.timezone.as_str()),
            (Overlap::Skip, true, "UTC")
        );
        assert_eq!(req.template.command, Some(vec!["/bin/true".to_owned()]));
        assert_eq!(req.template.labels.get("a").map(String::as_str), Some("b"));
        let bad =
            create_args(&["--name", "n", "--cron", "61 * * * *", "x"]).unwrap_or_else(|| panic!("parses"));
        let err = creation(&bad).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("cron"), "{err}");
        assert!(create_args(&["--name", "n", "--cron", "* * * * *", "--overlap", "never", "x"]).is_none());
    }

    #[test]
    fn create_places_each_job_by_pool_and_selector_checked_before_sending() {
        let placed = |extra: &[&str]| {
            let mut line = vec!["--name", "n", "--cron", "* * * * *"];
            line.extend_from_slice(extra);
            line.push("train");
            let args = create_args(&line).unwrap_or_else(|| panic!("{extra:?} parses"));
            creation(&args).map_err(|e| e.to_string())
        };
        let req = placed(&crate::fixtures::PLACEMENT_FLAGS).unwrap_or_else(|e| panic!("{e}"));
        let template = serde_json::to_value(&req.template).unwrap_or_default();
        assert_eq!(
            (&template["pool"], &template["selector"]),
            (&json!("gpu"), &json!({"zone": "eu-1", "os": "linux"})),
            "{template}"
        );
        let plain = placed(&[]).unwrap_or_else(|e| panic!("{e}"));
        let template = serde_json::to_value(&plain.template).unwrap_or_default();
        assert!(
            template.get("pool").is_none() && template.get("selector").is_none(),
            "{template}"
        );
        for (bad, names) in [
            (["--pool", "GPU"], "pool"),
            (["--selector", "zone=a,b"], "selector"),
        ] {
            let err = placed(&bad).err().unwrap_or_default();
            assert!(err.contains(names), "{bad:?}: {err}");
        }
        let twice = placed(&["--selector", "zone=a", "--selector", "zone=b"]);
        assert!(twice.is_err_and(|e| e.contains("zone")));
    }

    /// A page of schedules named `names`, as a controller sends it.
    fn page(names: &[&str], next: Option<&str>) -> Answer<ScheduleList> {
        let rows: Vec<Value> = names
            .iter()
            .map(|name| {
                json!({"schedule_id": Uuid::new_v4(), "name": name, "cron": "0 0 * * *",
                    "timezone": "UTC", "template": {"task_description": "x"}, "enabled": true,
                    "overlap": "allow", "catch_up": false, "owner": Uuid::nil(),
                    "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
                    "next_fire_times": []})
            })
            .collect();
        let raw = json!({"schedules": rows, "next_cursor": next});
        let typed = serde_json::from_value(raw.clone()).unwrap_or_else(|e| panic!("{e}: {raw}"));
        Answer {
            status: 200,
            raw,
            typed,
        }
    }

    #[tokio::test]
    async fn every_page_of_schedules_is_read_into_one_list() -> Result<()> {
        let pages = HashMap::from([
            (None, page(&["a", "b"], Some("c1"))),
            (Some("c1".to_owned()), page(&["c"], None)),
        ]);
        let fetch = |cursor| {
            let page = pages.get(&cursor).cloned();
            async move { page.context("no such page") }
        };
        let all = every_page(None, fetch).await?;
        let names: Vec<&str> = all.typed.schedules.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let raw_names: Vec<&str> = all.raw["schedules"]
            .as_array()
            .map(|rows| rows.iter().filter_map(|r| r["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(raw_names, ["a", "b", "c"], "--json shows every schedule as sent");
        assert_eq!(all.raw["next_cursor"], Value::Null);
        Ok(())
    }

    #[test]
    fn a_list_from_a_controller_without_paging_reads_as_the_last_page() {
        let mut old = page(&["a"], None);
        if let Some(body) = old.raw.as_object_mut() {
            body.remove("next_cursor");
        }
        let typed: ScheduleList = serde_json::from_value(old.raw).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(typed.next_cursor, None);
    }

    #[test]
    fn each_page_asks_for_the_most_the_controller_allows() -> Result<()> {
        let query = |cursor: Option<&str>| ScheduleListQuery {
            limit: Some(MAX_PAGE_LIMIT),
            cursor: cursor.map(str::to_owned),
        };
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(query_pairs(&query(None))?, [pair("limit", "500")]);
        assert_eq!(
            query_pairs(&query(Some("c1")))?,
            [pair("limit", "500"), pair("cursor", "c1")]
        );
        Ok(())
    }
}
