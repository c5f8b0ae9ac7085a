//! Retention's benchmark, not a test: how fast the leader's passes delete a
//! backlog of finished jobs. Starts the test containers, fills a fresh
//! database with `--rows` jobs that finished 31 days ago (one submission
//! event each, inserted with `generate_series`), then runs retention's
//! passes as the leader does (default batches and budget, `--pause-ms`
//! between passes for the reaper's interval) until none is left, and
//! prints jobs and rows deleted per second.
//!
//! ```sh
//! cargo run --release -p integration-tests --bin retention-bench -- --rows 1000000
//! ```
//!
//! To measure submissions and claims with a table that size, see
//! `loadgen --finished-rows`.

use anyhow::Context;
use clap::Parser;
use controller::config::RetentionConfig;
use controller::db::retention::Removed;
use controller::retention::{run_pass, Limits};
use integration_tests::{create_user, database, insert_finished_jobs};
use std::time::{Duration, Instant};

/// Jobs inserted per statement while filling: one statement of a million
/// rows would hold a transaction (and its WAL) for a long time.
const FILL_CHUNK: i64 = 100_000;

#[derive(Parser)]
struct Args {
    /// Finished jobs to fill the table with and delete.
    #[arg(long, default_value_t = 1_000_000)]
    rows: i64,
    /// Pause between passes, in ms (the reaper's default interval).
    #[arg(long, default_value_t = 1000)]
    pause_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (_test_db, pool) = database().await;
    let user = create_user(&pool, "bench", "bench-password", &[]).await.user_id;
    let client = pool.client().await.context("a connection")?;
    let filling = Instant::now();
    let mut left = args.rows;
    while left > 0 {
        let n = left.min(FILL_CHUNK);
        insert_finished_jobs(&client, user, n, 31)
            .await
            .context("filling")?;
        left -= n;
    }
    client.batch_execute("ANALYZE jobs, job_events").await?;
    println!(
        "filled {} finished jobs in {:.1} s",
        args.rows,
        filling.elapsed().as_secs_f64()
    );
    let config = RetentionConfig {
        jobs: Duration::from_secs(30 * 86_400),
        idempotency_keys: Duration::from_secs(24 * 3_600),
        sent_outbox: Duration::from_secs(3_600),
        interval: Duration::from_secs(60),
    };
    let (removed, passes, took) = drain(&pool, &config, Duration::from_millis(args.pause_ms)).await?;
    let secs = took.as_secs_f64();
    println!(
        "deleted {} jobs and {} rows in all in {secs:.1} s over {passes} passes ({} ms apart): \
         {:.0} jobs/s, {:.0} rows/s",
        removed.jobs,
        removed.total(),
        args.pause_ms,
        removed.jobs as f64 / secs,
        removed.total() as f64 / secs
    );
    Ok(())
}

/// Runs passes, `pause` apart, until one leaves nothing behind; answers
/// what they deleted, how many ran, and how long it all took.
async fn drain(
    pool: &controller::db::Database,
    config: &RetentionConfig,
    pause: Duration,
) -> anyhow::Result<(Removed, u32, Duration)> {
    let started = Instant::now();
    let mut removed = Removed::default();
    let mut passes = 0;
    loop {
        let pass = run_pass(pool, config, Limits::DEFAULT)
            .await
            .map_err(|e| anyhow::anyhow!("retention pass: {e:?}"))?;
        passes += 1;
        removed.add(pass.removed);
        if !pass.more {
            return Ok((removed, passes, started.elapsed()));
        }
        tokio::time::sleep(pause).await;
    }
}
