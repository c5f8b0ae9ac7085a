//! What the agent's tasks share: its settings, the controller client, the
//! event publisher, the switches (paused, stopping), the shards running now
//! and the count of deliveries in hand. It outlives broker connections, so
//! running shards and their reports survive a reconnection.

use crate::claims::Claims;
use crate::client::ControllerClient;
use crate::config::AgentConfig;
use crate::isolation::Sandbox;
use crate::publisher::Publisher;
use crate::reports::Reports;
use crate::runner::{CancelHandle, RunLimits};
use anyhow::Context;
use orchestrator_shared::api::BrokerLogin;
use orchestrator_shared::messages::{RunningShard, Topology};
use orchestrator_shared::tls::CaBundle;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{watch, Semaphore};
use uuid::Uuid;

/// One shard running now.
#[derive(Debug)]
struct Running {
    /// Which shard, as heartbeats report it.
    shard: RunningShard,
    /// Stops its process group (a `CancelJob` command).
    cancel: CancelHandle,
    /// Set once its report is settled: `Some(true)` when the broker
    /// confirmed it, `Some(false)` when the agent gave up. A second delivery
    /// of the same shard (redelivered after a reconnection) waits on it.
    reported: watch::Sender<Option<bool>>,
}

/// Everything the agent's tasks share; lives as long as [`crate::run`].
#[derive(Debug)]
pub struct State {
    /// The settings it was started with.
    pub config: AgentConfig,
    /// Broker names.
    pub topology: Topology,
    /// The controller's agent API.
    pub client: ControllerClient,
    /// Claims, batched.
    pub claims: Claims,
    /// The private CA of `--ca-file`, trusted for the controller's and the
    /// broker's certificates besides the system's roots.
    pub ca: Option<CaBundle>,
    /// Publishes events on the current connection.
    pub publisher: Publisher,
    /// Shard reports, several to a message when the controller takes it.
    pub reports: Reports,
    /// What every run obeys (work root, grace, tail size).
    pub limits: RunLimits,
    /// Set by `Pause` (or by a registration answer that says the worker is
    /// paused), cleared by `Resume`.
    pub paused: watch::Sender<bool>,
    /// This incarnation's registration generation (0 until registered, and
    /// from a controller that predates generations): control messages for
    /// an earlier one are dropped.
    generation: AtomicI64,
    /// The broker login of the latest registration answer; `None` while
    /// unregistered and when the controller gives agents no login of their
    /// own (the broker URL's login is used then).
    broker_login: Mutex<Option<BrokerLogin>>,
    /// Set once the agent drains (shutdown signal or `Terminate`); never
    /// cleared.
    pub stopping: watch::Sender<bool>,
    /// Whether the jobs consumer is really active now (what heartbeats
    /// report, rather than what was asked).
    pub consuming: AtomicBool,
    /// At most `capacity` children at once, also across a reconnection
    /// (the new channel's prefetch does not count shards of the old one).
    pub slots: Semaphore,
    /// Shards running now, by a per-run id.
    running: Mutex<HashMap<u64, Running>>,
    /// Source of per-run ids.
    next_run: AtomicU64,
    /// Job deliveries being handled (claimed, run, reported); the drain
    /// waits for zero.
    in_hand: watch::Sender<usize>,
    /// The job queues (one per job class of this agent's pools and labels)
    /// the session consumes while it takes work; `classes::poll` adds the
    /// ones the controller names.
    pub queues: watch::Sender<Vec<String>>,
}

