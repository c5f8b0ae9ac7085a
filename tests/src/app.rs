//! A real controller per test, in the manner of zero2prod's `spawn_app`:
//! its own database, plain HTTP on port 0 (`--insecure-http`, set
//! explicitly) or HTTPS with a test CA's certificate
//! ([`spawn_https_app`]), the test configuration, and a
//! [`TestApp`] handle that knows the address, signs tokens as the app does,
//! sends requests (the named ones are in [`requests`]) and stops the server.

mod process;
mod requests;
mod session;

pub use process::spawn_app_process;
pub use requests::Reply;
pub use session::{set_cookie_line, set_cookie_value, Session};

use crate::containers::infra;
use crate::databases::{fresh_database, TestDb};
use crate::fixtures::new_worker;
use crate::tls::TestTls;
use reqwest::Method;

/// HMAC secret of every test controller, so tests can forge tokens signed
/// with it (or with another key) on purpose.
pub const TEST_JWT_SECRET: &str = "test-secret-that-is-long-enough-for-hs256";
/// The admin every test controller creates at start; tests find its row by
/// this name.
pub const ADMIN_USER: &str = "admin";
/// The admin's password, with which [`spawn_app`] logs in.
pub const ADMIN_PASSWORD: &str = "admin-password";
/// Password of the users [`TestApp::user_token`] creates, for tests that
/// log them in again.
pub const USER_PASSWORD: &str = "password-123";

/// The flag (and its value) that has a test controller give each agent a
/// broker user of its own, through the test broker's management API.
/// Without it, test controllers run on the shared `guest` login
/// (`--insecure-shared-broker`), which tests of other areas do not mind.
pub fn broker_accounts_flag() -> [String; 2] {
    ["--broker-management-url".to_owned(), infra().management_url()]
}

/// A controller configuration for `db_url`, listening on a free port, with
/// `extra` flags appended (e.g. `["--body-limit-bytes", "1024"]`). Plain
/// HTTP is asked for explicitly (`--insecure-http`) unless `extra` names a
/// certificate; unless `extra` names a broker management URL (see
/// [`broker_accounts_flag`]), agents share the broker's `guest` login.
pub fn test_config(db_url: &str, extra: &[&str]) -> controller::config::Config {
    controller::config::Config::try_parse_from(test_args(db_url, "127.0.0.1:0", extra))
        .unwrap_or_else(|e| panic!("test config: {e}"))
}

/// The command line of [`test_config`], listening on `listen`: shared by
/// the in-process controllers and [`spawn_app_process`], so both run with
/// the same settings.
fn test_args(db_url: &str, listen: &str, extra: &[&str]) -> Vec<String> {
    let amqp = infra().amqp_url();
    let mut args = vec![
        "controller",
        "--database-url",
        db_url,
        "--amqp-url",
        &amqp,
        "--listen",
        listen,
        "--jwt-secret",
        TEST_JWT_SECRET,
        "--admin-username",
        ADMIN_USER,
        "--admin-password",
        ADMIN_PASSWORD,
        "--db-wait-seconds",
        "3",
    ];
    if !extra.contains(&"--tls-cert-file") {
        args.push("--insecure-http");
    }
    args.extend_from_slice(extra);
    if !extra.contains(&"--broker-management-url") {
        args.push("--insecure-shared-broker");
    }
    args.into_iter().map(str::to_owned).collect()
}

/// A running controller on a port of its own, with its own database.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT`.
    pub base_url: String,
    /// A pool on the app's database, for arranging and checking state.
    pub db: controller::db::Database,
    /// The app's database.
    pub test_db: TestDb,
    /// Signs tokens exactly as the app does (for expired or forged ones).
    pub tokens: controller::auth::TokenIssuer,
    /// A token of the configured admin.
    pub admin_token: String,
    /// HTTP client (trusting the test CA for HTTPS).
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    /// A controller of its own process ([`spawn_app_process`]), killed
    /// when dropped.
    process: Option<tokio::process::Child>,
}

/// Starts a controller (migrations, admin, HTTP on port 0) on a fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Like [`spawn_app`], with extra configuration flags.
pub async fn spawn_app_with(extra: &[&str]) -> TestApp {
    spawn_on(fresh_database().await, extra, None).await
}

/// Like [`spawn_app_with`], serving HTTPS with `tls`'s certificate (which
/// must name `localhost`); the app's client trusts `tls`'s CA.
pub async fn spawn_https_app(tls: &TestTls, extra: &[&str]) -> TestApp {
    spawn_on(fresh_database().await, extra, Some(tls)).await
}

