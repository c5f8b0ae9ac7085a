//! Connection supervision: connect to RabbitMQ, declare the topology, open
//! the relay's and the consumer's channels and run both until either fails,
//! then reconnect after a capped backoff. [`BrokerStatus`] tells `/readyz`
//! and the reaper whether (and for how long) the link has been up.

use super::consumer::{consume_events, events_prefetch};
use super::relay::relay;
use super::Flow;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use orchestrator_shared::backoff::backoff;
use orchestrator_shared::broker::{connect, declare, TopologyError};
use orchestrator_shared::tls::{tls_failure, CaBundle, CaFileError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectionError {
    /// The broker failed or closed the connection.
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    /// A broker name could not be formed (a prefix too long for AMQP).
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

/// Whether the broker connection is open, and since when. Cheap to clone.
#[derive(Clone, Default)]
pub struct BrokerStatus(Arc<std::sync::Mutex<Option<Instant>>>);

impl BrokerStatus {
    /// True while a connection is open and the topology declared.
    pub fn is_up(&self) -> bool {
        self.up_for().is_some()
    }

    /// How long the current connection has been up (`None`: down). The
    /// reaper trusts missing heartbeats (which travel through the broker)
    /// only after its own link has been up for a whole heartbeat timeout.
    pub fn up_for(&self) -> Option<Duration> {
        self.0.lock().ok().and_then(|g| g.map(|since| since.elapsed()))
    }

    fn set(&self, up: bool) {
        if let Ok(mut g) = self.0.lock() {
            match (up, g.is_some()) {
                (true, false) => *g = Some(Instant::now()),
                (false, _) => *g = None,
                _ => {}
            }
        }
    }
}

/// Where the broker is: its URL (`amqp://` or `amqps://`, may hold a
/// password) and the private CA its certificate may be signed by.
#[derive(Clone)]
pub struct BrokerLink {
    /// The connection string.
    pub url: String,
    /// A CA trusted besides the system's roots, for `amqps://`.
    pub ca: Option<CaBundle>,
}

impl BrokerLink {
    /// A link to `url`, trusting the CA of `ca_file` (if any) besides the
    /// system's roots.
    pub fn new(url: String, ca_file: Option<&std::path::Path>) -> Result<Self, CaFileError> {
        let ca = ca_file.map(CaBundle::read).transpose()?;
        Ok(BrokerLink { url, ca })
    }
}

/// Keeps a connection to the broker and its relay and consumer running
/// until the task is dropped.
pub async fn supervise(link: BrokerLink, flow: Flow) {
    let mut attempt = 0;
    loop {
        if let Err(e) = connect_and_run(&link, &flow, &mut attempt).await {
            match tls_failure(&e) {
                Some(failure) => tracing::error!(%failure, attempt,
                    "no TLS connection to the broker: set --amqp-ca-file (ORCH_AMQP_CA_FILE) \
                     to the CA of its certificate, or check the amqps:// URL"),
                None => tracing::warn!(error = %e, attempt, "broker connection ended"),
            }
        }
        flow.status.set(false);
        tokio::time::sleep(backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// One connection's life: set it up, mark the link up (and the backoff
/// reset), then run the relay and the consumer until either ends.
async fn connect_and_run(link: &BrokerLink, flow: &Flow, attempt: &mut u32) -> Result<(), ConnectionError> {
    let ca = link.ca.as_ref().map(CaBundle::pem);
    let conn = connect(&link.url, ca, lapin::ConnectionProperties::default()).await?;
    let setup = conn.create_channel().await?;
    if let Err(e) = declare(&setup, &flow.topology).await {
        tracing::error!(error = %e, "declaring the broker topology failed");
        return Ok(());
    }
    let publish = conn.create_channel().await?;
    publish.confirm_select(Default::default()).await?;
    let consumer = open_consumer(&conn, flow).await?;
    tracing::info!("broker connected, topology declared");
    flow.status.set(true);
    *attempt = 0;
    let ended = tokio::select! {
        r = relay(flow, &publish) => r,
        r = consume_events(flow, consumer) => r,
    };
    Ok(ended?)
}

/// A channel consuming the events queue, with a prefetch that holds two
/// batches.
async fn open_consumer(conn: &lapin::Connection, flow: &Flow) -> Result<lapin::Consumer, ConnectionError> {
    let consume = conn.create_channel().await?;
    consume
        .basic_qos(
            events_prefetch(flow.config.event_batch_max),
            BasicQosOptions::default(),
        )
        .await?;
    let queue = short(flow.topology.events_queue())?;
    let tag = short(format!("controller-{}", uuid::Uuid::new_v4().simple()))?;
    Ok(consume
        .basic_consume(queue, tag, BasicConsumeOptions::default(), FieldTable::default())
        .await?)
}

/// `s` as an AMQP short string, or the error naming it (`From<String>`
/// would panic on a name over 255 bytes).
fn short(s: String) -> Result<ShortString, TopologyError> {
    ShortString::try_new(s.clone()).map_err(|_| TopologyError::NameTooLong(s))
}
