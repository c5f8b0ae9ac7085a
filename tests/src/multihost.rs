//! Multi-host deployments: Postgres, RabbitMQ, the controller and each agent
//! in a container of its own, built from the project's images, on a private
//! Docker network of their own, so a test can kill a host (`docker kill`),
//! cut one off the network and reconnect it, restart the controller, or add
//! an agent, exactly as an operator's hosts fail.
//!
//! Every link is TLS, as in a real deployment: a CA made with rcgen at the
//! start signs one certificate for the three servers' names; the
//! controller serves HTTPS, Postgres accepts TLS connections only, the
//! broker is reached over AMQPS, and every client checks the certificate
//! against that CA (mounted as `/etc/orchestrator/ca.pem`).
//!
//! The host talks to the controller only through its published port and
//! reads the database through Postgres's, both on localhost. The images are
//! `orchestrator-controller:test` and `orchestrator-agent:test`, made by
//! `deploy/build-app-images.sh --test` (`deploy/test.sh` runs it).

use crate::tls::{TestTls, HOSTSSL_ONLY, IMAGE_PG_HBA};
use crate::{check_image, data_volume, MQ_DATA_DIR, PG_DATA_DIR, TEST_LABEL};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// Prefix of every network a deployment creates; `deploy/test.sh` removes
/// leftovers of killed runs by it.
pub const NETWORK_PREFIX: &str = "orch-mh-";
/// Tag of the controller and agent images under test.
pub const APP_TAG: &str = "test";
/// Longest a deployment waits for anything before failing the test.
pub const WAIT: Duration = Duration::from_secs(180);
const JWT_SECRET: &str = "multihost-secret-long-enough-for-hs256";
const ADMIN_PASSWORD: &str = "multihost-admin-password";
/// Where the controller and the agents find the deployment's CA.
const CA_IN_CONTAINER: &str = "/etc/orchestrator/ca.pem";
/// Where the controller finds its certificate and key (readable by its
/// image's user: the test's files are throw-away).
const CONTROLLER_TLS: (&str, &str) = (
    "/etc/orchestrator/controller-cert.pem",
    "/etc/orchestrator/controller-key.pem",
);

/// Controller settings that make lost agents noticed within seconds.
const FLOW_ENV: &[(&str, &str)] = &[
    ("ORCH_HEARTBEAT_TIMEOUT_MS", "6000"),
    ("ORCH_REAPER_INTERVAL_MS", "250"),
    ("ORCH_RETRY_BASE_MS", "200"),
    ("ORCH_RETRY_MAX_MS", "2000"),
    ("ORCH_RELAY_POLL_MS", "100"),
    ("ORCH_DEFAULT_MAX_CONCURRENT_JOBS", "10000"),
    ("ORCH_DEFAULT_MAX_QUEUED_JOBS", "10000"),
];

