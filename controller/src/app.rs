//! Start-up: from a [`Config`] to a running server. `App::build` does
//! everything that can fail (migrations, pool, keys, admin, binding the
//! port); `run_until` serves until the given future resolves, then finishes
//! in-flight requests.
//!
//! Serving is hyper's HTTP/1 server driven by our own accept loop (axum's
//! `serve` has neither of these): a client must send a request's headers
//! within `ORCH_HEADER_READ_TIMEOUT_SECONDS`, and at most
//! `ORCH_MAX_CONNECTIONS` connections are served at once; beyond that the
//! loop stops accepting, so new connections wait in the kernel's listen
//! backlog until one closes.
//!
//! The port speaks HTTPS (`crate::tls`): each connection's TLS handshake
//! runs in its own task, bounded by the same header-read timeout, so a slow
//! client never holds the accept loop. Plain HTTP only with
//! `--insecure-http`, warned about at start.

use crate::api::client_ip::TrustedProxies;
use crate::api::limiter::{LoginLimiter, LoginLimits};
use crate::api::{self, AppState};
use crate::auth::agent_credential::CredentialCache;
use crate::auth::standing::StandingCache;
use crate::auth::TokenIssuer;
use crate::broker::{self, BrokerAccounts, BrokerStatus, Flow, Senders};
use crate::config::{Config, ServeConfig};
use crate::db::{self, Database};
use crate::models::Quota;
use crate::tls::Transport;
use anyhow::Context;
use axum::extract::ConnectInfo;
use axum::middleware::AddExtension;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use orchestrator_shared::messages::Topology;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::Service;

/// Latency buckets (seconds) for request histograms: sub-millisecond to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Pause after an accept error that is not one connection's (out of file
/// descriptors): retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// A built controller, bound to its port, not yet serving.
pub struct App {
    listener: TcpListener,
    state: AppState,
    timeout: Duration,
    serve: ServeConfig,
    transport: Transport,
    broker: broker::BrokerLink,
    database: db::PgTarget,
    flow: crate::config::FlowConfig,
    retention: crate::config::RetentionConfig,
    senders: Senders,
}

/// The process-wide Prometheus recorder (the `metrics` facade has one global
/// recorder, so every App in a process shares it).
fn prometheus() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    // get_or_init makes concurrent Apps (tests build several at once) wait
    // for the one that installs the recorder instead of racing it.
    static HANDLE: OnceLock<Result<metrics_exporter_prometheus::PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .map_err(|e| format!("histogram buckets: {e}"))?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder)
                .map_err(|e| format!("installing the metrics recorder: {e}"))?;
            Ok(handle)
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The agents' broker accounts (none on a shared login) and the rule for
/// event senders, from the configuration. Refuses a configuration that
/// names no management URL unless the shared login is asked for, loudly.
fn broker_identity(config: &Config) -> anyhow::Result<(Option<Arc<BrokerAccounts>>, Senders)> {
    let topology = Topology::new(config.flow.broker_prefix.clone());
    let ca = config
        .amqp_ca_file
        .as_deref()
        .map(orchestrator_shared::tls::CaBundle::read)
        .transpose()
        .context("the broker's CA file")?;
    let accounts = BrokerAccounts::new(
        &config.broker_accounts,
        &config.amqp_url,
        topology.clone(),
        ca.as_ref(),
    )
    .context("broker accounts configuration")?;
    match (&accounts, config.broker_accounts.insecure_shared_broker) {
        (None, false) => anyhow::bail!(
            "no broker management URL: set ORCH_BROKER_MANAGEMENT_URL (agents then get broker users of \
             their own), or ORCH_INSECURE_SHARED_BROKER=true to let every agent share one broker login"
        ),
        (None, true) => tracing::warn!(
            "INSECURE: agents share one broker login; anyone holding it can report, heartbeat and stop \
             for any agent. Set ORCH_BROKER_MANAGEMENT_URL to give each agent its own broker user"
        ),
        (Some(_), _) => {}
    }
    let uri = orchestrator_shared::broker::broker_uri(&config.amqp_url).context("the AMQP URL")?;
    let controller = lapin::types::ShortString::try_new(uri.authority.userinfo.username)
        .map_err(|_| anyhow::anyhow!("the AMQP URL's user name is too long"))?;
    let senders = Senders::new(controller, topology, accounts.is_some());
    Ok((accounts.map(Arc::new), senders))
}

/// Connects to Postgres as configured (TLS when a CA file is given),
/// migrates it, builds the pool and creates the configured admin.
async fn open_database(config: &Config) -> anyhow::Result<(db::PgTarget, Database)> {
    let target = db::PgTarget::new(&config.database_url, config.database_ca_file.as_deref())
        .context("the Postgres connection settings")?;
    db::migrate_to(&target).await.context("applying migrations")?;
    let database =
        Database::connect_to(&target, config.db_pool_size, config.db_wait).context("building the pool")?;
    if let (Some(user), Some(pass)) = (&config.auth.admin_username, &config.auth.admin_password) {
        crate::bootstrap::ensure_admin(&database, user, pass)
            .await
            .context("creating the configured admin")?;
    }
    Ok((target, database))
}

/// The quota of users without a row of their own, from `config`.
fn default_quota(config: &Config) -> Quota {
    let q = config.default_quota;
    Quota {
        max_workers: q.max_workers,
        max_concurrent_jobs: q.max_concurrent_jobs,
        max_queued_jobs: q.max_queued_jobs,
    }
}

/// The login attempt limits of `config`, shared by every request.
fn login_limiter(config: &Config) -> Arc<LoginLimiter> {
    Arc::new(LoginLimiter::new(LoginLimits {
        attempts_per_client_and_user: config.login_per_user_per_minute,
        per_client_per_minute: config.login_per_ip_per_minute,
    }))
}

