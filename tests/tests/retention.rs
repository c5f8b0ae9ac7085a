//! Retention against real Postgres: one pass (`controller::retention::run_pass`,
//! what the leader runs) deletes finished jobs past their age with every row
//! that names them, idempotency keys past their window and old sent outbox
//! rows, old runs of schedules, jobs' output with their jobs, in batches, and nothing else: no unfinished job whatever its age,
//! no recent one, no unsent outbox row, nothing another transaction holds.
//! And the rows every job leaves dead are reclaimed by autovacuum within
//! seconds of a burst, on Postgres as a deployment runs it.

use controller::config::RetentionConfig;
use controller::db::retention::Removed;
use controller::db::{self, jobs, workers};
use controller::retention::{run_pass, Limits, Pass};
use integration_tests::{
    create_user, database, insert_finished_jobs, new_job, new_worker, pg_client, submit, DeploymentPostgres,
    TestDb, BIG_QUOTA,
};
use orchestrator_shared::JobStatus;
use std::time::Duration;
use uuid::Uuid;

const HOUR: u64 = 3_600;
const DAY: u64 = 24 * HOUR;

/// Ages for the test: 30 days for jobs (the default), and windows for keys
/// and sent outbox rows only when given (0 keeps them).
fn ages(keys_hours: u64, outbox_minutes: u64, jobs_days: u64) -> RetentionConfig {
    RetentionConfig {
        jobs: Duration::from_secs(jobs_days * DAY),
        idempotency_keys: Duration::from_secs(keys_hours * HOUR),
        sent_outbox: Duration::from_secs(outbox_minutes * 60),
        interval: Duration::from_secs(60),
    }
}

/// Batches of `batch` rows and time enough to finish.
fn limits(batch: i64) -> Limits {
    Limits {
        batch,
        budget: Duration::from_secs(120),
    }
}

async fn pass(pool: &db::Database, config: &RetentionConfig, limits: Limits) -> Pass {
    run_pass(pool, config, limits)
        .await
        .unwrap_or_else(|e| panic!("retention pass: {e:?}"))
}

fn meta(reason: &str, worker: Option<&str>) -> jobs::EventMeta {
    jobs::EventMeta {
        reason: Some(reason.to_owned()),
        worker_id: worker.map(str::to_owned),
        ..Default::default()
    }
}

/// Submits a two-shard job (with idempotency key `key`) and takes it to
/// `to`: published (its outbox rows sent), then, unless `to` is `Pending`
/// or `Queued`, running with two shard rows, then `to`.
async fn job_in(pool: &db::Database, user: Uuid, to: JobStatus, key: Option<&str>) -> Uuid {
    let mut new = new_job(&format!("a job to be {to}"));
    new.required_workers = 2;
    new.idempotency_key = key.map(str::to_owned);
    let id = submit(pool, user, &new, BIG_QUOTA).await.unwrap().job.job_id;
    let c = pool.client().await.unwrap();
    if to == JobStatus::Pending {
        return id;
    }
    c.execute("UPDATE outbox SET sent_at = now() WHERE job_id = $1", &[&id])
        .await
        .unwrap();
    let step = |from, next, why| {
        let c = &c;
        async move {
            jobs::transition(c, id, from, next, &meta(why, None))
                .await
                .unwrap()
        }
    };
    step(JobStatus::Pending, JobStatus::Queued, "published").await;
    if to == JobStatus::Queued {
        return id;
    }
    jobs::transition(
        &c,
        id,
        JobStatus::Queued,
        JobStatus::Running,
        &meta("started", Some("w-r")),
    )
    .await
    .unwrap();
    let shard_status = if to == JobStatus::Running {
        "running"
    } else {
        "completed"
    };
    c.execute(
        "INSERT INTO job_shards (job_id, shard_index, attempt, status) VALUES ($1, 0, 1, $2), ($1, 1, 1, $2)",
        &[&id, &shard_status],
    )
    .await
    .unwrap();
    if to != JobStatus::Running {
        step(JobStatus::Running, to, "ended").await;
    }
    id
}

