//! Agent credentials: each names one worker id, is issued, listed and
//! revoked by an admin, and is the only way to register, claim as that
//! worker. Each test here is a finding of the security review: before
//! credentials, any agent token could register or claim as any worker.

use super::helpers::{assert_invalid_credentials, assert_shape, metric, submit_ok};
use integration_tests::{spawn_app, Reply, TestApp};
use orchestrator_shared::api::{AgentCredential, CredentialList, IssuedCredential};
use serde_json::{json, Value};
use uuid::Uuid;

/// A registration body for `worker_id` from host `hostname`.
fn registration(worker_id: &str, hostname: &str) -> Value {
    json!({"worker_id": worker_id, "hostname": hostname, "capacity": 2})
}

/// A claim body of `worker_id` for shard 0 of attempt 1 of `job`.
fn claim(worker_id: &str, job: Uuid, redelivered: bool) -> Value {
    json!({"worker_id": worker_id, "job_id": job, "attempt": 1, "shard_index": 0, "redelivered": redelivered})
}

/// Issues a credential for `worker_id`, registers it, and answers the token.
async fn registered_agent(app: &TestApp, worker_id: &str) -> String {
    let token = app.agent_credential(worker_id).await;
    let r = app
        .register_agent(&token, &registration(worker_id, "own-host"))
        .await;
    assert_eq!(r.status, 200, "registering {worker_id}: {}", r.text);
    token
}

