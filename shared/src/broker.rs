//! Declaring the broker topology, and the broker URL both daemons connect
//! with. The controller declares the topology; an agent declares it only
//! when it runs on a shared broker login (`--insecure-shared-broker` on the
//! controller), and then declares exactly the same queues with the same
//! arguments (RabbitMQ refuses a re-declaration with different ones). With
//! per-agent broker users an agent may declare nothing, and the controller
//! declares each agent's control queue when it registers. Every
//! declaration is idempotent. Behind the `broker` feature.

use crate::messages::{Topology, CONTROL_EXCHANGE, MAX_PRIORITY, WORK_EXCHANGE, WORK_ROUTING_KEY};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

/// Routing key of agent events on the events exchange.
pub const EVENTS_ROUTING_KEY: &str = "event";
/// A control queue unused (no agent consuming) this long is deleted by the
/// broker: agents that are gone for good leave nothing behind. The
/// controller declares control queues with it through the management API
/// too, so both declarations agree.
pub const CONTROL_QUEUE_EXPIRES_MS: i32 = 24 * 3600 * 1000;

/// The largest AMQP frame both daemons ask for, unless their broker URL
/// sets `frame_max` itself. lapin keeps a receive and a send buffer of 32
/// frames each, so RabbitMQ's default of 128 KiB costs 8 MiB of resident
/// memory per connection (half an idle agent); 16 KiB costs 1 MiB. A larger
/// message (a report with 64 KiB output tails) travels in several frames.
pub const FRAME_MAX: u32 = 16 * 1024;

/// Parses a broker URL, asking for [`FRAME_MAX`] unless it names a
/// `frame_max`. A URL that does not parse is the same kind of error lapin
/// gives for it.
pub fn broker_uri(url: &str) -> Result<AMQPUri, lapin::Error> {
    let mut uri: AMQPUri = url
        .parse()
        .map_err(|e: String| lapin::Error::from(std::io::Error::other(format!("invalid broker URL: {e}"))))?;
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    Ok(uri)
}

/// Opens a connection to the broker at `url`, asking for [`FRAME_MAX`]
/// (see [`broker_uri`]). Over `amqps://` the broker's certificate must be
/// valid for the URL's host and signed by a CA of the system's roots (or of
/// `SSL_CERT_FILE`) or of `ca_pem`, a private CA's PEM certificates; both
/// daemons connect through here so they check the broker alike.
pub async fn connect(
    url: &str,
    ca_pem: Option<&str>,
    properties: ConnectionProperties,
) -> Result<Connection, lapin::Error> {
    connect_uri(broker_uri(url)?, ca_pem, properties).await
}

/// [`connect`] with a ready URI (e.g. from [`broker_uri_as`]).
pub async fn connect_uri(
    uri: AMQPUri,
    ca_pem: Option<&str>,
    properties: ConnectionProperties,
) -> Result<Connection, lapin::Error> {
    let tls = OwnedTLSConfig {
        identity: None,
        cert_chain: ca_pem.map(str::to_owned),
    };
    let runtime = lapin::runtime::default_runtime()?;
    Connection::connect_uri_with_config(uri, properties, tls, runtime).await
}

/// [`broker_uri`] logging in as `username` with `password` instead of
/// whatever the URL says: an agent's URL names the broker, and its
/// registration answer gives it its own login.
pub fn broker_uri_as(url: &str, username: &str, password: &str) -> Result<AMQPUri, lapin::Error> {
    let mut uri = broker_uri(url)?;
    uri.authority.userinfo = lapin::uri::AMQPUserInfo {
        username: username.to_owned(),
        password: password.to_owned(),
    };
    Ok(uri)
}

/// Why a declaration failed.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The broker refused or the connection failed.
    #[error("broker error: {0}")]
    Amqp(#[from] lapin::Error),
    /// A name is longer than AMQP allows (255 bytes).
    #[error("broker name too long: {0}")]
    NameTooLong(String),
    /// A work routing key that names no job class.
    #[error("routing key names no job class: {0}")]
    NotAClass(String),
}

fn name(s: String) -> Result<ShortString, TopologyError> {
    ShortString::try_new(s.clone()).map_err(|_| TopologyError::NameTooLong(s))
}

