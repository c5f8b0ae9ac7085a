//! Pools and selectors: a job's `pool` and `selector` checked (422) at
//! submission and in schedules' templates, stored and shown; workers'
//! `pools` and `labels` registered and shown; the classes an agent is
//! told to consume; a claim from a worker that does not match refused; and
//! a queued job no live agent matches says why.

use super::helpers::{
    admin_user, assert_body_invalid, assert_job_shape, assert_worker_shape, body_validation_items,
};
use integration_tests::{spawn_app, TestApp};
use orchestrator_shared::api::WorkClasses;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Issues a credential for `worker_id` and registers it with `extra`
/// fields (pools, labels); answers the token.
async fn agent(app: &TestApp, worker_id: &str, extra: Value) -> String {
    let token = app.agent_credential(worker_id).await;
    let mut body = json!({"worker_id": worker_id, "hostname": "h", "capacity": 2});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let r = app.register_agent(&token, &body).await;
    assert_eq!(r.status, 200, "registering {worker_id}: {}", r.text);
    token
}

/// Submits a job with `extra` fields; answers its id.
async fn submit(app: &TestApp, extra: Value) -> Uuid {
    let mut body = json!({"task_description": "placed"});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let r = app.submit_job(&app.admin_token, &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_job_shape(&r.json).job_id
}

/// Polls `GET /api/jobs/{id}` until `done`, for at most 20 s.
async fn wait_job(app: &TestApp, id: Uuid, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let r = app.get_job(&app.admin_token, id).await;
        if done(&r.json) {
            return r.json;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "job never got there: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_bad_pool_or_selector_is_a_422_that_stores_nothing() {
    let app = spawn_app().await;
    let bad = [
        (json!({"pool": "GPU"}), "pool"),
        (json!({"pool": ""}), "pool"),
        (json!({"pool": "a.b"}), "pool"),
        (json!({"pool": 7}), "pool"),
        (json!({"selector": {"zone": "eu 1"}}), "selector"),
        (json!({"selector": {"": "x"}}), "selector"),
        (json!({"selector": {"k": "a,b"}}), "selector"),
        (json!({"selector": ["zone=a"]}), "selector"),
    ];
    for (extra, field) in &bad {
        let mut body = json!({"task_description": "x"});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let r = app.submit_job(&app.admin_token, &body).await;
        assert_body_invalid(&r, field);
        let r = app
            .submit_batch(
                &app.admin_token,
                &[json!({"task_description": "ok"}), body.clone()],
            )
            .await;
        assert_eq!(r.status, 422, "{extra}: {}", r.text);
        let schedule = json!({"name": "s", "cron": "* * * * *", "timezone": "UTC", "template": body});
        let r = app.create_schedule(&app.admin_token, &schedule).await;
        assert_eq!(r.status, 422, "a schedule's template {extra}: {}", r.text);
        let locs = body_validation_items(&r);
        assert!(
            locs.iter().any(|i| i["loc"].to_string().contains(field)),
            "{}",
            r.text
        );
    }
    let list = app.list_jobs(&app.admin_token, &[]).await;
    assert_eq!(list.json["jobs"], json!([]), "nothing stored");
    app.stop().await;
}

#[tokio::test]
async fn a_job_shows_its_pool_and_selector_and_defaults_to_the_default_pool() {
    let app = spawn_app().await;
    let plain = submit(&app, json!({})).await;
    let r = app.get_job(&app.admin_token, plain).await;
    assert_eq!(
        (&r.json["pool"], &r.json["selector"]),
        (&json!("default"), &json!({}))
    );
    let placed = submit(
        &app,
        json!({"pool": "gpu", "selector": {"zone": "eu-1", "k8s.io/arch": "x86_64"}}),
    )
    .await;
    let r = app.get_job(&app.admin_token, placed).await;
    let job = assert_job_shape(&r.json);
    assert_eq!(job.pool, "gpu");
    assert_eq!(job.selector.get("zone").map(String::as_str), Some("eu-1"));
    // The same idempotency key with another pool is other content: 409.
    let keyed = json!({"task_description": "k", "idempotency_key": "k1"});
    assert_eq!(app.submit_job(&app.admin_token, &keyed).await.status, 201);
    let mut moved = keyed.clone();
    moved["pool"] = json!("gpu");
    assert_eq!(app.submit_job(&app.admin_token, &moved).await.status, 409);
    let mut same = keyed;
    same["pool"] = json!("default");
    assert_eq!(
        app.submit_job(&app.admin_token, &same).await.status,
        200,
        "default named = left out"
    );
    app.stop().await;
}

#[tokio::test]
async fn workers_show_their_pools_and_labels_and_bad_pools_are_refused() {
    let app = spawn_app().await;
    agent(&app, "p-old", json!({})).await;
    agent(
        &app,
        "p-gpu",
        json!({"pools": ["gpu", "default"], "labels": {"zone": "a"}}),
    )
    .await;
    let r = app.list_workers(&app.admin_token, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let workers: Vec<_> = r.json["workers"].as_array().cloned().unwrap_or_default();
    let by_id = |id: &str| {
        workers
            .iter()
            .find(|w| w["worker_id"] == id)
            .cloned()
            .unwrap_or_default()
    };
    let gpu = assert_worker_shape(&by_id("p-gpu"));
    assert_eq!(gpu.pools, ["gpu", "default"]);
    assert_eq!(gpu.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(assert_worker_shape(&by_id("p-old")).pools, ["default"]);
    let token = app.agent_credential("p-bad").await;
    for pools in [
        json!(["GPU"]),
        json!(["a.b"]),
        json!((0..17).map(|i| format!("p{i}")).collect::<Vec<_>>()),
    ] {
        let body = json!({"worker_id": "p-bad", "hostname": "h", "capacity": 1, "pools": pools});
        assert_body_invalid(&app.register_agent(&token, &body).await, "pools");
    }
    assert_eq!(
        app.get_worker(&app.admin_token, "p-bad").await.status,
        404,
        "not registered"
    );
    app.stop().await;
}

/// The classes of `token`'s worker are exactly pool `gpu` without a selector and with
/// `zone=a`, routed under `job.gpu…`.
async fn assert_gpu_classes(app: &TestApp, token: &str) {
    let r = app.agent_classes(token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let classes: WorkClasses =
        serde_json::from_value(r.json.clone()).unwrap_or_else(|e| panic!("{e}: {}", r.text));
    let mut seen: Vec<(String, Value)> = classes
        .classes
        .iter()
        .map(|c| (c.pool.clone(), json!(c.selector)))
        .collect();
    seen.sort_by_key(|(p, s)| (p.clone(), s.as_object().map_or(0, serde_json::Map::len)));
    let expected = [
        ("gpu".to_owned(), json!({})),
        ("gpu".to_owned(), json!({"zone": "a"})),
    ];
    assert_eq!(seen, expected);
    let keys = classes.classes.iter().map(|c| c.routing_key.as_str());
    assert!(keys.clone().all(|k| k.starts_with("job.gpu")), "{}", r.text);
}

#[tokio::test]
async fn an_agent_is_told_only_the_classes_it_matches_and_a_queued_job_says_why_it_waits() {
    let app = spawn_app().await;
    let a = agent(
        &app,
        "c-gpu-a",
        json!({"pools": ["gpu"], "labels": {"zone": "a", "os": "linux"}}),
    )
    .await;
    let d = agent(&app, "c-default", json!({})).await;
    let zone_a = submit(&app, json!({"pool": "gpu", "selector": {"zone": "a"}})).await;
    let zone_c = submit(&app, json!({"pool": "gpu", "selector": {"zone": "c"}})).await;
    let gpu = submit(&app, json!({"pool": "gpu"})).await;
    // Published (so declared) once queued; the zone=c job then says why.
    let waiting = wait_job(&app, zone_c, |j| {
        j["status"] == "queued" && !j["waiting_for"].is_null()
    })
    .await;
    assert_eq!(waiting["waiting_for"], "no live agent in pool gpu with zone=c");
    for id in [zone_a, gpu] {
        let job = wait_job(&app, id, |j| j["status"] == "queued").await;
        assert!(job["waiting_for"].is_null(), "a live agent matches: {job}");
    }
    assert_gpu_classes(&app, &a).await;
    let r = app.agent_classes(&d).await;
    assert_eq!(
        r.json,
        json!({"classes": [{"routing_key": "job", "pool": "default", "selector": {}}]})
    );
    assert_eq!(
        app.agent_classes(&app.admin_token).await.status,
        403,
        "a user's token"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_claim_from_a_worker_outside_the_jobs_pool_or_selector_is_refused_and_the_shard_offered_again() {
    let app = spawn_app().await;
    let d = agent(&app, "r-default", json!({})).await;
    let b = agent(
        &app,
        "r-gpu-b",
        json!({"pools": ["gpu"], "labels": {"zone": "b"}}),
    )
    .await;
    let a = agent(
        &app,
        "r-gpu-a",
        json!({"pools": ["gpu"], "labels": {"zone": "a"}}),
    )
    .await;
    let job = submit(&app, json!({"pool": "gpu", "selector": {"zone": "a"}})).await;
    let claim = |worker: &str| json!({"worker_id": worker, "job_id": job, "attempt": 1, "shard_index": 0, "redelivered": false});
    for (token, worker) in [(&d, "r-default"), (&b, "r-gpu-b")] {
        let r = app.claim_shard(token, &claim(worker)).await;
        assert_eq!(r.json["decision"], "skip", "{worker}: {}", r.text);
        assert!(
            r.json["reason"].as_str().unwrap_or_default().contains("pool"),
            "{}",
            r.text
        );
        let batch = json!({"worker_id": worker, "claims": [{"job_id": job, "attempt": 1, "shard_index": 0, "redelivered": false}]});
        let r = app.claim_shards(token, &batch).await;
        assert_eq!(
            r.json["answers"][0]["decision"], "skip",
            "{worker} in a batch: {}",
            r.text
        );
    }
    let still = app.get_job(&app.admin_token, job).await;
    assert_ne!(still.json["status"], "running", "{}", still.text);
    let r = app.claim_shard(&a, &claim("r-gpu-a")).await;
    assert_eq!(r.json["decision"], "run", "{}", r.text);
    let running = app.get_job(&app.admin_token, job).await;
    assert_eq!(running.json["assigned_workers"], json!(["r-gpu-a"]));
    app.stop().await;
}

#[tokio::test]
async fn a_per_pool_quota_limits_the_workers_of_that_pool_a_user_may_allocate() {
    let app = spawn_app().await;
    for id in ["q-gpu-1", "q-gpu-2"] {
        agent(&app, id, json!({"pools": ["gpu"]})).await;
    }
    agent(&app, "q-default", json!({})).await;
    let admin = admin_user(&app).await.user_id;
    let client = app.db.client().await.unwrap_or_else(|e| panic!("{e}"));
    controller::db::pools::change_quotas(&client, admin, &[("gpu".to_owned(), Some(1))])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let quota = app.quotas(&app.admin_token).await;
    assert_eq!(
        quota.json["pools"],
        json!([{"pool": "gpu", "max_workers": 1, "allocated_workers": 0, "available_workers": 1}])
    );
    let r = app
        .allocate(&app.admin_token, &json!({"workers": 2, "pool": "gpu"}))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("max_workers of pool gpu is 1"), "{}", r.text);
    let r = app
        .allocate(&app.admin_token, &json!({"workers": 1, "pool": "gpu"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["pool"], "gpu");
    let again = app
        .allocate(&app.admin_token, &json!({"workers": 1, "pool": "gpu"}))
        .await;
    assert_eq!(again.status, 409, "the pool's quota is used: {}", again.text);
    // Beyond the gpu pool, the overall quota still applies as before.
    let any = app.allocate(&app.admin_token, &json!({"workers": 1})).await;
    assert_eq!(any.status, 201, "{}", any.text);
    assert!(any.json["pool"].is_null(), "{}", any.text);
    let none = app
        .allocate(&app.admin_token, &json!({"workers": 1, "pool": "cpu"}))
        .await;
    assert_eq!(none.status, 409, "no worker of pool cpu: {}", none.text);
    assert_body_invalid(
        &app.allocate(&app.admin_token, &json!({"workers": 1, "pool": "GPU"}))
            .await,
        "pool",
    );
    let quota = app.quotas(&app.admin_token).await;
    assert_eq!(quota.json["pools"][0]["allocated_workers"], 1, "{}", quota.text);
    assert_eq!(quota.json["pools"][0]["available_workers"], 0, "{}", quota.text);
    app.stop().await;
}

/// The user's `pool_quotas` as `GET /api/auth/users/{id}` shows them.
async fn pool_quotas_of(app: &TestApp, user: Uuid) -> Value {
    let r = app.get_user(&app.admin_token, user).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["pool_quotas"].clone()
}

#[tokio::test]
async fn an_admin_sets_and_lifts_a_users_per_pool_quota_through_the_users_api() {
    let app = spawn_app().await;
    for id in ["pq-gpu-1", "pq-gpu-2"] {
        agent(&app, id, json!({"pools": ["gpu"]})).await;
    }
    let token = app
        .user_token("pq-user", &["resources:read", "resources:write"])
        .await;
    let me = app.me(&token).await;
    let user: Uuid =
        serde_json::from_value(me.json["user_id"].clone()).unwrap_or_else(|e| panic!("{e}: {}", me.text));
    assert_eq!(pool_quotas_of(&app, user).await, json!({}));

    let r = app
        .update_user(&app.admin_token, user, &json!({"pool_quotas": {"gpu": 1}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["pool_quotas"], json!({"gpu": 1}), "{}", r.text);
    assert_eq!(pool_quotas_of(&app, user).await, json!({"gpu": 1}));
    let quota = app.quotas(&token).await;
    assert_eq!(
        quota.json["pools"],
        json!([{"pool": "gpu", "max_workers": 1, "allocated_workers": 0, "available_workers": 1}]),
        "{}",
        quota.text
    );
    let over = app.allocate(&token, &json!({"workers": 2, "pool": "gpu"})).await;
    assert_eq!(over.status, 409, "{}", over.text);
    assert_eq!(
        over.json,
        json!({"detail": "Quota exceeded: 0 workers of pool gpu allocated, 2 more requested, max_workers of pool gpu is 1"})
    );

    refused_changes_change_nothing(&app, &token, user).await;

    // `null` lifts the pool's limit: two gpu workers may then be allocated.
    let r = app
        .update_user(&app.admin_token, user, &json!({"pool_quotas": {"gpu": null}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["pool_quotas"], json!({}), "{}", r.text);
    assert_eq!(app.quotas(&token).await.json["pools"], json!([]));
    let r = app.allocate(&token, &json!({"workers": 2, "pool": "gpu"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    app.stop().await;
}

/// Bad per-pool quotas are a 422 naming each bad entry, a non-admin's
/// change a 403; neither changes anything (the user's limit stays
/// `{"gpu": 1}`, its scopes as they were).
async fn refused_changes_change_nothing(app: &TestApp, token: &str, user: Uuid) {
    let scopes_before = app.get_user(&app.admin_token, user).await.json["scopes"].clone();
    for (bad, loc) in [
        (json!({"GPU": 2}), "GPU"),
        (json!({"gpu": -1}), "gpu"),
        (json!({"gpu": 2.5}), "gpu"),
        (json!({"gpu": 1_000_001}), "gpu"),
        (json!({"gpu": 3, "bad.name": 1}), "bad.name"),
    ] {
        let body = json!({"scopes": ["jobs:read"], "pool_quotas": bad});
        let r = app.update_user(&app.admin_token, user, &body).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.text);
        let items = body_validation_items(&r);
        assert!(
            items
                .iter()
                .any(|i| i["loc"] == json!(["body", "pool_quotas", loc])),
            "{bad}: {}",
            r.text
        );
    }
    for bad in [json!({"gpu": "2"}), json!(["gpu", 2]), json!(5)] {
        let r = app
            .update_user(&app.admin_token, user, &json!({"pool_quotas": bad}))
            .await;
        assert_eq!(r.status, 422, "{bad}: {}", r.text);
        body_validation_items(&r);
    }
    let r = app
        .update_user(token, user, &json!({"pool_quotas": {"gpu": 5}}))
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(pool_quotas_of(app, user).await, json!({"gpu": 1}));
    let after = app.get_user(&app.admin_token, user).await;
    assert_eq!(after.json["scopes"], scopes_before, "{}", after.text);
}
