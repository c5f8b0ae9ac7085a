//! The broker restarts mid-run (its own test binary, so its own containers:
//! other tests never see the outage). Nothing may be lost: every job ends
//! `completed` exactly once.

use integration_tests::cluster::Cluster;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_worker-agent");

fn rabbitmqctl(action: &str) {
    let id = &integration_tests::infra().rabbitmq_id;
    let out = Command::new("docker")
        .args(["exec", id, "rabbitmqctl", action])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rabbitmqctl {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn broker_restart_mid_run_loses_nothing() {
    let mut c = Cluster::start(AGENT).await;
    c.add_agent("restart-1", 2).await;
    c.add_agent("restart-2", 2).await;
    let mut ids = Vec::new();
    for _ in 0..60 {
        let job = c.submit(&["/bin/sh", "-c", "sleep 0.2"], json!({})).await;
        ids.push(job["job_id"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    rabbitmqctl("stop_app");
    let started = Instant::now();
    loop {
        let resp = c.app.http.get(c.app.url("/readyz")).send().await.unwrap();
        if resp.status() == 503 {
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["broker"], "down");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "readyz never noticed the broker was down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Jobs submitted during the outage wait in the outbox.
    for _ in 0..10 {
        let job = c.submit(&["/bin/true"], json!({})).await;
        ids.push(job["job_id"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbitmqctl("start_app");
    for id in &ids {
        c.wait_status(id, "completed").await;
    }
    assert_eq!(c.duplicated_completions().await, 0);
    assert_eq!(
        c.count("SELECT count(*) FROM jobs WHERE status = 'completed'")
            .await,
        70
    );
    let ready = c.app.http.get(c.app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}
