//! The broker side: one supervised connection at a time. Each session logs
//! in with the agent's own broker login (from its registration), consumes
//! the agent's control queue and (unless paused or draining) the jobs
//! queue, and lends its confirm channel to the
//! [`crate::publisher::Publisher`]. The controller declares the topology
//! and the agent's control queue; only on a shared broker login (the
//! registration gives no login) does the agent declare them itself. Any
//! broker error ends the session; the supervisor reconnects with capped
//! backoff. When the broker refuses the agent's login (its user is gone, or
//! a later registration replaced its password) or lacks its control queue,
//! the agent registers again for a new login first. Running shards live
//! outside sessions, so they keep running and report on the next connection.

use crate::publisher::Link;
use crate::state::State;
use crate::{control, job};
use anyhow::Context;
use futures::stream::{BoxStream, SelectAll};
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, Consumer, Event};
use orchestrator_shared::api::BrokerLogin;
use orchestrator_shared::backoff::backoff;
use orchestrator_shared::broker::{broker_uri, broker_uri_as, connect_uri, declare, declare_control_queue};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Longest wait for the broker to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a graceful close before the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// The same after a failure, when the connection is most likely gone and
/// waiting would only delay the reconnection.
const LOST_CLOSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Unacknowledged control messages held at once.
const CONTROL_PREFETCH: u16 = 16;
/// Longest wait for a cancelled consumer to hand back messages it had
/// already received.
const LEFTOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// AMQP reply code of a normal close.
const REPLY_SUCCESS: u16 = 200;
/// AMQP reply codes after which a new registration may help: the login
/// or an operation was refused (403, `ACCESS_REFUSED`), the agent's
/// control queue does not exist (404, `NOT_FOUND`), the virtual host was
/// refused to the user (530, `NOT_ALLOWED`).
const REGISTER_AGAIN: [u16; 3] = [403, 404, 530];

/// Why a session could not open.
#[derive(Debug)]
enum OpenError {
    /// The broker refused the agent's own login or an operation it needs,
    /// or lacks its control queue: a new registration gives a new login
    /// and has the controller declare the queue.
    RegisterAgain(anyhow::Error),
    /// Anything else: try again after a backoff.
    Other(anyhow::Error),
}

impl From<anyhow::Error> for OpenError {
    fn from(e: anyhow::Error) -> Self {
        OpenError::Other(e)
    }
}

impl From<lapin::Error> for OpenError {
    fn from(e: lapin::Error) -> Self {
        OpenError::Other(e.into())
    }
}

/// `e` as an [`OpenError`], saying what failed: one a new registration may
/// cure when the agent has a login of its own (with a shared login there
/// is nothing a registration could change).
fn open_error(e: lapin::Error, own_login: bool, what: &'static str) -> OpenError {
    let code = match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    };
    let e = anyhow::Error::new(e).context(what);
    match code {
        Some(code) if own_login && REGISTER_AGAIN.contains(&code) => OpenError::RegisterAgain(e),
        _ => OpenError::Other(e),
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The agent asked it to close: it is exiting.
    Closed,
    /// The connection or a channel failed: reconnect.
    Lost,
}

/// One connection and its channels.
struct Session {
    /// The connection.
    conn: Connection,
    /// Confirm-mode channel for events, and the user they are sent as.
    publish: Link,
    /// Channel of the control consumer.
    control: Channel,
    /// The control queue's consumer.
    control_consumer: Consumer,
    /// The jobs consumer, started and stopped on its own channel.
    jobs: JobsConsumer,
}

/// Keeps a broker session running until `close` is set (or its sender is
/// dropped), reconnecting with backoff after any failure.
pub async fn supervise(state: Arc<State>, mut close: watch::Receiver<bool>) {
    let mut attempt = 0u32;
    while !*close.borrow() {
        let opened = tokio::select! {
            opened = open(&state) => opened,
            _ = close.changed() => return,
        };
        match opened {
            Ok(session) => {
                tracing::info!("broker connected");
                attempt = 0;
                if run_session(&state, session, &mut close).await == End::Closed {
                    return;
                }
            }
            // Not while draining: a registration would make a terminating
            // worker idle again; the drain gives up on its reports instead.
            Err(OpenError::RegisterAgain(e)) if !state.is_stopping() => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    attempt,
                    "the broker refused this agent's login or lacks its queue; registering again"
                );
                tokio::select! {
                    () = crate::agent::register(&state) => {}
                    _ = close.changed() => return,
                }
            }
            Err(OpenError::RegisterAgain(e) | OpenError::Other(e)) => {
                tracing::warn!(error = format!("{e:#}"), attempt, "broker connection failed")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff(attempt)) => {}
            _ = close.changed() => {}
        }
        attempt = attempt.saturating_add(1);
    }
}

