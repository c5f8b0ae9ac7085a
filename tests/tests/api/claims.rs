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

/// Registers `n` workers named `{prefix}-{i}` and answers their tokens, in
/// order.
async fn fleet(app: &TestApp, prefix: &str, n: usize) -> Vec<(String, String)> {
    let mut fleet = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let token = registered(app, &id).await;
        fleet.push((id, token));
    }
    fleet
}

/// Sends every `(token, worker, claims)` request at once and answers the
/// replies in order.
async fn claim_at_once(
    app: &TestApp,
    requests: &[(String, String, Vec<Value>)],
) -> Vec<integration_tests::Reply> {
    let bodies: Vec<(String, Value)> = requests
        .iter()
        .map(|(token, worker, claims)| (token.clone(), json!({"worker_id": worker, "claims": claims})))
        .collect();
    futures::future::join_all(bodies.iter().map(|(token, body)| app.claim_shards(token, body))).await
}

/// How many jobs run, and how many distinct start times they have (one
/// per transaction that started them).
async fn running_and_start_times(app: &TestApp) -> (i64, i64) {
    let c = app.db.client().await.unwrap();
    let sql = "SELECT count(*), count(DISTINCT started_at) FROM jobs WHERE status = 'running'";
    let row = c.query_one(sql, &[]).await.unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn claims_of_many_agents_at_once_share_commits_and_each_starts_its_own_jobs() {
    let app = integration_tests::spawn_app().await;
    let fleet = fleet(&app, "w-many", 16).await;
    let mut jobs = Vec::new();
    for i in 0..32 {
        let body = json!({"task_description": format!("task {i}"), "command": ["/bin/echo", format!("{i}")]});
        jobs.push(submit_queued(&app, body).await);
    }
    let requests: Vec<(String, String, Vec<Value>)> = fleet
        .iter()
        .enumerate()
        .map(|(w, (id, token))| {
            let mine = vec![shard(jobs[2 * w], 0, false), shard(jobs[2 * w + 1], 0, false)];
            (token.clone(), id.clone(), mine)
        })
        .collect();
    let replies = claim_at_once(&app, &requests).await;
    for (w, r) in replies.iter().enumerate() {
        assert_eq!(decisions(r), vec![("run".to_owned(), "started".to_owned()); 2]);
        for (k, answer) in r.json["answers"].as_array().into_iter().flatten().enumerate() {
            let i = 2 * w + k;
            assert_eq!(
                answer["work"]["task_description"],
                format!("task {i}"),
                "{}",
                r.text
            );
            let last = events(&app, jobs[i]).await.pop();
            let started = (
                "queued".into(),
                "running".into(),
                json!(fleet[w].0),
                json!("started attempt 1"),
            );
            assert_eq!(last, Some(started), "job {i} started by its own claimer");
        }
    }
    for (id, _) in &fleet {
        let w = app.get_worker(&app.admin_token, id).await;
        assert_eq!(w.json["status"], "busy", "each claimer is busy: {}", w.text);
    }
    // A job's started_at is its claim's transaction's start: sixteen
    // requests answered one transaction each would show sixteen times.
    let (running, transactions) = running_and_start_times(&app).await;
    assert_eq!(running, 32);
    assert!(
        transactions * 2 <= 16,
        "16 concurrent claim requests took {transactions} transactions"
    );
    app.stop().await;
}

#[tokio::test]
async fn agents_claiming_the_same_shards_at_once_start_each_shard_once_on_distinct_agents() {
    let app = integration_tests::spawn_app().await;
    let fleet = fleet(&app, "w-race", 8).await;
    let wide = submit_queued(&app, json!({"task_description": "two", "required_workers": 2})).await;
    let single = submit_queued(&app, json!({"task_description": "one"})).await;
    // Each agent claims one shard of the two-shard job and the single job.
    let requests: Vec<(String, String, Vec<Value>)> = fleet
        .iter()
        .enumerate()
        .map(|(w, (id, token))| {
            let claims = vec![
                shard(wide, i32::try_from(w % 2).unwrap_or(0), false),
                shard(single, 0, false),
            ];
            (token.clone(), id.clone(), claims)
        })
        .collect();
    let replies = claim_at_once(&app, &requests).await;
    let mut wide_runs = Vec::new();
    let mut single_runs = Vec::new();
    for (w, r) in replies.iter().enumerate() {
        let got = decisions(r);
        assert_eq!(got.len(), 2, "{}", r.text);
        if got[0].0 == "run" {
            wide_runs.push((w % 2, fleet[w].0.clone()));
        }
        if got[1].0 == "run" {
            single_runs.push(fleet[w].0.clone());
        }
    }
    assert_eq!(single_runs.len(), 1, "one job, one start: {single_runs:?}");
    wide_runs.sort();
    assert_eq!(wide_runs.len(), 2, "two shards, two starts: {wide_runs:?}");
    assert_eq!(
        (wide_runs[0].0, wide_runs[1].0),
        (0, 1),
        "one start per shard: {wide_runs:?}"
    );
    assert_ne!(
        wide_runs[0].1, wide_runs[1].1,
        "on distinct agents: {wide_runs:?}"
    );
    let started = events(&app, single)
        .await
        .iter()
        .filter(|e| e.1 == "running")
        .count();
    assert_eq!(started, 1, "the single job started once");
    app.stop().await;
}

#[tokio::test]
async fn an_unregistered_agents_claims_among_others_are_refused_and_change_nothing() {
    let app = integration_tests::spawn_app().await;
    let fleet = fleet(&app, "w-mixed", 6).await;
    let stranger = app.agent_credential("w-stranger").await;
    let mut requests = Vec::new();
    let mut jobs = Vec::new();
    for (id, token) in &fleet {
        let job = submit_queued(&app, json!({"task_description": format!("for {id}")})).await;
        jobs.push(job);
        requests.push((token.clone(), id.clone(), vec![shard(job, 0, false)]));
    }
    let theirs = submit_queued(&app, json!({"task_description": "never"})).await;
    requests.insert(
        3,
        (stranger, "w-stranger".to_owned(), vec![shard(theirs, 0, false)]),
    );
    let replies = claim_at_once(&app, &requests).await;
    for (i, r) in replies.iter().enumerate() {
        if i == 3 {
            assert_eq!(r.status, 409, "never registered: {}", r.text);
        } else {
            assert_eq!(decisions(r), [("run".to_owned(), "started".to_owned())]);
        }
    }
    let j = app.get_job(&app.admin_token, theirs).await;
    assert_eq!(j.json["status"], "queued", "nothing claimed: {}", j.text);
    for job in jobs {
        let j = app.get_job(&app.admin_token, job).await;
        assert_eq!(j.json["status"], "running", "{}", j.text);
    }
    app.stop().await;
}
