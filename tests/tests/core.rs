//! The foundation's tests, against the real Postgres and RabbitMQ
//! containers: database lifecycle, both state machines as persisted,
//! password hashing, JWTs, CRUD, relationships, constraints, idempotency and
//! a race of twenty transitions.

use controller::db::flow::{self, Finished};
use controller::db::{self, allocations, idempotency, jobs, outbox, users, workers, DbError};
use controller::models::{NewJob, Quota};
use integration_tests::{create_user, database, new_job, new_worker, submit, BIG_QUOTA};
use orchestrator_shared::api::{ClaimDecision, ShardClaim, ShardWork};
use orchestrator_shared::messages::ShardOutcome;
use orchestrator_shared::{JobStatus, WorkerStatus};
use std::time::Duration;

fn meta(reason: &str) -> jobs::EventMeta {
    jobs::EventMeta {
        reason: Some(reason.to_owned()),
        ..Default::default()
    }
}

#[tokio::test]
async fn database_session_lifecycle() {
    let (test_db, pool) = database().await;
    {
        let client = pool.client().await.unwrap();
        let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
        assert_eq!(pool.pool_status().size, 1);
        assert_eq!(pool.pool_status().available, 0, "the session is checked out");
    }
    assert_eq!(
        pool.pool_status().available,
        1,
        "dropping a session returns it to the pool"
    );
    assert!(pool.ping().await);
    // Migrations are recorded and applying them again is a no-op.
    assert!(db::migrate(&test_db.url).await.unwrap().is_empty());
    let known = db::known_migrations();
    assert_eq!(known.first().map(|m| m.0), Some(1));
    // A malformed URL is a typed error; an unreachable server is "unavailable".
    assert!(matches!(
        db::Database::connect("not a url", 1, Duration::from_secs(1)),
        Err(DbError::InvalidUrl(_))
    ));
    let dead =
        db::Database::connect("postgres://postgres@127.0.0.1:1/x", 1, Duration::from_millis(500)).unwrap();
    let err = dead.client().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(!dead.ping().await);
}

#[tokio::test]
async fn worker_valid_transitions_are_persisted() {
    let (_t, pool) = database().await;
    let c = pool.client().await.unwrap();
    let w = workers::register(&c, &new_worker("w-1")).await.unwrap();
    assert_eq!(w.status, WorkerStatus::Idle);
    let path = [
        (WorkerStatus::Idle, WorkerStatus::Busy),
        (WorkerStatus::Busy, WorkerStatus::Paused),
        (WorkerStatus::Paused, WorkerStatus::Idle),
        (WorkerStatus::Idle, WorkerStatus::Offline),
        (WorkerStatus::Offline, WorkerStatus::Idle),
        (WorkerStatus::Idle, WorkerStatus::Terminating),
        (WorkerStatus::Terminating, WorkerStatus::Terminated),
    ];
    for (from, to) in path {
        let w = workers::transition(&c, "w-1", from, to).await.unwrap();
        assert_eq!(w.status, to);
        assert_eq!(workers::get(&c, "w-1").await.unwrap().status, to);
    }
}

#[tokio::test]
async fn worker_invalid_transitions_raise_state_transition_error() {
    let (_t, pool) = database().await;
    let c = pool.client().await.unwrap();
    workers::register(&c, &new_worker("w-2")).await.unwrap();
    workers::transition(&c, "w-2", WorkerStatus::Idle, WorkerStatus::Terminating)
        .await
        .unwrap();
    // Forbidden by the table.
    let err = workers::transition_to(&c, "w-2", WorkerStatus::Busy)
        .await
        .unwrap_err();
    match err {
        DbError::Transition(e) => assert_eq!(e.to_string(), "Invalid worker transition: terminating -> busy"),
        other => panic!("expected a StateTransitionError, got {other:?}"),
    }
    // Allowed by the table but the worker is not in the expected status.
    let err = workers::transition(&c, "w-2", WorkerStatus::Idle, WorkerStatus::Paused)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DbError::Transition(ref e) if e.from == "terminating"),
        "{err:?}"
    );
    assert_eq!(
        workers::get(&c, "w-2").await.unwrap().status,
        WorkerStatus::Terminating
    );
    let err = workers::transition_to(&c, "nobody", WorkerStatus::Paused)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Worker nobody not found");
}

#[tokio::test]
async fn job_valid_transitions_write_events() {
    let (_t, pool) = database().await;
    let user = create_user(&pool, "alice", "pw", &["jobs:write"]).await;
    let job = submit(&pool, user.user_id, &new_job("build"), BIG_QUOTA)
        .await
        .unwrap()
        .job;
    assert_eq!(job.status, JobStatus::Pending);
    let c = pool.client().await.unwrap();
    workers::register(&c, &new_worker("w-3")).await.unwrap();
    let (running, done) = run_on_w3(&c, job.job_id).await;
    assert_eq!(running.attempts, 1);
    assert!(running.started_at.is_some());
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(done.exit_code, Some(0));
    assert!(done.finished_at >= done.started_at);
    let events = jobs::events(&c, job.job_id).await.unwrap();
    let pairs: Vec<_> = events.iter().map(|e| (e.from, e.to)).collect();
    assert_eq!(
        pairs,
        vec![
            (None, JobStatus::Pending),
            (Some(JobStatus::Pending), JobStatus::Queued),
            (Some(JobStatus::Queued), JobStatus::Running),
            (Some(JobStatus::Running), JobStatus::Completed),
        ]
    );
    assert_eq!(events[2].worker_id.as_deref(), Some("w-3"));
    assert_eq!(events[3].reason.as_deref(), Some("exited"));
}

/// Takes pending job `job_id` through queued and running (on `w-3`) to
/// completed with exit code 0; answers the job as running and as done.
async fn run_on_w3(
    c: &deadpool_postgres::Client,
    job_id: uuid::Uuid,
) -> (controller::models::Job, controller::models::Job) {
    jobs::transition(
        c,
        job_id,
        JobStatus::Pending,
        JobStatus::Queued,
        &meta("published"),
    )
    .await
    .unwrap();
    let started = jobs::EventMeta {
        worker_id: Some("w-3".into()),
        ..meta("started")
    };
    let running = jobs::transition(c, job_id, JobStatus::Queued, JobStatus::Running, &started)
        .await
        .unwrap();
    let done = jobs::EventMeta {
        exit_code: Some(0),
        ..meta("exited")
    };
    let done = jobs::transition(c, job_id, JobStatus::Running, JobStatus::Completed, &done)
        .await
        .unwrap();
    (running, done)
}

