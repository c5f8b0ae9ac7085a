//! The Postgres and RabbitMQ containers every test of one binary shares:
//! which images (the project's own, overridable by environment), the
//! fail-fast check that they exist, starting both once per process, waiting
//! until each answers a real request, and removing them at exit.
//!
//! The images are built by `deploy/build-images.sh`, as this machine has no
//! registry; `ORCH_POSTGRES_IMAGE` and `ORCH_RABBITMQ_IMAGE` (`name:tag`)
//! select others. A missing image or a stopped Docker engine fails fast with
//! a message saying what to do.

use anyhow::{bail, Context};
use std::process::Command;
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};
use testcontainers::core::{IntoContainerPort, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ContainerRequest, GenericImage, ImageExt};
use tokio_postgres::NoTls;

/// Label on every container the harness starts; `deploy/test.sh` removes
/// leftovers by it (a killed test process cannot clean up after itself).
pub const TEST_LABEL: &str = "orchestrator.test";
/// Default Postgres image: the project's own build, as no registry is
/// reachable; `ORCH_POSTGRES_IMAGE` overrides it.
pub const DEFAULT_POSTGRES_IMAGE: &str = "orchestrator-postgres:15";
/// Default RabbitMQ image, for the same reason; `ORCH_RABBITMQ_IMAGE`
/// overrides it.
pub const DEFAULT_RABBITMQ_IMAGE: &str = "orchestrator-rabbitmq:3";
/// How long a container may take to become ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);
/// Where the Postgres image keeps its cluster and the RabbitMQ image its
/// messages. Tests put both on an anonymous volume, as a deployment does
/// (`deploy/compose.yaml`'s `pgdata` and `mqdata`): a volume lives on the
/// host's filesystem, while the container's own goes through the engine's
/// storage driver, here fuse-overlayfs, which sends every write and fsync
/// through a FUSE daemon (pgbench's simple updates on this 2-core machine:
/// 4,502 transactions/s on it, 7,225 on a volume, with a quarter less CPU
/// each). Durability is the same (fsync stays on); a new volume starts as a
/// copy of the image's directory, and is removed with its container
/// (`rm -v`: testcontainers, the exit hook and `deploy/test-cleanup.sh`).
/// The TLS and multi-host containers (`tls`, `multihost`) use them too.
pub(crate) const PG_DATA_DIR: &str = "/var/lib/postgresql/data";
/// See [`PG_DATA_DIR`].
pub(crate) const MQ_DATA_DIR: &str = "/var/lib/rabbitmq/mnesia";

/// An anonymous volume at `dir` (a volume mount with no name).
pub(crate) fn data_volume(dir: &str) -> Mount {
    Mount::volume_mount("", dir)
}
/// How long the broker's management API may lag behind its AMQP listener.
const MANAGEMENT_GRACE: Duration = Duration::from_secs(15);

/// Where the shared containers listen on the host.
#[derive(Debug, Clone)]
pub struct Infra {
    /// Host port mapped to Postgres's 5432.
    pub postgres_port: u16,
    /// Host port mapped to RabbitMQ's 5672.
    pub amqp_port: u16,
    /// Host port mapped to RabbitMQ's management API (15672).
    pub management_port: u16,
    /// Container ids, for fault tests that stop or restart them.
    pub postgres_id: String,
    /// See `postgres_id`.
    pub rabbitmq_id: String,
}

impl Infra {
    /// Connection string of database `db` (user postgres, trust auth).
    pub fn postgres_url(&self, db: &str) -> String {
        local_postgres_url(self.postgres_port, db)
    }

    /// Connection string of the broker's default vhost, as `guest` (the
    /// test image's administrator, which test controllers run as).
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// The broker's address without a login, as agents with a broker user
    /// of their own are given it (their registration supplies the login).
    pub fn amqp_url_without_login(&self) -> String {
        format!("amqp://127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// The broker's management API, through which test controllers create
    /// their agents' broker users.
    pub fn management_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.management_port)
    }
}

/// Connection string of database `db` on a server from the project's image
/// published on host port `port` (user postgres, trust auth).
fn local_postgres_url(port: u16, db: &str) -> String {
    format!("postgres://postgres:postgres@127.0.0.1:{port}/{db}")
}