/// Moves job `id`'s times `days` days into the past (its finish, if any,
/// exactly `days` days ago), as if it had run then.
async fn age_job(pool: &db::Database, id: Uuid, days: i32) {
    let c = pool.client().await.unwrap();
    c.execute(
        "UPDATE jobs SET created_at = now() - make_interval(days => $2 + 1),
                queued_at = CASE WHEN queued_at IS NULL THEN NULL ELSE now() - make_interval(days => $2 + 1) END,
                started_at = CASE WHEN started_at IS NULL THEN NULL ELSE now() - make_interval(days => $2 + 1) END,
                finished_at = CASE WHEN finished_at IS NULL THEN NULL ELSE now() - make_interval(days => $2) END
         WHERE job_id = $1",
        &[&id, &days],
    )
    .await
    .unwrap();
}

/// The rows naming job `id`: the job, its events, shards, outbox rows
/// and idempotency keys.
async fn rows_of(pool: &db::Database, id: Uuid) -> [u64; 5] {
    let c = pool.client().await.unwrap();
    let mut out = [0; 5];
    for (i, table) in ["jobs", "job_events", "job_shards", "outbox", "idempotency_keys"]
        .iter()
        .enumerate()
    {
        let sql = format!("SELECT count(*) FROM {table} WHERE job_id = $1");
        let n: i64 = c.query_one(&sql, &[&id]).await.unwrap().get(0);
        out[i] = n.unsigned_abs();
    }
    out
}

/// What deleting `ids` whole would remove, by table.
async fn expected_removal(pool: &db::Database, ids: &[Uuid]) -> Removed {
    let mut removed = Removed::default();
    for id in ids {
        let [jobs, job_events, job_shards, outbox, idempotency_keys] = rows_of(pool, *id).await;
        removed.add(Removed {
            jobs,
            job_events,
            job_shards,
            outbox,
            idempotency_keys,
            allocations: 0,
            schedule_runs: 0,
        });
    }
    removed
}

/// Jobs of every kind: `(doomed, kept)`. Doomed: completed (with a key),
/// failed, cancelled and timed out 31 days ago. Kept: completed 29 days
/// ago and just now; pending, queued and running for 400 days; completed
/// 31 days ago but with an outbox row the relay parked unsent.
async fn jobs_of_every_kind(pool: &db::Database, user: Uuid) -> (Vec<Uuid>, Vec<Uuid>) {
    let c = pool.client().await.unwrap();
    workers::register(&c, &new_worker("w-r")).await.unwrap();
    let mut doomed = vec![job_in(pool, user, JobStatus::Completed, Some("old-key")).await];
    for to in [JobStatus::Failed, JobStatus::Cancelled, JobStatus::TimedOut] {
        doomed.push(job_in(pool, user, to, None).await);
    }
    for id in &doomed {
        age_job(pool, *id, 31).await;
    }
    let mut kept = Vec::new();
    for (to, days) in [
        (JobStatus::Completed, 29),
        (JobStatus::Completed, 0),
        (JobStatus::Pending, 400),
        (JobStatus::Queued, 400),
        (JobStatus::Running, 400),
        (JobStatus::Completed, 31),
    ] {
        let id = job_in(pool, user, to, None).await;
        age_job(pool, id, days).await;
        kept.push(id);
    }
    let parked = kept[kept.len() - 1];
    c.execute(
        "UPDATE outbox SET sent_at = NULL, available_at = 'infinity'
         WHERE message_id = (SELECT min(message_id) FROM outbox WHERE job_id = $1)",
        &[&parked],
    )
    .await
    .unwrap();
    (doomed, kept)
}

