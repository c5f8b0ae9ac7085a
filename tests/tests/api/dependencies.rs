//! Job dependencies (`depends_on`, batch `key`s, `run_on_failure`, `GET
//! /api/jobs/{job_id}/graph`): a dependent stays pending, with
//! `waiting_for` naming what it waits for, until its dependencies have
//! completed; it is then published; a dependency that did not complete
//! cancels it (and its own dependents) with a reason naming it, unless it
//! runs on failure. Jobs are run by one registered agent through the claim
//! route, and their reports applied by the controller's own report
//! functions as the events consumer applies a batch of one report: a
//! success set-based (`flow::complete_succeeded_at_once`, which releases
//! the dependents in the transaction it sends at once), anything else by
//! `flow::finish`.

use super::helpers::{body_validation_items, job_count, job_id, submit_ok, utc_time};
use controller::db::at_once::AtOnce;
use controller::db::flow::{self, Finished};
use integration_tests::TestApp;
use orchestrator_shared::messages::ShardOutcome;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The worker every test runs its jobs on.
const WORKER: &str = "w-deps";

/// Retries as the controller's defaults would time them (unused: no job
/// here has retries left).
const RETRY: flow::RetryPolicy = flow::RetryPolicy {
    base: Duration::from_millis(100),
    max: Duration::from_secs(1),
};

