//! End-to-end clusters: a controller (in-process, real HTTP) on its own
//! database and broker prefix, and worker agents as real processes of the
//! `worker-agent` binary, so tests can SIGKILL or SIGTERM them.

use crate::{spawn_app_with, spawn_https_app, TestApp, TestTls};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Longest any end-to-end wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(90);

/// A controller and its agents.
pub struct Cluster {
    /// The controller.
    pub app: TestApp,
    /// Broker name prefix of this cluster.
    pub prefix: String,
    /// Each worker id's credential, issued when its first agent starts and
    /// kept for the agents started again under that id.
    pub credentials: std::collections::HashMap<String, String>,
    /// The `--controller-url` of the agents started from now on; `None`:
    /// the controller's URL. Set it to a comma-separated list to test
    /// agents that fail over between replicas ([`Cluster::add_replica`]).
    pub agent_controller_url: Option<String>,
    /// The CA agents trust for the controller's certificate, when it
    /// serves HTTPS ([`Cluster::start_https`]).
    ca_file: Option<PathBuf>,
    /// Further flags of the agents started from now on (an output cap, say).
    pub agent_args: Vec<String>,
    agent_bin: String,
    agents: Vec<(String, Child)>,
    /// Further controllers on the same database and broker prefix, in the
    /// order started ([`Cluster::add_replica`]).
    replicas: Vec<TestApp>,
}

/// Controller flags that make failure handling quick enough to test. The
/// heartbeat timeout stays above the agents' longest reconnection backoff
/// (5 s), so a broker restart does not look like lost agents.
const FAST_FLOW: &[&str] = &[
    "--heartbeat-timeout-ms",
    "6000",
    "--reaper-interval-ms",
    "250",
    "--retry-base-ms",
    "200",
    "--relay-poll-ms",
    "100",
    "--timeout-grace-ms",
    "5000",
];

/// The flags of every controller of a cluster: its broker prefix, a broker
/// user per agent, and [`FAST_FLOW`].
fn controller_flags(prefix: &str) -> Vec<String> {
    let mut flags = vec!["--broker-prefix".to_owned(), prefix.to_owned()];
    flags.extend(crate::broker_accounts_flag());
    flags.extend(FAST_FLOW.iter().map(|f| (*f).to_owned()));
    flags
}

impl Cluster {
    /// Starts a controller that gives each agent a broker user of its own;
    /// agents are added with [`Cluster::add_agent`].
    pub async fn start(agent_bin: &str) -> Cluster {
        Cluster::start_on(agent_bin, None, &[]).await
    }

    /// Like [`Cluster::start`], with `extra` flags for the controller (a
    /// limit a test needs small, say).
    pub async fn start_with(agent_bin: &str, extra: &[&str]) -> Cluster {
        Cluster::start_on(agent_bin, None, extra).await
    }

    /// Like [`Cluster::start`], with the controller serving HTTPS with
    /// `tls`'s certificate (which must name `localhost`) and the agents
    /// trusting `tls`'s CA (`--ca-file`); `tls` must outlive the cluster's
    /// agents.
    pub async fn start_https(agent_bin: &str, tls: &TestTls) -> Cluster {
        Cluster::start_on(agent_bin, Some(tls), &[]).await
    }

    /// Like [`Cluster::start`], with the controller in a process of its
    /// own, started from the binary at `controller_bin`
    /// ([`crate::spawn_app_process`]), so that its CPU and memory can be
    /// read apart from the test's.
    pub async fn start_process(agent_bin: &str, controller_bin: &str) -> Cluster {
        let prefix = crate::unique_prefix();
        let flags = controller_flags(&prefix);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let app = crate::spawn_app_process(controller_bin, &flags).await;
        Cluster::around(app, prefix, agent_bin, None)
    }