/// Allocations of `user`: an active one naming `job`, one released 31
/// days ago and one released now. Answers their ids in that order.
async fn allocations(pool: &db::Database, user: Uuid, job: Uuid) -> [Uuid; 3] {
    let ids = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let c = pool.client().await.unwrap();
    c.execute(
        "INSERT INTO allocations (allocation_id, user_id, job_id, workers, expires_at)
         VALUES ($1, $2, $3, 1, now() + interval '1 day')",
        &[&ids[0], &user, &job],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO allocations (allocation_id, user_id, workers, status, created_at, released_at)
         VALUES ($1, $3, 1, 'released', now() - interval '32 days', now() - interval '31 days'),
                ($2, $3, 1, 'expired', now() - interval '2 days', now())",
        &[&ids[1], &ids[2], &user],
    )
    .await
    .unwrap();
    ids
}

#[tokio::test]
async fn a_pass_deletes_old_finished_jobs_with_their_rows_and_keeps_everything_else() {
    let (_t, pool) = database().await;
    let user = create_user(&pool, "rita", "pw", &["jobs:write"]).await.user_id;
    let (doomed, kept) = jobs_of_every_kind(&pool, user).await;
    let [linked, old_ended, new_ended] = allocations(&pool, user, doomed[0]).await;
    let mut expected = expected_removal(&pool, &doomed).await;
    expected.allocations = 1;
    assert_eq!(expected.idempotency_keys, 1, "the completed job's key");
    let kept_before: Vec<[u64; 5]> =
        futures::future::join_all(kept.iter().map(|id| rows_of(&pool, *id))).await;

    let done = pass(&pool, &ages(0, 0, 30), limits(500)).await;
    assert_eq!(done.removed, expected);
    assert!(!done.more);
    for id in &doomed {
        assert_eq!(
            rows_of(&pool, *id).await,
            [0; 5],
            "job {id} and its rows are gone"
        );
    }
    for (id, before) in kept.iter().zip(kept_before) {
        assert_eq!(rows_of(&pool, *id).await, before, "job {id} is untouched");
    }
    let c = pool.client().await.unwrap();
    let alloc = |id: Uuid| {
        let c = &c;
        async move {
            c.query_opt("SELECT job_id FROM allocations WHERE allocation_id = $1", &[&id])
                .await
                .unwrap()
                .map(|r| r.get::<_, Option<Uuid>>(0))
        }
    };
    assert_eq!(alloc(linked).await, Some(None), "kept, no longer naming the job");
    assert_eq!(alloc(old_ended).await, None, "ended 31 days ago: deleted");
    assert_eq!(alloc(new_ended).await, Some(None), "ended now: kept");
    let again = pass(&pool, &ages(0, 0, 30), limits(500)).await;
    assert_eq!(again.removed, Removed::default(), "nothing left to delete");
}

/// Submits a pending job with idempotency key `key` whose key was stored
/// `hours_ago` hours ago; its one outbox row sent `sent_minutes_ago`.
async fn keyed_job(
    pool: &db::Database,
    user: Uuid,
    key: &str,
    hours_ago: f64,
    sent_minutes_ago: f64,
) -> Uuid {
    let mut new = new_job("keyed");
    new.idempotency_key = Some(key.to_owned());
    let id = submit(pool, user, &new, BIG_QUOTA).await.unwrap().job.job_id;
    let c = pool.client().await.unwrap();
    c.execute(
        "UPDATE idempotency_keys SET created_at = now() - make_interval(secs => $2::float8 * 3600) WHERE job_id = $1",
        &[&id, &hours_ago],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE outbox SET sent_at = now() - make_interval(secs => $2::float8 * 60) WHERE job_id = $1",
        &[&id, &sent_minutes_ago],
    )
    .await
    .unwrap();
    id
}