/// A controller with [`WORKER`] registered; answers the app and the
/// worker's token.
async fn app_with_agent() -> (TestApp, String) {
    let app = integration_tests::spawn_app().await;
    let token = app.agent_credential(WORKER).await;
    let body = json!({"worker_id": WORKER, "hostname": "h", "capacity": 64});
    let r = app.register_agent(&token, &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    (app, token)
}

/// The job as the admin reads it.
async fn job(app: &TestApp, id: Uuid) -> Value {
    let r = app.get_job(&app.admin_token, id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

/// Waits (bounded) until `id` has `status`.
async fn wait_status(app: &TestApp, id: Uuid, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let j = job(app, id).await;
        if j["status"] == status {
            return j;
        }
        assert!(Instant::now() < deadline, "never {status}: {j}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Checks that `id` stays pending a while (the relay would have published
/// it within that time had it a dispatch) and answers it.
async fn stays_pending(app: &TestApp, id: Uuid) -> Value {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let j = job(app, id).await;
    assert_eq!(j["status"], "pending", "{j}");
    j
}

/// Runs `id` on [`WORKER`] once it is queued: [`claim`], then [`report`].
async fn run(app: &TestApp, token: &str, id: Uuid, outcome: ShardOutcome) {
    claim(app, token, id).await;
    report(app, id, outcome).await;
}

/// Claims `id` for [`WORKER`] once it is queued; it runs.
async fn claim(app: &TestApp, token: &str, id: Uuid) {
    wait_status(app, id, "queued").await;
    let claim =
        json!({"worker_id": WORKER, "job_id": id, "attempt": 1, "shard_index": 0, "redelivered": false});
    let r = app.claim_shard(token, &claim).await;
    assert_eq!(r.json["decision"], "run", "{}", r.text);
}

/// Applies [`WORKER`]'s report of `outcome` for job `id`, as the events
/// consumer would a batch of that report alone: a success in a transaction
/// sent at once, anything else (or a success that did not decide it) by
/// the single report's rules.
async fn report(app: &TestApp, id: Uuid, outcome: ShardOutcome) {
    let report = finished(id, outcome);
    let mut conn = AtOnce::new(app.db.client().await.unwrap());
    if flow::all_plain(&[&report])
        && flow::complete_succeeded_at_once(&mut conn, &[&report])
            .await
            .unwrap()
            .applied
            == [true]
    {
        return;
    }
    let tx = conn.transaction().await.unwrap();
    flow::finish(&tx, &report, RETRY).await.unwrap();
    tx.commit().await.unwrap();
}

/// Applies the same report as the consumer applies a batch that also holds
/// other events: set-based inside the batch's one transaction.
async fn report_in_mixed_batch(app: &TestApp, id: Uuid, outcome: ShardOutcome) {
    let report = finished(id, outcome);
    let mut client = app.db.client().await.unwrap();
    let tx = client.transaction().await.unwrap();
    if flow::complete_succeeded(&tx, &[&report]).await.unwrap().applied != [true] {
        flow::finish(&tx, &report, RETRY).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// [`WORKER`]'s report of `outcome` for shard 0 of attempt 1 of `id`.
fn finished(id: Uuid, outcome: ShardOutcome) -> Finished {
    Finished {
        worker_id: WORKER.to_owned(),
        job_id: id,
        attempt: 1,
        shard_index: 0,
        outcome,
        exit_code: Some(i32::from(outcome != ShardOutcome::Succeeded)),
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        error: (outcome != ShardOutcome::Succeeded).then(|| "exit code 1".to_owned()),
    }
}

/// The reasons of `id`'s events that moved it to `to`.
async fn reasons(app: &TestApp, id: Uuid, to: &str) -> Vec<String> {
    let r = app.job_events(&app.admin_token, id).await;
    r.json["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.text))
        .iter()
        .filter(|e| e["to"] == to)
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Submits `jobs` as one batch by the admin; answers the jobs' ids.
async fn batch(app: &TestApp, jobs: &[Value]) -> Vec<Uuid> {
    let r = app.submit_batch(&app.admin_token, jobs).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.text))
        .iter()
        .map(job_id)
        .collect()
}

/// A one-line job named `key` that depends on `deps`.
fn node(key: &str, deps: &[&str]) -> Value {
    json!({"task_description": key, "key": key, "depends_on": deps})
}

#[tokio::test]
async fn a_diamond_runs_in_dependency_order_and_shows_its_graph() {
    let (app, token) = app_with_agent().await;
    let ids = batch(
        &app,
        &[
            node("a", &[]),
            node("b", &["a"]),
            node("c", &["a"]),
            node("d", &["b", "c"]),
        ],
    )
    .await;
    let [a, b, c, d] = ids[..] else { panic!("{ids:?}") };
    let waiting = stays_pending(&app, d).await;
    let why = waiting["waiting_for"].as_str().unwrap_or_default().to_owned();
    assert!(why.starts_with("waiting for 2 of 2 dependencies: "), "{why}");
    assert!(
        why.contains(&b.to_string()) && why.contains(&c.to_string()),
        "{why}"
    );

    assert_diamond_graph(&app, a, d).await;

    run(&app, &token, a, ShardOutcome::Succeeded).await;
    run(&app, &token, b, ShardOutcome::Succeeded).await;
    // A report of `b` delivered again (its first confirm was lost) finds
    // `b` completed already: it must not count as `d`'s second dependency,
    // whether it comes alone or in a batch with other events.
    report(&app, b, ShardOutcome::Succeeded).await;
    report_in_mixed_batch(&app, b, ShardOutcome::Succeeded).await;
    let half = stays_pending(&app, d).await;
    let why = half["waiting_for"].as_str().unwrap_or_default();
    assert_eq!(why, format!("waiting for 1 of 2 dependencies: {c}"));
    run(&app, &token, c, ShardOutcome::Succeeded).await;
    run(&app, &token, d, ShardOutcome::Succeeded).await;

    let jd = assert_ran_in_order(&app, [a, b, c, d]).await;
    assert_eq!(jd["status"], "completed");
    assert_eq!(jd["waiting_for"], Value::Null);
}

/// The graph route seen from the diamond's sink `d` (three jobs upstream,
/// `a` two levels up, four edges) and from its source `a` (three
/// downstream).
async fn assert_diamond_graph(app: &TestApp, a: Uuid, d: Uuid) {
    let graph = app.job_graph(&app.admin_token, d).await;
    assert_eq!(graph.status, 200, "{}", graph.text);
    let up: Vec<(String, i64)> = graph.json["upstream"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["task_description"].as_str().unwrap().to_owned(),
                n["depth"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(up.len(), 3, "{}", graph.text);
    assert!(
        up.contains(&("a".into(), 2)) && up.contains(&("b".into(), 1)),
        "{}",
        graph.text
    );
    assert_eq!(
        graph.json["edges"].as_array().map(Vec::len),
        Some(4),
        "{}",
        graph.text
    );
    assert_eq!(graph.json["truncated"], false);
    let down = app.job_graph(&app.admin_token, a).await;
    assert_eq!(
        down.json["downstream"].as_array().map(Vec::len),
        Some(3),
        "{}",
        down.text
    );
}

/// Checks that in the diamond `[a, b, c, d]` each job started only after
/// its dependencies finished; answers `d`.
async fn assert_ran_in_order(app: &TestApp, [a, b, c, d]: [Uuid; 4]) -> Value {
    let times = |j: &Value| (utc_time(&j["started_at"]), utc_time(&j["finished_at"]));
    let (ja, jb, jc, jd) = (
        job(app, a).await,
        job(app, b).await,
        job(app, c).await,
        job(app, d).await,
    );
    assert!(
        times(&ja).1 <= times(&jb).0 && times(&ja).1 <= times(&jc).0,
        "{ja} {jb} {jc}"
    );
    assert!(
        times(&jb).1 <= times(&jd).0 && times(&jc).1 <= times(&jd).0,
        "{jb} {jc} {jd}"
    );
    jd
}

/// Checks `depends_on` and `run_on_failure` of each `expected` job (id,
/// dependencies, runs on failure) in `seen`: one job, or a list holding
/// them all.
fn assert_dependencies(seen: &Value, expected: &[(Uuid, Value, bool)], what: &str) {
    for (id, deps, on_failure) in expected {
        let j = match seen.as_array() {
            Some(jobs) => jobs
                .iter()
                .find(|j| job_id(j) == *id)
                .unwrap_or_else(|| panic!("{what}: no job {id} in {seen}")),
            None if job_id(seen) == *id => seen,
            None => continue,
        };
        assert_eq!(&j["depends_on"], deps, "{what}: {j}");
        assert_eq!(j["run_on_failure"], json!(on_failure), "{what}: {j}");
    }
}

#[tokio::test]
async fn a_job_shows_its_dependencies_and_run_on_failure_wherever_it_is_read() {
    let app = integration_tests::spawn_app().await;
    let mut c = node("c", &["b", "a"]);
    c["run_on_failure"] = json!(true);
    let r = app
        .submit_batch(&app.admin_token, &[node("a", &[]), node("b", &["a"]), c])
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let ids: Vec<Uuid> = r.json["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(job_id)
        .collect();
    let [a, b, c] = ids[..] else { panic!("{ids:?}") };
    let mut a_and_b = [a, b];
    a_and_b.sort();
    // Its dependencies in id order; `[]` and `false` for a job without
    // any (a new field, nothing else changed).
    let expected = [
        (a, json!([]), false),
        (b, json!([a]), false),
        (c, json!(a_and_b), true),
    ];
    assert_dependencies(&r.json["jobs"], &expected, "the batch's answer");
    for id in [a, b, c] {
        assert_dependencies(&job(&app, id).await, &expected, "GET /api/jobs/{id}");
    }
    let list = app.list_jobs(&app.admin_token, &[]).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_dependencies(&list.json["jobs"], &expected, "GET /api/jobs");
    let search = app
        .send(
            reqwest::Method::GET,
            "/api/jobs/search",
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(search.status, 200, "{}", search.text);
    assert_dependencies(&search.json["jobs"], &expected, "GET /api/jobs/search");
    app.stop().await;
}

#[tokio::test]
async fn a_failed_dependency_cancels_its_dependents_down_the_graph_unless_they_run_on_failure() {
    let (app, token) = app_with_agent().await;
    let mut cleanup = node("cleanup", &["a"]);
    cleanup["run_on_failure"] = json!(true);
    let ids = batch(
        &app,
        &[node("a", &[]), node("b", &["a"]), node("c", &["b"]), cleanup],
    )
    .await;
    let [a, b, c, cleanup] = ids[..] else {
        panic!("{ids:?}")
    };
    run(&app, &token, a, ShardOutcome::Failed).await;

    let jb = wait_status(&app, b, "cancelled").await;
    assert_eq!(
        reasons(&app, b, "cancelled").await,
        [format!("dependency {a} ended failed")]
    );
    assert_eq!(jb["error"], format!("dependency {a} ended failed"));
    wait_status(&app, c, "cancelled").await;
    assert_eq!(
        reasons(&app, c, "cancelled").await,
        [format!("dependency {b} ended cancelled")]
    );
    // The job that runs on failure runs anyway.
    run(&app, &token, cleanup, ShardOutcome::Succeeded).await;
    assert_eq!(job(&app, cleanup).await["status"], "completed");
}

#[tokio::test]
async fn a_job_depending_on_finished_or_cancelled_jobs_is_decided_at_once() {
    let (app, token) = app_with_agent().await;
    let done = submit_ok(&app, &app.admin_token, "done").await;
    run(&app, &token, done, ShardOutcome::Succeeded).await;
    let after = submit(&app, json!({"task_description": "after", "depends_on": [done]})).await;
    wait_status(&app, after, "queued").await;

    // A user's cancel of a waiting job's dependency cancels it.
    let first = submit_ok(&app, &app.admin_token, "first").await;
    let second = submit(&app, json!({"task_description": "second", "depends_on": [first]})).await;
    let r = app.cancel_job(&app.admin_token, first).await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait_status(&app, second, "cancelled").await;
    assert_eq!(
        reasons(&app, second, "cancelled").await,
        [format!("dependency {first} ended cancelled")]
    );

    // Depending on a job that has already ended cancelled: cancelled at
    // once, or run at once with run_on_failure.
    let late = submit(&app, json!({"task_description": "late", "depends_on": [first]})).await;
    assert_eq!(job(&app, late).await["status"], "cancelled");
    let body = json!({"task_description": "anyway", "depends_on": [first], "run_on_failure": true});
    let anyway = submit(&app, body).await;
    wait_status(&app, anyway, "queued").await;
}

/// Submits `body` alone by the admin; answers the job's id.
async fn submit(app: &TestApp, body: Value) -> Uuid {
    let r = app.submit_job(&app.admin_token, &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    job_id(&r.json)
}

/// The `loc` of every problem of a 422, joined with dots.
fn locations(r: &integration_tests::Reply) -> Vec<String> {
    assert_eq!(r.status, 422, "{}", r.text);
    body_validation_items(r)
        .iter()
        .map(|i| {
            let parts: Vec<String> = i["loc"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
                .collect();
            parts.join(".")
        })
        .collect()
}

#[tokio::test]
async fn cycles_and_unknown_or_other_users_jobs_are_refused_and_create_nothing() {
    let app = integration_tests::spawn_app().await;
    let before = job_count(&app).await;
    let cycle = [
        node("x", &[]),
        node("a", &["c"]),
        node("b", &["a"]),
        node("c", &["b"]),
    ];
    let r = app.submit_batch(&app.admin_token, &cycle).await;
    assert_eq!(locations(&r), ["body.jobs.1.depends_on.0"]);
    assert!(r.text.contains("cycle"), "{}", r.text);
    let r = app
        .submit_batch(&app.admin_token, &[node("self", &["self"])])
        .await;
    assert_eq!(locations(&r), ["body.jobs.0.depends_on.0"]);

    let unknown = Uuid::now_v7();
    let r = app
        .submit_batch(
            &app.admin_token,
            &[node("a", &[]), node("b", &["a", &unknown.to_string()])],
        )
        .await;
    assert_eq!(locations(&r), ["body.jobs.1.depends_on.1"]);
    let r = app
        .submit_job(
            &app.admin_token,
            &json!({"task_description": "x", "depends_on": [unknown]}),
        )
        .await;
    assert_eq!(locations(&r), ["body.depends_on.0"]);
    let r = app
        .submit_job(
            &app.admin_token,
            &json!({"task_description": "x", "depends_on": ["build"]}),
        )
        .await;
    assert_eq!(locations(&r), ["body.depends_on.0"]);

    // Another user's job is refused just as an unknown one.
    let bob = app.user_token("bob", &["jobs:read", "jobs:write"]).await;
    let admins = submit_ok(&app, &app.admin_token, "admin's").await;
    let r = app
        .submit_job(&bob, &json!({"task_description": "x", "depends_on": [admins]}))
        .await;
    assert_eq!(locations(&r), ["body.depends_on.0"]);
    assert_eq!(
        job_count(&app).await,
        before.map(|n| n + 1),
        "only the admin's job exists"
    );
}

#[tokio::test]
async fn a_fan_out_of_ten_thousand_jobs_is_one_batch_released_by_its_root() {
    let (app, token) = app_with_agent().await;
    let mut jobs = vec![node("root", &[])];
    jobs.extend(
        (1..10_000).map(|i| json!({"task_description": format!("leaf {i}"), "depends_on": ["root"]})),
    );
    let started = Instant::now();
    let ids = batch(&app, &jobs).await;
    let submitted = started.elapsed();
    assert_eq!(ids.len(), 10_000);
    let leaf = stays_pending(&app, ids[9_999]).await;
    assert_eq!(
        leaf["waiting_for"],
        format!("waiting for 1 of 1 dependencies: {}", ids[0])
    );

    claim(&app, &token, ids[0]).await;
    // The relay deletes an outbox row once the broker confirmed it, so the
    // dispatches written are counted as they are written.
    let client = app.db.client().await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE test_dispatches (job_id uuid);
             CREATE FUNCTION test_count_dispatch() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN INSERT INTO test_dispatches VALUES (NEW.job_id); RETURN NEW; END $$;
             CREATE TRIGGER test_count_dispatch AFTER INSERT ON outbox
               FOR EACH ROW EXECUTE FUNCTION test_count_dispatch();",
        )
        .await
        .unwrap();
    let started = Instant::now();
    report(&app, ids[0], ShardOutcome::Succeeded).await;
    let released = started.elapsed();
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE deps_waiting = 0 AND waiting_for IS NULL),
                    (SELECT count(*) FROM test_dispatches d WHERE d.job_id = ANY($1))
             FROM jobs WHERE job_id = ANY($1)",
            &[&ids[1..].to_vec()],
        )
        .await
        .unwrap();
    let (ready, dispatches): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(
        (ready, dispatches),
        (9_999, 9_999),
        "each leaf dispatched exactly once"
    );
    wait_status(&app, ids[9_999], "queued").await;
    eprintln!(
        "10,000-job fan-out: batch submitted in {submitted:?}; root's report released 9,999 in {released:?}"
    );
}