    /// A cluster over plain HTTP, or over HTTPS with `tls`.
    async fn start_on(agent_bin: &str, tls: Option<&TestTls>, extra: &[&str]) -> Cluster {
        let prefix = crate::unique_prefix();
        let flags = controller_flags(&prefix);
        let flags: Vec<&str> = flags
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .collect();
        let app = match tls {
            Some(tls) => spawn_https_app(tls, &flags).await,
            None => spawn_app_with(&flags).await,
        };
        Cluster::around(app, prefix, agent_bin, tls)
    }

    /// A cluster of the controller `app` on broker prefix `prefix`, with
    /// no agents yet.
    fn around(app: TestApp, prefix: String, agent_bin: &str, tls: Option<&TestTls>) -> Cluster {
        Cluster {
            app,
            prefix,
            credentials: std::collections::HashMap::new(),
            agent_controller_url: None,
            ca_file: tls.map(TestTls::ca_file),
            agent_args: Vec::new(),
            agent_bin: agent_bin.to_owned(),
            agents: Vec::new(),
            replicas: Vec::new(),
        }
    }

    /// Starts another replica of the controller (plain HTTP) on the
    /// cluster's database and broker prefix, as users run several with no
    /// load balancer; answers its base URL, for
    /// [`Cluster::agent_controller_url`].
    pub async fn add_replica(&mut self) -> String {
        let flags = controller_flags(&self.prefix);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let replica = self.app.spawn_replica(&flags).await;
        let url = replica.base_url.clone();
        self.replicas.push(replica);
        url
    }

    /// Stops the cluster's controller (its port then refuses connections)
    /// and makes the first replica the cluster's controller, through which
    /// the cluster's requests go from then on.
    pub async fn stop_controller_for_replica(&mut self) {
        assert!(!self.replicas.is_empty(), "no replica to take over");
        let replica = self.replicas.remove(0);
        std::mem::replace(&mut self.app, replica).stop().await;
    }

    /// Starts an agent process `worker_id` with `capacity` that may run
    /// commands, and waits until it has registered.
    pub async fn add_agent(&mut self, worker_id: &str, capacity: u32) {
        self.start_agent(worker_id, capacity).await;
        self.wait_worker(worker_id, |w| w["status"] == "idle").await;
    }

    /// `worker_id`'s credential: the one issued for its first agent, else
    /// a new one.
    async fn credential_for(&mut self, worker_id: &str) -> String {
        if let Some(credential) = self.credentials.get(worker_id) {
            return credential.clone();
        }
        let issued = self.app.agent_credential(worker_id).await;
        self.credentials.insert(worker_id.to_owned(), issued.clone());
        issued
    }