impl State {
    /// Builds the shared state from the configuration.
    pub fn new(config: AgentConfig) -> anyhow::Result<Self> {
        let topology = Topology::new(config.broker_prefix.clone());
        let ca = config
            .ca_file
            .as_deref()
            .map(CaBundle::read)
            .transpose()
            .context("reading the CA file")?;
        let credential = config.credential().context("the agent's credential")?;
        let client = ControllerClient::new(&config.controller_url, credential, ca.as_ref())
            .context("building the HTTP client")?;
        let publisher = Publisher::new(&topology).context("naming the events exchange")?;
        let limits = RunLimits {
            // One directory per agent, so agents sharing a host (and a work
            // root) never touch each other's runs. The prefix keeps ids such
            // as `..` (valid worker ids) from naming another directory.
            work_root: config.work_root.join(format!("agent-{}", config.worker_id)),
            kill_grace: config.kill_grace,
            tail_bytes: config.output_tail_bytes,
            sandbox: Arc::new(
                Sandbox::setup(
                    &config.sandbox(),
                    &config.worker_id,
                    usize::try_from(config.capacity).unwrap_or(1),
                )
                .context("setting up job isolation")?,
            ),
            keep_workdirs: config.keep_workdirs,
        };
        let claims = Claims::new(client.clone(), config.worker_id.clone());
        let queues = watch::channel(crate::classes::initial(&topology, &config.pools)).0;
        let slots = Semaphore::new(usize::try_from(config.capacity).unwrap_or(1).max(1));
        Ok(State {
            config,
            topology,
            claims,
            client,
            ca,
            publisher,
            reports: Reports::new(),
            limits,
            paused: watch::channel(false).0,
            generation: AtomicI64::new(0),
            broker_login: Mutex::new(None),
            stopping: watch::channel(false).0,
            consuming: AtomicBool::new(false),
            slots,
            running: Mutex::new(HashMap::new()),
            next_run: AtomicU64::new(0),
            in_hand: watch::channel(0).0,
            queues,
        })
    }

    /// This agent's worker id.
    pub fn worker_id(&self) -> &str {
        &self.config.worker_id
    }

    /// The generation the controller gave this agent when it registered.
    pub fn generation(&self) -> i64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Records the generation of the registration answer.
    pub fn set_generation(&self, generation: i64) {
        self.generation.store(generation, Ordering::Relaxed);
    }

