//! A test controller in a process of its own, started from the release
//! binary, for measurements that must tell its CPU and memory apart from
//! the process that drives the load.

use super::{test_args, TestApp, ADMIN_PASSWORD, ADMIN_USER};
use crate::cluster::WAIT;
use crate::databases::fresh_database;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

/// Starts the controller binary at `controller_bin` (plain HTTP, a fresh
/// database, the same settings as [`super::spawn_app_with`] plus
/// `extra`), waits until it is ready and logs in as the admin. Its log
/// level comes from `CONTROLLER_LOG` (default `warn`); the process is
/// killed when the [`TestApp`] is dropped.
pub async fn spawn_app_process(controller_bin: &str, extra: &[&str]) -> TestApp {
    let test_db = fresh_database().await;
    let port = free_port();
    let args = test_args(&test_db.url, &format!("127.0.0.1:{port}"), extra);
    let config =
        controller::config::Config::try_parse_from(&args).unwrap_or_else(|e| panic!("test config: {e}"));
    let tokens = controller::auth::TokenIssuer::new(&config.auth).unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new(controller_bin)
        .arg("serve")
        .args(&args[1..])
        .env(
            "RUST_LOG",
            std::env::var("CONTROLLER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {controller_bin}: {e}"));
    let db = controller::db::Database::connect(&test_db.url, 4, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("a pool on the test database: {e}"));
    let mut app = TestApp {
        base_url: format!("http://127.0.0.1:{port}"),
        db,
        test_db,
        tokens,
        admin_token: String::new(),
        http: reqwest::Client::new(),
        stop: None,
        server: None,
        process: Some(child),
    };
    app.wait_ready().await;
    app.admin_token = app.login_token(ADMIN_USER, ADMIN_PASSWORD).await;
    app
}

/// A port nobody listens on now (the OS's pick for port 0), for a
/// controller process told its address on the command line.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("finding a free port: {e}"))
}

impl TestApp {
    /// The controller process's id, when it runs in one of its own.
    pub fn process_id(&self) -> Option<u32> {
        self.process.as_ref().and_then(tokio::process::Child::id)
    }

    /// Waits until the controller process answers `/readyz` with 200;
    /// panics if it exits first or is not ready within [`WAIT`].
    async fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(Ok(Some(status))) = self.process.as_mut().map(tokio::process::Child::try_wait) {
                panic!("the controller process exited before it was ready: {status}");
            }
            let ready = self.http.get(self.url("/readyz")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "the controller process was not ready within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM to the controller process and waits (bounded) for it.
    pub(super) async fn stop_process(&mut self) {
        let Some(mut child) = self.process.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(WAIT, child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
}
