//! One job delivery from start to end: parse it, claim it from the
//! controller, run what the claim's answer says (never what the broker
//! message says: anyone who can publish to the jobs queue could write
//! that), publish the `ShardFinished` report with a confirm, and only then
//! acknowledge the delivery. A delivery that is not
//! acknowledged (agent killed, connection lost) goes back to the queue, so
//! no shard is lost; the controller's fencing makes a second run harmless.

use crate::config::AgentConfig;
use crate::output;
use crate::retry;
use crate::runner::{self, CancelHandle, RunReport, RunSpec};
use crate::state::State;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use orchestrator_shared::api::{ClaimDecision, ClaimResponse, Resources, ShardClaim, ShardWork};
use orchestrator_shared::messages::{AgentEvent, JobDispatch, RunningShard, MAX_PRIORITY};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a claim is retried while the controller cannot be reached
/// before the delivery goes back to the queue.
const CLAIM_PATIENCE: Duration = Duration::from_secs(30);
/// Pause before giving back a delivery the controller asked to requeue, so
/// the same message does not bounce straight back to this agent.
const REQUEUE_PAUSE: Duration = Duration::from_millis(500);
/// Once draining, how long a report may keep failing to publish before the
/// agent gives up (leaving its delivery to be redelivered).
const REPORT_WINDOW_WHEN_STOPPING: Duration = Duration::from_secs(30);

/// Handles `delivery` in its own task, counted as in hand until settled.
pub fn spawn(state: &Arc<State>, delivery: Delivery) {
    let held = state.hold_delivery();
    let state = Arc::clone(state);
    tokio::spawn(async move {
        handle(&state, delivery).await;
        drop(held);
    });
}

async fn handle(state: &Arc<State>, delivery: Delivery) {
    let dispatch: JobDispatch = match serde_json::from_slice(&delivery.data) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "malformed job message; dead-lettering it");
            let r = delivery.reject(BasicRejectOptions { requeue: false }).await;
            return settled(r, "reject", None);
        }
    };
    let job_id = dispatch.job_id;
    if state.is_stopping() {
        return requeue(&delivery, &dispatch).await;
    }
    if let Some(twin) = state.twin_of(&shard_of(&dispatch)) {
        return settle_with_twin(&delivery, &dispatch, twin).await;
    }
    let Ok(slot) = state.slots.acquire().await else {
        return requeue(&delivery, &dispatch).await;
    };
    let Some(work) = claimed_work(state, &delivery, &dispatch).await else {
        return;
    };
    let (report, running) = execute(state, &dispatch, work).await;
    drop(slot);
    tracing::info!(%job_id, attempt = dispatch.attempt, shard = dispatch.shard_index,
        outcome = ?report.outcome, exit_code = ?report.exit_code, "shard finished");
    let published = publish_report(state, &dispatch, report).await;
    if let Some(running) = running {
        running.finish(published);
    }
    if published {
        let r = delivery.ack(BasicAckOptions::default()).await;
        settled(r, "ack", Some(&dispatch));
    }
}

/// Claims the shard of `dispatch`: with `run`, the work the controller
/// says it runs; otherwise settles the delivery as the answer says (ack a
/// skip, give back a requeue or an unanswered claim) and answers `None`.
async fn claimed_work(
    state: &State,
    delivery: &Delivery,
    dispatch: &JobDispatch,
) -> Option<Option<ShardWork>> {
    let answer = claim(state, dispatch, delivery.redelivered).await;
    match answer.map(|a| (a.decision, a.work)) {
        Some((ClaimDecision::Run, work)) => return Some(work),
        Some((ClaimDecision::Skip, _)) => {
            let r = delivery.ack(BasicAckOptions::default()).await;
            settled(r, "ack", Some(dispatch));
        }
        Some((ClaimDecision::Requeue, _)) => {
            tokio::time::sleep(REQUEUE_PAUSE).await;
            requeue(delivery, dispatch).await;
        }
        None => requeue(delivery, dispatch).await,
    }
    None
}