    /// The broker login to connect with (see [`State::set_broker_login`]).
    pub fn broker_login(&self) -> Option<BrokerLogin> {
        self.broker_login
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Records the broker login of a registration answer.
    pub fn set_broker_login(&self, login: Option<BrokerLogin>) {
        *self
            .broker_login
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = login;
    }

    /// Whether the agent is draining.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Whether heartbeats should say the agent takes no work.
    pub fn reports_paused(&self) -> bool {
        !self.consuming.load(Ordering::Relaxed)
    }

    fn running(&self) -> MutexGuard<'_, HashMap<u64, Running>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a running shard until the returned guard is dropped.
    pub fn track(self: &Arc<Self>, shard: RunningShard, cancel: CancelHandle) -> RunGuard {
        let id = self.next_run.fetch_add(1, Ordering::Relaxed);
        let reported = watch::channel(None).0;
        self.running().insert(
            id,
            Running {
                shard,
                cancel,
                reported,
            },
        );
        RunGuard {
            state: Arc::clone(self),
            id,
        }
    }

    /// If this agent already runs `shard` (same job, attempt and index),
    /// a way to learn whether that run's report was confirmed.
    pub fn twin_of(&self, shard: &RunningShard) -> Option<watch::Receiver<Option<bool>>> {
        let running = self.running();
        let twin = running.values().find(|r| r.shard == *shard)?;
        Some(twin.reported.subscribe())
    }

    /// Cancels every running shard of `job_id`; returns how many.
    pub fn cancel_job(&self, job_id: Uuid) -> usize {
        let mut cancelled = 0;
        for run in self.running().values().filter(|r| r.shard.job_id == job_id) {
            run.cancel.cancel();
            cancelled += 1;
        }
        cancelled
    }

    /// The shards running now, for a heartbeat.
    pub fn running_shards(&self) -> Vec<RunningShard> {
        self.running().values().map(|r| r.shard.clone()).collect()
    }

    /// Counts a job delivery as in hand until the guard is dropped.
    pub fn hold_delivery(self: &Arc<Self>) -> DeliveryGuard {
        self.in_hand.send_modify(|n| *n += 1);
        DeliveryGuard(Arc::clone(self))
    }

    /// Number of job deliveries in hand.
    pub fn deliveries_in_hand(&self) -> usize {
        *self.in_hand.borrow()
    }

    /// Resolves when no job delivery is in hand.
    pub async fn all_deliveries_settled(&self) {
        let mut rx = self.in_hand.subscribe();
        // The sender lives in `self`, so this cannot fail while we wait.
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// Keeps a shard in the running map (and in heartbeats) while it lives.
#[derive(Debug)]
pub struct RunGuard {
    /// Where it is recorded.
    state: Arc<State>,
    /// Its key.
    id: u64,
}

impl RunGuard {
    /// Records how its report went (for a twin delivery) and ends the entry.
    pub fn finish(self, published: bool) {
        if let Some(run) = self.state.running().get(&self.id) {
            run.reported.send_replace(Some(published));
        }
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if let Some(run) = self.state.running().remove(&self.id) {
            // A run that ends without `finish` did not get its report out.
            run.reported.send_modify(|r| {
                r.get_or_insert(false);
            });
        }
    }
}

/// Counts one job delivery as in hand while it lives.
#[derive(Debug)]
pub struct DeliveryGuard(Arc<State>);

impl Drop for DeliveryGuard {
    fn drop(&mut self) {
        self.0.in_hand.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::NO_ISOLATION;

    /// An agent's state for unit tests: worker `w`, no isolation.
    pub(crate) fn state() -> Arc<State> {
        let config = AgentConfig::try_parse_from([
            "worker-agent",
            "--agent-token=t",
            "--worker-id=w",
            NO_ISOLATION[0],
            NO_ISOLATION[1],
        ]);
        Arc::new(State::new(config.unwrap()).unwrap())
    }

    fn shard(job_id: Uuid, shard_index: i32) -> RunningShard {
        RunningShard {
            job_id,
            attempt: 1,
            shard_index,
        }
    }

    #[test]
    fn running_shards_are_listed_cancelled_by_job_and_removed() {
        let state = state();
        let (job, other) = (Uuid::new_v4(), Uuid::new_v4());
        let (c0, c1, c2) = (CancelHandle::new(), CancelHandle::new(), CancelHandle::new());
        let g0 = state.track(shard(job, 0), c0.clone());
        let _g1 = state.track(shard(job, 1), c1.clone());
        let _g2 = state.track(shard(other, 0), c2.clone());
        assert_eq!(state.running_shards().len(), 3);
        assert_eq!(state.cancel_job(job), 2);
        assert!(c0.is_cancelled() && c1.is_cancelled() && !c2.is_cancelled());
        drop(g0);
        assert_eq!(state.running_shards().len(), 2);
        assert_eq!(state.cancel_job(Uuid::new_v4()), 0);
    }

    #[tokio::test]
    async fn a_twin_learns_how_the_report_went() {
        let state = state();
        let job = Uuid::new_v4();
        let guard = state.track(shard(job, 0), CancelHandle::new());
        assert!(state.twin_of(&shard(job, 1)).is_none());
        let mut twin = state.twin_of(&shard(job, 0)).unwrap();
        assert_eq!(*twin.borrow(), None);
        guard.finish(true);
        assert_eq!(*twin.wait_for(Option::is_some).await.unwrap(), Some(true));
        assert!(
            state.twin_of(&shard(job, 0)).is_none(),
            "finished runs leave the map"
        );

        let dropped = state.track(shard(job, 0), CancelHandle::new());
        let mut twin = state.twin_of(&shard(job, 0)).unwrap();
        drop(dropped);
        assert_eq!(*twin.wait_for(Option::is_some).await.unwrap(), Some(false));
    }

    #[test]
    fn each_agent_works_in_its_own_directory() {
        let config = AgentConfig::try_parse_from([
            "worker-agent",
            "--agent-token=t",
            "--worker-id=...",
            NO_ISOLATION[0],
            NO_ISOLATION[1],
        ]);
        let state = State::new(config.unwrap()).unwrap();
        let root = &state.config.work_root;
        assert_eq!(state.limits.work_root, root.join("agent-..."));
        assert_eq!(state.limits.work_root.parent(), Some(root.as_path()));
    }

    #[test]
    fn a_dot_segment_is_not_a_worker_id() {
        for id in [".", ".."] {
            let config = AgentConfig::try_parse_from([
                "worker-agent",
                "--agent-token=t",
                &format!("--worker-id={id}"),
            ]);
            assert!(config.is_err(), "{id}");
        }
    }

    #[tokio::test]
    async fn deliveries_in_hand_are_counted() {
        let state = state();
        let a = state.hold_delivery();
        let b = state.hold_delivery();
        assert_eq!(state.deliveries_in_hand(), 2);
        drop(a);
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(1), state.all_deliveries_settled())
            .await
            .unwrap();
    }
}