    /// Starts an agent process `worker_id` with `capacity` without waiting
    /// for anything: the way to start one again under an id that an earlier
    /// process (now exited, killed or terminated) had, as a restart policy
    /// would. The caller waits for what it expects (the worker's next
    /// generation, a status). An earlier process under the id that still
    /// runs is killed first, so that the cluster's handle is the new one.
    pub async fn start_agent(&mut self, worker_id: &str, capacity: u32) {
        if let Some(i) = self.agents.iter().position(|(id, _)| id == worker_id) {
            let (_, mut earlier) = self.agents.remove(i);
            let _ = earlier.start_kill();
            let _ = earlier.wait().await;
        }
        let credential = self.credential_for(worker_id).await;
        let mut command = Command::new(&self.agent_bin);
        if let Some(ca_file) = &self.ca_file {
            command.arg("--ca-file").arg(ca_file);
        }
        let controller_url = self.agent_controller_url.as_ref().unwrap_or(&self.app.base_url);
        let child = command
            .args(["--controller-url", controller_url])
            // No login: the registration answer gives the agent its own.
            .args(["--amqp-url", &crate::infra().amqp_url_without_login()])
            .args(["--broker-prefix", &self.prefix])
            .args(["--worker-id", worker_id])
            .args(["--capacity", &capacity.to_string()])
            .args([
                "--heartbeat-ms",
                "500",
                "--kill-grace-ms",
                "1000",
                "--allow-commands",
                // Jobs run as an unprivileged user in cgroups of their own
                // (the tests run as root on a cgroup v1 host); `nobody` is
                // on every Debian host, the image's per-slot users are not.
                "--job-user",
                "nobody",
            ])
            .args(
                test_cgroup_root()
                    .iter()
                    .flat_map(|root| ["--cgroup-root".as_ref(), root.as_os_str()]),
            )
            .args(&self.agent_args)
            .env("AGENT_TOKEN", &credential)
            .env(
                "RUST_LOG",
                std::env::var("AGENT_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.agent_bin));
        self.agents.push((worker_id.to_owned(), child));
    }

    /// The cluster controller's broker accounts, built as the controller
    /// builds them (to revoke an agent's broker access, as a test would of
    /// a broker that lost its users).
    pub fn broker_accounts(&self) -> controller::broker::BrokerAccounts {
        let accounts = crate::broker_accounts_flag();
        let flags = [
            "--broker-prefix",
            self.prefix.as_str(),
            &accounts[0],
            &accounts[1],
        ];
        let config = crate::test_config(&self.app.test_db.url, &flags);
        let topology = orchestrator_shared::messages::Topology::new(self.prefix.clone());
        controller::broker::BrokerAccounts::new(&config.broker_accounts, &config.amqp_url, topology, None)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("the cluster's broker accounts"))
    }

    /// Whether the agent process `worker_id` has not exited.
    pub fn agent_running(&mut self, worker_id: &str) -> bool {
        self.agents
            .iter_mut()
            .find(|(id, _)| id == worker_id)
            .is_some_and(|(_, child)| matches!(child.try_wait(), Ok(None)))
    }

    /// Process ids of the running agents (for CPU and memory figures).
    pub fn agent_pids(&self) -> Vec<u32> {
        self.agents.iter().filter_map(|(_, c)| c.id()).collect()
    }

    /// Sends SIGKILL to an agent (no chance to clean up).
    pub async fn kill_agent(&mut self, worker_id: &str) {
        if let Some((_, child)) = self.agents.iter_mut().find(|(id, _)| id == worker_id) {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Sends SIGTERM to an agent and waits (bounded) for it to exit.
    pub async fn stop_agent(&mut self, worker_id: &str) -> Option<std::process::ExitStatus> {
        let (_, child) = self.agents.iter_mut().find(|(id, _)| id == worker_id)?;
        let pid = child.id()?;
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        tokio::time::timeout(WAIT, child.wait()).await.ok()?.ok()
    }

    /// Waits (bounded) for an agent process to exit by itself.
    pub async fn wait_agent_exit(&mut self, worker_id: &str) -> Option<std::process::ExitStatus> {
        self.agent_exit_within(worker_id, WAIT).await
    }

    /// Waits up to `limit` for an agent process to exit by itself; `None`
    /// if it still runs then (or is unknown).
    pub async fn agent_exit_within(
        &mut self,
        worker_id: &str,
        limit: Duration,
    ) -> Option<std::process::ExitStatus> {
        let (_, child) = self.agents.iter_mut().find(|(id, _)| id == worker_id)?;
        tokio::time::timeout(limit, child.wait()).await.ok()?.ok()
    }

    /// Submits a job that runs `command`, with extra body fields.
    pub async fn submit(&self, command: &[&str], extra: Value) -> Value {
        let mut body = json!({"task_description": "e2e", "command": command});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let resp = self
            .app
            .post_json("/api/jobs/submit", &self.app.admin_token, &body)
            .await;
        assert_eq!(resp.status(), 201, "submitting {body}");
        resp.json().await.unwrap_or_default()
    }

    /// Publishes `dispatch` on the cluster's jobs queue as someone holding
    /// the broker's password (not the controller) could: to test that
    /// agents do not run what such a message says.
    pub async fn publish_forged_dispatch(&self, dispatch: &orchestrator_shared::messages::JobDispatch) {
        use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
        let url = crate::infra().amqp_url();
        let conn = orchestrator_shared::broker::connect(&url, None, lapin::ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("connecting to the broker: {e}"));
        let ch = conn.create_channel().await.unwrap_or_else(|e| panic!("{e}"));
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let queue = orchestrator_shared::messages::Topology::new(self.prefix.clone()).jobs_queue();
        let body = serde_json::to_vec(dispatch).unwrap_or_default();
        let props = orchestrator_shared::broker::persistent(9);
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await
            .unwrap_or_else(|e| panic!("publishing the forged dispatch: {e}"));
        confirm.await.unwrap_or_else(|e| panic!("confirming it: {e}"));
        let _ = conn.close(200, "done".into()).await;
    }

    /// `GET /api/jobs/{id}`.
    pub async fn job(&self, job_id: &str) -> Value {
        let resp = self
            .app
            .get(&format!("/api/jobs/{job_id}"), &self.app.admin_token)
            .await;
        resp.json().await.unwrap_or_default()
    }

    /// Polls the job until `done(job)` or [`WAIT`] passes (then panics).
    pub async fn wait_job(&self, job_id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let job = self.job(job_id).await;
            if done(&job) {
                return job;
            }
            assert!(started.elapsed() < WAIT, "job {job_id} never got there: {job}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the job until it is in `status`.
    pub async fn wait_status(&self, job_id: &str, status: &str) -> Value {
        self.wait_job(job_id, |j| j["status"] == status).await
    }

    /// `GET /api/supervisor/workers/{id}`.
    pub async fn worker(&self, worker_id: &str) -> Value {
        let resp = self
            .app
            .get(
                &format!("/api/supervisor/workers/{worker_id}"),
                &self.app.admin_token,
            )
            .await;
        resp.json().await.unwrap_or_default()
    }

    /// Polls the worker until `done(worker)` or [`WAIT`] passes.
    pub async fn wait_worker(&self, worker_id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let worker = self.worker(worker_id).await;
            if done(&worker) {
                return worker;
            }
            assert!(
                started.elapsed() < WAIT,
                "worker {worker_id} never got there: {worker}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A single number from the cluster's database (`SELECT count(*) …`).
    pub async fn count(&self, sql: &str) -> i64 {
        let db = self.app.db.client().await.unwrap_or_else(|e| panic!("{e}"));
        db.query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// Jobs that reached `completed` more than once (must always be 0).
    pub async fn duplicated_completions(&self) -> i64 {
        self.count(
            "SELECT count(*) FROM (SELECT job_id FROM job_events WHERE to_status = 'completed'
             GROUP BY job_id HAVING count(*) > 1) d",
        )
        .await
    }

    /// Every event of a job (from, to) in order.
    pub async fn transitions(&self, job_id: &str) -> Vec<(String, String)> {
        let resp = self
            .app
            .get(&format!("/api/jobs/{job_id}/events"), &self.app.admin_token)
            .await;
        let body: Value = resp.json().await.unwrap_or_default();
        body["events"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .map(|e| {
                        (
                            e["from"].as_str().unwrap_or("").to_owned(),
                            e["to"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The cgroup root of test agents: `orchestrator-test` in the host's
/// hierarchy (on v1, a directory of links to it in each controller's), so
/// that `deploy/test.sh` can kill and remove whatever tests leave there and
/// touch nothing else. `None` where it cannot be made (not root): agents
/// then run without cgroups, and say so.
pub fn test_cgroup_root() -> Option<PathBuf> {
    static ROOT: OnceLock<Option<PathBuf>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let sysfs = Path::new("/sys/fs/cgroup");
        if sysfs.join("cgroup.controllers").exists() {
            let root = sysfs.join("orchestrator-test");
            return std::fs::create_dir_all(&root).ok().map(|()| root);
        }
        let links = std::env::temp_dir().join("orchestrator-test-cgroups");
        for controller in ["memory", "pids", "cpu", "freezer"] {
            let target = sysfs.join(controller).join("orchestrator-test");
            std::fs::create_dir_all(&target).ok()?;
            std::fs::create_dir_all(&links).ok()?;
            let link = links.join(controller);
            if std::fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(&target, &link).ok()?;
            }
        }
        Some(links)
    })
    .clone()
}