#[tokio::test]
async fn job_invalid_transitions_change_nothing() {
    let (_t, pool) = database().await;
    let user = create_user(&pool, "bob", "pw", &["jobs:write"]).await;
    let job = submit(&pool, user.user_id, &new_job("x"), BIG_QUOTA)
        .await
        .unwrap()
        .job;
    let c = pool.client().await.unwrap();
    let err = jobs::transition(
        &c,
        job.job_id,
        JobStatus::Pending,
        JobStatus::Running,
        &meta("skip"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.to_string(), "Invalid job transition: pending -> running");
    jobs::transition_to(&c, job.job_id, JobStatus::Cancelled, &meta("user"))
        .await
        .unwrap();
    let err = jobs::transition_to(&c, job.job_id, JobStatus::Cancelled, &meta("again"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Invalid job transition: cancelled -> cancelled");
    let err = jobs::transition_to(&c, job.job_id, JobStatus::Queued, &meta("revive"))
        .await
        .unwrap_err();
    assert!(matches!(err, DbError::Transition(_)));
    assert_eq!(
        jobs::get(&c, job.job_id).await.unwrap().status,
        JobStatus::Cancelled
    );
    assert_eq!(
        jobs::events(&c, job.job_id).await.unwrap().len(),
        2,
        "refused changes write no event"
    );
    let missing = uuid::Uuid::new_v4();
    let err = jobs::transition_to(&c, missing, JobStatus::Cancelled, &meta("x"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), format!("Job {missing} not found"));
}

#[tokio::test]
async fn password_hashing_uses_argon2id_with_unique_salts() {
    use controller::auth::password;
    let (_t, pool) = database().await;
    let user = create_user(&pool, "carol", "s3cret-Passw0rd", &[]).await;
    let c = pool.client().await.unwrap();
    let stored = users::find_by_username(&c, "carol").await.unwrap().unwrap();
    assert_eq!(stored.user_id, user.user_id);
    assert!(stored
        .password_hash
        .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    password::verify("s3cret-Passw0rd".into(), stored.password_hash.clone())
        .await
        .unwrap();
    let wrong = password::verify("s3cret-passw0rd".into(), stored.password_hash.clone()).await;
    assert!(matches!(wrong, Err(password::PasswordError::Mismatch)));
    let again = password::hash("s3cret-Passw0rd".into()).await.unwrap();
    assert_ne!(
        again, stored.password_hash,
        "same password, different salt, different hash"
    );
    let salt = |h: &str| h.split('$').nth(4).map(str::to_owned);
    assert_ne!(salt(&again), salt(&stored.password_hash));
    // The schema refuses anything but an Argon2id PHC string.
    let err = users::create(&c, "dave", "plaintext", &[]).await.unwrap_err();
    assert!(matches!(err, DbError::Postgres(_)));
}

fn auth_config(secret: &str) -> controller::config::AuthConfig {
    controller::config::AuthConfig {
        jwt_secret: controller::config::Secret::new(secret),
        jwt_algorithm: controller::config::JwtAlgorithm::Hs256,
        jwt_issuer: "orchestrator".into(),
        jwt_audience: "orchestrator-api".into(),
        token_ttl: Duration::from_secs(3600),
        jwt_leeway: Duration::from_secs(2),
        admin_username: None,
        admin_password: None,
    }
}

const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!!";

#[tokio::test]
async fn jwt_generation_has_the_contract_claims() {
    use base64_decode as b64;
    let (_t, pool) = database().await;
    let user = create_user(&pool, "erin", "pw", &["jobs:read", "admin"]).await;
    let issuer = controller::auth::TokenIssuer::new(&auth_config(SECRET)).unwrap();
    let token = issuer
        .issue(user.user_id, &user.scopes, user.token_version)
        .unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: serde_json::Value = serde_json::from_slice(&b64(parts[0])).unwrap();
    assert_eq!(header["alg"], "HS256");
    assert_eq!(header["typ"], "JWT");
    let claims: serde_json::Value = serde_json::from_slice(&b64(parts[1])).unwrap();
    for key in ["sub", "scopes", "iat", "nbf", "exp", "iss", "aud", "jti"] {
        assert!(claims.get(key).is_some(), "claim {key} missing from {claims}");
    }
    assert_eq!(claims["sub"], user.user_id.to_string());
    assert_eq!(claims["scopes"], serde_json::json!(["jobs:read", "admin"]));
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );
    assert_eq!(claims["iss"], "orchestrator");
    assert_eq!(claims["aud"], "orchestrator-api");
    let verified = issuer.verify(&token).unwrap();
    assert_eq!(verified.sub, user.user_id.to_string());
    let second = issuer
        .issue(user.user_id, &user.scopes, user.token_version)
        .unwrap();
    assert_ne!(
        issuer.verify(&second).unwrap().jti,
        verified.jti,
        "every token has its own jti"
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn jwt_validation_refuses_every_kind_of_bad_token() {
    let (_t, pool) = database().await;
    let user = create_user(&pool, "frank", "pw", &["jobs:read"]).await;
    let issuer = controller::auth::TokenIssuer::new(&auth_config(SECRET)).unwrap();
    let good = issuer
        .issue(user.user_id, &user.scopes, user.token_version)
        .unwrap();
    let claims = issuer.verify(&good).unwrap();
    assert_tampered_tokens_refused(&issuer, &good);

    // Same secret, another algorithm.
    let mut hs512 = auth_config(&SECRET.repeat(2));
    hs512.jwt_algorithm = controller::config::JwtAlgorithm::Hs512;
    let other = controller::auth::TokenIssuer::new(&hs512)
        .unwrap()
        .issue(user.user_id, &[], 0)
        .unwrap();
    assert!(issuer.verify(&other).is_err());

    // Expired, not yet valid, wrong audience, wrong issuer: signed with the
    // right key, so only the claim check can refuse them.
    for bad in bad_claims(&claims) {
        let token = issuer.sign(&bad).unwrap();
        assert!(issuer.verify(&token).is_err(), "accepted {bad:?}");
    }
    // A different secret.
    let stranger = controller::auth::TokenIssuer::new(&auth_config(&"x".repeat(40))).unwrap();
    assert!(stranger.verify(&good).is_err());
    assert!(issuer.verify("garbage").is_err());
    assert!(issuer.verify(&good).is_ok());
}

/// Asserts `issuer` refuses `good` with its signature or payload altered,
/// or with `alg: none`.
fn assert_tampered_tokens_refused(issuer: &controller::auth::TokenIssuer, good: &str) {
    let parts: Vec<&str> = good.split('.').collect();

    // Tampered signature and tampered payload.
    let mut sig = base64_decode(parts[2]);
    sig[0] ^= 1;
    assert!(issuer
        .verify(&format!("{}.{}.{}", parts[0], parts[1], base64_encode(&sig)))
        .is_err());
    let mut payload: serde_json::Value = serde_json::from_slice(&base64_decode(parts[1])).unwrap();
    payload["scopes"] = serde_json::json!(["admin"]);
    let forged = base64_encode(&serde_json::to_vec(&payload).unwrap());
    assert!(issuer
        .verify(&format!("{}.{}.{}", parts[0], forged, parts[2]))
        .is_err());

    // alg: none, with and without a signature.
    let none_header = base64_encode(br#"{"alg":"none","typ":"JWT"}"#);
    assert!(issuer.verify(&format!("{none_header}.{}.", parts[1])).is_err());
    assert!(issuer
        .verify(&format!("{none_header}.{}.{}", parts[1], parts[2]))
        .is_err());
}

/// `claims` expired, not yet valid, for another audience and from another
/// issuer.
fn bad_claims(claims: &controller::auth::Claims) -> [controller::auth::Claims; 4] {
    let now = claims.iat;
    [
        controller::auth::Claims {
            exp: now - 60,
            iat: now - 120,
            nbf: now - 120,
            ..claims.clone()
        },
        controller::auth::Claims {
            nbf: now + 600,
            exp: now + 1200,
            ..claims.clone()
        },
        controller::auth::Claims {
            aud: "someone-else".into(),
            ..claims.clone()
        },
        controller::auth::Claims {
            iss: "evil".into(),
            ..claims.clone()
        },
    ]
}

#[tokio::test]
async fn worker_crud() {
    let (_t, pool) = database().await;
    let c = pool.client().await.unwrap();
    let mut w = new_worker("host-a:1");
    w.labels.insert("zone".into(), "eu".into());
    let created = workers::register(&c, &w).await.unwrap();
    assert_eq!(created.capacity, 4);
    assert_eq!(created.labels.get("zone").map(String::as_str), Some("eu"));
    workers::register(&c, &new_worker("host-b")).await.unwrap();
    workers::transition(&c, "host-b", WorkerStatus::Idle, WorkerStatus::Paused)
        .await
        .unwrap();
    assert_eq!(workers::list(&c, None).await.unwrap().len(), 2);
    let paused = workers::list(&c, Some(WorkerStatus::Paused)).await.unwrap();
    assert_eq!(
        paused.iter().map(|w| w.worker_id.as_str()).collect::<Vec<_>>(),
        ["host-b"]
    );
    let before = workers::get(&c, "host-a:1").await.unwrap().last_heartbeat_at;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let beat = workers::heartbeat(&c, "host-a:1", 3, 0).await.unwrap();
    assert_eq!(beat.running_jobs, 3);
    assert!(beat.last_heartbeat_at > before);
    // Re-registration after a restart resets the worker to idle.
    w.capacity = 8;
    let again = workers::register(&c, &w).await.unwrap();
    assert_eq!(
        (again.capacity, again.running_jobs, again.status),
        (8, 0, WorkerStatus::Idle)
    );
    assert_eq!(again.registered_at, created.registered_at);
    workers::delete(&c, "host-a:1").await.unwrap();
    assert!(matches!(
        workers::get(&c, "host-a:1").await,
        Err(DbError::NotFound { kind: "Worker", .. })
    ));
    assert!(matches!(
        workers::delete(&c, "host-a:1").await,
        Err(DbError::NotFound { .. })
    ));
    // The schema refuses ids outside the contract's alphabet.
    assert!(workers::register(&c, &new_worker("bad id!")).await.is_err());
}

#[tokio::test]
async fn job_relationships_and_cascades() {
    let (_t, pool) = database().await;
    let user = create_user(&pool, "gina", "pw", &["jobs:write"]).await;
    let mut new = new_job("sharded");
    new.required_workers = 2;
    new.idempotency_key = Some("k1".into());
    let job = submit(&pool, user.user_id, &new, BIG_QUOTA).await.unwrap().job;
    let c = pool.client().await.unwrap();
    workers::register(&c, &new_worker("w-rel")).await.unwrap();
    c.execute(
        "INSERT INTO job_shards (job_id, shard_index, attempt, worker_id, status) VALUES ($1, 0, 0, 'w-rel', 'running')",
        &[&job.job_id],
    )
    .await
    .unwrap();
    assert_eq!(
        jobs::get(&c, job.job_id).await.unwrap().assigned_workers,
        vec!["w-rel".to_owned()]
    );
    // A job must belong to an existing user.
    let orphan = c
        .execute(
            "INSERT INTO jobs (job_id, status, task_description, submitted_by) VALUES ($1, 'pending', 'x', $2)",
            &[&uuid::Uuid::new_v4(), &uuid::Uuid::new_v4()],
        )
        .await;
    assert!(orphan.is_err());
    // A user with jobs cannot be deleted: jobs are history.
    assert!(matches!(
        users::delete(&c, user.user_id).await,
        Err(DbError::InUse { .. })
    ));
    // Deleting a worker keeps its shard history without a name.
    workers::delete(&c, "w-rel").await.unwrap();
    assert_job_delete_cascades(&c, job.job_id).await;
    // Now the user can go, and their quota and allocations go with them.
    controller::db::quotas::set(&c, user.user_id, BIG_QUOTA)
        .await
        .unwrap();
    users::delete(&c, user.user_id).await.unwrap();
    let quotas: i64 = c
        .query_one("SELECT count(*) FROM quotas", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(quotas, 0);
}

/// Asserts the shard of the deleted worker `w-rel` stays without a name,
/// then that deleting job `job_id` takes its events, shards, outbox rows
/// and idempotency key with it.
async fn assert_job_delete_cascades(c: &deadpool_postgres::Client, job_id: uuid::Uuid) {
    let count =
        |sql: &'static str| async move { c.query_one(sql, &[&job_id]).await.unwrap().get::<_, i64>(0) };
    assert_eq!(
        count("SELECT count(*) FROM job_shards WHERE job_id = $1 AND worker_id IS NULL").await,
        1
    );
    // Deleting the job takes its events, shards, outbox rows and key with it.
    assert_eq!(count("SELECT count(*) FROM outbox WHERE job_id = $1").await, 2);
    c.execute("DELETE FROM jobs WHERE job_id = $1", &[&job_id])
        .await
        .unwrap();
    for sql in [
        "SELECT count(*) FROM job_events WHERE job_id = $1",
        "SELECT count(*) FROM job_shards WHERE job_id = $1",
        "SELECT count(*) FROM outbox WHERE job_id = $1",
        "SELECT count(*) FROM idempotency_keys WHERE job_id = $1",
    ] {
        assert_eq!(count(sql).await, 0, "{sql}");
    }
}

async fn allocate(
    pool: &db::Database,
    user: uuid::Uuid,
    workers: i32,
    quota: Quota,
) -> Result<controller::models::Allocation, DbError> {
    let mut c = pool.client().await?;
    let tx = c.transaction().await?;
    let req = allocations::AllocationRequest {
        workers,
        job_id: None,
        ttl_seconds: 600,
        pool: None,
    };
    let a = allocations::allocate(&tx, user, req, quota).await?;
    tx.commit().await?;
    Ok(a)
}

#[tokio::test]
async fn resource_allocation_constraints() {
    let (_t, pool) = database().await;
    let user = create_user(&pool, "hank", "pw", &["resources:write"]).await;
    let c = pool.client().await.unwrap();
    for i in 0..3 {
        workers::register(&c, &new_worker(&format!("alloc-{i}")))
            .await
            .unwrap();
    }
    let quota = Quota {
        max_workers: 2,
        ..BIG_QUOTA
    };
    let a = allocate(&pool, user.user_id, 2, quota).await.unwrap();
    assert_eq!(a.workers, 2);
    assert!(a.expires_at.is_some());
    let over = allocate(&pool, user.user_id, 1, quota).await.unwrap_err();
    assert!(over.to_string().starts_with("Quota exceeded"), "{over}");
    let other = create_user(&pool, "ivy", "pw", &[]).await;
    let none_free = allocate(&pool, other.user_id, 2, BIG_QUOTA).await.unwrap_err();
    assert!(
        none_free.to_string().starts_with("Not enough free workers"),
        "{none_free}"
    );
    // Release is idempotent; another user's allocation is invisible.
    let r1 = allocations::release(&c, user.user_id, a.allocation_id)
        .await
        .unwrap();
    let r2 = allocations::release(&c, user.user_id, a.allocation_id)
        .await
        .unwrap();
    assert_eq!(r1.released_at, r2.released_at);
    assert!(matches!(
        allocations::release(&c, other.user_id, a.allocation_id).await,
        Err(DbError::NotFound { .. })
    ));
    assert_allocation_checks_hold(&c, user.user_id, a.allocation_id).await;
}

/// Asserts the schema's check and unique constraints refuse hand-written
/// SQL that breaks them (`existing` is an allocation id already taken).
async fn assert_allocation_checks_hold(
    c: &deadpool_postgres::Client,
    user_id: uuid::Uuid,
    existing: uuid::Uuid,
) {
    let bad = [
        "INSERT INTO allocations (allocation_id, user_id, workers) VALUES (gen_random_uuid(), $1, 0)",
        "INSERT INTO allocations (allocation_id, user_id, workers, status) VALUES (gen_random_uuid(), $1, 1, 'bogus')",
        "INSERT INTO allocations (allocation_id, user_id, workers, status) VALUES (gen_random_uuid(), $1, 1, 'released')",
        "INSERT INTO allocations (allocation_id, user_id, workers, expires_at) VALUES (gen_random_uuid(), $1, 1, now() - interval '1 s')",
        "INSERT INTO quotas (user_id, max_workers, max_concurrent_jobs, max_queued_jobs) VALUES ($1, -1, 1, 1)",
    ];
    for sql in bad {
        let err = c.execute(sql, &[&user_id]).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION),
            "{sql}"
        );
    }
    let dup = c
        .execute(
            "INSERT INTO allocations (allocation_id, user_id, workers) VALUES ($1, $2, 1)",
            &[&existing, &user_id],
        )
        .await
        .unwrap_err();
    assert!(db::is_unique_violation(&dup));
}

#[tokio::test]
async fn idempotency_key_uniqueness() {
    let (_t, pool) = database().await;
    let user = create_user(&pool, "jack", "pw", &["jobs:write"]).await;
    let mut new: NewJob = new_job("once");
    new.idempotency_key = Some("deploy-42".into());
    let first = submit(&pool, user.user_id, &new, BIG_QUOTA).await.unwrap();
    assert!(first.created);
    let retry = submit(&pool, user.user_id, &new, BIG_QUOTA).await.unwrap();
    assert!(!retry.created);
    assert_eq!(retry.job.job_id, first.job.job_id);
    let mut changed = new.clone();
    changed.task_description = "twice".into();
    let err = submit(&pool, user.user_id, &changed, BIG_QUOTA)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DbError::IdempotencyKeyReused { ref key } if key == "deploy-42"),
        "{err:?}"
    );
    // The table itself refuses a duplicate (user, key).
    let c = pool.client().await.unwrap();
    let hash = idempotency::request_hash(&new).unwrap();
    let dup = idempotency::insert(&c, user.user_id, "deploy-42", &hash, first.job.job_id).await;
    assert!(matches!(dup, Err(DbError::IdempotencyKeyReused { .. })));
    // Keys are per user.
    let other = create_user(&pool, "kate", "pw", &["jobs:write"]).await;
    assert!(
        submit(&pool, other.user_id, &new, BIG_QUOTA)
            .await
            .unwrap()
            .created
    );
    let n: i64 = c
        .query_one("SELECT count(*) FROM jobs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

/// Submits `news` as one batch in its own transaction and commits.
async fn submit_batch(
    pool: &db::Database,
    user: uuid::Uuid,
    news: &[NewJob],
) -> Result<Vec<jobs::Submitted>, DbError> {
    let mut client = pool.client().await?;
    let tx = client.transaction().await?;
    let submitted = jobs::submit_batch(&tx, user, news, BIG_QUOTA).await?;
    tx.commit().await?;
    Ok(submitted)
}

#[tokio::test]
async fn a_batch_repeating_a_key_is_replayed_whole_when_resubmitted() {
    let (_t, pool) = database().await;
    let user = create_user(&pool, "mia", "pw", &["jobs:write"]).await;
    let mut new: NewJob = new_job("twice in one batch");
    new.idempotency_key = Some("nightly".into());
    let batch = [new.clone(), new];
    let first = submit_batch(&pool, user.user_id, &batch).await.unwrap();
    assert_eq!(first.iter().map(|s| s.created).collect::<Vec<_>>(), [true, false]);
    assert_eq!(first[0].job.job_id, first[1].job.job_id);
    let again = submit_batch(&pool, user.user_id, &batch).await.unwrap();
    assert!(again
        .iter()
        .all(|s| !s.created && s.job.job_id == first[0].job.job_id));
}

#[tokio::test]
async fn twenty_racing_transitions_have_exactly_one_winner() {
    let (_t, pool) = database().await;
    let user = create_user(&pool, "lena", "pw", &["jobs:write"]).await;
    let job = submit(&pool, user.user_id, &new_job("race"), BIG_QUOTA)
        .await
        .unwrap()
        .job;
    let c = pool.client().await.unwrap();
    jobs::transition(&c, job.job_id, JobStatus::Pending, JobStatus::Queued, &meta("q"))
        .await
        .unwrap();
    workers::register(&c, &new_worker("racer")).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let c = pool.client().await?;
            let m = meta(&format!("racer {i}"));
            jobs::transition(&c, job.job_id, JobStatus::Queued, JobStatus::Running, &m).await?;
            let w = workers::transition(&c, "racer", WorkerStatus::Idle, WorkerStatus::Busy).await;
            Ok::<_, DbError>(w.is_ok())
        }));
    }
    let mut wins = 0;
    for t in tasks {
        if let Ok(Ok(worker_won)) = t.await {
            wins += 1;
            assert!(worker_won, "the job's winner also wins the worker");
        }
    }
    assert_eq!(wins, 1);
    let events = jobs::events(&c, job.job_id).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.to == JobStatus::Running).count(), 1);
    assert_eq!(jobs::get(&c, job.job_id).await.unwrap().attempts, 1);
}