/// Outbox rows that must survive: one unsent for three days, one parked.
async fn unsent_rows(pool: &db::Database, user: Uuid) -> Vec<i64> {
    let waiting = submit(pool, user, &new_job("unsent"), BIG_QUOTA)
        .await
        .unwrap()
        .job
        .job_id;
    let c = pool.client().await.unwrap();
    c.execute(
        "UPDATE outbox SET created_at = now() - interval '3 days', available_at = now() + interval '1 hour'
         WHERE job_id = $1",
        &[&waiting],
    )
    .await
    .unwrap();
    let parked = c
        .query_one(
            "INSERT INTO outbox (exchange, routing_key, payload, created_at, available_at)
             VALUES ('x', 'y', '{}', now() - interval '3 days', 'infinity') RETURNING message_id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let rows = c
        .query("SELECT message_id FROM outbox WHERE job_id = $1", &[&waiting])
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).chain([parked]).collect()
}

#[tokio::test]
async fn keys_past_their_window_are_forgotten_and_old_sent_outbox_rows_go() {
    let (_t, pool) = database().await;
    let user = create_user(&pool, "kim", "pw", &["jobs:write"]).await.user_id;
    let old = keyed_job(&pool, user, "old-key", 25.0, 120.0).await;
    let recent = keyed_job(&pool, user, "new-key", 23.0, 10.0).await;
    let unsent = unsent_rows(&pool, user).await;
    let c = pool.client().await.unwrap();
    c.execute(
        "INSERT INTO outbox (exchange, routing_key, payload, sent_at) VALUES ('x', 'y', '{}', now() - interval '2 hours')",
        &[],
    )
    .await
    .unwrap();

    let done = pass(&pool, &ages(24, 60, 0), limits(500)).await;
    let expected = Removed {
        idempotency_keys: 1,
        outbox: 2,
        ..Removed::default()
    };
    assert_eq!(
        done.removed, expected,
        "the old key, the old job's sent row and the probe-like row"
    );
    assert_eq!(
        rows_of(&pool, old).await,
        [1, 1, 0, 0, 0],
        "the job stays, its key and sent row go"
    );
    assert_eq!(rows_of(&pool, recent).await, [1, 1, 0, 1, 1]);
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM outbox WHERE message_id = ANY($1)",
            &[&unsent],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 2, "unsent rows are never deleted");

    let mut again = new_job("keyed");
    again.idempotency_key = Some("old-key".into());
    let resubmitted = submit(&pool, user, &again, BIG_QUOTA).await.unwrap();
    assert!(resubmitted.created, "a forgotten key makes a new job");
    assert_ne!(resubmitted.job.job_id, old);
    again.idempotency_key = Some("new-key".into());
    let replayed = submit(&pool, user, &again, BIG_QUOTA).await.unwrap();
    assert!(!replayed.created);
    assert_eq!(replayed.job.job_id, recent, "a remembered key replays its job");
}

async fn job_count(pool: &db::Database) -> i64 {
    let c = pool.client().await.unwrap();
    c.query_one("SELECT count(*) FROM jobs", &[])
        .await
        .unwrap()
        .get(0)
}

/// A fresh database whose one user has `n` jobs that finished 31 days ago.
async fn old_jobs(n: i64) -> (TestDb, db::Database, Uuid) {
    let (test_db, pool) = database().await;
    let user = create_user(&pool, "bob", "pw", &["jobs:write"]).await.user_id;
    let c = pool.client().await.unwrap();
    insert_finished_jobs(&c, user, n, 31).await.unwrap();
    (test_db, pool, user)
}

#[tokio::test]
async fn a_backlog_larger_than_a_batch_goes_in_batches_and_a_pass_stops_at_its_budget() {
    let (_t, pool, user) = old_jobs(120).await;
    let c = pool.client().await.unwrap();
    let done = pass(&pool, &ages(0, 0, 30), limits(50)).await;
    assert_eq!((done.removed.jobs, done.removed.job_events), (120, 120));
    assert!(done.batches >= 3, "50 + 50 + 20 jobs: {done:?}");
    assert!(!done.more);
    assert_eq!(job_count(&pool).await, 0);

    insert_finished_jobs(&c, user, 120, 31).await.unwrap();
    let no_time = Limits {
        batch: 50,
        budget: Duration::ZERO,
    };
    let first = pass(&pool, &ages(0, 0, 30), no_time).await;
    assert_eq!(first.removed.jobs, 50, "one round, then the budget is spent");
    assert!(first.more, "and the pass says rows are left");
    let rest = pass(&pool, &ages(0, 0, 30), limits(50)).await;
    assert_eq!(rest.removed.jobs, 70);
    assert_eq!(job_count(&pool).await, 0);
}

