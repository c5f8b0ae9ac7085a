//! The real `orchestrator` binary against an HTTPS controller, as a user
//! runs it: with the controller's CA (`--ca-file`, saved by `login`, or the
//! usual `SSL_CERT_FILE`) it logs in and answers; trusting another CA it
//! fails with one line that names the URL and the fix; plain HTTP to the
//! HTTPS port says to use `https://`. Given a list of replicas' URLs whose
//! first refuses connections, it answers through the next (one CA for all).

use integration_tests::{spawn_https_app, TestApp, TestTls, ADMIN_PASSWORD, ADMIN_USER};
use std::path::Path;
use std::process::Output;
use tokio::process::Command;

/// Runs the binary with `args` and `env`, and nothing of the caller's
/// orchestrator or TLS environment; the config file is `config`.
async fn orchestrator(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    for var in [
        "ORCH_URL",
        "ORCH_TOKEN",
        "ORCH_CA_FILE",
        "ORCH_PASSWORD",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ] {
        command.env_remove(var);
    }
    command
        .env("ORCH_CONFIG", config)
        .args(args)
        .envs(env.iter().copied());
    command
        .output()
        .await
        .unwrap_or_else(|e| panic!("running orchestrator: {e}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A test CA, an HTTPS controller with its certificate, and a directory
/// for the config file.
async fn https_app() -> (TestTls, TestApp, tempfile::TempDir) {
    let tls = TestTls::new(&["localhost"]).unwrap_or_else(|e| panic!("{e:#}"));
    let app = spawn_https_app(&tls, &[]).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    (tls, app, dir)
}

#[tokio::test]
async fn the_cli_trusts_the_controllers_ca_and_says_clearly_when_it_does_not() {
    let (tls, app, dir) = https_app().await;
    let config = dir.path().join("config.json");
    let (url, ca) = (app.base_url.as_str(), tls.ca_file().display().to_string());

    let login = ["--url", url, "--ca-file", &ca, "login", "--username", ADMIN_USER];
    let out = orchestrator(&config, &login, &[("ORCH_PASSWORD", ADMIN_PASSWORD)]).await;
    assert!(out.status.success(), "login: {}", stderr(&out));
    // The CA file was saved with the URL and token: whoami needs no flag.
    let out = orchestrator(&config, &["--json", "whoami"], &[]).await;
    assert!(out.status.success(), "whoami: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(ADMIN_USER));
    // SSL_CERT_FILE, the usual way, works too.
    let token = ["--url", url, "--token", &app.admin_token, "whoami"];
    let out = orchestrator(&dir.path().join("none.json"), &token, &[("SSL_CERT_FILE", &ca)]).await;
    assert!(
        out.status.success(),
        "whoami with SSL_CERT_FILE: {}",
        stderr(&out)
    );

    let other = TestTls::new(&["localhost"]).unwrap_or_else(|e| panic!("{e:#}"));
    let other_ca = other.ca_file().display().to_string();
    let out = orchestrator(&config, &["--ca-file", &other_ca, "whoami"], &[]).await;
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "not one line: {text}");
    let expected = format!("error: the certificate of the controller at {url} is not trusted");
    assert!(text.starts_with(&expected), "{text}");
    assert!(text.contains("--ca-file"), "{text}");

    let plain = url.replace("https://", "http://");
    let out = orchestrator(
        &config,
        &["--url", &plain, "--token", &app.admin_token, "whoami"],
        &[],
    )
    .await;
    assert!(
        stderr(&out).contains("this port speaks HTTPS; use https://"),
        "{}",
        stderr(&out)
    );
    app.stop().await;
}

#[tokio::test]
async fn the_cli_given_a_dead_replica_first_answers_through_the_next() {
    let (tls, app, dir) = https_app().await;
    let config = dir.path().join("config.json");
    let ca = tls.ca_file().display().to_string();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let dead_port = dead
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    drop(dead);
    let urls = format!("https://localhost:{dead_port},{}", app.base_url);

    let login = [
        "--url",
        &urls,
        "--ca-file",
        &ca,
        "login",
        "--username",
        ADMIN_USER,
    ];
    let out = orchestrator(&config, &login, &[("ORCH_PASSWORD", ADMIN_PASSWORD)]).await;
    assert!(out.status.success(), "login: {}", stderr(&out));
    let saved = std::fs::read_to_string(&config).unwrap_or_default();
    assert!(saved.contains(&urls), "login did not save the list: {saved}");
    // The saved list, its token and its CA serve the next command.
    let out = orchestrator(&config, &["--json", "list"], &[]).await;
    assert!(out.status.success(), "list: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"jobs\""));
    // Nothing listens anywhere: the error names the last URL tried, as before.
    let none = format!("https://localhost:{dead_port}");
    let args = [
        "--url",
        &none,
        "--token",
        &app.admin_token,
        "--ca-file",
        &ca,
        "list",
    ];
    let out = orchestrator(&config, &args, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(&format!("error: cannot connect to the controller at {none}")),
        "{}",
        stderr(&out)
    );
    app.stop().await;
}
