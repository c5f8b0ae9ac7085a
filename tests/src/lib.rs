//! Test harness: real Postgres and RabbitMQ in containers started with
//! testcontainers, once per test binary, and a fresh database (cloned from a
//! migrated template) plus a unique broker name prefix for every test, so
//! tests run in parallel without seeing each other.
//!
//! The images are the project's own (built by `deploy/build-images.sh`, as
//! this machine has no registry); `ORCH_POSTGRES_IMAGE` and
//! `ORCH_RABBITMQ_IMAGE` (`name:tag`) select others. A missing image or a
//! stopped Docker engine fails fast with a message saying what to do.

pub mod cluster;
pub mod multihost;

use anyhow::{bail, Context};
use std::process::Command;
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};
use tokio_postgres::NoTls;

/// Label on every container the harness starts; `deploy/test.sh` removes
/// leftovers by it (a killed test process cannot clean up after itself).
pub const TEST_LABEL: &str = "orchestrator.test";
/// Default image names, overridable by environment variables.
pub const DEFAULT_POSTGRES_IMAGE: &str = "orchestrator-postgres:15";
/// See [`DEFAULT_POSTGRES_IMAGE`].
pub const DEFAULT_RABBITMQ_IMAGE: &str = "orchestrator-rabbitmq:3";
/// How long a container may take to become ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);
const TEMPLATE_DB: &str = "orchestrator_template";

/// Where the shared containers listen on the host.
#[derive(Debug, Clone)]
pub struct Infra {
    /// Host port mapped to Postgres's 5432.
    pub postgres_port: u16,
    /// Host port mapped to RabbitMQ's 5672.
    pub amqp_port: u16,
    /// Container ids, for fault tests that stop or restart them.
    pub postgres_id: String,
    /// See `postgres_id`.
    pub rabbitmq_id: String,
}

impl Infra {
    /// Connection string of database `db` (user postgres, trust auth).
    pub fn postgres_url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:postgres@127.0.0.1:{}/{db}",
            self.postgres_port
        )
    }

    /// Connection string of the broker's default vhost.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }
}

pub(crate) fn image_from_env(var: &str, default: &str) -> (String, String) {
    let full = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    match full.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_owned(), tag.to_owned()),
        _ => (full, "latest".to_owned()),
    }
}

/// Fails with an actionable message unless the engine answers and `image`
/// exists locally (testcontainers would otherwise try, and fail, to pull).
pub(crate) fn check_image(name: &str, tag: &str) -> anyhow::Result<()> {
    let out = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            &format!("{name}:{tag}"),
        ])
        .output()
        .context("running the docker CLI (is Docker installed?)")?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("Cannot connect") || err.contains("daemon") && !err.contains("No such image") {
        bail!("the Docker engine is not reachable: {}", err.trim());
    }
    bail!("image {name}:{tag} is missing: run deploy/build-images.sh (or set the image variable)")
}

extern "C" fn remove_containers_at_exit() {
    if let Some(Ok(infra)) = INFRA.get() {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &infra.postgres_id, &infra.rabbitmq_id])
            .output();
    }
}

static INFRA: OnceLock<Result<Infra, String>> = OnceLock::new();

/// The shared containers, started on first use. Panics (failing the test)
/// with the reason if they cannot start.
pub fn infra() -> &'static Infra {
    let result = INFRA.get_or_init(|| start_infra().map_err(|e| format!("{e:#}")));
    match result {
        Ok(infra) => infra,
        Err(e) => panic!("test infrastructure unavailable: {e}"),
    }
}

/// Starts both containers on a keeper thread whose runtime lives as long as
/// the process (the containers are removed at exit by an atexit hook).
fn start_infra() -> anyhow::Result<Infra> {
    let (pg_name, pg_tag) = image_from_env("ORCH_POSTGRES_IMAGE", DEFAULT_POSTGRES_IMAGE);
    let (mq_name, mq_tag) = image_from_env("ORCH_RABBITMQ_IMAGE", DEFAULT_RABBITMQ_IMAGE);
    check_image(&pg_name, &pg_tag)?;
    check_image(&mq_name, &mq_tag)?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("test-containers".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return drop(tx.send(Err(anyhow::anyhow!(e)))),
            };
            rt.block_on(async move {
                let started = start_containers(pg_name, pg_tag, mq_name, mq_tag).await;
                match started {
                    Ok((infra, pg, mq)) => {
                        let _ = tx.send(Ok(infra));
                        let _keep = (pg, mq);
                        std::future::pending::<()>().await;
                    }
                    Err(e) => drop(tx.send(Err(e))),
                }
            });
        })
        .context("spawning the container thread")?;
    let infra = rx.recv().context("container thread ended")??;
    // SAFETY: registering a plain extern "C" function with no captured state.
    unsafe { libc::atexit(remove_containers_at_exit) };
    Ok(infra)
}

type Started = (
    Infra,
    testcontainers::ContainerAsync<GenericImage>,
    testcontainers::ContainerAsync<GenericImage>,
);