#[tokio::test]
async fn a_job_another_transaction_holds_is_skipped_not_waited_for() {
    let (_t, pool, _) = old_jobs(3).await;
    let mut holder = pool.client().await.unwrap();
    let tx = holder.transaction().await.unwrap();
    let held: Uuid = tx
        .query_one("SELECT job_id FROM jobs LIMIT 1 FOR NO KEY UPDATE", &[])
        .await
        .unwrap()
        .get(0);
    let done = tokio::time::timeout(
        Duration::from_secs(30),
        run_pass(&pool, &ages(0, 0, 30), limits(500)),
    )
    .await
    .expect("the pass does not wait for the held row")
    .unwrap();
    assert_eq!(done.removed.jobs, 2);
    assert_eq!(rows_of(&pool, held).await[0], 1, "the held job stays");
    tx.commit().await.unwrap();
    let later = pass(&pool, &ages(0, 0, 30), limits(500)).await;
    assert_eq!(later.removed.jobs, 1, "and goes at the next pass");
}

#[tokio::test]
async fn runs_of_schedules_go_as_old_as_finished_jobs_and_recent_ones_stay() {
    let (_t, pool) = database().await;
    let user = create_user(&pool, "sam", "pw", &["jobs:write"]).await.user_id;
    let c = pool.client().await.unwrap();
    let schedule = Uuid::new_v4();
    c.execute(
        "INSERT INTO schedules (schedule_id, name, cron, timezone, template, overlap, owner, last_tick)
         VALUES ($1, 's', '* * * * *', 'UTC', '{\"task_description\": \"x\"}', 'allow', $2, now())",
        &[&schedule, &user],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO schedule_runs (schedule_id, fire_time, outcome, recorded_at) VALUES
             ($1, now() - interval '31 days', 'missed', now() - interval '31 days'),
             ($1, now() - interval '29 days', 'missed', now() - interval '29 days')",
        &[&schedule],
    )
    .await
    .unwrap();
    let done = pass(&pool, &ages(0, 0, 30), limits(500)).await;
    assert_eq!(done.removed.schedule_runs, 1, "{:?}", done.removed);
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM schedule_runs WHERE schedule_id = $1",
            &[&schedule],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1, "the run within the age stays");
}