/// A plain connection to the test server at `url`, its connection task
/// spawned: how the harness and tests reach a server directly.
pub async fn pg_client(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// The image named by environment variable `var` (or `default`), split into
/// name and tag; the multi-host harness starts the same images.
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

type Started = (Infra, ContainerAsync<GenericImage>, ContainerAsync<GenericImage>);

async fn start_containers(
    pg_name: String,
    pg_tag: String,
    mq_name: String,
    mq_tag: String,
) -> anyhow::Result<Started> {
    let pg = postgres_image(pg_name, pg_tag);
    let mq = GenericImage::new(mq_name, mq_tag)
        .with_exposed_port(5672.tcp())
        .with_exposed_port(15672.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Server startup complete"))
        .with_label(TEST_LABEL, "1")
        .with_mount(data_volume(MQ_DATA_DIR))
        .with_startup_timeout(STARTUP_TIMEOUT);
    let (pg, mq) = tokio::try_join!(pg.start(), mq.start()).context("starting the containers")?;
    let infra = Infra {
        postgres_port: pg.get_host_port_ipv4(5432).await?,
        amqp_port: mq.get_host_port_ipv4(5672).await?,
        management_port: mq.get_host_port_ipv4(15672).await?,
        postgres_id: pg.id().to_owned(),
        rabbitmq_id: mq.id().to_owned(),
    };
    wait_for_postgres(&infra.postgres_url("postgres")).await?;
    set_naptime(&infra.postgres_url("postgres"), Some(HARNESS_NAPTIME)).await?;
    wait_for_rabbitmq(&infra.amqp_url()).await?;
    wait_for_management(&infra.management_url()).await?;
    Ok((infra, pg, mq))
}

/// The project's Postgres image as the harness starts it: published on a
/// host port, data on an anonymous volume, ready once it says so.
fn postgres_image(name: String, tag: String) -> ContainerRequest<GenericImage> {
    GenericImage::new(name, tag)
        .with_exposed_port(5432.tcp())
        .with_wait_for(WaitFor::message_on_stderr(
            "database system is ready to accept connections",
        ))
        .with_label(TEST_LABEL, "1")
        .with_mount(data_volume(PG_DATA_DIR))
        .with_startup_timeout(STARTUP_TIMEOUT)
}

/// Autovacuum's naptime on the shared server. The image's 5 s suits a
/// deployment, which has one database; the shared server holds one per test
/// (about 190 in the api binary), and the launcher visits every one of them
/// once a naptime, so at 5 s it would start ten workers a second for the
/// whole run. Tests make too few dead rows to need more.
const HARNESS_NAPTIME: &str = "60s";

/// Sets autovacuum's naptime on the server at `url` (a superuser's
/// connection) and reloads its configuration; `None` goes back to the
/// image's own (`deploy/images/postgres/postgresql.conf`), as the load
/// generator does to measure what a deployment runs.
pub async fn set_naptime(url: &str, naptime: Option<&str>) -> anyhow::Result<()> {
    let client = pg_client(url).await?;
    let set = match naptime {
        Some(value) => format!("ALTER SYSTEM SET autovacuum_naptime = '{value}'"),
        None => "ALTER SYSTEM RESET autovacuum_naptime".to_owned(),
    };
    // Separate statements: ALTER SYSTEM refuses a transaction block, which a
    // multi-statement simple query would be.
    client
        .batch_execute(&set)
        .await
        .context("setting autovacuum_naptime")?;
    client.batch_execute("SELECT pg_reload_conf()").await?;
    Ok(())
}

/// A Postgres server of a test's own, from the project's image with the
/// image's settings unchanged: what a deployment runs, for tests of those
/// settings. Removed (with its volume) when dropped.
pub struct DeploymentPostgres {
    /// Kept for its drop, which removes the container.
    _container: ContainerAsync<GenericImage>,
    port: u16,
}

impl DeploymentPostgres {
    /// Starts one and waits until it answers a query.
    pub async fn start() -> anyhow::Result<DeploymentPostgres> {
        let (name, tag) = image_from_env("ORCH_POSTGRES_IMAGE", DEFAULT_POSTGRES_IMAGE);
        check_image(&name, &tag)?;
        let container = postgres_image(name, tag)
            .start()
            .await
            .context("starting Postgres")?;
        let port = container.get_host_port_ipv4(5432).await?;
        let server = DeploymentPostgres {
            _container: container,
            port,
        };
        wait_for_postgres(&server.url("postgres")).await?;
        Ok(server)
    }

    /// Connection string of database `db` on it (user postgres).
    pub fn url(&self, db: &str) -> String {
        local_postgres_url(self.port, db)
    }
}

/// Waits until Postgres at `url` is ready (the multi-host harness waits for
/// its own Postgres the same way); ready means a real connection answers a
/// query, not only a log line.
pub async fn wait_for_postgres(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let attempt = async { pg_client(url).await?.simple_query("SELECT 1").await };
        match attempt.await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e).context("Postgres never accepted a query"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Waits until the broker's management API at `url` answers as `guest`.
/// Called once AMQP answers: plugins start before the broker's listeners,
/// so the API is up by then, unless the image lacks the plugin, which the
/// error then says.
pub async fn wait_for_management(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + MANAGEMENT_GRACE;
    let http = reqwest::Client::new();
    loop {
        let answer = http
            .get(format!("{url}/api/overview"))
            .basic_auth("guest", Some("guest"))
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => return Ok(()),
            _ if Instant::now() > deadline => bail!(
                "RabbitMQ's management API never answered at {url}: the image needs the \
                 rabbitmq_management plugin (deploy/build-images.sh --force)"
            ),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Waits until the broker at `url` is ready, so no test starts against a
/// broker still booting; ready means an AMQP connection opens a channel.
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