fn shard_of(d: &JobDispatch) -> RunningShard {
    RunningShard {
        job_id: d.job_id,
        attempt: d.attempt,
        shard_index: d.shard_index,
    }
}

/// A second delivery of a shard this agent is running already (the broker
/// requeued the first one when a connection dropped): running it again
/// would run it twice here, so it is settled by the first run's report:
/// acknowledged once that report is confirmed, requeued if it never is.
async fn settle_with_twin(
    delivery: &Delivery,
    dispatch: &JobDispatch,
    mut twin: watch::Receiver<Option<bool>>,
) {
    tracing::info!(job_id = %dispatch.job_id, attempt = dispatch.attempt, shard = dispatch.shard_index,
        "shard redelivered while it runs here; settling it with the running one's report");
    let confirmed = matches!(twin.wait_for(Option::is_some).await.map(|r| *r), Ok(Some(true)));
    if confirmed {
        let r = delivery.ack(BasicAckOptions::default()).await;
        settled(r, "ack", Some(dispatch));
    } else {
        requeue(delivery, dispatch).await;
    }
}

async fn requeue(delivery: &Delivery, dispatch: &JobDispatch) {
    let r = delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await;
    settled(r, "requeue", Some(dispatch));
}

/// Logs how settling a delivery went. A delivery of a channel that has
/// closed cannot be settled: the broker has already requeued it.
fn settled(result: lapin::Result<bool>, what: &str, dispatch: Option<&JobDispatch>) {
    let job_id = dispatch.map(|d| d.job_id);
    match result {
        Ok(true) => tracing::debug!(?job_id, what, "delivery settled"),
        Ok(false) => tracing::warn!(
            ?job_id,
            what,
            "delivery not settled: its channel has closed and the broker hands it out again"
        ),
        Err(e) => tracing::warn!(?job_id, what, error = %e,
            "delivery not settled; the broker hands it out again"),
    }
}

/// Asks the controller whether to run `d`, retrying for
/// [`CLAIM_PATIENCE`]; `None` when it could not be asked.
async fn claim(state: &State, d: &JobDispatch, redelivered: bool) -> Option<ClaimResponse> {
    let request = ShardClaim {
        job_id: d.job_id,
        attempt: d.attempt,
        shard_index: d.shard_index,
        redelivered,
    };
    let answer = retry::within(
        CLAIM_PATIENCE,
        || state.claims.claim(request),
        |_| true,
        |e| tracing::warn!(job_id = %d.job_id, error = %e, "claim failed; retrying"),
    )
    .await;
    match answer {
        Ok(answer) => {
            tracing::info!(job_id = %d.job_id, attempt = d.attempt, shard = d.shard_index,
                decision = ?answer.decision, reason = %answer.reason, "claim answered");
            Some(answer)
        }
        Err(e) => {
            tracing::warn!(job_id = %d.job_id, error = %e, "claim failed; giving the shard back");
            None
        }
    }
}

/// The shard of `d` as the controller's claim answer describes it: the
/// message names which shard, the controller says what it runs.
pub fn as_claimed(d: &JobDispatch, work: Option<ShardWork>) -> Result<JobDispatch, String> {
    let work = work.ok_or("the controller's claim answer did not say what to run")?;
    Ok(JobDispatch {
        task_description: work.task_description,
        command: work.command,
        shard_count: work.shard_count,
        timeout_seconds: work.timeout_seconds,
        ..d.clone()
    })
}

/// Runs the shard as claimed (or explains why it cannot), listed among the
/// running shards while it runs and until the returned guard is dropped.
async fn execute(
    state: &Arc<State>,
    d: &JobDispatch,
    work: Option<ShardWork>,
) -> (RunReport, Option<crate::state::RunGuard>) {
    let limits = work.as_ref().map(|w| w.limits).unwrap_or_default();
    let spec = match as_claimed(d, work).and_then(|claimed| spec_for(&state.config, &claimed)) {
        Ok(spec) => RunSpec { limits, ..spec },
        Err(refusal) => return (RunReport::failed(refusal), None),
    };
    let cancel = CancelHandle::new();
    let guard = state.track(shard_of(d), cancel.clone());
    if state.config.noop_runner {
        return (RunReport::succeeded_at_once(), Some(guard));
    }
    (run_streaming(state, d, spec, &cancel).await, Some(guard))
}