/// The shard 0 of attempt 1 of `job`: (worker, status).
async fn shard_holder(app: &TestApp, job: Uuid) -> (String, String) {
    let client = app.db.client().await.unwrap();
    let row = client
        .query_one(
            "SELECT worker_id, status FROM job_shards WHERE job_id = $1 AND shard_index = 0 AND attempt = 1",
            &[&job],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

fn assert_forbidden(r: &Reply, mentions: &str, what: &str) {
    assert_eq!(r.status, 403, "{what}: {}", r.text);
    let detail = r.json["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(mentions), "{what}: {}", r.text);
}

#[tokio::test]
async fn an_agent_cannot_register_or_claim_as_another_worker_and_is_counted() {
    let app = spawn_app().await;
    let a = registered_agent(&app, "w-a").await;
    let b = registered_agent(&app, "w-b").await;
    let before = metric(&app, "agent_requests_refused_total{reason=\"other_worker\"}").await;
    let r = app.register_agent(&b, &registration("w-a", "attacker")).await;
    assert_forbidden(&r, "for worker w-b, not w-a", "B registering as A");
    let w = app.get_worker(&app.admin_token, "w-a").await;
    assert_eq!(w.json["hostname"], "own-host", "A's row unchanged: {}", w.text);
    assert_eq!(w.json["generation"], 1, "A not re-registered: {}", w.text);

    let job = submit_ok(&app, &app.admin_token, "held by A").await;
    let r = app.claim_shard(&a, &claim("w-a", job, false)).await;
    assert_eq!(r.json["decision"], "run", "{}", r.text);
    let r = app.claim_shard(&b, &claim("w-a", job, true)).await;
    assert_forbidden(&r, "for worker w-b, not w-a", "B claiming as A");
    assert_eq!(shard_holder(&app, job).await, ("w-a".into(), "running".into()));
    let after = metric(&app, "agent_requests_refused_total{reason=\"other_worker\"}").await;
    assert_eq!(after - before, 2.0, "both refusals counted");
    app.stop().await;
}

#[tokio::test]
async fn a_redelivered_claim_does_not_take_a_shard_from_a_live_holder() {
    let app = spawn_app().await;
    let a = registered_agent(&app, "w-a").await;
    let b = registered_agent(&app, "w-b").await;
    let job = submit_ok(&app, &app.admin_token, "held by A").await;
    assert_eq!(
        app.claim_shard(&a, &claim("w-a", job, false)).await.json["decision"],
        "run"
    );
    // B says the broker redelivered the shard; A is alive and heartbeating.
    let r = app.claim_shard(&b, &claim("w-b", job, true)).await;
    assert_eq!(r.json["decision"], "skip", "{}", r.text);
    assert!(r.json.get("work").is_none(), "no work for a skip: {}", r.text);
    assert_eq!(shard_holder(&app, job).await, ("w-a".into(), "running".into()));
    let j = app.get_job(&app.admin_token, job).await;
    assert_eq!(j.json["status"], "running", "{}", j.text);
    // Once A is silent past the heartbeat timeout, the shard moves to B.
    let client = app.db.client().await.unwrap();
    client
        .execute(
            "UPDATE workers SET last_heartbeat_at = now() - interval '1 hour' WHERE worker_id = 'w-a'",
            &[],
        )
        .await
        .unwrap();
    let r = app.claim_shard(&b, &claim("w-b", job, true)).await;
    assert_eq!(r.json["decision"], "run", "{}", r.text);
    assert_eq!(shard_holder(&app, job).await, ("w-b".into(), "running".into()));
    app.stop().await;
}

#[tokio::test]
async fn a_claim_for_a_worker_that_never_registered_is_409_not_500() {
    let app = spawn_app().await;
    let token = app.agent_credential("w-new").await;
    let job = submit_ok(&app, &app.admin_token, "unclaimed").await;
    let r = app.claim_shard(&token, &claim("w-new", job, false)).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(
        r.json["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("not registered"),
        "{}",
        r.text
    );
    let j = app.get_job(&app.admin_token, job).await;
    let status = j.json["status"].as_str().unwrap_or_default();
    assert!(
        ["pending", "queued"].contains(&status),
        "nothing changed: {}",
        j.text
    );
    assert_eq!(j.json["assigned_workers"], json!([]), "{}", j.text);
    app.stop().await;
}

#[tokio::test]
async fn a_users_token_cannot_act_as_a_worker_even_an_admins() {
    let app = spawn_app().await;
    let r = app
        .register_agent(&app.admin_token, &registration("w-admin", "h"))
        .await;
    assert_forbidden(&r, "agent credential", "an admin registering");
    let r = app.get_worker(&app.admin_token, "w-admin").await;
    assert_eq!(r.status, 404, "{}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn the_claim_answer_carries_the_work_from_the_jobs_row() {
    let app = spawn_app().await;
    let a = registered_agent(&app, "w-a").await;
    let body = json!({"task_description": "real", "command": ["/bin/echo", "hi"], "timeout_seconds": 30});
    let r = app.submit_job(&app.admin_token, &body).await;
    let job: Uuid = r.json["job_id"].as_str().unwrap().parse().unwrap();
    let r = app.claim_shard(&a, &claim("w-a", job, false)).await;
    assert_eq!(r.json["decision"], "run", "{}", r.text);
    assert_eq!(
        r.json["work"],
        json!({"task_description": "real", "command": ["/bin/echo", "hi"], "shard_count": 1, "timeout_seconds": 30,
               "limits": {"memory_mb": null, "cpu": null, "max_pids": null}})
    );
    app.stop().await;
}

#[tokio::test]
async fn credentials_are_listed_without_secrets_rotated_and_revoked() {
    let app = spawn_app().await;
    let r = app.issue_agent_credential(&app.admin_token, "w-a").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let first: IssuedCredential = assert_shape(&r.json);
    assert!(first.token.starts_with("orca_"), "{}", r.text);
    let r = app.register_agent(&first.token, &registration("w-a", "h")).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // A second credential for the worker revokes the first.
    let second: IssuedCredential =
        assert_shape(&app.issue_agent_credential(&app.admin_token, "w-a").await.json);
    let r = app.register_agent(&first.token, &registration("w-a", "h")).await;
    assert_invalid_credentials(&r, "a replaced credential");
    let list = app.list_agent_credentials(&app.admin_token).await;
    let listed: CredentialList = assert_shape(&list.json);
    assert_eq!(listed.total, 2, "{}", list.text);
    assert!(
        !list.text.contains(&second.token) && !list.text.contains("token"),
        "{}",
        list.text
    );
    let live: Vec<Uuid> = listed
        .credentials
        .iter()
        .filter(|c| c.revoked_at.is_none())
        .map(|c| c.credential_id)
        .collect();
    assert_eq!(live, [second.credential_id]);

    let r = app
        .revoke_agent_credential(&app.admin_token, second.credential_id)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let revoked: AgentCredential = assert_shape(&r.json);
    assert!(revoked.revoked_at.is_some());
    let r = app.register_agent(&second.token, &registration("w-a", "h")).await;
    assert_invalid_credentials(&r, "a revoked credential, on the replica that revoked it");
    let r = app
        .revoke_agent_credential(&app.admin_token, Uuid::new_v4())
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_credential_is_refused_by_another_replica_within_the_bound() {
    let app = spawn_app().await;
    let replica = app.spawn_replica(&[]).await;
    let r = app.issue_agent_credential(&app.admin_token, "w-a").await;
    let issued: IssuedCredential = assert_shape(&r.json);
    let r = replica
        .register_agent(&issued.token, &registration("w-a", "h"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.revoke_agent_credential(&app.admin_token, issued.credential_id)
        .await;
    let started = std::time::Instant::now();
    loop {
        let r = replica
            .register_agent(&issued.token, &registration("w-a", "h"))
            .await;
        if r.status == 401 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_millis(2500),
            "still accepted after the 2 s bound: {}",
            r.text
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    replica.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn forged_and_malformed_agent_credentials_are_401() {
    let app = spawn_app().await;
    let good = app.agent_credential("w-a").await;
    let mut wrong_secret = good.clone();
    let last = if wrong_secret.ends_with('A') { "B" } else { "A" };
    wrong_secret.replace_range(wrong_secret.len() - 1.., last);
    let unknown_id = format!("orca_{}{}", Uuid::new_v4().simple(), &good[37..]);
    for (what, token) in [
        ("wrong secret", wrong_secret.as_str()),
        ("unknown id", unknown_id.as_str()),
        ("truncated", &good[..good.len() - 2]),
        ("prefix only", "orca_"),
    ] {
        let r = app.register_agent(token, &registration("w-a", "h")).await;
        assert_invalid_credentials(&r, what);
    }
    let r = app.get_worker(&app.admin_token, "w-a").await;
    assert_eq!(r.status, 404, "{}", r.text);
    app.stop().await;
}