/// Connects and opens the session's channels and consumers, logged in as
/// the agent's own broker user if its registration gave it one.
async fn open(state: &State) -> Result<Session, OpenError> {
    let login = state.broker_login();
    let conn = connect(state, login.as_ref()).await?;
    let (control, control_consumer) = consume_control(state, &conn, login.is_some()).await?;
    let publish = conn.create_channel().await?;
    publish.confirm_select(ConfirmSelectOptions::default()).await?;
    let user_id = match login {
        Some(login) => Some(short(login.username)?),
        None => None,
    };
    let jobs_channel = conn.create_channel().await?;
    let prefetch = u16::try_from(state.config.capacity).unwrap_or(u16::MAX);
    // Per channel (`global`), so that however many class queues the agent
    // consumes, it holds at most `capacity` unacknowledged shards.
    let shared = BasicQosOptions { global: true };
    jobs_channel.basic_qos(prefetch, shared).await?;
    let jobs = JobsConsumer {
        channel: jobs_channel,
        consuming: Vec::new(),
        deliveries: SelectAll::new(),
    };
    Ok(Session {
        conn,
        publish: Link {
            channel: publish,
            user_id,
        },
        control,
        control_consumer,
        jobs,
    })
}

/// Opens a connection to the broker URL, as `login` if given (else with
/// the URL's own login).
async fn connect(state: &State, login: Option<&BrokerLogin>) -> Result<Connection, OpenError> {
    let name = LongString::from(format!("worker-agent {}", state.worker_id()));
    let props = ConnectionProperties::default().with_connection_name(name);
    let url = state.config.amqp_url.expose();
    let uri = match login {
        Some(login) => broker_uri_as(url, &login.username, &login.password)?,
        None => broker_uri(url)?,
    };
    let ca = state.ca.as_ref().map(|ca| ca.pem());
    match tokio::time::timeout(CONNECT_TIMEOUT, connect_uri(uri, ca, props)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(open_error(e, login.is_some(), "connecting to the broker")),
        Err(_) => Err(anyhow::anyhow!("connecting to the broker timed out").into()),
    }
}

/// A channel consuming the agent's control queue. On a shared broker login
/// the agent declares the topology and its queue first; with its own login
/// the controller has declared them (and the agent may not).
async fn consume_control(
    state: &State,
    conn: &Connection,
    own_login: bool,
) -> Result<(Channel, Consumer), OpenError> {
    let control = conn.create_channel().await?;
    let queue = if own_login {
        state.topology.control_queue(state.worker_id())
    } else {
        declare(&control, &state.topology)
            .await
            .map_err(anyhow::Error::new)?;
        declare_control_queue(&control, &state.topology, state.worker_id())
            .await
            .map_err(anyhow::Error::new)?
    };
    control
        .basic_qos(CONTROL_PREFETCH, BasicQosOptions::default())
        .await?;
    let tag = consumer_tag(state, "control")?;
    let consumer = control
        .basic_consume(
            short(queue)?,
            tag,
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| open_error(e, own_login, "consuming the control queue"))?;
    Ok((control, consumer))
}

fn short(s: String) -> anyhow::Result<ShortString> {
    ShortString::try_new(s.clone()).map_err(|_| anyhow::anyhow!("broker name too long: {s}"))
}

/// A consumer tag unique to this agent and this consume.
fn consumer_tag(state: &State, what: &str) -> anyhow::Result<ShortString> {
    let id = uuid::Uuid::new_v4().simple();
    short(format!("{}.{what}.{id}", state.worker_id()))
}

async fn run_session(state: &Arc<State>, mut s: Session, close: &mut watch::Receiver<bool>) -> End {
    let end = match s.jobs.sync(state).await {
        Ok(()) => {
            state.publisher.set_channel(Some(s.publish.clone()));
            session_loop(state, &mut s, close).await
        }
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "starting the jobs consumer failed");
            End::Lost
        }
    };
    state.publisher.set_channel(None);
    state.consuming.store(false, Ordering::Relaxed);
    if end == End::Lost {
        tracing::warn!("broker connection lost; running shards go on and report after reconnecting");
    }
    shut(s, end).await;
    end
}

async fn session_loop(state: &Arc<State>, s: &mut Session, close: &mut watch::Receiver<bool>) -> End {
    let mut paused = state.paused.subscribe();
    let mut stopping = state.stopping.subscribe();
    let mut queues = state.queues.subscribe();
    let mut events = s.conn.events_listener();
    loop {
        tokio::select! {
            _ = close.changed() => return End::Closed,
            _ = paused.changed() => {}
            _ = stopping.changed() => {}
            _ = queues.changed() => {}
            control = s.control_consumer.next() => match control {
                Some(Ok(delivery)) => control::handle(state, delivery).await,
                other => return lost("control consumer", other.and_then(Result::err)),
            },
            work = s.jobs.next() => match work {
                Some(Ok(delivery)) => job::spawn(state, delivery),
                other => return lost("jobs consumer", other.and_then(Result::err)),
            },
            event = events.next() => match event {
                Some(Event::Error(e)) => return lost("connection", Some(e)),
                None => return lost("connection events", None::<lapin::Error>),
                Some(_) => {}
            },
        }
        if let Err(e) = s.jobs.sync(state).await {
            return lost("starting or stopping the jobs consumer", Some(format!("{e:#}")));
        }
    }
}

