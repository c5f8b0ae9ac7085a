//! Rows the database-level tests arrange before they act: users with real
//! password hashes, valid job submissions and worker registrations, and a
//! quota large enough to stay out of the way.

/// Creates a user with a real Argon2id hash of `password`, so login and
/// token tests exercise the same verification as production.
pub async fn create_user(
    db: &controller::db::Database,
    username: &str,
    password: &str,
    scopes: &[&str],
) -> controller::models::User {
    let hash = controller::auth::password::hash(password.to_owned())
        .await
        .unwrap_or_else(|e| panic!("hashing: {e}"));
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    let client = db.client().await.unwrap_or_else(|e| panic!("client: {e}"));
    controller::db::users::create(&client, username, &hash, &scopes)
        .await
        .unwrap_or_else(|e| panic!("creating user: {e}"))
}

/// A minimal valid submission, for tests that need a job but not a
/// particular one.
pub fn new_job(description: &str) -> controller::models::NewJob {
    controller::models::NewJob {
        task_description: description.to_owned(),
        required_workers: 1,
        command: None,
        priority: 5,
        timeout_seconds: None,
        max_retries: 0,
        idempotency_key: None,
        labels: Default::default(),
        limits: Default::default(),
        depends_on: Vec::new(),
        run_on_failure: false,
        pool: "default".to_owned(),
        selector: Default::default(),
    }
}

/// Generous limits for tests that are not about quotas.
pub const BIG_QUOTA: controller::models::Quota = controller::models::Quota {
    max_workers: 64,
    max_concurrent_jobs: 10_000,
    max_queued_jobs: 10_000,
};

/// Submits `new` for `user` in its own transaction and commits, as the
/// submit handler does.
pub async fn submit(
    db: &controller::db::Database,
    user: uuid::Uuid,
    new: &controller::models::NewJob,
    quota: controller::models::Quota,
) -> Result<controller::db::jobs::Submitted, controller::db::DbError> {
    let mut client = db.client().await?;
    let tx = client.transaction().await?;
    let submitted = controller::db::jobs::submit(&tx, user, new, quota).await?;
    tx.commit().await?;
    Ok(submitted)
}

/// A worker description for registration, as an agent would send it.
pub fn new_worker(id: &str) -> controller::models::NewWorker {
    controller::models::NewWorker {
        worker_id: id.to_owned(),
        hostname: format!("{id}.local"),
        capacity: 4,
        labels: Default::default(),
        version: "test".to_owned(),
        resources: Default::default(),
        isolation: None,
        pools: vec!["default".to_owned()],
    }
}

/// Inserts `n` jobs of `user` that completed `days_ago` days ago, each
/// with its submission event and a time-ordered id (a UUIDv7 of its
/// creation time, as the controller makes), in one statement (`generate_series`), for
/// retention's tests and its benchmark: far faster than running jobs. The
/// client may be any connection to the database (pooled or not).
pub async fn insert_finished_jobs(
    client: &tokio_postgres::Client,
    user: uuid::Uuid,
    n: i64,
    days_ago: i32,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "WITH j AS (
                 INSERT INTO jobs (job_id, status, task_description, submitted_by,
                                   created_at, started_at, finished_at, exit_code)
                 SELECT encode(set_byte(g.b, 6, (get_byte(g.b, 6) & 15) | 112), 'hex')::uuid,
                        'completed', 'finished long ago', $1,
                        t.created, t.created, now() - make_interval(days => $3), 0
                 FROM (SELECT now() - make_interval(days => $3 + 1) AS created) t,
                      LATERAL (SELECT overlay(uuid_send(gen_random_uuid()) PLACING
                                   substring(int8send((extract(epoch FROM t.created) * 1000)::bigint) FROM 3)
                                   FROM 1 FOR 6) AS b
                               FROM generate_series(1, $2::bigint)) g
                 RETURNING job_id)
             INSERT INTO job_events (job_id, from_status, to_status, reason)
             SELECT job_id, NULL, 'pending', 'submitted' FROM j",
            &[&user, &n, &days_ago],
        )
        .await
}
