//! Start-up: from a [`Config`] to a running server. `App::build` does
//! everything that can fail (migrations, pool, keys, admin, binding the
//! port); `run_until` serves until the given future resolves, then finishes
//! in-flight requests.

use crate::api::{self, limiter::LoginLimiter, AppState};
use crate::auth::TokenIssuer;
use crate::broker::{self, BrokerStatus, Flow};
use crate::config::Config;
use crate::db::{self, Database};
use crate::models::Quota;
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;

/// Latency buckets (seconds) for request histograms: sub-millisecond to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A built controller, bound to its port, not yet serving.
pub struct App {
    listener: TcpListener,
    state: AppState,
    timeout: Duration,
    amqp_url: String,
    database_url: String,
    flow: crate::config::FlowConfig,
}

/// The process-wide Prometheus recorder (the `metrics` facade has one global
/// recorder, so every App in a process shares it).
fn prometheus() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .context("histogram buckets")?
        .build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_ok() {
        let _ = HANDLE.set(handle);
    }
    HANDLE.get().cloned().context("no metrics recorder")
}

impl App {
    /// Migrates, connects, creates the configured admin and binds the port.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let tokens = TokenIssuer::new(&config.auth).context("JWT configuration")?;
        db::migrate(&config.database_url)
            .await
            .context("applying migrations")?;
        let database = Database::connect(&config.database_url, config.db_pool_size, config.db_wait)
            .context("building the pool")?;
        if let (Some(user), Some(pass)) = (&config.auth.admin_username, &config.auth.admin_password) {
            crate::bootstrap::ensure_admin(&database, user, pass)
                .await
                .context("creating the configured admin")?;
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let q = config.default_quota;
        let state = AppState {
            db: database,
            tokens: Arc::new(tokens),
            allocation_ttl: config.allocation_ttl,
            default_quota: Quota {
                max_workers: q.max_workers,
                max_concurrent_jobs: q.max_concurrent_jobs,
                max_queued_jobs: q.max_queued_jobs,
            },
            body_limit: config.body_limit_bytes,
            login_limiter: Arc::new(LoginLimiter::new(
                config.login_per_ip_per_minute,
                config.login_per_user_per_minute,
            )),
            broker: BrokerStatus::default(),
            metrics: prometheus()?,
            wake: Arc::new(tokio::sync::Notify::new()),
            agent_token_ttl: config.flow.agent_token_ttl.as_secs(),
        };
        Ok(App {
            listener,
            state,
            timeout: config.request_timeout,
            amqp_url: config.amqp_url,
            database_url: config.database_url,
            flow: config.flow,
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
        };
        let broker = tokio::spawn(broker::supervise(self.amqp_url.clone(), flow.clone()));
        let reaper = tokio::spawn(crate::reaper::run(self.database_url.clone(), flow));
        let router = api::router(self.state, self.timeout);
        tracing::info!(addr = %self.listener.local_addr()?, "controller listening");
        let served = axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        broker.abort();
        reaper.abort();
        served
    }
}
