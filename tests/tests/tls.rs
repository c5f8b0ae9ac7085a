//! TLS on the controller's links to Postgres and to the broker, against
//! containers of the project's images serving a test CA's certificate:
//! Postgres accepts TLS connections only (`hostssl`), RabbitMQ listens for
//! AMQPS. The controller reaches both with the CA; without it, or with
//! another CA, it is refused and says why.
//!
//! These containers are this binary's own (the shared ones speak plain
//! TCP), started once and removed when the process exits.

use integration_tests::{start_tls_postgres, start_tls_rabbitmq, TestTls, TEST_JWT_SECRET};
use orchestrator_shared::tls::{tls_failure, TlsFailure};
use std::time::{Duration, Instant};
use testcontainers::{ContainerAsync, GenericImage};
use tokio::sync::OnceCell;

/// A CA, and Postgres and RabbitMQ serving certificates it signed.
struct TlsServers {
    tls: TestTls,
    /// Host port of Postgres (TLS only).
    postgres_port: u16,
    /// Host port of the AMQPS listener.
    amqps_port: u16,
    _containers: (ContainerAsync<GenericImage>, ContainerAsync<GenericImage>),
}

static SERVERS: OnceCell<TlsServers> = OnceCell::const_new();

extern "C" fn remove_containers_at_exit() {
    if let Some(servers) = SERVERS.get() {
        let (pg, mq) = &servers._containers;
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", "-v", pg.id(), mq.id()])
            .output();
    }
}

async fn servers() -> &'static TlsServers {
    SERVERS
        .get_or_init(|| async {
            let tls = TestTls::new(&["localhost", "127.0.0.1"]).unwrap_or_else(|e| panic!("{e:#}"));
            let (pg, mq) = tokio::try_join!(start_tls_postgres(&tls), start_tls_rabbitmq(&tls))
                .unwrap_or_else(|e| panic!("{e:#}"));
            // SAFETY: registering a plain extern "C" function with no captured state.
            unsafe { libc::atexit(remove_containers_at_exit) };
            TlsServers {
                postgres_port: pg
                    .get_host_port_ipv4(5432)
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
                amqps_port: mq
                    .get_host_port_ipv4(5671)
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
                _containers: (pg, mq),
                tls,
            }
        })
        .await
}

impl TlsServers {
    fn database_url(&self) -> String {
        format!(
            "postgres://postgres:postgres@localhost:{}/postgres",
            self.postgres_port
        )
    }

    fn amqps_url(&self) -> String {
        format!("amqps://guest:guest@localhost:{}/%2f", self.amqps_port)
    }
}

/// A controller configuration for the TLS servers, with `extra` flags.
fn config(servers: &TlsServers, extra: &[&str]) -> controller::config::Config {
    let (db, amqp) = (servers.database_url(), servers.amqps_url());
    let mut args = vec![
        "controller",
        "--database-url",
        &db,
        "--amqp-url",
        &amqp,
        "--listen",
        "127.0.0.1:0",
        "--jwt-secret",
        TEST_JWT_SECRET,
        "--db-wait-seconds",
        "3",
        "--insecure-http",
        // This file is about the links' encryption, not the broker's accounts.
        "--insecure-shared-broker",
    ];
    args.extend_from_slice(extra);
    controller::config::Config::try_parse_from(args).unwrap_or_else(|e| panic!("config: {e}"))
}

/// Whether `/readyz` says both Postgres and the broker are up within `wait`.
async fn ready_within(base_url: &str, wait: Duration) -> serde_json::Value {
    let deadline = Instant::now() + wait;
    loop {
        let resp = reqwest::get(format!("{base_url}/readyz")).await;
        let body: serde_json::Value = match resp {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        if body["postgres"] == "up" && body["broker"] == "up" || Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_controller_reaches_postgres_and_the_broker_over_tls_with_the_ca() {
    let servers = servers().await;
    let ca = servers.tls.ca_file().display().to_string();
    let config = config(servers, &["--database-ca-file", &ca, "--amqp-ca-file", &ca]);
    let app = controller::app::App::build(config)
        .await
        .unwrap_or_else(|e| panic!("building the app over TLS: {e:#}"));
    let base_url = format!("http://{}", app.local_addr());
    let server = tokio::spawn(app.run_until(std::future::pending()));
    let ready = ready_within(&base_url, Duration::from_secs(60)).await;
    assert_eq!(ready["postgres"], "up", "{ready}");
    assert_eq!(ready["broker"], "up", "{ready}");
    server.abort();
}

#[tokio::test]
async fn a_plain_connection_to_a_postgres_that_requires_tls_is_refused() {
    let servers = servers().await;
    let err = controller::app::App::build(config(servers, &[]))
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_else(|| panic!("the controller reached a TLS-only Postgres without TLS"));
    assert!(err.contains("no encryption"), "{err}");
}

#[tokio::test]
async fn postgres_with_a_certificate_of_another_ca_is_refused() {
    let servers = servers().await;
    let other = TestTls::new(&["localhost"]).unwrap_or_else(|e| panic!("{e:#}"));
    let ca = other.ca_file().display().to_string();
    let err = controller::app::App::build(config(servers, &["--database-ca-file", &ca]))
        .await
        .err()
        .unwrap_or_else(|| panic!("the controller trusted Postgres's certificate of another CA"));
    let failure = err.chain().find_map(tls_failure);
    assert!(matches!(failure, Some(TlsFailure::Untrusted(_))), "{err:#}");
}

#[tokio::test]
async fn the_broker_over_amqps_is_reached_with_the_ca_only() {
    let servers = servers().await;
    let props = lapin::ConnectionProperties::default;
    let url = servers.amqps_url();
    let conn = orchestrator_shared::broker::connect(&url, Some(&servers.tls.ca_pem), props())
        .await
        .unwrap_or_else(|e| panic!("AMQPS with the CA: {e}"));
    let _ = conn.close(200, "done".into()).await;
    let other = TestTls::new(&["localhost"]).unwrap_or_else(|e| panic!("{e:#}"));
    let err = orchestrator_shared::broker::connect(&url, Some(&other.ca_pem), props())
        .await
        .err()
        .unwrap_or_else(|| panic!("AMQPS trusted a certificate of another CA"));
    assert!(
        matches!(tls_failure(&err), Some(TlsFailure::Untrusted(_))),
        "{err:?}"
    );
}