async fn start_containers(
    pg_name: String,
    pg_tag: String,
    mq_name: String,
    mq_tag: String,
) -> anyhow::Result<Started> {
    let pg = GenericImage::new(pg_name, pg_tag)
        .with_exposed_port(5432.tcp())
        .with_wait_for(WaitFor::message_on_stderr(
            "database system is ready to accept connections",
        ))
        .with_label(TEST_LABEL, "1")
        .with_startup_timeout(STARTUP_TIMEOUT);
    let mq = GenericImage::new(mq_name, mq_tag)
        .with_exposed_port(5672.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Server startup complete"))
        .with_label(TEST_LABEL, "1")
        .with_startup_timeout(STARTUP_TIMEOUT);
    let (pg, mq) = tokio::try_join!(pg.start(), mq.start()).context("starting the containers")?;
    let infra = Infra {
        postgres_port: pg.get_host_port_ipv4(5432).await?,
        amqp_port: mq.get_host_port_ipv4(5672).await?,
        postgres_id: pg.id().to_owned(),
        rabbitmq_id: mq.id().to_owned(),
    };
    wait_for_postgres(&infra.postgres_url("postgres")).await?;
    wait_for_rabbitmq(&infra.amqp_url()).await?;
    Ok((infra, pg, mq))
}

/// Ready means a real connection answers a query, not only a log line.
pub async fn wait_for_postgres(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let attempt = async {
            let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
            tokio::spawn(conn);
            client.simple_query("SELECT 1").await
        };
        match attempt.await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e).context("Postgres never accepted a query"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Ready means an AMQP connection opens a channel.
pub async fn wait_for_rabbitmq(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let attempt = async {
            let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
            let channel = conn.create_channel().await?;
            channel.close(200, "ready check".into()).await?;
            conn.close(200, "ready check".into()).await
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e).context("RabbitMQ never opened a channel"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

static TEMPLATE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// Creates the migrated template database once per process.
async fn ensure_template(infra: &Infra) -> anyhow::Result<()> {
    TEMPLATE
        .get_or_try_init(|| async {
            let admin = admin_client(infra).await?;
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {TEMPLATE_DB}"))
                .await?;
            admin
                .batch_execute(&format!("CREATE DATABASE {TEMPLATE_DB}"))
                .await?;
            controller::db::migrate(&infra.postgres_url(TEMPLATE_DB))
                .await
                .context("migrating the template")?;
            anyhow::Ok(())
        })
        .await
        .map(|_| ())
}

async fn admin_client(infra: &Infra) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(&infra.postgres_url("postgres"), NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Serialises `CREATE DATABASE … TEMPLATE`, which fails if two run at once.
static CLONE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A database of one test's own, already migrated.
#[derive(Debug, Clone)]
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// Its connection string.
    pub url: String,
}

/// A fresh migrated database for one test.
pub async fn fresh_database() -> TestDb {
    try_fresh_database()
        .await
        .unwrap_or_else(|e| panic!("creating a test database: {e:#}"))
}

async fn try_fresh_database() -> anyhow::Result<TestDb> {
    let infra = infra();
    ensure_template(infra).await?;
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    let admin = admin_client(infra).await?;
    {
        let _guard = CLONE_LOCK.lock().await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}"))
            .await?;
    }
    Ok(TestDb {
        url: infra.postgres_url(&name),
        name,
    })
}

/// A name prefix no other test uses, for broker exchanges and queues.
pub fn unique_prefix() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A fresh database and a controller pool on it.
pub async fn database() -> (TestDb, controller::db::Database) {
    let test_db = fresh_database().await;
    let pool = controller::db::Database::connect(&test_db.url, 8, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("building the pool: {e:#}"));
    (test_db, pool)
}

/// Creates a user with a real Argon2id hash of `password`.
pub async fn create_user(
    db: &controller::db::Database,
    username: &str,
    password: &str,
    scopes: &[&str],
) -> controller::models::User {
    let hash = controller::auth::password::hash(password.to_owned())
        .await
        .unwrap_or_else(|e| panic!("hashing: {e}"));
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    let client = db.client().await.unwrap_or_else(|e| panic!("client: {e}"));
    controller::db::users::create(&client, username, &hash, &scopes)
        .await
        .unwrap_or_else(|e| panic!("creating user: {e}"))
}

/// A minimal valid submission.
pub fn new_job(description: &str) -> controller::models::NewJob {
    controller::models::NewJob {
        task_description: description.to_owned(),
        required_workers: 1,
        command: None,
        priority: 5,
        timeout_seconds: None,
        max_retries: 0,
        idempotency_key: None,
        labels: Default::default(),
    }
}

/// Generous limits for tests that are not about quotas.
pub const BIG_QUOTA: controller::models::Quota = controller::models::Quota {
    max_workers: 64,
    max_concurrent_jobs: 10_000,
    max_queued_jobs: 10_000,
};

/// Submits `new` for `user` in its own transaction and commits.
pub async fn submit(
    db: &controller::db::Database,
    user: uuid::Uuid,
    new: &controller::models::NewJob,
    quota: controller::models::Quota,
) -> Result<controller::db::jobs::Submitted, controller::db::DbError> {
    let mut client = db.client().await?;
    let tx = client.transaction().await?;
    let submitted = controller::db::jobs::submit(&tx, user, new, quota).await?;
    tx.commit().await?;
    Ok(submitted)
}

/// A worker description for registration.
pub fn new_worker(id: &str) -> controller::models::NewWorker {
    controller::models::NewWorker {
        worker_id: id.to_owned(),
        hostname: format!("{id}.local"),
        capacity: 4,
        labels: Default::default(),
        version: "test".to_owned(),
    }
}

/// HMAC secret of every test controller.
pub const TEST_JWT_SECRET: &str = "test-secret-that-is-long-enough-for-hs256";
/// The admin every test controller creates at start.
pub const ADMIN_USER: &str = "admin";
/// Its password.
pub const ADMIN_PASSWORD: &str = "admin-password";

/// A controller configuration for `db_url`, listening on a free port, with
/// `extra` flags appended (e.g. `["--body-limit-bytes", "1024"]`).
pub fn test_config(db_url: &str, extra: &[&str]) -> controller::config::Config {
    let amqp = infra().amqp_url();
    let mut args = vec![
        "controller",
        "--database-url",
        db_url,
        "--amqp-url",
        &amqp,
        "--listen",
        "127.0.0.1:0",
        "--jwt-secret",
        TEST_JWT_SECRET,
        "--admin-username",
        ADMIN_USER,
        "--admin-password",
        ADMIN_PASSWORD,
        "--db-wait-seconds",
        "3",
    ];
    args.extend_from_slice(extra);
    controller::config::Config::try_parse_from(args).unwrap_or_else(|e| panic!("test config: {e}"))
}

/// A running controller on a port of its own, with its own database.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// A pool on the app's database, for arranging and checking state.
    pub db: controller::db::Database,
    /// The app's database.
    pub test_db: TestDb,
    /// Signs tokens exactly as the app does (for expired or forged ones).
    pub tokens: controller::auth::TokenIssuer,
    /// A token of the configured admin.
    pub admin_token: String,
    /// HTTP client.
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// Starts a controller (migrations, admin, HTTP on port 0) on a fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Like [`spawn_app`], with extra configuration flags.
pub async fn spawn_app_with(extra: &[&str]) -> TestApp {
    let test_db = fresh_database().await;
    let config = test_config(&test_db.url, extra);
    let tokens = controller::auth::TokenIssuer::new(&config.auth).unwrap_or_else(|e| panic!("{e}"));
    let app = controller::app::App::build(config)
        .await
        .unwrap_or_else(|e| panic!("building the app: {e:#}"));
    let base_url = format!("http://{}", app.local_addr());
    let db = app.database().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = app
            .run_until(async move {
                let _ = stopped.await;
            })
            .await;
    });
    let http = reqwest::Client::new();
    let mut test_app = TestApp {
        base_url,
        db,
        test_db,
        tokens,
        admin_token: String::new(),
        http,
        stop: Some(stop),
        server: Some(server),
    };
    test_app.admin_token = test_app.login_token(ADMIN_USER, ADMIN_PASSWORD).await;
    test_app
}

impl TestApp {
    /// Full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// `POST /api/auth/login`.
    pub async fn login(&self, username: &str, password: &str) -> reqwest::Response {
        self.http
            .post(self.url("/api/auth/login"))
            .json(&serde_json::json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("login request: {e}"))
    }

    /// Logs in and returns the access token (panics if login fails).
    pub async fn login_token(&self, username: &str, password: &str) -> String {
        let resp = self.login(username, password).await;
        assert_eq!(resp.status(), 200, "login of {username}");
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        body["access_token"].as_str().unwrap_or_default().to_owned()
    }

    /// Creates a user with `scopes` (through the admin API) and returns a
    /// token for them.
    pub async fn user_token(&self, username: &str, scopes: &[&str]) -> String {
        let resp = self
            .post_json(
                "/api/auth/users",
                &self.admin_token,
                &serde_json::json!({"username": username, "password": "password-123", "scopes": scopes}),
            )
            .await;
        assert_eq!(resp.status(), 201, "creating {username}");
        self.login_token(username, "password-123").await
    }

    /// GET with a bearer token.
    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// POST of a JSON body with a bearer token.
    pub async fn post_json(&self, path: &str, token: &str, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// POST with no body.
    pub async fn post(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// Registers a worker directly in the database (as an agent would).
    pub async fn register_worker(&self, worker_id: &str) -> controller::models::Worker {
        let client = self.db.client().await.unwrap_or_else(|e| panic!("{e}"));
        controller::db::workers::register(&client, &new_worker(worker_id))
            .await
            .unwrap_or_else(|e| panic!("registering {worker_id}: {e}"))
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}