#[tokio::test]
async fn submission_writes_one_outbox_message_per_shard() {
    let (_t, pool) = database().await;
    let user = create_user(&pool, "mia", "pw", &["jobs:write"]).await;
    let mut new = new_job("three shards");
    new.required_workers = 3;
    new.priority = 7;
    let job = submit(&pool, user.user_id, &new, BIG_QUOTA).await.unwrap().job;
    let mut c = pool.client().await.unwrap();
    let tx = c.transaction().await.unwrap();
    let due = outbox::claim_due(&tx, 10).await.unwrap();
    assert_eq!(due.len(), 3);
    let shards: Vec<orchestrator_shared::messages::JobDispatch> = due
        .iter()
        .map(|m| serde_json::from_value(m.payload.clone()).unwrap())
        .collect();
    assert_eq!(
        shards.iter().map(|s| s.shard_index).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert!(shards
        .iter()
        .all(|s| s.job_id == job.job_id && s.shard_count == 3 && s.attempt == 1));
    assert!(due.iter().all(|m| m.priority == 7));
    let ids: Vec<i64> = due.iter().map(|m| m.message_id).collect();
    assert_eq!(outbox::settle(&tx, &ids).await.unwrap(), 3);
    tx.commit().await.unwrap();
    assert_eq!(outbox::unsent_count(&c).await.unwrap(), 0);
}

/// A relay's poll during a burst takes its batch from the front of the
/// unsent messages' index instead of reading (and sorting) every due one:
/// with 20,000 due messages that the planner's statistics have not seen
/// yet (as in a burst of submissions, or a backlog left by a broker
/// outage), a poll of 256 reads a few hundred index entries, not 20,000,
/// and returns the earliest due first.
#[tokio::test]
async fn a_relay_poll_reads_its_batch_not_the_whole_backlog() {
    let (_t, pool) = database().await;
    let mut c = pool.client().await.unwrap();
    c.batch_execute(
        "INSERT INTO outbox (exchange, routing_key, payload)
         SELECT 'control', 'w-' || g, '{}' FROM generate_series(1, 20000) g",
    )
    .await
    .unwrap();
    let read_before = outbox_index_entries_read(&c).await;
    let tx = c.transaction().await.unwrap();
    let due = outbox::claim_due(&tx, 256).await.unwrap();
    tx.rollback().await.unwrap();
    let ids: Vec<i64> = due.iter().map(|m| m.message_id).collect();
    assert_eq!(ids.len(), 256);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "the earliest first");
    let read = outbox_index_entries_read(&c).await - read_before;
    assert!(
        read < 2_000,
        "one poll of 256 read {read} index entries of the outbox"
    );
}