fn lost(what: &str, error: Option<impl std::fmt::Display>) -> End {
    match error {
        Some(e) => tracing::warn!(error = %e, "{what} failed"),
        None => tracing::warn!("{what} ended"),
    }
    End::Lost
}

/// Closes the session's channels and connection; after a loss, only
/// briefly tries (the connection is probably gone already).
async fn shut(s: Session, end: End) {
    let close = async {
        for (_, tag) in &s.jobs.consuming {
            let _ = s
                .jobs
                .channel
                .basic_cancel(tag.clone(), BasicCancelOptions::default())
                .await;
        }
        for channel in [&s.jobs.channel, &s.publish.channel, &s.control] {
            let _ = channel.close(REPLY_SUCCESS, ShortString::from("OK")).await;
        }
        s.conn.close(REPLY_SUCCESS, ShortString::from("OK")).await
    };
    let limit = if end == End::Closed {
        CLOSE_TIMEOUT
    } else {
        LOST_CLOSE_TIMEOUT
    };
    match tokio::time::timeout(limit, close).await {
        Ok(Ok(())) => tracing::info!("broker connection closed"),
        Ok(Err(e)) => tracing::debug!(error = %e, "closing the broker connection failed"),
        Err(_) => tracing::debug!("closing the broker connection timed out"),
    }
}

/// One jobs queue's deliveries, then `None` once its consumer ends (the
/// broker cancelled it, or the channel closed), so the session notices.
type Deliveries = BoxStream<'static, Option<lapin::Result<Delivery>>>;

/// The consumers of the agent's job queues (one per job class it serves,
/// see `classes`), all on one channel, present only while it takes work.
struct JobsConsumer {
    /// Their channel, whose prefetch (shared by all) is the capacity.
    channel: Channel,
    /// The queues consumed now, with their consumer tags.
    consuming: Vec<(String, ShortString)>,
    /// Every consumer's deliveries, merged.
    deliveries: SelectAll<Deliveries>,
}

impl JobsConsumer {
    /// Starts or stops consuming to match the paused and stopping switches,
    /// and consumes every queue of `state.queues` not consumed yet. Queues
    /// are only ever added while the agent runs: its pools and labels are
    /// fixed at start, and a job class, once declared, stays.
    async fn sync(&mut self, state: &State) -> anyhow::Result<()> {
        let wanted = !*state.paused.borrow() && !state.is_stopping();
        if wanted {
            let fresh: Vec<String> = (state.queues.borrow().iter())
                .filter(|q| !self.consuming.iter().any(|(c, _)| c == *q))
                .cloned()
                .collect();
            for queue in fresh {
                self.consume(state, queue).await?;
            }
        } else if !self.consuming.is_empty() {
            for (_, tag) in std::mem::take(&mut self.consuming) {
                self.channel
                    .basic_cancel(tag, BasicCancelOptions::default())
                    .await
                    .context("cancelling a jobs consumer")?;
            }
            tracing::info!("stopped consuming jobs");
            tokio::spawn(requeue_leftovers(std::mem::take(&mut self.deliveries)));
        }
        state.consuming.store(wanted, Ordering::Relaxed);
        Ok(())
    }

    /// Starts consuming `queue`.
    async fn consume(&mut self, state: &State, queue: String) -> anyhow::Result<()> {
        let tag = consumer_tag(state, "jobs")?;
        let consumer = self
            .channel
            .basic_consume(
                short(queue.clone())?,
                tag.clone(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("consuming the jobs queue {queue}"))?;
        tracing::info!(queue, "consuming jobs");
        let ended = futures::stream::once(async { None });
        self.deliveries.push(consumer.map(Some).chain(ended).boxed());
        self.consuming.push((queue, tag));
        Ok(())
    }

    /// The next delivery (`None`: a consumer ended); never resolves while
    /// not consuming.
    async fn next(&mut self) -> Option<lapin::Result<Delivery>> {
        if self.deliveries.is_empty() {
            return std::future::pending().await;
        }
        self.deliveries.next().await.flatten()
    }
}

/// Gives back what cancelled consumers had received but not yet handed
/// out, so paused agents hold no work; done when every one has ended.
async fn requeue_leftovers(mut deliveries: SelectAll<Deliveries>) {
    let drain = async {
        while let Some(item) = deliveries.next().await {
            let Some(Ok(delivery)) = item else { continue };
            let requeue = BasicNackOptions {
                requeue: true,
                ..Default::default()
            };
            if let Err(e) = delivery.nack(requeue).await {
                tracing::warn!(error = %e, "could not give back a job message");
            }
        }
    };
    if tokio::time::timeout(LEFTOVER_TIMEOUT, drain).await.is_err() {
        tracing::warn!("a cancelled jobs consumer did not end");
    }
}