async fn exchange(ch: &Channel, n: String, kind: ExchangeKind) -> Result<(), TopologyError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    Ok(ch
        .exchange_declare(name(n)?, kind, durable, FieldTable::default())
        .await?)
}

async fn queue(ch: &Channel, n: String, args: FieldTable) -> Result<(), TopologyError> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(name(n)?, durable, args).await?;
    Ok(())
}

async fn bind(ch: &Channel, q: String, x: String, key: &str) -> Result<(), TopologyError> {
    let (q, x, key) = (name(q)?, name(x)?, name(key.to_owned())?);
    Ok(ch
        .queue_bind(q, x, key, QueueBindOptions::default(), FieldTable::default())
        .await?)
}

/// Declares the shared part: the work exchange and its durable priority
/// queue (dead-lettering into `dlx` → `dead`), the control exchange, and the
/// events exchange and queue.
pub async fn declare(ch: &Channel, t: &Topology) -> Result<(), TopologyError> {
    exchange(ch, t.dead_letter_exchange(), ExchangeKind::Fanout).await?;
    queue(ch, t.dead_letter_queue(), FieldTable::default()).await?;
    bind(ch, t.dead_letter_queue(), t.dead_letter_exchange(), "").await?;

    exchange(ch, t.exchange(WORK_EXCHANGE), ExchangeKind::Direct).await?;
    declare_class_queue(ch, t, WORK_ROUTING_KEY).await?;

    exchange(ch, t.exchange(CONTROL_EXCHANGE), ExchangeKind::Direct).await?;
    exchange(ch, t.events_exchange(), ExchangeKind::Direct).await?;
    queue(ch, t.events_queue(), FieldTable::default()).await?;
    bind(ch, t.events_queue(), t.events_exchange(), EVENTS_ROUTING_KEY).await
}

/// Declares the durable queue of the job class routed by `routing_key`
/// (see [`crate::pools`]) and binds it to the work exchange under that key.
/// Every class queue has the arguments of the original jobs queue (which
/// is the default class's): priorities up to [`MAX_PRIORITY`] and dead
/// letters into `dlx`, so priorities, dead-lettering and redelivery work
/// alike in every pool.
pub async fn declare_class_queue(ch: &Channel, t: &Topology, routing_key: &str) -> Result<(), TopologyError> {
    let q = t
        .class_queue(routing_key)
        .ok_or_else(|| TopologyError::NotAClass(routing_key.to_owned()))?;
    let mut args = FieldTable::default();
    args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(MAX_PRIORITY));
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(t.dead_letter_exchange().into()),
    );
    queue(ch, q.clone(), args).await?;
    bind(ch, q, t.exchange(WORK_EXCHANGE), routing_key).await
}

/// Declares one agent's durable control queue, bound to the control
/// exchange under its worker id, and returns the queue's name.
pub async fn declare_control_queue(
    ch: &Channel,
    t: &Topology,
    worker_id: &str,
) -> Result<String, TopologyError> {
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongInt(CONTROL_QUEUE_EXPIRES_MS));
    let q = t.control_queue(worker_id);
    queue(ch, q.clone(), args).await?;
    bind(ch, q.clone(), t.exchange(CONTROL_EXCHANGE), worker_id).await?;
    Ok(q)
}

/// Properties of every message the system publishes: persistent (delivery
/// mode 2), JSON, with the given priority.
pub fn persistent(priority: u8) -> lapin::BasicProperties {
    lapin::BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_priority(priority.min(MAX_PRIORITY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_frames_unless_the_url_says_otherwise() {
        let uri = broker_uri("amqp://guest:guest@mq:5672/%2f").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(uri.query.frame_max, Some(FRAME_MAX));
        let uri = broker_uri("amqp://mq:5672/%2f?frame_max=131072").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(uri.query.frame_max, Some(131_072));
        assert!(broker_uri("not a url").is_err());
    }

    #[test]
    fn an_agents_own_login_replaces_the_urls() {
        let uri = broker_uri_as("amqp://mq:5672/v", "p.agent.w:1", "pw/@:").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(uri.authority.userinfo.username, "p.agent.w:1");
        assert_eq!(uri.authority.userinfo.password, "pw/@:");
        assert_eq!((uri.authority.host.as_str(), uri.vhost.as_str()), ("mq", "v"));
        assert_eq!(uri.query.frame_max, Some(FRAME_MAX));
    }
}
