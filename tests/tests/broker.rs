//! Broker identity, against the real RabbitMQ (with its management API) and
//! a real controller: each agent gets a broker user of its own at
//! registration, that user may do only what an agent needs, RabbitMQ
//! refuses a forged `user_id`, the controller applies an event only from
//! the broker user of the worker it names (and a liveness probe only from
//! itself), and revoking an agent ends its broker access.

use controller::broker::BrokerAccounts;
use integration_tests::{broker_accounts_flag, infra, spawn_app_with, test_config, unique_prefix, TestApp};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use orchestrator_shared::api::{BrokerLogin, Registration};
use orchestrator_shared::broker::{broker_uri_as, persistent, EVENTS_ROUTING_KEY};
use orchestrator_shared::messages::{AgentEvent, ShardOutcome, Topology, CONTROL_EXCHANGE, WORK_EXCHANGE};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Longest wait for anything asynchronous in these tests.
const WAIT: Duration = Duration::from_secs(30);

/// A controller that gives each agent its own broker user, on a broker
/// prefix of its own, and each agent's credential, issued once.
struct Setup {
    app: TestApp,
    prefix: String,
    credentials: tokio::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Setup {
    async fn start() -> Setup {
        Setup::start_with(&[]).await
    }

    /// [`Setup::start`] with the controller's `extra` flags.
    async fn start_with(extra: &[&str]) -> Setup {
        let prefix = unique_prefix();
        let accounts = broker_accounts_flag();
        let mut flags = vec!["--broker-prefix", &prefix, &accounts[0], &accounts[1]];
        flags.extend_from_slice(extra);
        let app = spawn_app_with(&flags).await;
        Setup {
            app,
            prefix,
            credentials: Default::default(),
        }
    }

    /// The credential of `worker_id`'s agent (issued at the first call).
    async fn token(&self, worker_id: &str) -> String {
        let mut credentials = self.credentials.lock().await;
        if let Some(token) = credentials.get(worker_id) {
            return token.clone();
        }
        let token = self.app.agent_credential(worker_id).await;
        credentials.insert(worker_id.to_owned(), token.clone());
        token
    }

    fn topology(&self) -> Topology {
        Topology::new(self.prefix.clone())
    }

    /// Registers `worker_id` as its agent would, retrying while the
    /// controller's broker link is still coming up (503).
    async fn register(&self, worker_id: &str) -> Registration {
        let body = json!({"worker_id": worker_id, "hostname": "test-host", "capacity": 2});
        let started = Instant::now();
        let token = self.token(worker_id).await;
        loop {
            let r = self.app.register_agent(&token, &body).await;
            if r.status == 200 {
                return serde_json::from_value(r.json).unwrap();
            }
            assert!(
                r.status == 503 && started.elapsed() < WAIT,
                "{}: {}",
                r.status,
                r.text
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Registers `worker_id` and connects to the broker with its login.
    async fn agent(&self, worker_id: &str) -> (Registration, Connection) {
        let registration = self.register(worker_id).await;
        let login = registration.broker.clone().expect("a broker login in the answer");
        let conn = connect_as(&login).await.unwrap();
        (registration, conn)
    }

    /// A job of one shard claimed (and so running) by `worker_id`.
    async fn running_job(&self, worker_id: &str) -> String {
        let job = json!({"task_description": "t", "command": ["/bin/true"]});
        self.running(worker_id, &job).await
    }

    /// The id of the job `job`, submitted by the admin.
    async fn submitted(&self, job: &Value) -> String {
        let r = self
            .app
            .post_json("/api/jobs/submit", &self.app.admin_token, job)
            .await;
        assert_eq!(r.status(), 201);
        let job: Value = r.json().await.unwrap();
        job["job_id"].as_str().unwrap().to_owned()
    }

    /// The job `job` submitted, then claimed by `worker_id`.
    async fn running(&self, worker_id: &str, job: &Value) -> String {
        let job_id = self.submitted(job).await;
        let claim = json!({"worker_id": worker_id, "job_id": job_id, "attempt": 1, "shard_index": 0, "redelivered": false});
        let r = self
            .app
            .post_json("/api/agents/claim", &self.token(worker_id).await, &claim)
            .await;
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["decision"], "run", "{answer}");
        job_id
    }

    async fn job(&self, job_id: &str) -> Value {
        let r = self
            .app
            .get(&format!("/api/jobs/{job_id}"), &self.app.admin_token)
            .await;
        r.json().await.unwrap()
    }

    async fn worker(&self, worker_id: &str) -> Value {
        let path = format!("/api/supervisor/workers/{worker_id}");
        self.app
            .get(&path, &self.app.admin_token)
            .await
            .json()
            .await
            .unwrap()
    }

    /// The refusal counter of `reason` (0 when absent).
    async fn refused(&self, reason: &str) -> f64 {
        let text = self.app.http.get(self.app.url("/metrics")).send().await.unwrap();
        let text = text.text().await.unwrap();
        let series = format!("broker_events_refused_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// Publishes, as the agent `worker_id` on `conn`, a heartbeat of its
    /// own and waits until the controller has applied it: every event
    /// published before it on the events queue has been handled by then.
    async fn barrier(&self, conn: &Connection, worker_id: &str, generation: i64) {
        let before = self.worker(worker_id).await["last_heartbeat_at"].clone();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let beat = AgentEvent::Heartbeat {
            worker_id: worker_id.to_owned(),
            running: Vec::new(),
            paused: false,
            generation,
        };
        let user = self.topology().agent_user(worker_id);
        let ch = confirm_channel(conn).await;
        assert!(
            publish_event(&ch, Some(&user), &self.topology(), &beat).await,
            "heartbeat refused"
        );
        let started = Instant::now();
        while self.worker(worker_id).await["last_heartbeat_at"] == before {
            assert!(
                started.elapsed() < WAIT,
                "the barrier heartbeat was never applied"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A connection to the test broker with `login`.
async fn connect_as(login: &BrokerLogin) -> Result<Connection, lapin::Error> {
    let uri = broker_uri_as(
        &infra().amqp_url_without_login(),
        &login.username,
        &login.password,
    )?;
    Connection::connect_uri(uri, ConnectionProperties::default()).await
}

/// The AMQP reply code of a broker refusal, if `e` is one.
fn code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    ch
}

/// Publishes `body` to `exchange` with `key` and waits for the confirm;
/// true only if the broker took it (a refusal closes the channel).
async fn publish(ch: &Channel, user_id: Option<&str>, exchange: &str, key: &str, body: &[u8]) -> bool {
    let mut props: BasicProperties = persistent(0);
    if let Some(user) = user_id {
        props = props.with_user_id(ShortString::from(user.to_owned()));
    }
    let sent = ch
        .basic_publish(
            ShortString::from(exchange.to_owned()),
            ShortString::from(key.to_owned()),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await;
    let confirmed = match sent {
        Ok(confirm) => tokio::time::timeout(WAIT, confirm).await.ok(),
        Err(_) => None,
    };
    matches!(confirmed, Some(Ok(c)) if c.is_ack()) && ch.status().connected()
}

/// Publishes an agent event to the events exchange as `user_id`.
async fn publish_event(ch: &Channel, user_id: Option<&str>, t: &Topology, event: &AgentEvent) -> bool {
    publish_to_events(ch, user_id, t, &serde_json::to_vec(event).unwrap()).await
}

/// Publishes `body` (an event, an array of them, or something malformed)
/// on `t`'s events exchange as `user_id`; true once confirmed.
async fn publish_to_events(ch: &Channel, user_id: Option<&str>, t: &Topology, body: &[u8]) -> bool {
    publish(ch, user_id, &t.events_exchange(), EVENTS_ROUTING_KEY, body).await
}

/// Messages waiting in `queue`, seen by the broker's administrator.
async fn depth(queue: &str) -> u32 {
    let conn = Connection::connect(&infra().amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare(
            ShortString::from(queue.to_owned()),
            passive,
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = conn.close(200, "done".into()).await;
    q.message_count()
}

#[tokio::test]
async fn an_agent_cannot_report_heartbeat_or_stop_for_another_worker() {
    let s = Setup::start().await;
    let (a, conn_a) = s.agent("agent-a").await;
    let (b, _conn_b) = s.agent("agent-b").await;
    let job_id = s.running_job("agent-b").await;
    let b_before = s.worker("agent-b").await;
    let refused_before = s.refused("not_from_its_agent").await;
    let t = s.topology();
    let user_a = t.agent_user("agent-a");
    let forged = [
        AgentEvent::ShardFinished {
            worker_id: "agent-b".into(),
            job_id: job_id.parse().unwrap(),
            attempt: 1,
            shard_index: 0,
            outcome: ShardOutcome::Succeeded,
            exit_code: Some(0),
            stdout_tail: "forged".into(),
            stderr_tail: String::new(),
            error: None,
        },
        AgentEvent::Heartbeat {
            worker_id: "agent-b".into(),
            running: Vec::new(),
            paused: false,
            generation: b.worker.generation,
        },
        AgentEvent::Stopped {
            worker_id: "agent-b".into(),
            generation: b.worker.generation,
        },
    ];
    let ch = confirm_channel(&conn_a).await;
    for event in &forged {
        // RabbitMQ takes them: A's user may publish events, as itself.
        assert!(publish_event(&ch, Some(&user_a), &t, event).await, "{event:?}");
    }
    // Without any user_id at all, an event names no sender either.
    assert!(publish_event(&ch, None, &t, &forged[1]).await);
    s.barrier(&conn_a, "agent-a", a.worker.generation).await;

    let job = s.job(&job_id).await;
    assert_eq!(
        job["status"], "running",
        "a forged report finished B's job: {job}"
    );
    let b_after = s.worker("agent-b").await;
    assert_eq!(b_after["status"], "busy", "a forged Stopped ended B: {b_after}");
    assert_eq!(
        b_after["last_heartbeat_at"], b_before["last_heartbeat_at"],
        "a forged heartbeat kept B alive"
    );
    let counted = s.refused("not_from_its_agent").await - refused_before;
    assert!(counted >= 4.0, "refusals counted: {counted}");
}

/// A `ShardFinished` of `worker_id` saying its shard of `job_id` succeeded.
fn succeeded(worker_id: &str, job_id: &str) -> AgentEvent {
    AgentEvent::ShardFinished {
        worker_id: worker_id.into(),
        job_id: job_id.parse().unwrap(),
        attempt: 1,
        shard_index: 0,
        outcome: ShardOutcome::Succeeded,
        exit_code: Some(0),
        stdout_tail: format!("done by {worker_id}"),
        stderr_tail: String::new(),
        error: None,
    }
}

#[tokio::test]
async fn one_message_of_several_reports_applies_each_one_its_sender_may_send() {
    let s = Setup::start().await;
    let (a, conn_a) = s.agent("agent-a").await;
    assert!(a.event_batches, "this controller takes batches: {a:?}");
    s.agent("agent-b").await;
    let (a1, a2) = (s.running_job("agent-a").await, s.running_job("agent-a").await);
    let b1 = s.running_job("agent-b").await;
    let refused_before = s.refused("not_from_its_agent").await;
    let t = s.topology();
    let user_a = t.agent_user("agent-a");
    let ch = confirm_channel(&conn_a).await;
    let batch = [
        succeeded("agent-a", &a1),
        succeeded("agent-b", &b1),
        succeeded("agent-a", &a2),
    ];
    let body = orchestrator_shared::messages::encode_events(&batch).unwrap();
    assert!(publish_to_events(&ch, Some(&user_a), &t, &body).await);
    // Neither an empty array nor one past the limit is applied, and
    // neither holds up what follows.
    for bad in [
        b"[]".to_vec(),
        serde_json::to_vec(&vec![succeeded("agent-a", &a1); 257]).unwrap(),
    ] {
        assert!(publish_to_events(&ch, Some(&user_a), &t, &bad).await);
    }
    s.barrier(&conn_a, "agent-a", a.worker.generation).await;

    for job_id in [&a1, &a2] {
        let job = s.job(job_id).await;
        assert_eq!(job["status"], "completed", "{job}");
    }
    let job = s.job(&b1).await;
    assert_eq!(job["status"], "running", "A's message finished B's job: {job}");
    let counted = s.refused("not_from_its_agent").await - refused_before;
    assert!(counted >= 1.0, "refusals counted: {counted}");
}

/// A job depending on `job_id`, submitted by the admin.
async fn dependent_of(s: &Setup, job_id: &str) -> String {
    let job = json!({"task_description": "after", "command": ["/bin/true"], "depends_on": [job_id]});
    s.submitted(&job).await
}

/// A dependent is published as soon as the report completing its last
/// dependency is committed, whether that report came alone (a batch of
/// plain successes, sent at once) or in a message with other events (one
/// transaction for all): with the relay's safety-net poll at ten minutes,
/// and no liveness probe to wake it (the agent here never heartbeats, and
/// its silence would only be judged after ten minutes), only the
/// consumer's wake after its commit can publish it in time.
#[tokio::test]
async fn a_report_completing_a_dependency_has_the_dependent_published_at_once() {
    let s = Setup::start_with(&["--relay-poll-ms", "600000", "--heartbeat-timeout-ms", "600000"]).await;
    let (a, conn) = s.agent("agent-a").await;
    let t = s.topology();
    let (user, ch) = (t.agent_user("agent-a"), confirm_channel(&conn).await);
    for mixed in [false, true] {
        let first = s.running_job("agent-a").await;
        let after = dependent_of(&s, &first).await;
        assert_eq!(s.job(&after).await["status"], "pending");
        let mut events = vec![succeeded("agent-a", &first)];
        if mixed {
            events.push(AgentEvent::Heartbeat {
                worker_id: "agent-a".into(),
                running: Vec::new(),
                paused: false,
                generation: a.worker.generation,
            });
        }
        let body = orchestrator_shared::messages::encode_events(&events).unwrap();
        assert!(publish_to_events(&ch, Some(&user), &t, &body).await);
        let started = Instant::now();
        loop {
            let job = s.job(&after).await;
            if job["status"] == "queued" {
                break;
            }
            assert!(
                started.elapsed() < WAIT,
                "dependent never published (mixed batch: {mixed}): {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(s.job(&first).await["status"], "completed");
    }
}

/// A retry's dispatch waits in the outbox for its backoff and goes out when
/// it falls due: the relay, woken by the failure's commit while the
/// dispatch is not yet due, sleeps only until it is. With the relay's
/// safety-net poll at ten minutes (and no liveness probe to wake it), it
/// would otherwise wait for that poll.
#[tokio::test]
async fn a_retry_is_dispatched_when_its_backoff_ends_not_at_the_next_poll() {
    let flags = [
        "--relay-poll-ms",
        "600000",
        "--heartbeat-timeout-ms",
        "600000",
        "--retry-base-ms",
        "300",
    ];
    let s = Setup::start_with(&flags).await;
    let (_, conn) = s.agent("agent-a").await;
    let job = json!({"task_description": "t", "command": ["/bin/false"], "max_retries": 1});
    let job_id = s.running("agent-a", &job).await;
    let failed = AgentEvent::ShardFinished {
        worker_id: "agent-a".into(),
        job_id: job_id.parse().unwrap(),
        attempt: 1,
        shard_index: 0,
        outcome: ShardOutcome::Failed,
        exit_code: Some(1),
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        error: None,
    };
    let t = s.topology();
    let ch = confirm_channel(&conn).await;
    assert!(publish_event(&ch, Some(&t.agent_user("agent-a")), &t, &failed).await);
    let unsent = || async {
        let c = s.app.db.client().await.unwrap();
        let id: uuid::Uuid = job_id.parse().unwrap();
        let sql = "SELECT count(*) FROM outbox WHERE job_id = $1 AND sent_at IS NULL";
        c.query_one(sql, &[&id]).await.unwrap().get::<_, i64>(0)
    };
    let started = Instant::now();
    loop {
        let job = s.job(&job_id).await;
        if job["status"] == "queued" && job["attempts"] == 1 && unsent().await == 0 {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the retry's dispatch was never sent: {job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn of_a_report_with_tails_past_the_bound_only_their_last_mebibyte_is_kept() {
    use orchestrator_shared::messages::MAX_TAIL_BYTES;
    let s = Setup::start().await;
    let (a, conn) = s.agent("agent-a").await;
    let job_id = s.running_job("agent-a").await;
    let t = s.topology();
    let mut report = succeeded("agent-a", &job_id);
    if let AgentEvent::ShardFinished {
        stdout_tail,
        stderr_tail,
        ..
    } = &mut report
    {
        *stdout_tail = format!("{}the end", "o".repeat(2 * MAX_TAIL_BYTES));
        *stderr_tail = format!("{}last words", "e".repeat(3 * MAX_TAIL_BYTES));
    }
    let ch = confirm_channel(&conn).await;
    assert!(publish_event(&ch, Some(&t.agent_user("agent-a")), &t, &report).await);
    s.barrier(&conn, "agent-a", a.worker.generation).await;

    assert_eq!(s.job(&job_id).await["status"], "completed");
    let output = s.app.job_output(&s.app.admin_token, &job_id).await;
    assert_eq!(output.status, 200, "{}", output.text);
    assert_eq!(
        output.json["stdout_bytes"], MAX_TAIL_BYTES,
        "{}",
        output.json["stdout_bytes"]
    );
    assert_eq!(output.json["stderr_bytes"], MAX_TAIL_BYTES);
    assert!(output.json["stdout"].as_str().unwrap().ends_with("othe end"));
    assert!(output.json["stderr"].as_str().unwrap().ends_with("elast words"));
}

#[tokio::test]
async fn a_controller_told_not_to_take_batches_says_so_at_registration() {
    let prefix = unique_prefix();
    let accounts = broker_accounts_flag();
    let flags = [
        "--broker-prefix",
        &prefix,
        &accounts[0],
        &accounts[1],
        "--agent-event-batches",
        "false",
    ];
    let s = Setup {
        app: spawn_app_with(&flags).await,
        prefix,
        credentials: Default::default(),
    };
    let registration = s.register("agent-a").await;
    assert!(!registration.event_batches);
}

#[tokio::test]
async fn a_liveness_probe_from_an_agent_is_dropped() {
    let s = Setup::start().await;
    let (a, conn_a) = s.agent("agent-a").await;
    s.agent("agent-b").await;
    let job_id = s.running_job("agent-b").await;
    let refused_before = s.refused("probe_not_from_controller").await;
    let t = s.topology();
    let probe = AgentEvent::LivenessProbe {
        worker_id: "agent-b".into(),
        since: chrono::Utc::now() + chrono::Duration::hours(1),
    };
    let ch = confirm_channel(&conn_a).await;
    assert!(publish_event(&ch, Some(&t.agent_user("agent-a")), &t, &probe).await);
    s.barrier(&conn_a, "agent-a", a.worker.generation).await;
    assert_eq!(
        s.worker("agent-b").await["status"],
        "busy",
        "the probe took B offline"
    );
    assert_eq!(
        s.job(&job_id).await["status"],
        "running",
        "the probe failed B's job"
    );
    let counted = s.refused("probe_not_from_controller").await - refused_before;
    assert!(counted >= 1.0, "refusals counted: {counted}");
}

#[tokio::test]
async fn the_broker_refuses_a_message_whose_user_id_is_another_agents() {
    let s = Setup::start().await;
    let (a, conn_a) = s.agent("agent-a").await;
    let (b, _conn_b) = s.agent("agent-b").await;
    let t = s.topology();
    let stopped = AgentEvent::Stopped {
        worker_id: "agent-b".into(),
        generation: b.worker.generation,
    };
    let ch = confirm_channel(&conn_a).await;
    assert!(
        !publish_event(&ch, Some(&t.agent_user("agent-b")), &t, &stopped).await,
        "RabbitMQ took a message with another user's user_id"
    );
    assert!(!ch.status().connected(), "the broker closes the channel");
    s.barrier(&conn_a, "agent-a", a.worker.generation).await;
    assert_eq!(s.worker("agent-b").await["status"], "idle");
}

#[tokio::test]
async fn an_agents_broker_user_may_only_consume_its_queues_and_publish_events() {
    let s = Setup::start().await;
    let (a, conn_a) = s.agent("agent-a").await;
    s.agent("agent-b").await;
    let t = s.topology();
    let user_a = t.agent_user("agent-a");
    let dispatch = json!({"job_id": uuid::Uuid::new_v4(), "attempt": 1, "shard_index": 0, "shard_count": 1,
        "task_description": "x", "command": ["/bin/sh", "-c", "echo pwned"], "timeout_seconds": null, "priority": 9});
    let body = serde_json::to_vec(&dispatch).unwrap();
    let work = t.exchange(WORK_EXCHANGE);
    let control = t.exchange(CONTROL_EXCHANGE);
    let terminate = br#"{"command":"terminate"}"#;
    let cases: [(&str, &str, &[u8]); 3] = [
        (&work, "job", &body),
        (&control, "agent-b", terminate),
        ("", &t.jobs_queue(), &body),
    ];
    for (exchange, key, body) in cases {
        let ch = confirm_channel(&conn_a).await;
        assert!(
            !publish(&ch, Some(&user_a), exchange, key, body).await,
            "published to {exchange:?} with {key}"
        );
    }
    assert_eq!(
        depth(&t.jobs_queue()).await,
        0,
        "a dispatch reached the jobs queue"
    );
    assert_eq!(depth(&t.control_queue("agent-b")).await, 0, "a command reached B");
    assert_refused_operations(&conn_a, &t).await;
    // What an agent needs still works.
    let ch = conn_a.create_channel().await.unwrap();
    for queue in [t.control_queue("agent-a"), t.jobs_queue()] {
        let tag = ShortString::from(format!("probe-{}", uuid::Uuid::new_v4().simple()));
        let consume = ch
            .basic_consume(
                ShortString::from(queue.clone()),
                tag,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await;
        assert!(consume.is_ok(), "consuming {queue}: {consume:?}");
    }
    s.barrier(&conn_a, "agent-a", a.worker.generation).await;
}

/// Asserts that `r` is the broker's refusal (403, `ACCESS_REFUSED`).
fn refused<T: std::fmt::Debug>(r: Result<T, lapin::Error>, what: &str) {
    assert_eq!(r.as_ref().err().and_then(code), Some(403), "{what}: {r:?}");
}

/// Declaring, binding, deleting and consuming another agent's queue: each
/// refused (403) on a channel of its own (a refusal closes the channel).
async fn assert_refused_operations(conn: &Connection, t: &Topology) {
    let name = |s: String| ShortString::from(s);
    let (none, options) = (FieldTable::default(), QueueDeclareOptions::default());
    let ch = conn.create_channel().await.unwrap();
    refused(
        ch.queue_declare("mine".into(), options, none.clone()).await,
        "declared a queue",
    );
    let ch = conn.create_channel().await.unwrap();
    let exchange = name(format!("{}.mine", t.exchange(WORK_EXCHANGE)));
    let fanout = lapin::ExchangeKind::Fanout;
    let declared = ch
        .exchange_declare(exchange, fanout, ExchangeDeclareOptions::default(), none.clone())
        .await;
    refused(declared, "declared an exchange");
    let ch = conn.create_channel().await.unwrap();
    let (own, control) = (
        name(t.control_queue("agent-a")),
        name(t.exchange(CONTROL_EXCHANGE)),
    );
    let bound = ch
        .queue_bind(
            own,
            control,
            "agent-b".into(),
            QueueBindOptions::default(),
            none.clone(),
        )
        .await;
    refused(bound, "bound its queue under B's key");
    let ch = conn.create_channel().await.unwrap();
    let deleted = ch
        .queue_delete(name(t.jobs_queue()), QueueDeleteOptions::default())
        .await;
    refused(deleted, "deleted the jobs queue");
    let ch = conn.create_channel().await.unwrap();
    let spied = ch
        .basic_consume(
            name(t.control_queue("agent-b")),
            "spy".into(),
            BasicConsumeOptions::default(),
            none,
        )
        .await;
    refused(spied, "consumed B's control queue");
}

#[tokio::test]
async fn each_registration_gives_a_fresh_password_and_ends_the_previous_ones_access() {
    let s = Setup::start().await;
    let (first, first_conn) = s.agent("agent-a").await;
    let first_login = first.broker.unwrap();
    assert_eq!(first_login.username, s.topology().agent_user("agent-a"));
    let second = s.register("agent-a").await.broker.unwrap();
    assert_eq!(second.username, first_login.username);
    assert_ne!(second.password, first_login.password);
    wait_closed(&first_conn).await;
    let refused = connect_as(&first_login).await.err();
    assert_eq!(refused.as_ref().and_then(code), Some(403), "{refused:?}");
    assert!(connect_as(&second).await.is_ok());
}

#[tokio::test]
async fn revoking_an_agent_closes_its_connection_and_refuses_its_password() {
    let s = Setup::start().await;
    let (registration, conn) = s.agent("agent-a").await;
    let login = registration.broker.unwrap();
    let accounts = accounts_of(&s);
    let revoked = Instant::now();
    accounts.revoke("agent-a").await.unwrap();
    wait_closed(&conn).await;
    assert!(
        revoked.elapsed() < Duration::from_secs(5),
        "{:?}",
        revoked.elapsed()
    );
    let refused = connect_as(&login).await.err();
    assert_eq!(refused.as_ref().and_then(code), Some(403), "{refused:?}");
    // Revoking what is gone already is not an error.
    accounts.revoke("agent-a").await.unwrap();
    accounts.revoke("never-registered").await.unwrap();
}

/// A registration that races the revocation of its credential never leaves
/// the agent with broker access: either it is refused, or the login it was
/// given stops working. (Found by the e2e test of revocation: the agent,
/// its connection closed by the revocation, registered again before the
/// credential was marked revoked, got a new broker user and kept
/// heartbeating.) The registration starts a little later in each round, so
/// that the rounds cover the whole revocation.
#[tokio::test]
async fn a_registration_racing_a_revocation_never_keeps_broker_access() {
    let s = Setup::start().await;
    let body = json!({"worker_id": "agent-r", "hostname": "test-host", "capacity": 1});
    // Once the controller's broker link is up (until then, a 503).
    s.register("agent-r").await;
    for round in 0..12u64 {
        let issued = s.app.issue_agent_credential(&s.app.admin_token, "agent-r").await;
        assert_eq!(issued.status, 201, "{}", issued.text);
        let token = issued.json["token"].as_str().unwrap().to_owned();
        let credential_id = issued.json["credential_id"].as_str().unwrap().to_owned();
        let first = s.app.register_agent(&token, &body).await;
        assert_eq!(first.status, 200, "round {round}: {}", first.text);
        let revoke = s.app.revoke_agent_credential(&s.app.admin_token, &credential_id);
        let register = async {
            tokio::time::sleep(Duration::from_millis(round * 4)).await;
            s.app.register_agent(&token, &body).await
        };
        let (revoked, again) = tokio::join!(revoke, register);
        assert_eq!(revoked.status, 200, "round {round}: {}", revoked.text);
        if again.status == 200 {
            let registration: Registration = serde_json::from_value(again.json).unwrap();
            let login = registration.broker.expect("a broker login in the answer");
            let kept = connect_as(&login).await;
            assert!(
                kept.is_err(),
                "round {round}: a registration during the revocation kept broker access"
            );
        } else {
            assert_eq!(again.status, 401, "round {round}: {}", again.text);
        }
    }
}

/// The broker accounts of `s`'s controller, as the controller builds them.
fn accounts_of(s: &Setup) -> BrokerAccounts {
    let accounts = broker_accounts_flag();
    let config = test_config(
        &s.app.test_db.url,
        &["--broker-prefix", &s.prefix, &accounts[0], &accounts[1]],
    );
    BrokerAccounts::new(&config.broker_accounts, &config.amqp_url, s.topology(), None)
        .unwrap()
        .unwrap()
}

/// Waits until the broker has closed `conn`.
async fn wait_closed(conn: &Connection) {
    let started = Instant::now();
    while conn.status().connected() {
        assert!(started.elapsed() < WAIT, "the connection stayed open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_registration_the_broker_cannot_set_up_is_a_503_and_changes_nothing() {
    let app = spawn_app_with(&["--broker-management-url", "http://127.0.0.1:1"]).await;
    let body = json!({"worker_id": "agent-a", "hostname": "h", "capacity": 1});
    let r = app
        .register_agent(&app.agent_credential("agent-a").await, &body)
        .await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(
        r.json["detail"].as_str().unwrap().contains("broker"),
        "{}",
        r.text
    );
    let worker = app.get("/api/supervisor/workers/agent-a", &app.admin_token).await;
    assert_eq!(worker.status(), 404, "the worker was registered anyway");
}

#[tokio::test]
async fn the_controller_refuses_to_start_without_broker_accounts_unless_told_to_share_a_login() {
    let db = integration_tests::fresh_database().await;
    let amqp = infra().amqp_url();
    let args = [
        "controller",
        "--database-url",
        &db.url,
        "--amqp-url",
        &amqp,
        "--jwt-secret",
        integration_tests::TEST_JWT_SECRET,
        "--listen",
        "127.0.0.1:0",
        "--insecure-http",
    ];
    let config = controller::config::Config::try_parse_from(args).unwrap();
    let refused = controller::app::App::build(config).await.err().unwrap();
    assert!(
        format!("{refused:#}").contains("ORCH_BROKER_MANAGEMENT_URL"),
        "{refused:#}"
    );
    let shared = args.iter().copied().chain(["--insecure-shared-broker"]);
    let config = controller::config::Config::try_parse_from(shared).unwrap();
    assert!(controller::app::App::build(config).await.is_ok());
}

/// The relay sends a whole batch before waiting for any of it to be
/// written out, and an agent still gets its control messages in the order
/// they were written: a pause and the resume after it never swap.
#[tokio::test]
async fn the_relay_publishes_a_batch_of_an_agents_control_messages_in_the_order_written() {
    const N: i64 = 300;
    let s = Setup::start().await;
    let (_registration, conn) = s.agent("w-order").await;
    let ch = conn.create_channel().await.unwrap();
    let mut deliveries = ch
        .basic_consume(
            ShortString::from(s.topology().control_queue("w-order")),
            ShortString::from("order-test"),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let db = integration_tests::pg_client(&s.app.test_db.url).await.unwrap();
    db.execute(
        "INSERT INTO outbox (exchange, routing_key, payload, priority)
         SELECT 'control', 'w-order', jsonb_build_object('n', g), 9 FROM generate_series(1, $1::bigint) g",
        &[&N],
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < usize::try_from(N).unwrap() {
        let next = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut deliveries)).await;
        let delivery = next.expect("the relay published them all").unwrap().unwrap();
        let body: Value = serde_json::from_slice(&delivery.data).unwrap();
        seen.push(body["n"].as_i64().unwrap());
    }
    assert_eq!(seen, (1..=N).collect::<Vec<_>>());
}