/// Runs `spec`, sending its output to the controller as it comes (unless
/// `--stream-output false`); returns once all of it is sent, so the
/// output is stored before the report is published.
async fn run_streaming(
    state: &State,
    d: &JobDispatch,
    mut spec: RunSpec,
    cancel: &CancelHandle,
) -> RunReport {
    if !state.config.stream_output {
        return runner::run(&spec, &state.limits, cancel).await;
    }
    let key = output::ShardKey {
        worker_id: state.worker_id().to_owned(),
        job_id: d.job_id,
        attempt: d.attempt,
        shard_index: d.shard_index,
    };
    let settings = output::Settings {
        flush: Duration::from_millis(state.config.output_flush_ms),
        cap: state.config.output_cap_bytes,
    };
    let (sink, sending) = output::start(state.client.clone(), key, settings);
    spec.output = Some(sink);
    let report = runner::run(&spec, &state.limits, cancel).await;
    drop(spec);
    if let Err(e) = sending.await {
        tracing::warn!(job_id = %d.job_id, error = %e, "the output sender ended abnormally");
    }
    report
}

/// What to run for `d` on an agent configured as `config`, or why it must
/// not run.
pub fn spec_for(config: &AgentConfig, d: &JobDispatch) -> Result<RunSpec, String> {
    let (program, args) = match (&d.command, &config.executor) {
        (Some(_), _) if !config.allow_commands => {
            return Err("running commands is not allowed on this agent".into())
        }
        (Some(argv), _) => match argv.split_first() {
            Some((program, args)) => (program.into(), args.to_vec()),
            None => return Err("the job's command is empty".into()),
        },
        (None, Some(executor)) => (absolute(executor).into_os_string(), config.executor_args.clone()),
        (None, None) => return Err("no executor configured".into()),
    };
    let env = vec![
        ("JOB_ID".to_owned(), d.job_id.to_string()),
        ("SHARD_INDEX".to_owned(), d.shard_index.to_string()),
        ("SHARD_COUNT".to_owned(), d.shard_count.to_string()),
        ("TASK_DESCRIPTION".to_owned(), d.task_description.clone()),
        ("ATTEMPT".to_owned(), d.attempt.to_string()),
    ];
    let timeout = d
        .timeout_seconds
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs);
    let workdir_name = format!(
        "{}-s{}-a{}-{}",
        d.job_id,
        d.shard_index,
        d.attempt,
        uuid::Uuid::new_v4().simple()
    );
    Ok(RunSpec {
        program,
        args,
        env,
        stdin: d.task_description.clone(),
        timeout,
        workdir_name,
        limits: Resources::default(),
        output: None,
    })
}

/// A relative executor path with a directory part is taken from the
/// agent's working directory (the child runs elsewhere); a bare name is
/// looked up in `PATH`.
fn absolute(path: &Path) -> PathBuf {
    if path.is_relative() && path.components().count() > 1 {
        std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
    } else {
        path.to_owned()
    }
}

