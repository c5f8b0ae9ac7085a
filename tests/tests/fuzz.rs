//! A property-based fuzz of the HTTP API from its own OpenAPI document:
//! schemathesis (installed by `deploy/fuzz-tools.sh` into a virtual
//! environment) generates requests for every operation, valid and invalid,
//! against a real controller, as an admin, without a token and as a
//! `jobs:write` user, with every check on: no 5xx, every status and content
//! type documented, every body in its documented schema. A fixed seed and a
//! bounded number of examples keep it to a few minutes and repeatable.

use integration_tests::{spawn_app, TestApp};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// Examples generated per operation and pass (bounded: CI time).
const MAX_EXAMPLES: &str = "12";
/// The seed: the same requests on every run, so a failure reproduces.
const SEED: &str = "20261130";
/// Longest one pass may take before the test gives up on it: a guard
/// against a hung pass, not a speed target. The passes run at the same
/// time, so each one's wall time includes the others' load: the slowest
/// (admin) took nearly all of a 298 s run on the 2-core test machine,
/// too close to the 300 s the guard was when they ran one by one.
const PASS_TIMEOUT: Duration = Duration::from_secs(600);

/// Where the schemathesis command is: `ORCH_SCHEMATHESIS`, else the
/// virtual environment `deploy/fuzz-tools.sh` makes.
fn schemathesis() -> PathBuf {
    std::env::var_os("ORCH_SCHEMATHESIS").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../deploy/.cache/fuzz-venv/bin/schemathesis"
            ))
        },
        PathBuf::from,
    )
}

/// Runs one schemathesis pass against `app`, with `token` if any; returns
/// whether it passed and what it printed.
async fn pass(app: &TestApp, name: &str, token: Option<&str>) -> (bool, String) {
    let bin = schemathesis();
    assert!(
        bin.exists(),
        "{} is missing: run deploy/fuzz-tools.sh (deploy/test.sh does)",
        bin.display()
    );
    let url = format!("{}/api/openapi.json", app.base_url);
    let mut cmd = tokio::process::Command::new(&bin);
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/schemathesis.toml");
    cmd.args([
        "--config-file",
        config,
        "run",
        &url,
        "--seed",
        SEED,
        "--max-examples",
        MAX_EXAMPLES,
    ])
    .args(["--generation-database", "none", "--no-color", "--workers", "1"])
    .args(["--suppress-health-check", "all", "--request-timeout", "20"])
    .current_dir(std::env::temp_dir())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    if let Some(token) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let output = tokio::time::timeout(PASS_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("the {name} pass ran past {PASS_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_keeps_its_openapi_document_under_a_property_based_fuzz() {
    let app = spawn_app().await;
    let writer = app.user_token("fuzz-writer", &["jobs:write"]).await;
    let passes = [
        ("admin", Some(app.admin_token.clone())),
        ("anonymous", None),
        ("jobs:write", Some(writer)),
    ];
    // The passes run at once, against the same controller: the same
    // requests as one after another, in about half the time on two cores
    // (schemathesis is one busy Python process per pass).
    let runs = futures::future::join_all(
        passes
            .iter()
            .map(|(name, token)| pass(&app, name, token.as_deref())),
    )
    .await;
    let mut failed = Vec::new();
    for ((name, _), (ok, text)) in passes.iter().zip(runs) {
        println!("==== schemathesis, {name} ====\n{text}");
        if !ok {
            failed.push(*name);
        }
    }
    app.stop().await;
    assert!(
        failed.is_empty(),
        "schemathesis failed as {failed:?} (its output is above)"
    );
}
