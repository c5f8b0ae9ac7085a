//! The agent's life: register with the controller, run the broker session
//! and the heartbeat, wait for a shutdown signal or a `Terminate`, then
//! drain (running shards finish and report), say `Stopped`, and close.

use crate::config::{hostname, AgentConfig};
use crate::state::State;
use crate::{runner, session};
use anyhow::Context;
use orchestrator_shared::api::RegisterRequest;
use orchestrator_shared::backoff::backoff;
use orchestrator_shared::messages::AgentEvent;
use orchestrator_shared::WorkerStatus;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// What this agent tells the controller when it registers.
fn registration(state: &State) -> RegisterRequest {
    RegisterRequest {
        worker_id: state.worker_id().to_owned(),
        hostname: hostname(),
        capacity: state.config.capacity,
        labels: state.config.label_map(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        resources: state.config.offered(),
        isolation: Some(state.limits.sandbox.report().clone()),
        pools: state.config.pools.clone(),
    }
}

/// Says at start which protections are on and, loudly, which are off.
fn log_isolation(state: &State) {
    let report = state.limits.sandbox.report();
    tracing::info!(job_user = ?report.job_user, cgroup = ?report.cgroup, "job isolation");
    for off in &report.disabled {
        tracing::warn!("job isolation is incomplete: {off}");
    }
}

/// Refuses to start with a registration the controller would refuse (too
/// many or too long labels, say): the contract's own rules, checked here,
/// so the operator sees the reason at once instead of an agent retrying
/// its registration forever.
fn check_registration(request: &RegisterRequest) -> anyhow::Result<()> {
    let problems = request.problems();
    if problems.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {}", p.location(), p.msg))
        .collect();
    anyhow::bail!(
        "this agent's registration breaks the contract: {}",
        lines.join("; ")
    )
}

/// How long the final `Stopped` event may keep failing to publish before
/// the agent exits without it (the controller then notices the missing
/// heartbeats instead).
const STOPPED_WINDOW: Duration = Duration::from_secs(5);

/// Aborts a background task when dropped, so dropping the future of [`run`]
/// instead of resolving its shutdown leaves no session or heartbeat behind.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Puts the agent in its stopping state when [`run`] ends or its future is
/// dropped: shards still running then give up on their reports after a
/// while instead of waiting for a connection that will not come back.
struct StopOnDrop(Arc<State>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stopping.send_replace(true);
        self.0.publisher.set_channel(None);
    }
}

/// Runs the agent until `shutdown` resolves or a `Terminate` command
/// arrives, then drains and returns. Errors only when it cannot start.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = Arc::new(State::new(config).context("setting up the agent")?);
    check_registration(&registration(&state))?;
    let _stop_guard = StopOnDrop(Arc::clone(&state));
    tracing::info!(worker_id = state.worker_id(), capacity = state.config.capacity,
        controllers = %state.config.controller_url, "agent starting");
    log_isolation(&state);
    let swept = state.limits.sandbox.sweep().await;
    if swept > 0 {
        tracing::warn!(swept, "killed jobs an earlier life of this agent left running");
    }
    runner::sweep_work_root(&state.limits.work_root).await;
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        () = register(&state) => {}
        () = &mut shutdown => {
            tracing::info!("stopped before registering");
            return Ok(());
        }
    }
    let (close, closed) = watch::channel(false);
    let supervisor = tokio::spawn(session::supervise(Arc::clone(&state), closed));
    let _supervisor_guard = AbortOnDrop(supervisor.abort_handle());
    let heartbeat = AbortOnDrop(tokio::spawn(heartbeat(Arc::clone(&state))).abort_handle());
    let _classes = AbortOnDrop(tokio::spawn(crate::classes::poll(Arc::clone(&state))).abort_handle());
    let mut stopping = state.stopping.subscribe();
    tokio::select! {
        () = &mut shutdown => tracing::info!("shutdown requested: draining"),
        _ = stopping.wait_for(|s| *s) => {}
    }
    drain(&state, heartbeat).await;
    close.send_replace(true);
    if let Err(e) = supervisor.await {
        tracing::warn!(error = %e, "the broker session task failed");
    }
    state.limits.sandbox.release();
    runner::empty_work_root(&state.limits.work_root).await;
    tracing::info!(worker_id = state.worker_id(), "agent stopped");
    Ok(())
}