impl App {
    /// Migrates, connects, creates the configured admin and binds the port.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let transport = Transport::from_config(&config.tls).context("serving the API")?;
        let tokens = TokenIssuer::new(&config.auth).context("JWT configuration")?;
        let (accounts, senders) = broker_identity(&config)?;
        let broker = broker::BrokerLink::new(config.amqp_url.clone(), config.amqp_ca_file.as_deref())
            .context("the broker's CA file")?;
        let (target, database) = open_database(&config).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let state = AppState {
            db: database,
            tokens: Arc::new(tokens),
            allocation_ttl: config.allocation_ttl,
            default_quota: default_quota(&config),
            body_limit: config.body_limit_bytes,
            login_limiter: login_limiter(&config),
            trusted_proxies: Arc::new(TrustedProxies::new(config.serve.trusted_proxies.clone())),
            broker: BrokerStatus::default(),
            metrics: prometheus()?,
            wake: Arc::new(tokio::sync::Notify::new()),
            submissions: Arc::default(),
            claims: Arc::default(),
            heartbeat_timeout: config.flow.heartbeat_timeout,
            accounts,
            standing: Arc::new(StandingCache::new(config.token_recheck)),
            credentials: Arc::new(CredentialCache::new(config.token_recheck)),
            stopping: Arc::new(tokio::sync::watch::channel(false).0),
            batch_body_limit: config.batch_body_limit_bytes,
            secure_cookies: !matches!(transport, Transport::InsecureHttp),
            event_batches: config.flow.agent_event_batches,
            max_shard_output: config.max_shard_output_bytes,
        };
        Ok(App {
            listener,
            state,
            timeout: config.request_timeout,
            serve: config.serve,
            transport,
            broker,
            database: target,
            flow: config.flow,
            retention: config.retention,
            senders,
        })
    }

    /// The bound address (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The app's database handle.
    pub fn database(&self) -> &Database {
        &self.state.db
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets
    /// in-flight requests finish. Background tasks stop with it.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let flow = Flow {
            db: self.state.db.clone(),
            topology: orchestrator_shared::messages::Topology::new(self.flow.broker_prefix.clone()),
            config: self.flow.clone(),
            wake: self.state.wake.clone(),
            status: self.state.broker.clone(),
            senders: self.senders.clone(),
        };
        let broker = tokio::spawn(broker::supervise(self.broker, flow.clone()));
        let firing = crate::schedules::Firing {
            grace: self.flow.schedule_grace,
            default_quota: self.state.default_quota,
        };
        let reaper = tokio::spawn(crate::reaper::run(self.database, flow, self.retention, firing));
        let stopping = self.state.stopping.clone();
        let shutdown = async move {
            shutdown.await;
            stopping.send_replace(true);
        };
        let router = api::router(self.state, self.timeout);
        let scheme = self.transport.scheme();
        if matches!(self.transport, Transport::InsecureHttp) {
            tracing::warn!(
                "serving plain HTTP (--insecure-http): passwords and tokens cross the network \
                 in clear text; use it only behind a TLS proxy or on a trusted host"
            );
        }
        tracing::info!(addr = %self.listener.local_addr()?, scheme, "controller listening");
        serve(self.listener, router, &self.serve, self.transport, shutdown).await;
        broker.abort();
        reaper.abort();
        Ok(())
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and waits for open connections to finish their requests.
/// Handlers see the peer address as `ConnectInfo<SocketAddr>`.
async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &ServeConfig,
    transport: Transport,
    shutdown: impl Future<Output = ()>,
) {
    let mut make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    let slots = Arc::new(Semaphore::new(limits.max_connections.get()));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A slot first, then a connection: over the cap, nothing is accepted.
        let next = async { (slots.clone().acquire_owned().await, accept(&listener).await) };
        let (slot, (stream, peer)) = tokio::select! {
            () = &mut shutdown => break,
            next = next => next,
        };
        let Ok(slot) = slot else { break };
        let Ok(service) = make_service.call(peer).await;
        let connection = Connection {
            http: http.clone(),
            service: TowerToHyperService::new(service),
            watcher: graceful.watcher(),
            peer,
        };
        let (transport, handshake_limit) = (transport.clone(), limits.header_read_timeout);
        tokio::spawn(async move {
            match transport {
                Transport::InsecureHttp => connection.serve(stream).await,
                Transport::Https(acceptor) => {
                    if let Some(tls) = crate::tls::accept(&acceptor, stream, handshake_limit).await {
                        connection.serve(tls).await;
                    }
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The service of one accepted connection, ready to serve it over TCP or
/// TLS once the transport is set up.
struct Connection {
    /// HTTP/1 settings (the header-read timeout).
    http: http1::Builder,
    /// The router, as a hyper service.
    service: TowerToHyperService<AddExtension<Router, ConnectInfo<SocketAddr>>>,
    /// Lets a graceful shutdown finish this connection's request.
    watcher: Watcher,
    /// The client, for logs.
    peer: SocketAddr,
}

impl Connection {
    /// Serves HTTP/1 on `io` until the connection ends.
    async fn serve<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self, io: I) {
        let connection = self.http.serve_connection(TokioIo::new(io), self.service);
        if let Err(e) = self.watcher.watch(connection).await {
            tracing::debug!(error = %e, peer = %self.peer, "connection ended with an error");
        }
    }
}

/// The next connection. A failure of one connection is skipped; any other
/// (out of file descriptors) is logged and retried after a pause.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                tracing::error!(error = %e, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// Whether an accept error concerns only the connection being accepted.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset)
}
