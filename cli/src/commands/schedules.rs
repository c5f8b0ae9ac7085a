//! `schedules list|show|create|pause|resume|delete`: jobs submitted on a
//! cron expression by the controller's leader.

use super::Ctx;
use crate::args::{CreateScheduleArgs, SchedulesCommand};
use crate::client::Answer;
use crate::error::UsageError;
use crate::input::{labels_map, placement};
use crate::views;
use anyhow::Result;
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

/// `GET /api/schedules`.
async fn list(ctx: &Ctx) -> Result<()> {
    let list: Answer<ScheduleList> = ctx.client.get(&["api", "schedules"]).await?;
    ctx.out.show(&list, |list| {
        views::list_of(&list.schedules, views::SCHEDULE_COLUMNS, "no schedules")
    })
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
    use clap::Parser;
    use serde_json::json;

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
}