/// Publishes the report until confirmed; false if the agent gave up
/// (draining with the broker unreachable).
async fn publish_report(state: &State, d: &JobDispatch, report: RunReport) -> bool {
    let event = AgentEvent::ShardFinished {
        worker_id: state.worker_id().to_owned(),
        job_id: d.job_id,
        attempt: d.attempt,
        shard_index: d.shard_index,
        outcome: report.outcome,
        exit_code: report.exit_code,
        stdout_tail: report.stdout_tail,
        stderr_tail: report.stderr_tail,
        error: report.error,
    };
    let priority = u8::try_from(d.priority.clamp(0, i32::from(MAX_PRIORITY))).unwrap_or(0);
    let (publisher, stopping) = (&state.publisher, &state.stopping);
    match state
        .reports
        .publish(publisher, event, priority, stopping, REPORT_WINDOW_WHEN_STOPPING)
        .await
    {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(job_id = %d.job_id, error = %e,
                "gave up publishing a shard report; the delivery stays unacknowledged and runs again");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_shared::messages::ShardOutcome;

    fn dispatch(command: Option<Vec<String>>) -> JobDispatch {
        JobDispatch {
            job_id: uuid::Uuid::new_v4(),
            attempt: 2,
            shard_index: 1,
            shard_count: 3,
            task_description: "describe me".into(),
            command,
            timeout_seconds: Some(7),
            priority: 4,
        }
    }

    fn config(extra: &[&str]) -> AgentConfig {
        let mut args = vec!["worker-agent", "--agent-token=t", "--worker-id=w"];
        args.extend_from_slice(extra);
        AgentConfig::try_parse_from(args).unwrap()
    }

    #[test]
    fn commands_need_permission_and_jobs_without_one_need_an_executor() {
        let d = dispatch(Some(vec!["/bin/true".into()]));
        assert_eq!(
            spec_for(&config(&[]), &d).unwrap_err(),
            "running commands is not allowed on this agent"
        );
        assert_eq!(
            spec_for(&config(&[]), &dispatch(None)).unwrap_err(),
            "no executor configured"
        );
        let empty = dispatch(Some(vec![]));
        assert!(spec_for(&config(&["--allow-commands"]), &empty).is_err());
    }

    #[test]
    fn the_spec_carries_argv_environment_stdin_and_timeout() {
        let d = dispatch(Some(vec!["/bin/echo".into(), "a b".into(), "$HOME".into()]));
        let spec = spec_for(&config(&["--allow-commands"]), &d).unwrap();
        assert_eq!(spec.program, "/bin/echo");
        assert_eq!(spec.args, ["a b", "$HOME"]);
        assert_eq!(spec.stdin, "describe me");
        assert_eq!(spec.timeout, Some(Duration::from_secs(7)));
        let env: std::collections::HashMap<_, _> = spec.env.iter().cloned().collect();
        assert_eq!(env["JOB_ID"], d.job_id.to_string());
        assert_eq!(env["SHARD_INDEX"], "1");
        assert_eq!(env["SHARD_COUNT"], "3");
        assert_eq!(env["ATTEMPT"], "2");
        assert_eq!(env["TASK_DESCRIPTION"], "describe me");
        let again = spec_for(&config(&["--allow-commands"]), &d).unwrap();
        assert_ne!(spec.workdir_name, again.workdir_name, "unique per run");
    }

    #[test]
    fn the_executor_runs_jobs_without_a_command() {
        let c = config(&["--executor=/usr/bin/env", "--executor-arg=-u", "--executor-arg=X"]);
        let mut d = dispatch(None);
        d.timeout_seconds = Some(0);
        let spec = spec_for(&c, &d).unwrap();
        assert_eq!(spec.program, "/usr/bin/env");
        assert_eq!(spec.args, ["-u", "X"]);
        assert_eq!(spec.timeout, None, "a non-positive timeout means none");
    }

    #[tokio::test]
    async fn the_executor_gets_the_description_on_stdin_and_the_env() {
        let root = std::env::temp_dir().join(format!("worker-agent-job-{}", uuid::Uuid::new_v4().simple()));
        let script = "read line; echo \"$line|$JOB_ID|$SHARD_INDEX/$SHARD_COUNT|$ATTEMPT|$TASK_DESCRIPTION\"";
        let c = config(&[
            "--executor=/bin/sh",
            "--executor-arg=-c",
            &format!("--executor-arg={script}"),
        ]);
        let d = dispatch(None);
        let spec = spec_for(&c, &d).unwrap();
        let limits = runner::RunLimits {
            work_root: root.clone(),
            kill_grace: Duration::from_secs(1),
            tail_bytes: 4096,
            sandbox: Arc::new(crate::isolation::Sandbox::none()),
            keep_workdirs: false,
        };
        let r = runner::run(&spec, &limits, &CancelHandle::new()).await;
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(r.outcome, ShardOutcome::Succeeded, "{r:?}");
        let expected = format!("describe me|{}|1/3|2|describe me\n", d.job_id);
        assert_eq!(r.stdout_tail, expected);
    }
}