/// Two controllers' relays share the outbox (`SKIP LOCKED`). While one of
/// them holds an agent's pause, not yet confirmed by the broker, the other
/// must not publish the resume written after it: the agent would get
/// them the other way round and stay paused while the fleet view says it
/// is not. Dispatches written meanwhile still go out through the other.
#[tokio::test]
async fn a_second_relay_never_publishes_a_control_message_ahead_of_one_still_in_flight() {
    let (_t, pool) = database().await;
    let write = |sql: &'static str| {
        let pool = pool.clone();
        async move { pool.client().await.unwrap().batch_execute(sql).await.unwrap() }
    };
    let bodies = |rows: &[outbox::OutboxMessage]| -> Vec<String> {
        rows.iter().map(|m| m.payload.to_string()).collect()
    };
    write(
        r#"INSERT INTO outbox (exchange, routing_key, payload) VALUES ('control', 'w-1', '{"c": "pause"}')"#,
    )
    .await;
    let mut first = pool.client().await.unwrap();
    let first_tx = first.transaction().await.unwrap();
    let in_flight = outbox::claim_due(&first_tx, 10).await.unwrap();
    assert_eq!(bodies(&in_flight), [r#"{"c":"pause"}"#]);
    write(
        r#"INSERT INTO outbox (exchange, routing_key, payload) VALUES
             ('control', 'w-1', '{"c": "resume"}'), ('work', 'job', '{"n": 1}')"#,
    )
    .await;
    let mut second = pool.client().await.unwrap();
    let second_tx = second.transaction().await.unwrap();
    let taken = outbox::claim_due(&second_tx, 10).await.unwrap();
    assert_eq!(bodies(&taken), [r#"{"n":1}"#], "the resume waits for the pause");
    second_tx.rollback().await.unwrap();
    let ids: Vec<i64> = in_flight.iter().map(|m| m.message_id).collect();
    outbox::settle(&first_tx, &ids).await.unwrap();
    first_tx.commit().await.unwrap();
    let second_tx = second.transaction().await.unwrap();
    let taken = outbox::claim_due(&second_tx, 10).await.unwrap();
    assert_eq!(bodies(&taken), [r#"{"c":"resume"}"#, r#"{"n":1}"#]);
}

/// Index entries of the outbox read so far, counting this connection's
/// last statements (whose statistics are flushed first).
async fn outbox_index_entries_read(c: &deadpool_postgres::Object) -> i64 {
    c.batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    c.query_one(
        "SELECT coalesce(sum(idx_tup_read), 0)::bigint FROM pg_stat_user_indexes WHERE relname = 'outbox'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn queued_quota_refuses_submissions_over_the_limit() {
    let (_t, pool) = database().await;
    let user = create_user(&pool, "nora", "pw", &["jobs:write"]).await;
    let quota = Quota {
        max_queued_jobs: 2,
        max_workers: 2,
        ..BIG_QUOTA
    };
    submit(&pool, user.user_id, &new_job("1"), quota).await.unwrap();
    submit(&pool, user.user_id, &new_job("2"), quota).await.unwrap();
    let err = submit(&pool, user.user_id, &new_job("3"), quota)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_queued_jobs"), "{err}");
    let mut wide = new_job("wide");
    wide.required_workers = 3;
    let err = submit(&pool, user.user_id, &wide, quota).await.unwrap_err();
    assert!(err.to_string().contains("max_workers"), "{err}");
}

#[tokio::test]
async fn job_listing_pages_newest_first() {
    let (_t, pool) = database().await;
    let user = create_user(&pool, "olga", "pw", &["jobs:write"]).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            submit(&pool, user.user_id, &new_job(&format!("j{i}")), BIG_QUOTA)
                .await
                .unwrap()
                .job
                .job_id,
        );
    }
    let c = pool.client().await.unwrap();
    jobs::transition_to(&c, ids[0], JobStatus::Cancelled, &meta("x"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = jobs::list(&c, jobs::JobFilter::default(), 3, cursor)
            .await
            .unwrap();
        seen.extend(page.iter().map(|j| j.job_id));
        match next {
            Some(n) => cursor = Some(n.to_string().parse().unwrap()),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "every job once, newest first");
    let (cancelled, next) = jobs::list(
        &c,
        jobs::JobFilter {
            status: Some(JobStatus::Cancelled),
            submitted_by: Some(user.user_id),
            schedule_id: None,
        },
        10,
        None,
    )
    .await
    .unwrap();
    assert_eq!((cancelled.len(), next), (1, None));
    assert!("garbage".parse::<jobs::JobCursor>().is_err());
}

#[tokio::test]
async fn broker_confirms_a_persistent_message() {
    use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
    let infra = integration_tests::infra();
    let conn = lapin::Connection::connect(&infra.amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let queue = format!("{}.work", integration_tests::unique_prefix());
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(queue.as_str().into(), durable, Default::default())
        .await
        .unwrap();
    let props = lapin::BasicProperties::default().with_delivery_mode(2);
    let confirm = ch
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            b"hello",
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    let got = ch
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    let delivery = got.expect("the message is in the queue");
    assert_eq!(delivery.data, b"hello");
    assert_eq!(delivery.properties.delivery_mode(), &Some(2));
}

/// Whether outbox row `id` was sent (the relay deletes a row once the
/// broker confirmed it), and whether it is parked (refused by the relay,
/// kept unsent for an operator).
async fn outbox_state(c: &tokio_postgres::Client, id: i64) -> (bool, bool) {
    let row = c
        .query_opt(
            "SELECT available_at = 'infinity' FROM outbox WHERE message_id = $1 AND sent_at IS NULL",
            &[&id],
        )
        .await
        .unwrap();
    match row {
        None => (true, false),
        Some(row) => (false, row.get(0)),
    }
}

#[tokio::test]
async fn the_relay_parks_a_row_it_cannot_publish_and_sends_the_rest() {
    use controller::broker::{supervise, BrokerLink, BrokerStatus, Flow};
    use orchestrator_shared::messages::{Topology, CONTROL_EXCHANGE};
    let (test_db, pool) = database().await;
    let args = ["controller", "--database-url", &test_db.url, "--jwt-secret", "s"];
    let config = controller::config::Config::try_parse_from(args).unwrap();
    let c = pool.client().await.unwrap();
    let pause = serde_json::json!({ "command": "pause" });
    let too_long_key = "k".repeat(300);
    let bad = outbox::enqueue(&c, CONTROL_EXCHANGE, &too_long_key, &pause, 9, None)
        .await
        .unwrap();
    let nowhere = outbox::enqueue(&c, "nope", "w-1", &pause, 9, None).await.unwrap();
    let good = outbox::enqueue(&c, CONTROL_EXCHANGE, "w-1", &pause, 9, None)
        .await
        .unwrap();
    let topology = Topology::new(integration_tests::unique_prefix());
    let flow = Flow {
        db: pool.clone(),
        topology: topology.clone(),
        config: config.flow,
        wake: Default::default(),
        status: BrokerStatus::default(),
        senders: controller::broker::Senders::new("guest".into(), topology, true),
    };
    let link = BrokerLink::new(integration_tests::infra().amqp_url(), None).unwrap();
    let relay = tokio::spawn(supervise(link, flow));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while outbox_state(&c, good).await != (true, false) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the good row was never sent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.abort();
    assert_eq!(
        outbox_state(&c, bad).await,
        (false, true),
        "the bad row is unsent and parked"
    );
    assert_eq!(
        outbox_state(&c, nowhere).await,
        (false, true),
        "a row to no exchange is parked"
    );
    assert_eq!(
        outbox::unsent_count(&c).await.unwrap(),
        2,
        "parked rows still count as unsent"
    );
}

/// The generations stamped on the control messages queued for `worker_id`,
/// oldest first, with their commands.
async fn control_stamps(c: &tokio_postgres::Client, worker_id: &str) -> Vec<(String, Option<i64>)> {
    let rows = c
        .query(
            "SELECT payload FROM outbox WHERE exchange = 'control' AND routing_key = $1 ORDER BY message_id",
            &[&worker_id],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let payload: serde_json::Value = r.get(0);
            let m: orchestrator_shared::messages::ControlMessage = serde_json::from_value(payload).unwrap();
            (m.command.name().to_owned(), m.generation)
        })
        .collect()
}

/// Runs an operator's `command` on `worker_id` in a transaction of its own,
/// the way the supervisor API does (resume: only from paused).
async fn steer_as_operator(
    pool: &db::Database,
    worker_id: &str,
    command: orchestrator_shared::messages::ControlCommand,
) -> Result<controller::models::Worker, DbError> {
    use orchestrator_shared::messages::ControlCommand;
    let mut c = pool.client().await.unwrap();
    let tx = c.transaction().await.unwrap();
    let target = |w: &controller::models::Worker| match command {
        ControlCommand::Pause => Ok(WorkerStatus::Paused),
        ControlCommand::Terminate => Ok(WorkerStatus::Terminating),
        _ => w.status.resumed(w.running_jobs),
    };
    let updated = workers::steer(&tx, worker_id, target, &command).await?;
    tx.commit().await.unwrap();
    Ok(updated)
}

#[tokio::test]
async fn each_registration_bumps_the_generation_and_control_messages_carry_it() {
    use orchestrator_shared::messages::ControlCommand;
    let (_t, pool) = database().await;
    let c = pool.client().await.unwrap();
    let first = workers::register(&c, &new_worker("gen-1")).await.unwrap();
    assert_eq!(first.generation, 1);
    assert_eq!(workers::get(&c, "gen-1").await.unwrap().generation, 1);
    steer_as_operator(&pool, "gen-1", ControlCommand::Terminate)
        .await
        .unwrap();
    let second = workers::register(&c, &new_worker("gen-1")).await.unwrap();
    assert_eq!(second.generation, 2);
    assert_eq!(
        second.status,
        WorkerStatus::Idle,
        "the incarnation told to stop is gone; the new one starts idle"
    );
    steer_as_operator(&pool, "gen-1", ControlCommand::Pause)
        .await
        .unwrap();
    let job_id = uuid::Uuid::new_v4();
    controller::db::control::queue(&c, "gen-1", &ControlCommand::CancelJob { job_id }, None)
        .await
        .unwrap();
    let third = workers::register(&c, &new_worker("gen-1")).await.unwrap();
    assert_eq!(third.generation, 3);
    assert_eq!(
        control_stamps(&c, "gen-1").await,
        [
            ("terminate".to_owned(), Some(1)),
            ("pause".to_owned(), Some(2)),
            ("cancel_job".to_owned(), Some(2)),
        ]
    );
    // Another worker's generations are its own.
    let other = workers::register(&c, &new_worker("gen-2")).await.unwrap();
    assert_eq!(other.generation, 1);
    assert!(matches!(
        controller::db::control::queue(&c, "nobody", &ControlCommand::Pause, None).await,
        Err(DbError::NotFound { kind: "Worker", .. })
    ));
}

#[tokio::test]
async fn resume_applies_to_a_paused_worker_only() {
    use orchestrator_shared::messages::ControlCommand;
    let (_t, pool) = database().await;
    let c = pool.client().await.unwrap();
    workers::register(&c, &new_worker("res-1")).await.unwrap();
    let err = steer_as_operator(&pool, "res-1", ControlCommand::Resume)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Invalid worker transition: idle -> idle");
    steer_as_operator(&pool, "res-1", ControlCommand::Terminate)
        .await
        .unwrap();
    workers::transition(&c, "res-1", WorkerStatus::Terminating, WorkerStatus::Terminated)
        .await
        .unwrap();
    for _ in 0..2 {
        let err = steer_as_operator(&pool, "res-1", ControlCommand::Resume)
            .await
            .unwrap_err();
        assert!(matches!(err, DbError::Transition(_)), "a 409: {err:?}");
        assert_eq!(err.to_string(), "Invalid worker transition: terminated -> idle");
    }
    let err = steer_as_operator(&pool, "res-1", ControlCommand::Terminate)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Invalid worker transition: terminated -> terminating"
    );
    assert_eq!(
        workers::get(&c, "res-1").await.unwrap().status,
        WorkerStatus::Terminated
    );
    assert_eq!(
        control_stamps(&c, "res-1").await,
        [("terminate".to_owned(), Some(1))],
        "a refused command queues nothing"
    );
    // From paused, resume works: idle, or busy while shards still run.
    workers::register(&c, &new_worker("res-1")).await.unwrap();
    steer_as_operator(&pool, "res-1", ControlCommand::Pause)
        .await
        .unwrap();
    workers::heartbeat(&c, "res-1", 1, 0).await.unwrap();
    let resumed = steer_as_operator(&pool, "res-1", ControlCommand::Resume)
        .await
        .unwrap();
    assert_eq!(resumed.status, WorkerStatus::Busy);
}

#[tokio::test]
async fn a_paused_worker_stays_paused_across_registrations_and_each_is_recorded() {
    use orchestrator_shared::messages::ControlCommand;
    let (_t, pool) = database().await;
    let c = pool.client().await.unwrap();
    workers::register(&c, &new_worker("hold-1")).await.unwrap();
    workers::transition(&c, "hold-1", WorkerStatus::Idle, WorkerStatus::Busy)
        .await
        .unwrap();
    steer_as_operator(&pool, "hold-1", ControlCommand::Pause)
        .await
        .unwrap();
    workers::heartbeat(&c, "hold-1", 2, 0).await.unwrap();
    let again = workers::register(&c, &new_worker("hold-1")).await.unwrap();
    assert_eq!(
        (again.status, again.generation, again.running_jobs),
        (WorkerStatus::Paused, 2, 0)
    );
    let again = workers::register(&c, &new_worker("hold-1")).await.unwrap();
    assert_eq!((again.status, again.generation), (WorkerStatus::Paused, 3));
    let lost = workers::mark_lost(&c, "hold-1", chrono::Utc::now() + chrono::Duration::hours(1))
        .await
        .unwrap();
    assert!(lost);
    let events: Vec<_> = workers::events(&c, "hold-1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.generation, e.from, e.to, e.reason))
        .collect();
    let s = |r: &str| Some(r.to_owned());
    use WorkerStatus::*;
    assert_eq!(
        events,
        [
            (1, None, Idle, s("registered")),
            // idle -> busy is load, not recorded.
            (1, Some(Busy), Paused, s("pause requested")),
            (2, Some(Paused), Paused, s("registered")),
            (3, Some(Paused), Paused, s("registered")),
            (3, Some(Paused), Offline, s("heartbeats missed")),
        ]
    );
    assert!(matches!(
        workers::events(&c, "nobody").await,
        Err(DbError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_late_stopped_or_heartbeat_of_an_earlier_incarnation_changes_nothing() {
    use controller::db::flow;
    let (_t, pool) = database().await;
    let c = pool.client().await.unwrap();
    workers::register(&c, &new_worker("late-1")).await.unwrap();
    let current = workers::register(&c, &new_worker("late-1")).await.unwrap();
    assert_eq!(current.generation, 2);
    flow::heartbeat(&c, "late-1", 3, false, 1).await.unwrap();
    let after_beat = workers::get(&c, "late-1").await.unwrap();
    assert_eq!(
        (after_beat.status, after_beat.running_jobs),
        (WorkerStatus::Idle, 0)
    );
    flow::stopped(&c, "late-1", 1).await.unwrap();
    assert_eq!(
        workers::get(&c, "late-1").await.unwrap().status,
        WorkerStatus::Idle
    );
    flow::heartbeat(&c, "late-1", 2, false, 2).await.unwrap();
    assert_eq!(
        workers::get(&c, "late-1").await.unwrap().status,
        WorkerStatus::Busy
    );
    flow::stopped(&c, "late-1", 2).await.unwrap();
    assert_eq!(
        workers::get(&c, "late-1").await.unwrap().status,
        WorkerStatus::Terminated
    );
}

/// The backend serving the pool's next checkout, and the rows of
/// `at_once_probe` it sees.
async fn pid_and_rows(pool: &db::Database) -> (i32, i64) {
    let c = pool.client().await.unwrap();
    let sql = "SELECT pg_backend_pid(), (SELECT count(*) FROM at_once_probe)";
    let row = c.query_one(sql, &[]).await.unwrap();
    (row.get(0), row.get(1))
}

/// A transaction sent at once (`BEGIN` travelling with its statements)
/// gives its connection back to the pool once its `COMMIT` is answered,
/// and so does one whose statement failed, once the `ROLLBACK` sent behind
/// it is answered; one whose caller went away before its end (a consumer
/// stopped mid-report) must not: the pool's next user would run inside
/// it, and what it wrote would be rolled back or never committed. Its
/// connection is closed instead, and Postgres rolls it back.
#[tokio::test]
async fn a_transaction_sent_at_once_and_dropped_before_its_commit_is_rolled_back_on_a_closed_connection() {
    let (test_db, _) = database().await;
    let pool = db::Database::connect(&test_db.url, 1, Duration::from_secs(10)).unwrap();
    let c = pool.client().await.unwrap();
    c.batch_execute("CREATE TABLE at_once_probe (n int)")
        .await
        .unwrap();
    let pid_before: i32 = c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let mut conn = db::at_once::AtOnce::new(c);
    let (begin, c) = (conn.begin(1), conn.client());
    let insert = "INSERT INTO at_once_probe VALUES (1)";
    futures::try_join!(
        c.batch_execute(begin),
        c.batch_execute(insert),
        c.batch_execute("COMMIT")
    )
    .unwrap();
    conn.ended();
    drop(conn);
    let (first_pid, rows) = pid_and_rows(&pool).await;
    assert_eq!(rows, 1, "committed");
    assert_eq!(first_pid, pid_before, "a committed one's connection is reused");

    let mut conn = db::at_once::AtOnce::new(pool.client().await.unwrap());
    let (begin, c) = (conn.begin(1), conn.client());
    let sent = futures::try_join!(
        c.batch_execute(begin),
        c.batch_execute(insert),
        c.batch_execute("SELECT 1 / 0")
    );
    assert!(conn.or_roll_back(sent).await.is_err());
    drop(conn);
    let (pid, rows) = pid_and_rows(&pool).await;
    assert_eq!(rows, 1, "the failed transaction's insert is rolled back");
    assert_eq!(pid, first_pid, "a rolled-back one's connection is reused");

    let mut conn = db::at_once::AtOnce::new(pool.client().await.unwrap());
    let (begin, c) = (conn.begin(1), conn.client());
    futures::try_join!(c.batch_execute(begin), c.batch_execute(insert)).unwrap();
    drop(conn);
    let (pid, rows) = pid_and_rows(&pool).await;
    assert_eq!(rows, 1, "the abandoned insert is not seen, nor committed");
    assert_ne!(
        pid, first_pid,
        "the abandoned transaction's connection was not reused"
    );
}

/// Work held while Postgres is unavailable (the events consumer's batch,
/// the API's 503) is tried again until it passes, so only a lost or
/// closing connection may count as unavailable: an answer this process
/// cannot read (a column of another type, no row where one was expected)
/// would fail forever and stall the events queue behind it.
#[tokio::test]
async fn only_a_lost_or_closing_connection_counts_as_postgres_unavailable() {
    let (test_db, _) = database().await;
    let pool = db::Database::connect(&test_db.url, 2, Duration::from_secs(10)).unwrap();
    let c = pool.client().await.unwrap();
    let row = c.query_one("SELECT 'x'::text", &[]).await.unwrap();
    let wrong_type = DbError::from(row.try_get::<_, i32>(0).unwrap_err());
    assert!(!wrong_type.is_unavailable(), "{wrong_type:?}");
    let no_row = DbError::from(c.query_one("SELECT 1 WHERE false", &[]).await.unwrap_err());
    assert!(!no_row.is_unavailable(), "{no_row:?}");
    let refused = DbError::from(c.query_one("SELECT 1 / 0", &[]).await.unwrap_err());
    assert!(!refused.is_unavailable(), "{refused:?}");

    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let other = pool.client().await.unwrap();
    other
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let first = DbError::from(c.query_one("SELECT 1", &[]).await.unwrap_err());
    assert!(first.is_unavailable(), "terminated: {first:?}");
    let then = DbError::from(c.query_one("SELECT 1", &[]).await.unwrap_err());
    assert!(then.is_unavailable(), "closed: {then:?}");
}

/// Reports of a batch applied as the events consumer does: the plain
/// successes set-based (`flow::complete_succeeded`), then the rest one by
/// one (`flow::finish`).
async fn apply_reports(pool: &db::Database, reports: &[Finished]) -> (Vec<bool>, Vec<&'static str>) {
    let mut c = pool.client().await.unwrap();
    let tx = c.transaction().await.unwrap();
    let refs: Vec<&Finished> = reports.iter().collect();
    let plain = flow::complete_succeeded(&tx, &refs).await.unwrap().applied;
    let mut rest = Vec::new();
    for (f, done) in reports.iter().zip(&plain) {
        if !done {
            rest.push(flow::finish(&tx, f, RETRY).await.unwrap());
        }
    }
    tx.commit().await.unwrap();
    (plain, rest)
}

const RETRY: flow::RetryPolicy = flow::RetryPolicy {
    base: Duration::from_millis(100),
    max: Duration::from_secs(1),
};

/// A report of `job`'s shard 0 at `attempt` from `worker`.
fn report(worker: &str, job: uuid::Uuid, attempt: i32, outcome: ShardOutcome) -> Finished {
    Finished {
        worker_id: worker.to_owned(),
        job_id: job,
        attempt,
        shard_index: 0,
        outcome,
        exit_code: Some(i32::from(outcome != ShardOutcome::Succeeded)),
        stdout_tail: format!("out of {job}"),
        stderr_tail: String::new(),
        error: None,
    }
}

/// `n` jobs of one shard each, submitted by a new user; pending.
async fn pending_jobs(pool: &db::Database, n: usize) -> Vec<uuid::Uuid> {
    let user = create_user(pool, "alice", "pw", &["jobs:write"]).await;
    let mut ids = Vec::new();
    for i in 0..n {
        let job = submit(pool, user.user_id, &new_job(&format!("j{i}")), BIG_QUOTA)
            .await
            .unwrap();
        ids.push(job.job.job_id);
    }
    ids
}

/// Claims shard 0 of attempt 1 of each of `ids` as `w-a`, in one batch.
async fn claim_on_w_a(pool: &db::Database, ids: &[uuid::Uuid]) -> Vec<(flow::Claim, Option<ShardWork>)> {
    let first_attempts: Vec<(uuid::Uuid, i32)> = ids.iter().map(|&job_id| (job_id, 1)).collect();
    claim_batch_on_w_a(pool, &first_attempts).await
}

/// Four one-shard jobs queued and claimed in one batch by `w-a`.
async fn four_running_on_w_a(pool: &db::Database) -> Vec<uuid::Uuid> {
    let ids = pending_jobs(pool, 4).await;
    let c = pool.client().await.unwrap();
    for w in ["w-a", "w-b"] {
        workers::register(&c, &new_worker(w)).await.unwrap();
    }
    jobs::mark_queued(&c, &ids).await.unwrap();
    let answers = claim_on_w_a(pool, &ids).await;
    assert!(
        answers.iter().all(|((d, _), _)| *d == ClaimDecision::Run),
        "{answers:?}"
    );
    ids
}

/// Shard 0 of `job`: (holder, status, exit code).
async fn shard_row(c: &deadpool_postgres::Client, job: uuid::Uuid) -> (String, String, Option<i32>) {
    let sql = "SELECT worker_id, status, exit_code FROM job_shards WHERE job_id = $1 AND shard_index = 0";
    let row = c.query_one(sql, &[&job]).await.unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// Checks that `job` completed once, by w-a's report, with its output;
/// answers its events.
async fn assert_completed_by_w_a(
    c: &deadpool_postgres::Client,
    job: uuid::Uuid,
) -> Vec<controller::models::JobEvent> {
    let done = jobs::get(c, job).await.unwrap();
    assert_eq!((done.status, done.exit_code), (JobStatus::Completed, Some(0)));
    assert!(done.finished_at >= done.started_at);
    let out = c
        .query_one("SELECT stdout_tail FROM jobs WHERE job_id = $1", &[&job])
        .await
        .unwrap();
    assert_eq!(out.get::<_, String>(0), format!("out of {job}"));
    let events = jobs::events(c, job).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (last.from, last.to),
        (Some(JobStatus::Running), JobStatus::Completed)
    );
    let by = (last.worker_id.as_deref(), last.reason.as_deref());
    assert_eq!(by, (Some("w-a"), Some("all shards succeeded")));
    assert_eq!(events.iter().filter(|e| e.to == JobStatus::Completed).count(), 1);
    assert_eq!(
        shard_row(c, job).await,
        ("w-a".into(), "completed".into(), Some(0))
    );
    events
}

#[tokio::test]
async fn a_batch_of_reports_completes_each_job_once_and_fenced_reports_change_nothing() {
    let (_t, pool) = database().await;
    let ids = four_running_on_w_a(&pool).await;
    let reports = [
        report("w-a", ids[0], 1, ShardOutcome::Succeeded),
        report("w-b", ids[1], 1, ShardOutcome::Succeeded),
        report("w-a", ids[2], 2, ShardOutcome::Succeeded),
        report("w-a", ids[3], 1, ShardOutcome::Failed),
    ];
    let (plain, rest) = apply_reports(&pool, &reports).await;
    assert_eq!(
        plain,
        [true, true, false, false],
        "the plain successes of jobs reported once"
    );
    assert_eq!(rest, ["duplicate or stale report", "job failed"]);
    let c = pool.client().await.unwrap();
    let events = assert_completed_by_w_a(&c, ids[0]).await;
    let status = |i: usize| jobs::get(&c, ids[i]);
    let holder = status(1).await.unwrap().status;
    assert_eq!(
        holder,
        JobStatus::Running,
        "a report from another worker than the holder"
    );
    assert_eq!(
        shard_row(&c, ids[1]).await,
        ("w-a".into(), "running".into(), None)
    );
    let stale = status(2).await.unwrap().status;
    assert_eq!(stale, JobStatus::Running, "a report of another attempt");
    assert_eq!(status(3).await.unwrap().status, JobStatus::Failed);
    // The same batch again changes nothing, and neither does a batch
    // reporting one job twice (left to the single report's rules).
    let (plain, rest) = apply_reports(&pool, &reports).await;
    assert_eq!(plain, [false, true, false, false]);
    assert_eq!(rest.len(), 3);
    let twice = [reports[0].clone(), reports[0].clone()];
    let (plain, rest) = apply_reports(&pool, &twice).await;
    assert_eq!((plain, rest.len()), (vec![false, false], 2));
    assert_eq!(jobs::events(&c, ids[0]).await.unwrap().len(), events.len());
    assert_eq!(status(3).await.unwrap().status, JobStatus::Failed);
}

/// Claims and reports of one job each, as one agent of few slots sends
/// them, use the plans their statements were given once per connection:
/// planned afresh each time (custom plans), the claim's and the report's
/// common-table expressions cost Postgres more than running them.
#[tokio::test]
async fn small_claims_and_reports_are_not_planned_afresh_each_time() {
    let (t, _) = database().await;
    let pool = db::Database::connect(&t.url, 1, Duration::from_secs(10)).unwrap();
    let ids = pending_jobs(&pool, 8).await;
    let c = pool.client().await.unwrap();
    workers::register(&c, &new_worker("w-a")).await.unwrap();
    drop(c);
    for &id in &ids {
        let answers = claim_on_w_a(&pool, &[id]).await;
        assert_eq!(answers[0].0 .0, ClaimDecision::Run, "{answers:?}");
        let (plain, _) = apply_reports(&pool, &[report("w-a", id, 1, ShardOutcome::Succeeded)]).await;
        assert_eq!(plain, [true]);
    }
    let c = pool.client().await.unwrap();
    let sql = "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements
               WHERE (statement LIKE '%INSERT INTO job_shards%' OR statement LIKE '%all shards succeeded%')
                 AND statement NOT LIKE '%pg_prepared_statements%'";
    let plans: Vec<(String, i64, i64)> = c
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        plans.len(),
        2,
        "the claim's and the report's statements: {plans:?}"
    );
    for (statement, generic, custom) in &plans {
        assert_eq!(
            (*generic, *custom),
            (8, 0),
            "runs with one plan and plans made afresh: {statement}"
        );
    }
    for &id in &ids {
        assert_eq!(jobs::get(&c, id).await.unwrap().status, JobStatus::Completed);
    }
}

/// A batch that starts a job marks its idle worker busy (in the statement
/// that starts it); a batch that starts nothing leaves it idle.
#[tokio::test]
async fn a_batch_that_starts_a_job_marks_its_idle_worker_busy_and_one_that_starts_none_does_not() {
    let (_t, pool) = database().await;
    let ids = pending_jobs(&pool, 2).await;
    let c = pool.client().await.unwrap();
    workers::register(&c, &new_worker("w-a")).await.unwrap();
    let status = || async { workers::get(&c, "w-a").await.unwrap().status };
    assert_eq!(status().await, WorkerStatus::Idle);
    let stale = claim_batch_on_w_a(&pool, &[(ids[0], 2)]).await;
    assert_eq!(stale[0].0 .0, ClaimDecision::Skip, "{stale:?}");
    assert_eq!(status().await, WorkerStatus::Idle, "nothing started");
    let started = claim_batch_on_w_a(&pool, &[(ids[0], 1), (ids[1], 1)]).await;
    assert!(
        started.iter().all(|((d, _), _)| *d == ClaimDecision::Run),
        "{started:?}"
    );
    assert_eq!(status().await, WorkerStatus::Busy);
}

/// A batch whose claims are all fresh, one of whose jobs was cancelled
/// meanwhile, is still answered as each claim alone and in one
/// transaction: the first try, sent at once, starts every claim or none,
/// so the others are "started" (not "resumed", as they would be had they
/// been started and committed before the cancelled one was decided) and
/// the cancelled job is skipped.
#[tokio::test]
async fn a_fresh_batch_with_a_cancelled_job_starts_the_others_once_and_skips_it() {
    let (_t, pool) = database().await;
    let ids = pending_jobs(&pool, 3).await;
    let mut c = pool.client().await.unwrap();
    workers::register(&c, &new_worker("w-a")).await.unwrap();
    let job = jobs::get(&c, ids[1]).await.unwrap();
    let tx = c.transaction().await.unwrap();
    flow::cancel(&tx, &job).await.unwrap();
    tx.commit().await.unwrap();
    let answers = claim_on_w_a(&pool, &ids).await;
    let got: Vec<(ClaimDecision, &str)> = answers.iter().map(|((d, why), _)| (*d, why.as_str())).collect();
    assert_eq!(got[0], (ClaimDecision::Run, "started"), "{answers:?}");
    assert_eq!(got[1].0, ClaimDecision::Skip, "{answers:?}");
    assert!(got[1].1.starts_with("job is cancelled"), "{answers:?}");
    assert_eq!(got[2], (ClaimDecision::Run, "started"), "{answers:?}");
}

/// Claims `(job, attempt)` pairs, shard 0, as `w-a`, in one batch.
async fn claim_batch_on_w_a(
    pool: &db::Database,
    claims: &[(uuid::Uuid, i32)],
) -> Vec<(flow::Claim, Option<ShardWork>)> {
    let c = pool.client().await.unwrap();
    let claims: Vec<ShardClaim> = claims
        .iter()
        .map(|&(job_id, attempt)| ShardClaim {
            job_id,
            attempt,
            shard_index: 0,
            redelivered: false,
        })
        .collect();
    flow::claim_batch(c, "w-a", &claims, Duration::from_secs(30))
        .await
        .unwrap()
}

/// A claim can overtake the relay: the agent has the message before the
/// relay has committed that it published it. A batch of such claims
/// records both steps, in order, as a single claim does, and the relay's
/// late step changes nothing.
#[tokio::test]
async fn a_batch_claiming_jobs_the_relay_has_not_marked_queued_records_both_steps() {
    let (_t, pool) = database().await;
    let ids = pending_jobs(&pool, 3).await;
    let c = pool.client().await.unwrap();
    workers::register(&c, &new_worker("w-a")).await.unwrap();
    let answers = claim_on_w_a(&pool, &ids).await;
    let reasons: Vec<&str> = answers.iter().map(|((_, why), _)| why.as_str()).collect();
    assert_eq!(reasons, ["started"; 3], "{answers:?}");
    assert_eq!(
        jobs::mark_queued(&c, &ids).await.unwrap(),
        0,
        "the relay's step finds nothing pending"
    );
    let expected = [
        (None, JobStatus::Pending, Some("submitted"), None),
        (
            Some(JobStatus::Pending),
            JobStatus::Queued,
            Some("published"),
            None,
        ),
        (
            Some(JobStatus::Queued),
            JobStatus::Running,
            Some("started attempt 1"),
            Some("w-a"),
        ),
    ];
    for job in &ids {
        let j = jobs::get(&c, *job).await.unwrap();
        assert_eq!((j.status, j.attempts), (JobStatus::Running, 1));
        let events = jobs::events(&c, *job).await.unwrap();
        let steps: Vec<_> = events
            .iter()
            .map(|e| (e.from, e.to, e.reason.as_deref(), e.worker_id.as_deref()))
            .collect();
        assert_eq!(steps, expected);
    }
}

/// The relay sleeps until the earliest message not yet due falls due: that
/// time is read from the outbox, a parked message (never due) does not
/// count, and neither does one due already (the batch took it).
#[tokio::test]
async fn the_next_due_message_is_the_earliest_future_one_and_never_a_parked_one() {
    let (_t, pool) = database().await;
    let c = pool.client().await.unwrap();
    let payload = serde_json::json!({"n": 1});
    let enqueue = |delay_ms: i64| outbox::enqueue_delayed(&c, "control", "k", &payload, 0, None, delay_ms);
    assert_eq!(outbox::next_due_in(&c).await.unwrap(), None, "an empty outbox");
    let parked = enqueue(0).await.unwrap();
    outbox::park(&c, &[parked]).await.unwrap();
    enqueue(0).await.unwrap();
    assert_eq!(outbox::next_due_in(&c).await.unwrap(), None, "parked or due only");
    enqueue(60_000).await.unwrap();
    enqueue(30_000).await.unwrap();
    let next = outbox::next_due_in(&c)
        .await
        .unwrap()
        .expect("a message due later");
    assert!(
        next > Duration::from_secs(25) && next <= Duration::from_secs(30),
        "{next:?}"
    );
}

/// The relay's step from pending to queued skips a job another transaction
/// holds (a claim records that step itself) instead of queueing behind it,
/// and a job skipped while its holder then left it pending is marked once
/// the relay is idle; a job whose dispatch is still unsent is not.
#[tokio::test]
async fn the_relay_skips_a_held_job_and_marks_it_queued_once_idle() {
    let (_t, pool) = database().await;
    let ids = pending_jobs(&pool, 2).await;
    let mut holder = pool.client().await.unwrap();
    let held = holder.transaction().await.unwrap();
    let sql = "SELECT 1 FROM jobs WHERE job_id = $1 FOR NO KEY UPDATE";
    held.query_one(sql, &[&ids[0]]).await.unwrap();
    let mut c = pool.client().await.unwrap();
    let tx = c.transaction().await.unwrap();
    let due = outbox::claim_due(&tx, 10).await.unwrap();
    let first: Vec<i64> = due
        .iter()
        .filter(|m| m.job_id == Some(ids[0]))
        .map(|m| m.message_id)
        .collect();
    outbox::settle(&tx, &first).await.unwrap();
    let marked = tokio::time::timeout(Duration::from_secs(5), jobs::mark_queued(&tx, &ids[..1])).await;
    assert_eq!(marked.expect("the relay waited for the holder").unwrap(), 0);
    tx.commit().await.unwrap();
    held.commit().await.unwrap();
    let status = |i: usize| jobs::get(&c, ids[i]);
    assert_eq!(status(0).await.unwrap().status, JobStatus::Pending);
    assert_eq!(jobs::mark_published_stragglers(&c).await.unwrap(), 1);
    assert_eq!(status(0).await.unwrap().status, JobStatus::Queued);
    let events = jobs::events(&c, ids[0]).await.unwrap();
    assert_eq!(events.last().and_then(|e| e.reason.as_deref()), Some("published"));
    assert_eq!(
        status(1).await.unwrap().status,
        JobStatus::Pending,
        "its dispatch is unsent"
    );
    assert_eq!(jobs::mark_published_stragglers(&c).await.unwrap(), 0);
}