/// A job's stored output goes with the job: a pass that deletes an old
/// finished job leaves none of its pieces, and a recent job keeps its own.
#[tokio::test]
async fn output_is_deleted_with_its_job() {
    let (_t, pool) = database().await;
    let user = create_user(&pool, "otto", "pw", &["jobs:write"]).await.user_id;
    let c = pool.client().await.unwrap();
    workers::register(&c, &new_worker("w-r")).await.unwrap();
    let old = job_in(&pool, user, JobStatus::Completed, None).await;
    let recent = job_in(&pool, user, JobStatus::Completed, None).await;
    age_job(&pool, old, 31).await;
    for id in [old, recent] {
        c.execute(
            "INSERT INTO job_output (job_id, shard_index, attempt, seq, stream, data)
             VALUES ($1, 0, 1, 0, 'stdout', 'printed'), ($1, 1, 1, 0, 'stderr', 'warned')",
            &[&id],
        )
        .await
        .unwrap();
    }
    let done = pass(&pool, &ages(0, 0, 30), limits(500)).await;
    assert_eq!(done.removed.jobs, 1);
    let pieces = |id: Uuid| {
        let c = &c;
        async move {
            c.query_one("SELECT count(*) FROM job_output WHERE job_id = $1", &[&id])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(pieces(old).await, 0, "the old job's output is gone with it");
    assert_eq!(pieces(recent).await, 2, "the recent job's output stays");
}

/// Rows in the jobs table of the autovacuum test, and rows each of its
/// bursts updates: 10 % of the table, over the 2 % (and 1,000) that
/// migration V20 sets and under Postgres's default 20 %.
const TABLE_ROWS: i64 = 20_000;
/// See [`TABLE_ROWS`].
const BURST_ROWS: i64 = 2_000;
/// How long a burst's dead rows may wait for autovacuum: a few of the
/// image's 5 s naptimes. Postgres's default naptime, 60 s, does not make it.
const VACUUMED_WITHIN: Duration = Duration::from_secs(20);

/// Autovacuum's vacuum and analyse passes over `jobs` so far, and its
/// dead rows, once it has made `want` of them (vacuums, analyses) or
/// [`VACUUMED_WITHIN`] has passed. Both, because a worker analyses after it vacuums, and an
/// analyse still running when the next burst lands would reset the dead
/// rows Postgres counts to those of its sample, taken before the burst.
async fn autovacuums_of_jobs(db: &tokio_postgres::Client, want: [i64; 2]) -> [i64; 3] {
    let deadline = std::time::Instant::now() + VACUUMED_WITHIN;
    loop {
        let row = db
            .query_one(
                "SELECT autovacuum_count, autoanalyze_count, n_dead_tup FROM pg_stat_user_tables
                 WHERE relname = 'jobs'",
                &[],
            )
            .await
            .unwrap();
        let seen = [row.get(0), row.get(1), row.get(2)];
        if seen[0] >= want[0] && seen[1] >= want[1] || std::time::Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Dead rows left for a minute at thousands of jobs a second slowed the
/// relay's delete of sent messages a hundredfold: a deployment's Postgres
/// (the image's settings, the migrations' thresholds) must reclaim each
/// burst within seconds, and again after the next one.
#[tokio::test]
async fn a_deployments_postgres_vacuums_the_jobs_table_within_seconds_of_each_burst() {
    let server = DeploymentPostgres::start()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    pg_client(&server.url("postgres"))
        .await
        .unwrap()
        .batch_execute("CREATE DATABASE orchestrator")
        .await
        .unwrap();
    let url = server.url("orchestrator");
    db::migrate(&url).await.unwrap();
    let pool = db::Database::connect(&url, 2, Duration::from_secs(10)).unwrap();
    let user = create_user(&pool, "bob", "pw", &["jobs:write"]).await.user_id;
    let writer = pg_client(&url).await.unwrap();
    insert_finished_jobs(&writer, user, TABLE_ROWS, 1).await.unwrap();
    // Flushed before the vacuum, so the inserts do not count as new rows
    // since it (which would set off a vacuum of their own).
    writer
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    writer.batch_execute("VACUUM (ANALYZE) jobs").await.unwrap();
    let reader = pg_client(&url).await.unwrap();
    let [vacuums, analyses, _] = autovacuums_of_jobs(&reader, [0, 0]).await;
    for burst in 1..=2 {
        writer
            .execute(
                "UPDATE jobs SET exit_code = 1 WHERE job_id IN
                   (SELECT job_id FROM jobs ORDER BY job_id OFFSET $1 LIMIT $2)",
                &[&((burst - 1) * BURST_ROWS), &BURST_ROWS],
            )
            .await
            .unwrap();
        writer
            .batch_execute("SELECT pg_stat_force_next_flush()")
            .await
            .unwrap();
        let want = [vacuums + burst, analyses + burst];
        let [v, a, dead] = autovacuums_of_jobs(&reader, want).await;
        assert!(
            v >= want[0] && a >= want[1],
            "burst {burst}: {BURST_ROWS} of {TABLE_ROWS} rows updated, still {dead} dead rows, \
             {v} autovacuum and {a} autoanalyze passes (want {want:?}) after {VACUUMED_WITHIN:?}"
        );
    }
}