/// A controller on `test_db` (migrated, or migrated by it) with `extra`
/// flags, logged in as the admin; over HTTPS with `tls`'s certificate.
async fn spawn_on(test_db: TestDb, extra: &[&str], tls: Option<&TestTls>) -> TestApp {
    let files = tls.map(|t| {
        (
            t.cert_file().display().to_string(),
            t.key_file().display().to_string(),
        )
    });
    let mut flags = extra.to_vec();
    if let Some((cert, key)) = &files {
        flags.extend(["--tls-cert-file", cert, "--tls-key-file", key]);
    }
    let config = test_config(&test_db.url, &flags);
    let tokens = controller::auth::TokenIssuer::new(&config.auth).unwrap_or_else(|e| panic!("{e}"));
    let app = controller::app::App::build(config)
        .await
        .unwrap_or_else(|e| panic!("building the app: {e:#}"));
    let (base_url, http) = match tls {
        Some(t) => (
            format!("https://localhost:{}", app.local_addr().port()),
            t.client().unwrap_or_else(|e| panic!("{e:#}")),
        ),
        None => (format!("http://{}", app.local_addr()), reqwest::Client::new()),
    };
    let db = app.database().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = app
            .run_until(async move {
                let _ = stopped.await;
            })
            .await;
    });
    let mut test_app = TestApp {
        base_url,
        db,
        test_db,
        tokens,
        admin_token: String::new(),
        http,
        stop: Some(stop),
        server: Some(server),
        process: None,
    };
    test_app.admin_token = test_app.login_token(ADMIN_USER, ADMIN_PASSWORD).await;
    test_app
}

impl TestApp {
    /// A second controller on this app's database, as another replica
    /// (behind a load balancer, or named in its clients' URL lists) would
    /// be, with `extra` flags, over plain HTTP; its `admin_token` is a
    /// login of its own.
    pub async fn spawn_replica(&self, extra: &[&str]) -> TestApp {
        spawn_on(self.test_db.clone(), extra, None).await
    }

    /// Stops this controller and, `down` later, starts another on the same
    /// database with `extra` flags, as a restart of the host would: what it
    /// finds is only what the first one stored.
    pub async fn restart(self, down: std::time::Duration, extra: &[&str]) -> TestApp {
        let test_db = self.test_db.clone();
        self.stop().await;
        tokio::time::sleep(down).await;
        spawn_on(test_db, extra, None).await
    }

    /// Full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// A request to `path` with a bearer token, not yet sent.
    fn authorized(&self, method: Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(token)
    }

    /// GET with a bearer token, answering the raw response.
    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.authorized(Method::GET, path, token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// POST of a JSON body with a bearer token, answering the raw response.
    pub async fn post_json(&self, path: &str, token: &str, body: &serde_json::Value) -> reqwest::Response {
        self.authorized(Method::POST, path, token)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// POST with no body, answering the raw response.
    pub async fn post(&self, path: &str, token: &str) -> reqwest::Response {
        self.authorized(Method::POST, path, token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// Logs in and returns the access token (panics if login fails).
    pub async fn login_token(&self, username: &str, password: &str) -> String {
        let reply = self.login(username, password).await;
        assert_eq!(reply.status, 200, "login of {username}: {}", reply.text);
        reply.json["access_token"].as_str().unwrap_or_default().to_owned()
    }

    /// Creates a user with `scopes` (through the admin API) and returns a
    /// token for them.
    pub async fn user_token(&self, username: &str, scopes: &[&str]) -> String {
        let body = serde_json::json!({"username": username, "password": USER_PASSWORD, "scopes": scopes});
        let created = self.create_user(&self.admin_token, &body).await;
        assert_eq!(created.status, 201, "creating {username}: {}", created.text);
        self.login_token(username, USER_PASSWORD).await
    }

    /// A new credential for the agent of `worker_id`, issued by the admin
    /// through the API: the bearer token that agent presents.
    pub async fn agent_credential(&self, worker_id: &str) -> String {
        let issued = self.issue_agent_credential(&self.admin_token, worker_id).await;
        assert_eq!(
            issued.status, 201,
            "issuing a credential for {worker_id}: {}",
            issued.text
        );
        issued.json["token"].as_str().unwrap_or_default().to_owned()
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
        self.stop_process().await;
    }
}
