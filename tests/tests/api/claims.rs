//! `POST /api/agents/claims`: an agent's claims answered in one request.
//! Each answer must be what `POST /api/agents/claim` says for that shard
//! alone (the batch only changes the cost), in the request's order, and
//! the batch is checked like a single claim: the credential's own worker,
//! registered, with 1 to 256 claims.

use super::helpers::{body_validation_items, job_id, submit_ok, wait_queued};
use integration_tests::TestApp;
use serde_json::{json, Value};
use uuid::Uuid;

/// Issues a credential for `worker_id`, registers it, and answers the token.
async fn registered(app: &TestApp, worker_id: &str) -> String {
    let token = app.agent_credential(worker_id).await;
    let body = json!({"worker_id": worker_id, "hostname": "h", "capacity": 8});
    let r = app.register_agent(&token, &body).await;
    assert_eq!(r.status, 200, "registering {worker_id}: {}", r.text);
    token
}

/// A claim of shard `shard` of attempt 1 of `job`.
fn shard(job: Uuid, shard: i32, redelivered: bool) -> Value {
    json!({"job_id": job, "attempt": 1, "shard_index": shard, "redelivered": redelivered})
}

/// The (decision, reason) pairs of a batch's answers.
fn decisions(r: &integration_tests::Reply) -> Vec<(String, String)> {
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["answers"]
        .as_array()
        .unwrap_or_else(|| panic!("no answers: {}", r.text))
        .iter()
        .map(|a| {
            (
                a["decision"].as_str().unwrap_or_default().to_owned(),
                a["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The (from, to, worker, reason) of a job's events.
async fn events(app: &TestApp, job: Uuid) -> Vec<(String, String, Value, Value)> {
    let r = app.job_events(&app.admin_token, job).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.text))
        .iter()
        .map(|e| {
            let status = |k: &str| e[k].as_str().unwrap_or("").to_owned();
            (
                status("from"),
                status("to"),
                e["worker_id"].clone(),
                e["reason"].clone(),
            )
        })
        .collect()
}

/// Submits `body` as the admin and waits until the job is queued.
async fn submit_queued(app: &TestApp, body: Value) -> Uuid {
    let r = app.submit_job(&app.admin_token, &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let job = job_id(&r.json);
    wait_queued(app, job).await;
    job
}

/// Checks that `answer` hands out job `i`'s own work (see the first test)
/// and that `job` runs its first attempt, started by `w-batch`.
async fn assert_started(app: &TestApp, answer: &Value, i: usize, job: Uuid) {
    let work = &answer["work"];
    assert_eq!(
        work["task_description"],
        format!("task {i}"),
        "in order: {answer}"
    );
    assert_eq!(work["command"], json!(["/bin/echo", format!("{i}")]));
    assert_eq!(work["limits"]["memory_mb"], 64 + i);
    let j = app.get_job(&app.admin_token, job).await;
    let status = (j.json["status"].clone(), j.json["attempts"].clone());
    assert_eq!(status, (json!("running"), json!(1)), "{}", j.text);
    let last = events(app, job).await.pop();
    let expected = (
        "queued".into(),
        "running".into(),
        json!("w-batch"),
        json!("started attempt 1"),
    );
    assert_eq!(last, Some(expected));
}

#[tokio::test]
async fn queued_jobs_claimed_together_each_start_with_their_own_work() {
    let app = integration_tests::spawn_app().await;
    let token = registered(&app, "w-batch").await;
    let mut jobs = Vec::new();
    for i in 0..5 {
        let cmd = json!(["/bin/echo", format!("{i}")]);
        let body = json!({"task_description": format!("task {i}"), "command": cmd, "memory_mb": 64 + i});
        jobs.push(submit_queued(&app, body).await);
    }
    let claims: Vec<Value> = jobs.iter().rev().map(|j| shard(*j, 0, false)).collect();
    let batch = json!({"worker_id": "w-batch", "claims": claims});
    let r = app.claim_shards(&token, &batch).await;
    assert_eq!(decisions(&r), vec![("run".to_owned(), "started".to_owned()); 5]);
    let answers = r.json["answers"].as_array().cloned().unwrap_or_default();
    for (answer, (i, job)) in answers.iter().zip(jobs.iter().enumerate().rev()) {
        assert_started(&app, answer, i, *job).await;
    }
    let w = app.get_worker(&app.admin_token, "w-batch").await;
    assert_eq!(
        w.json["status"], "busy",
        "a run marks the worker busy: {}",
        w.text
    );
    // Claimed again (a redelivery to the same agent): each resumes, and
    // nothing starts twice.
    let claims: Vec<Value> = jobs.iter().map(|j| shard(*j, 0, true)).collect();
    let batch = json!({"worker_id": "w-batch", "claims": claims});
    let r = app.claim_shards(&token, &batch).await;
    let resumed = ("run".to_owned(), "resumed after redelivery".to_owned());
    assert_eq!(decisions(&r), vec![resumed; 5]);
    let events = events(&app, jobs[0]).await;
    let started = events.iter().filter(|e| e.1 == "running").count();
    assert_eq!(started, 1, "the job started once: {events:?}");
    app.stop().await;
}

/// Four queued jobs: one held by `w-a` (through a batch of its own), one
/// cancelled, one of two shards, one fresh.
async fn four_jobs(app: &TestApp, a: &str) -> [Uuid; 4] {
    let held = submit_queued(app, json!({"task_description": "held by A"})).await;
    let cancelled = submit_queued(app, json!({"task_description": "cancelled"})).await;
    let wide = submit_queued(app, json!({"task_description": "two", "required_workers": 2})).await;
    let fresh = submit_queued(app, json!({"task_description": "fresh"})).await;
    let batch = json!({"worker_id": "w-a", "claims": [shard(held, 0, false)]});
    let r = app.claim_shards(a, &batch).await;
    assert_eq!(decisions(&r), [("run".to_owned(), "started".to_owned())]);
    assert_eq!(app.cancel_job(&app.admin_token, cancelled).await.status, 200);
    [held, cancelled, wide, fresh]
}

#[tokio::test]
async fn each_answer_in_a_batch_is_the_single_claims_answer() {
    let app = integration_tests::spawn_app().await;
    let a = registered(&app, "w-a").await;
    let b = registered(&app, "w-b").await;
    let [held, cancelled, wide, fresh] = four_jobs(&app, &a).await;
    let claims = [
        shard(Uuid::new_v4(), 0, false),
        shard(held, 0, false),
        shard(cancelled, 0, false),
        shard(wide, 0, false),
        shard(wide, 1, false),
        shard(fresh, 3, false),
        shard(fresh, 0, false),
    ];
    let r = app
        .claim_shards(&b, &json!({"worker_id": "w-b", "claims": claims}))
        .await;
    let got = decisions(&r);
    let kinds: Vec<&str> = got.iter().map(|(d, _)| d.as_str()).collect();
    let expected = ["skip", "requeue", "skip", "run", "skip", "skip", "run"];
    assert_eq!(kinds, expected, "{}", r.text);
    assert_eq!(got[0].1, "unknown job");
    assert_eq!(got[1].1, "shard held by another worker");
    assert_eq!(got[2].1, "job is cancelled at attempt 0");
    assert!(
        got[4].1.starts_with("deferred"),
        "one worker, one shard: {:?}",
        got[4]
    );
    assert_eq!(got[5].1, "no such shard");
    let answers = r.json["answers"].as_array().cloned().unwrap_or_default();
    for (answer, (decision, _)) in answers.iter().zip(&got) {
        assert_eq!(
            answer.get("work").is_some(),
            decision == "run",
            "work only with run: {answer}"
        );
    }
    let j = app.get_job(&app.admin_token, wide).await;
    let waiting = j.json["waiting_for"].as_str().unwrap_or_default();
    assert!(waiting.contains("2 shards"), "{}", j.text);
    app.stop().await;
}

#[tokio::test]
async fn a_batch_is_checked_like_one_claim_and_a_refusal_changes_nothing() {
    let app = integration_tests::spawn_app().await;
    let a = registered(&app, "w-a").await;
    let _b = registered(&app, "w-b").await;
    let job = submit_ok(&app, &app.admin_token, "untouched").await;
    wait_queued(&app, job).await;
    let one = vec![shard(job, 0, false)];

    let r = app
        .claim_shards(&a, &json!({"worker_id": "w-b", "claims": one}))
        .await;
    assert_eq!(r.status, 403, "another worker's claims: {}", r.text);
    let user = app
        .claim_shards(&app.admin_token, &json!({"worker_id": "w-a", "claims": one}))
        .await;
    assert_eq!(user.status, 403, "a user's token: {}", user.text);
    let stranger = app.agent_credential("w-new").await;
    let r = app
        .claim_shards(&stranger, &json!({"worker_id": "w-new", "claims": one}))
        .await;
    assert_eq!(r.status, 409, "never registered: {}", r.text);
    assert!(
        r.json["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not registered")),
        "{}",
        r.text
    );

    let too_many: Vec<Value> = (0..257).map(|_| shard(Uuid::new_v4(), 0, false)).collect();
    for (claims, what) in [(json!([]), "no claims"), (json!(too_many), "257 claims")] {
        let r = app
            .claim_shards(&a, &json!({"worker_id": "w-a", "claims": claims}))
            .await;
        assert_eq!(r.status, 422, "{what}: {}", r.text);
        let locs: Vec<&Value> = body_validation_items(&r).iter().map(|i| &i["loc"]).collect();
        assert_eq!(locs, [&json!(["body", "claims"])], "{what}: {}", r.text);
    }
    let r = app
        .claim_shards(&a, &json!({"worker_id": "..", "claims": one}))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = app
        .claim_shards(&a, &json!({"worker_id": "w-a", "claims": [{"job_id": job}]}))
        .await;
    assert_eq!(r.status, 422, "a claim missing its fields: {}", r.text);

    let j = app.get_job(&app.admin_token, job).await;
    assert_eq!(j.json["status"], "queued", "nothing claimed: {}", j.text);
    app.stop().await;
}