/// Runs the docker CLI; its stdout, or an error carrying its stderr.
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .with_context(|| format!("running docker {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// One cluster of containers and the host-side handles on it.
pub struct Deployment {
    /// Short unique id, the prefix of every container name.
    pub run: String,
    /// The private network's name.
    pub network: String,
    /// `https://localhost:PORT` of the controller replica the admin's
    /// requests go to (changes when it restarts, or with [`Self::use_replica`]).
    pub base_url: String,
    /// Token of the admin user.
    pub admin_token: String,
    /// HTTP client, trusting the deployment's CA.
    pub http: reqwest::Client,
    /// The deployment's CA and server certificate.
    pub tls: TestTls,
    /// Controller replicas, in order; the first one is `{run}-controller`,
    /// the others `{run}-controller-N`.
    controllers: Vec<ContainerAsync<GenericImage>>,
    /// Which replica `base_url` points at.
    current: usize,
    agents: Vec<(String, ContainerAsync<GenericImage>)>,
    // Dropped last: the containers above use them.
    infra: (ContainerAsync<GenericImage>, ContainerAsync<GenericImage>),
}

fn image(name: &str, tag: &str) -> anyhow::Result<GenericImage> {
    check_image(name, tag)?;
    Ok(GenericImage::new(name, tag))
}

fn in_network<I: testcontainers::Image>(
    img: impl Into<testcontainers::core::ContainerRequest<I>>,
    network: &str,
    name: &str,
) -> testcontainers::core::ContainerRequest<I> {
    img.into()
        .with_network(network)
        .with_container_name(name)
        .with_hostname(name)
        .with_label(TEST_LABEL, "1")
        .with_startup_timeout(WAIT)
}

/// The CA and one server certificate for the three servers of run `run`
/// (and localhost, where the host reaches them).
fn deployment_tls(run: &str) -> anyhow::Result<TestTls> {
    let names = [
        "controller",
        "controller-2",
        "controller-3",
        "postgres",
        "rabbitmq",
    ]
    .map(|s| format!("{run}-{s}"));
    let mut hosts: Vec<&str> = names.iter().map(String::as_str).collect();
    hosts.extend(["localhost", "127.0.0.1"]);
    TestTls::new(&hosts)
}

async fn start_infra(
    run: &str,
    network: &str,
    tls: &TestTls,
) -> anyhow::Result<(ContainerAsync<GenericImage>, ContainerAsync<GenericImage>)> {
    let (pg_name, pg_tag) = crate::image_from_env("ORCH_POSTGRES_IMAGE", crate::DEFAULT_POSTGRES_IMAGE);
    let (mq_name, mq_tag) = crate::image_from_env("ORCH_RABBITMQ_IMAGE", crate::DEFAULT_RABBITMQ_IMAGE);
    let pg = image(&pg_name, &pg_tag)?
        .with_exposed_port(5432.tcp())
        .with_wait_for(WaitFor::message_on_stderr(
            "database system is ready to accept connections",
        ));
    let mq = image(&mq_name, &mq_tag)?
        .with_exposed_port(5671.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Server startup complete"));
    let pg = in_network(tls.install(pg), network, &format!("{run}-postgres"))
        .with_copy_to(IMAGE_PG_HBA, HOSTSSL_ONLY.as_bytes().to_vec())
        .with_mount(data_volume(PG_DATA_DIR));
    let mq =
        in_network(tls.install(mq), network, &format!("{run}-rabbitmq")).with_mount(data_volume(MQ_DATA_DIR));
    let (pg, mq) = tokio::try_join!(pg.start(), mq.start()).context("starting Postgres and RabbitMQ")?;
    Ok((pg, mq))
}

/// Where a test agent container finds its cgroup subtree.
const CGROUP_IN_CONTAINER: &str = "/run/orchestrator/cgroup";

/// `request` as deploy/agents-compose.sh runs an agent: root with only the
/// capabilities that job isolation needs, no new privileges, an init, and
/// a writable cgroup subtree of its own bound from the host's hierarchy
/// (`orchestrator-test/<name>`, created by the engine; test.sh removes it).
fn confined_agent<I: testcontainers::Image>(
    request: testcontainers::core::ContainerRequest<I>,
    name: &str,
) -> testcontainers::core::ContainerRequest<I> {
    let binds: Vec<String> = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        vec![format!(
            "/sys/fs/cgroup/orchestrator-test/{name}:{CGROUP_IN_CONTAINER}"
        )]
    } else {
        ["memory", "pids", "cpu", "freezer"]
            .iter()
            .map(|c| format!("/sys/fs/cgroup/{c}/orchestrator-test/{name}:{CGROUP_IN_CONTAINER}/{c}"))
            .collect()
    };
    let caps = ["SETUID", "SETGID", "CHOWN", "FOWNER", "DAC_OVERRIDE", "KILL"];
    caps.into_iter()
        .fold(request.with_cap_drop("ALL"), |r, cap| r.with_cap_add(cap))
        .with_security_opt("no-new-privileges:true")
        .with_env_var("AGENT_CGROUP_ROOT", CGROUP_IN_CONTAINER)
        .with_host_config_modifier(move |config| {
            config.init = Some(true);
            // Binds (not mounts): the engine creates the host directories,
            // which in cgroupfs makes the cgroups.
            config
                .binds
                .get_or_insert_with(Vec::new)
                .extend(binds.iter().cloned());
        })
}

/// `request` with the deployment's CA at [`CA_IN_CONTAINER`].
fn with_ca<I: testcontainers::Image>(
    request: testcontainers::core::ContainerRequest<I>,
    tls: &TestTls,
) -> testcontainers::core::ContainerRequest<I> {
    request.with_copy_to(CA_IN_CONTAINER, tls.ca_pem.clone().into_bytes())
}

/// The container name of controller replica `index` (0-based) of run `run`.
fn controller_name(run: &str, index: usize) -> String {
    match index {
        0 => format!("{run}-controller"),
        n => format!("{run}-controller-{}", n + 1),
    }
}

async fn start_controller(
    run: &str,
    network: &str,
    tls: &TestTls,
    index: usize,
) -> anyhow::Result<ContainerAsync<GenericImage>> {
    let img = image("orchestrator-controller", APP_TAG)?
        .with_exposed_port(8000.tcp())
        .with_wait_for(WaitFor::healthcheck());
    let (cert, key) = CONTROLLER_TLS;
    let req = with_ca(in_network(img, network, &controller_name(run, index)), tls)
        .with_copy_to(cert, tls.cert_pem.clone().into_bytes())
        .with_copy_to(key, tls.key_pem.clone().into_bytes());
    let mut req = req
        .with_env_var("ORCH_TLS_CERT_FILE", cert)
        .with_env_var("ORCH_TLS_KEY_FILE", key)
        .with_env_var(
            "ORCH_DATABASE_URL",
            format!("postgres://postgres:postgres@{run}-postgres:5432/postgres"),
        )
        .with_env_var("ORCH_DATABASE_CA_FILE", CA_IN_CONTAINER)
        .with_env_var(
            "ORCH_AMQP_URL",
            format!("amqps://guest:guest@{run}-rabbitmq:5671/%2f"),
        )
        .with_env_var("ORCH_AMQP_CA_FILE", CA_IN_CONTAINER)
        // Each agent gets a broker user of its own (the controller runs as
        // the test broker's administrator, guest), provisioned over HTTPS
        // with the broker's CA.
        .with_env_var(
            "ORCH_BROKER_MANAGEMENT_URL",
            format!("https://{run}-rabbitmq:15671"),
        )
        .with_env_var("ORCH_JWT_SECRET", JWT_SECRET)
        .with_env_var("ORCH_ADMIN_USERNAME", "admin")
        .with_env_var("ORCH_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .with_env_var("ORCH_DB_WAIT_SECONDS", "60");
    for (k, v) in FLOW_ENV {
        req = req.with_env_var(*k, *v);
    }
    req.start().await.context("starting the controller")
}

impl Deployment {
    /// Starts Postgres, RabbitMQ and the controller on a new network, then
    /// `agents` agents of capacity `capacity`, each registered before this
    /// returns.
    pub async fn start(agents: usize, capacity: u32) -> anyhow::Result<Deployment> {
        Self::start_replicated(1, agents, capacity).await
    }

    /// As [`Self::start`], with `replicas` controller replicas (at most 3)
    /// serving at once; every agent is given all of their URLs.
    pub async fn start_replicated(
        replicas: usize,
        agents: usize,
        capacity: u32,
    ) -> anyhow::Result<Deployment> {
        let run = format!("mh{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let network = format!("{NETWORK_PREFIX}{run}");
        let tls = deployment_tls(&run)?;
        let infra = start_infra(&run, &network, &tls).await?;
        let mut controllers = Vec::new();
        // One after another: the first one migrates the database.
        for index in 0..replicas.clamp(1, 3) {
            controllers.push(start_controller(&run, &network, &tls, index).await?);
        }
        let ca = reqwest::Certificate::from_pem(tls.ca_pem.as_bytes())?;
        let mut d = Deployment {
            base_url: String::new(),
            admin_token: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .tls_certs_merge([ca])
                .build()?,
            tls,
            controllers,
            current: 0,
            agents: Vec::new(),
            infra,
            run,
            network,
        };
        d.connect_controller().await?;
        for _ in 0..agents {
            d.add_agent(capacity).await?;
        }
        Ok(d)
    }

    /// Finds the controller's published port and logs in as the admin.
    async fn connect_controller(&mut self) -> anyhow::Result<()> {
        let port = self.controllers[self.current].get_host_port_ipv4(8000).await?;
        self.base_url = format!("https://localhost:{port}");
        let deadline = Instant::now() + WAIT;
        loop {
            let login = self
                .http
                .post(format!("{}/api/auth/login", self.base_url))
                .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
                .send()
                .await;
            if let Ok(resp) = login {
                if resp.status().is_success() {
                    let body: Value = resp.json().await?;
                    self.admin_token = body["access_token"].as_str().unwrap_or_default().to_owned();
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("the controller at {} never accepted a login", self.base_url);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Starts one more agent container (its worker id is its container
    /// name), with a credential of its own issued through the API, and
    /// waits until the controller lists it idle.
    pub async fn add_agent(&mut self, capacity: u32) -> anyhow::Result<String> {
        let name = format!("{}-agent-{}", self.run, self.agents.len() + 1);
        let issued = self
            .post("/api/agents/credentials", &json!({ "worker_id": name }))
            .await?;
        let credential = issued["token"].as_str().unwrap_or_default().to_owned();
        let img = image("orchestrator-agent", APP_TAG)?;
        let agent = confined_agent(with_ca(in_network(img, &self.network, &name), &self.tls), &name)
            .with_env_var("AGENT_CONTROLLER_URL", self.controller_urls())
            // No login: the registration answer gives the agent its own.
            .with_env_var(
                "AGENT_AMQP_URL",
                format!("amqps://{}-rabbitmq:5671/%2f", self.run),
            )
            .with_env_var("AGENT_CA_FILE", CA_IN_CONTAINER)
            .with_env_var("AGENT_WORKER_ID", name.clone())
            .with_env_var("AGENT_TOKEN", credential)
            .with_env_var("AGENT_CAPACITY", capacity.to_string())
            .with_env_var("AGENT_HEARTBEAT_MS", "500")
            .with_env_var("AGENT_KILL_GRACE_MS", "1000")
            .with_env_var("AGENT_ALLOW_COMMANDS", "true")
            .start()
            .await
            .with_context(|| format!("starting agent {name}"))?;
        self.agents.push((name.clone(), agent));
        self.wait_worker(&name, "idle").await?;
        Ok(name)
    }

    /// Worker ids of every agent started so far, in order.
    pub fn agent_names(&self) -> Vec<String> {
        self.agents.iter().map(|(n, _)| n.clone()).collect()
    }

    /// `docker kill` (SIGKILL, no chance to clean up) of a container.
    pub fn kill(&self, container: &str) -> anyhow::Result<()> {
        docker(&["kill", container]).map(drop)
    }

    /// Cuts a container off the private network.
    pub fn disconnect(&self, container: &str) -> anyhow::Result<()> {
        docker(&["network", "disconnect", &self.network, container]).map(drop)
    }

    /// Puts a container back on the private network.
    pub fn reconnect(&self, container: &str) -> anyhow::Result<()> {
        docker(&["network", "connect", &self.network, container]).map(drop)
    }

    /// Stops the controller (SIGTERM, then SIGKILL after 10 s), starts it
    /// again, and reconnects to it (its host port may change).
    pub async fn restart_controller(&mut self) -> anyhow::Result<()> {
        let controller = &self.controllers[self.current];
        controller.stop_with_timeout(Some(10)).await?;
        controller.start().await?;
        self.connect_controller().await
    }

    /// The controllers' URLs on the private network, comma-separated, as
    /// agents are given them.
    pub fn controller_urls(&self) -> String {
        (0..self.controllers.len())
            .map(|i| format!("https://{}:8000", controller_name(&self.run, i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Which replica the admin's requests go to.
    pub fn current_replica(&self) -> usize {
        self.current
    }

    /// Container name of controller replica `index` (0-based).
    pub fn controller(&self, index: usize) -> String {
        controller_name(&self.run, index)
    }

    /// Sends the admin's requests to replica `index` from now on (logging
    /// in there; any replica honours any replica's token).
    pub async fn use_replica(&mut self, index: usize) -> anyhow::Result<()> {
        if index >= self.controllers.len() {
            bail!("there is no controller replica {index}");
        }
        self.current = index;
        self.connect_controller().await
    }

    /// Container names of Postgres and RabbitMQ, for faults.
    pub fn infra_names(&self) -> (String, String) {
        (format!("{}-postgres", self.run), format!("{}-rabbitmq", self.run))
    }

    /// `docker start` of a container killed or stopped before (the engine
    /// may publish its ports on other host ports: `db` asks again).
    pub fn start_again(&self, container: &str) -> anyhow::Result<()> {
        docker(&["start", container]).map(drop)
    }

    /// Replica `index`'s `/metrics` text, or an error if it does not answer.
    pub async fn metrics_of(&self, index: usize) -> anyhow::Result<String> {
        let port = self.controllers[index].get_host_port_ipv4(8000).await?;
        let resp = self
            .http
            .get(format!("https://localhost:{port}/metrics"))
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        Ok(resp.error_for_status()?.text().await?)
    }

    /// The current replica's `/readyz`: its status code and body.
    pub async fn readyz(&self) -> anyhow::Result<(u16, Value)> {
        let resp = self
            .http
            .get(format!("{}/readyz", self.base_url))
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or_default()))
    }

    /// POST of a JSON body (nothing if `Null`) as the admin; the response
    /// body, or an error unless the status is 2xx.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(&self.admin_token);
        if !body.is_null() {
            req = req.json(body);
        }
        let resp = req.send().await.with_context(|| format!("POST {path}"))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!("POST {path}: {status} {body}");
        }
        Ok(body)
    }

    /// GET as the admin; the response body, or an error unless 2xx.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base_url))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!("GET {path}: {status} {body}");
        }
        Ok(body)
    }

    /// Submits `count` jobs that each run `command`, through the batch
    /// route in batches of at most 100; their ids.
    pub async fn submit_jobs(&self, count: usize, command: &[&str]) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::with_capacity(count);
        while ids.len() < count {
            let n = (count - ids.len()).min(100);
            let jobs: Vec<Value> = (0..n)
                .map(|_| json!({"task_description": "multihost", "command": command, "max_retries": 5}))
                .collect();
            let body = self
                .post("/api/jobs/submit_batch", &json!({"jobs": jobs}))
                .await?;
            for job in body["jobs"].as_array().into_iter().flatten() {
                ids.push(job["job_id"].as_str().unwrap_or_default().to_owned());
            }
        }
        Ok(ids)
    }

    /// Polls the worker until its status is `status`.
    pub async fn wait_worker(&self, worker_id: &str, status: &str) -> anyhow::Result<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let worker = self.get(&format!("/api/supervisor/workers/{worker_id}")).await;
            match worker {
                Ok(w) if w["status"] == status => return Ok(w),
                _ if Instant::now() > deadline => {
                    bail!("worker {worker_id} never became {status}: {worker:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Polls the job until it is in a final status; returns it.
    pub async fn wait_ended(&self, job_id: &str) -> anyhow::Result<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let job = self.get(&format!("/api/jobs/{job_id}")).await;
            let status = job
                .as_ref()
                .ok()
                .and_then(|j| j["status"].as_str().map(str::to_owned));
            match (job, status) {
                (Ok(j), Some(s))
                    if ["completed", "failed", "cancelled", "timed_out"].contains(&s.as_str()) =>
                {
                    return Ok(j)
                }
                (job, _) if Instant::now() > deadline => bail!("job {job_id} never ended: {job:?}"),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// A connection to the deployment's database over TLS (the only way
    /// it accepts), for checks; retried until Postgres answers.
    pub async fn db(&self) -> anyhow::Result<tokio_postgres::Client> {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.connect_db().await {
                Ok(client) => return Ok(client),
                Err(e) if Instant::now() > deadline => return Err(e).context("the deployment's Postgres"),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// One attempt at a connection to the database, on the port Postgres
    /// is published on now.
    async fn connect_db(&self) -> anyhow::Result<tokio_postgres::Client> {
        let port = self.infra.0.get_host_port_ipv4(5432).await?;
        let url = format!("postgres://postgres:postgres@localhost:{port}/postgres");
        let target = controller::db::PgTarget::new(&url, Some(&self.tls.ca_file()))?;
        let (client, _driver) = target.connect().await?;
        Ok(client)
    }

    /// Waits until at least `n` jobs are `completed`.
    pub async fn wait_completed(&self, n: i64) -> anyhow::Result<()> {
        let db = self.db().await?;
        let deadline = Instant::now() + WAIT;
        loop {
            let done: i64 = db
                .query_one("SELECT count(*) FROM jobs WHERE status = 'completed'", &[])
                .await?
                .get(0);
            if done >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("only {done} jobs completed, waited for {n}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// What the database says about every job once the run is over.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Jobs in `completed`.
    pub completed: i64,
    /// Jobs in any other status.
    pub not_completed: i64,
    /// Jobs with more than one transition into `completed`.
    pub completed_twice: i64,
    /// Jobs whose history has no transition into `completed`.
    pub never_completed_event: i64,
}

/// What [`Deployment::leftovers`] counts; all zero after a clean recovery.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Outbox rows never published.
    pub unsent_dispatches: i64,
    /// Two attempts of one shard that overlapped in time on two agents.
    pub overlapping_attempts: i64,
    /// Live agents (idle or busy) marked busy, or counting jobs, that run
    /// no shard. An offline agent keeps the count of its last heartbeat.
    pub busy_with_nothing: i64,
}

impl Deployment {
    /// Reads the [`Outcome`] of the jobs `ids`.
    pub async fn outcome(&self, ids: &[String]) -> anyhow::Result<Outcome> {
        let ids: Vec<uuid::Uuid> = ids.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
        let row = self
            .db()
            .await?
            .query_one(
                "SELECT count(*) FILTER (WHERE j.status = 'completed'),
                        count(*) FILTER (WHERE j.status <> 'completed'),
                        count(*) FILTER (WHERE e.n > 1),
                        count(*) FILTER (WHERE coalesce(e.n, 0) = 0)
                 FROM jobs j LEFT JOIN (SELECT job_id, count(*) AS n FROM job_events
                                        WHERE to_status = 'completed' GROUP BY job_id) e
                   ON e.job_id = j.job_id
                 WHERE j.job_id = ANY($1)",
                &[&ids],
            )
            .await?;
        Ok(Outcome {
            completed: row.get(0),
            not_completed: row.get(1),
            completed_twice: row.get(2),
            never_completed_event: row.get(3),
        })
    }

    /// What must be zero after any fault, once every job has ended:
    /// dispatches never sent, pairs of attempts of one shard that ran at
    /// the same time on two agents, and agents still busy with nothing
    /// running.
    pub async fn leftovers(&self) -> anyhow::Result<Leftovers> {
        let row = self
            .db()
            .await?
            .query_one(
                "SELECT (SELECT count(*) FROM outbox WHERE sent_at IS NULL),
                        (SELECT count(*) FROM job_shards a JOIN job_shards b
                           ON a.job_id = b.job_id AND a.shard_index = b.shard_index
                          AND a.attempt < b.attempt AND a.worker_id <> b.worker_id
                          AND b.started_at < coalesce(a.finished_at, 'infinity')),
                        (SELECT count(*) FROM workers w WHERE w.status IN ('idle', 'busy')
                           AND (w.status = 'busy' OR w.running_jobs > 0)
                           AND NOT EXISTS (SELECT 1 FROM job_shards s
                                           WHERE s.worker_id = w.worker_id AND s.status = 'running'))",
                &[],
            )
            .await?;
        Ok(Leftovers {
            unsent_dispatches: row.get(0),
            overlapping_attempts: row.get(1),
            busy_with_nothing: row.get(2),
        })
    }

    /// [`Self::leftovers`] once agents had time to say they are idle: a
    /// worker's status and `running_jobs` come from its heartbeats, so an
    /// agent whose jobs just ended says so within one heartbeat. Polled for
    /// up to 15 s; the last reading.
    pub async fn settled_leftovers(&self) -> anyhow::Result<Leftovers> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let now = self.leftovers().await?;
            if now == Leftovers::default() || Instant::now() > deadline {
                return Ok(now);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until none of the jobs `ids` is still pending, queued or running.
    pub async fn wait_all_ended(&self, ids: &[String]) -> anyhow::Result<()> {
        let ids: Vec<uuid::Uuid> = ids.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
        let db = self.db().await?;
        let deadline = Instant::now() + WAIT;
        loop {
            let open: i64 = db
                .query_one(
                    "SELECT count(*) FROM jobs WHERE job_id = ANY($1)
                     AND status IN ('pending', 'queued', 'running')",
                    &[&ids],
                )
                .await?
                .get(0);
            if open == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{open} jobs still had not ended after {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