/// Registers until the controller accepts (capped backoff between tries),
/// and starts from its answer: the generation of this incarnation (before
/// the control queue is consumed, so no message left for an earlier one is
/// obeyed), the broker login to connect with and, if the worker id is
/// paused, paused. The broker session calls it again when the broker
/// refuses the login it has.
pub(crate) async fn register(state: &State) {
    let request = registration(state);
    let mut attempt = 0u32;
    loop {
        match state.client.register(&request).await {
            Ok(answer) => {
                let worker = answer.worker;
                state.set_generation(worker.generation);
                state.set_broker_login(answer.broker);
                state.reports.set_batched(answer.event_batches);
                if worker.status == WorkerStatus::Paused {
                    state.paused.send_replace(true);
                }
                tracing::info!(worker_id = state.worker_id(), generation = worker.generation,
                    status = %worker.status, controller = state.client.current_base(),
                    "registered with the controller");
                return;
            }
            Err(e) if e.is_auth() => {
                tracing::error!(error = %e, attempt, "the controller refused the agent credential (revoked, or for another worker id); retrying");
            }
            Err(e) if e.is_tls() => {
                tracing::error!(error = %e, attempt, "no TLS connection to the controller; retrying");
            }
            Err(e) => tracing::warn!(error = %e, attempt, "registering failed; retrying"),
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// Publishes a heartbeat every period while connected (one attempt each:
/// a late heartbeat is worth nothing).
async fn heartbeat(state: Arc<State>) {
    let mut ticks = tokio::time::interval(state.config.heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if !state.publisher.is_connected() {
            continue;
        }
        let event = AgentEvent::Heartbeat {
            worker_id: state.worker_id().to_owned(),
            running: state.running_shards(),
            paused: state.reports_paused(),
            generation: state.generation(),
        };
        if let Err(e) = state.publisher.publish_once(&event, 0).await {
            tracing::debug!(error = %e, "heartbeat not published");
        }
    }
}

/// Stops taking work, waits for every delivery in hand to be settled, then
/// says `Stopped`.
async fn drain(state: &State, heartbeat: AbortOnDrop) {
    state.stopping.send_replace(true);
    let in_hand = state.deliveries_in_hand();
    if in_hand > 0 {
        tracing::info!(in_hand, "waiting for running shards to finish and report");
    }
    state.all_deliveries_settled().await;
    drop(heartbeat);
    let stopped = AgentEvent::Stopped {
        worker_id: state.worker_id().to_owned(),
        generation: state.generation(),
    };
    match state
        .publisher
        .publish_reliably(std::slice::from_ref(&stopped), 0, &state.stopping, STOPPED_WINDOW)
        .await
    {
        Ok(()) => tracing::info!("drained; told the controller"),
        Err(e) => tracing::warn!(error = %e, "drained, but could not tell the controller"),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::AgentConfig;

    #[tokio::test]
    async fn an_agent_whose_labels_break_the_contract_refuses_to_start() {
        let mut args = vec![
            "worker-agent".to_owned(),
            "--agent-token=t".into(),
            "--worker-id=w-labels".into(),
        ];
        args.extend(crate::config::NO_ISOLATION.map(String::from));
        args.extend((0..65).map(|i| format!("--label=k{i}=v")));
        let config = AgentConfig::try_parse_from(args).unwrap();
        let err = super::run(config, std::future::pending()).await.unwrap_err();
        assert!(format!("{err:#}").contains("body.labels"), "{err:#}");
    }

    #[tokio::test]
    async fn an_agent_that_requires_isolation_refuses_to_start_without_it() {
        let mut args = vec![
            "worker-agent",
            "--agent-token=t",
            "--worker-id=w-strict",
            "--require-isolation",
        ];
        args.extend(crate::config::NO_ISOLATION);
        let config = AgentConfig::try_parse_from(args).unwrap();
        let err = format!(
            "{:#}",
            super::run(config, std::future::pending()).await.unwrap_err()
        );
        assert!(
            err.contains("isolation is required") && err.contains("no cgroup per job"),
            "{err}"
        );
    }
}
