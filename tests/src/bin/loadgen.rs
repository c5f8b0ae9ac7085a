//! Load generator: starts a cluster (containers, an in-process controller,
//! K agent processes of capacity C), submits N jobs through
//! `POST /api/jobs/submit_batch` over H connections (optionally at a target
//! rate), waits for every job to finish, and prints a readable summary and a
//! JSON line: jobs/s submitted and completed, latency percentiles from the
//! database's own timestamps, CPU seconds and peak RSS of the controller and
//! the agents, and an exactly-once check. Bounded in count and in time.
//!
//!   cargo run --release -p integration-tests --bin loadgen -- \
//!       --agent-bin target/release/worker-agent --jobs 10000 --agents 2 --capacity 16

use anyhow::{ensure, Context};
use clap::Parser;
use integration_tests::cluster::Cluster;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Clone)]
struct Args {
    /// The worker-agent binary to start.
    #[arg(long, default_value = "target/release/worker-agent")]
    agent_bin: String,
    /// Jobs to submit.
    #[arg(long, default_value_t = 2000)]
    jobs: usize,
    /// Jobs per batch request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent HTTP submitters.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Target submission rate in jobs/s (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Agents to start.
    #[arg(long, default_value_t = 2)]
    agents: usize,
    /// Jobs each agent runs at once.
    #[arg(long, default_value_t = 8)]
    capacity: u32,
    /// Job length in ms (0: a no-op `/bin/true`).
    #[arg(long, default_value_t = 0)]
    sleep_ms: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
    /// Also print where Postgres spent its time (pg_stat_statements), and
    /// commits and WAL flushes per job.
    #[arg(long)]
    profile: bool,
}

/// Clears Postgres's statement and WAL statistics before a profiled run.
async fn reset_pg_stats(db: &tokio_postgres::Client) -> anyhow::Result<()> {
    db.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
         SELECT pg_stat_statements_reset(); SELECT pg_stat_reset_shared('wal'); SELECT pg_stat_reset();",
    )
    .await?;
    Ok(())
}

/// The statements that took the most time, and commits and WAL flushes per
/// job, since [`reset_pg_stats`].
async fn pg_profile(db: &tokio_postgres::Client, jobs: usize) -> anyhow::Result<Value> {
    let rows = db
        .query(
            "SELECT calls, total_exec_time, mean_exec_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 140)
             FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 15",
            &[],
        )
        .await?;
    let top: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({"calls": r.get::<_, i64>(0), "total_ms": r.get::<_, f64>(1),
                   "mean_ms": r.get::<_, f64>(2), "query": r.get::<_, String>(3)})
        })
        .collect();
    let row = db
        .query_one(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database())::float8,
                    (SELECT wal_sync FROM pg_stat_wal)::float8",
            &[],
        )
        .await?;
    let per_job = |v: f64| v / jobs.max(1) as f64;
    Ok(json!({
        "commits_per_job": per_job(row.get(0)),
        "wal_flushes_per_job": per_job(row.get(1)),
        "top_statements": top,
    }))
}

fn command(sleep_ms: u64) -> Vec<String> {
    if sleep_ms == 0 {
        vec!["/bin/true".into()]
    } else {
        vec!["sleep".into(), format!("{:.3}", sleep_ms as f64 / 1000.0)]
    }
}

/// Submits every batch, spread over `connections` tasks, paced to `rate`.
async fn submit_all(c: &Cluster, args: &Args) -> anyhow::Result<Duration> {
    let batches = args.jobs.div_ceil(args.batch.max(1));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.connections.max(1) {
        let (http, url, token, next, args) = (
            c.app.http.clone(),
            c.app.url("/api/jobs/submit_batch"),
            c.app.admin_token.clone(),
            next.clone(),
            args.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return anyhow::Ok(());
                }
                if args.rate > 0 {
                    let due = Duration::from_secs_f64((b * args.batch) as f64 / args.rate as f64);
                    tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
                }
                let n = args.batch.min(args.jobs - b * args.batch);
                let jobs: Vec<Value> = (0..n)
                    .map(|_| json!({"task_description": "load", "command": command(args.sleep_ms)}))
                    .collect();
                let resp = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"jobs": jobs}))
                    .send()
                    .await?;
                ensure!(
                    resp.status() == 201,
                    "batch refused: {}",
                    resp.text().await.unwrap_or_default()
                );
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed())
}

/// Waits until no job is pending, queued or running (bounded).
async fn wait_all(c: &Cluster, deadline: Instant) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let db = c.app.db.client().await?;
    loop {
        let left: i64 = db
            .query_one(
                "SELECT count(*) FROM jobs WHERE status IN ('pending', 'queued', 'running')",
                &[],
            )
            .await?
            .get(0);
        if left == 0 {
            return Ok(started.elapsed());
        }
        ensure!(
            Instant::now() < deadline,
            "{left} jobs still unfinished at the time limit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Percentiles (ms) of an interval expression over finished jobs.
async fn percentiles(db: &tokio_postgres::Client, expr: &str) -> anyhow::Result<Value> {
    let sql = format!(
        "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY d), max(d) FROM
           (SELECT (extract(epoch FROM {expr}) * 1000)::float8 AS d FROM jobs j
            JOIN job_shards s ON s.job_id = j.job_id AND s.attempt = j.attempts
            WHERE j.finished_at IS NOT NULL) x"
    );
    let row = db.query_one(&sql, &[]).await?;
    let p: Vec<f64> = row.try_get::<_, Option<Vec<f64>>>(0)?.unwrap_or_default();
    let max: Option<f64> = row.try_get(1)?;
    Ok(json!({"p50": p.first(), "p95": p.get(1), "p99": p.get(2), "max": max}))
}

/// CPU seconds and peak RSS (KiB) of a process, from /proc.
fn usage(pid: &str) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks / 100.0, hwm)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        std::path::Path::new(&args.agent_bin).exists(),
        "no agent binary at {} (cargo build --release)",
        args.agent_bin
    );
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let mut c = Cluster::start(&args.agent_bin).await;
    for i in 0..args.agents {
        c.add_agent(&format!("load-{i}"), args.capacity).await;
    }
    let (mut pg, conn) = tokio_postgres::connect(&c.app.test_db.url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    if args.profile {
        reset_pg_stats(&pg).await?;
    }
    let cpu_before = usage("self").0;
    let submit = submit_all(&c, &args).await.context("submitting")?;
    let drain = wait_all(&c, deadline).await?;
    let total = submit + drain;
    let (controller_cpu, controller_rss) = usage("self");
    let agents: Vec<(f64, u64)> = c.agent_pids().iter().map(|p| usage(&p.to_string())).collect();
    let report = report(
        &mut pg,
        &args,
        submit,
        total,
        controller_cpu - cpu_before,
        controller_rss,
        &agents,
    )
    .await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if args.profile {
        println!(
            "{}",
            serde_json::to_string_pretty(&pg_profile(&pg, args.jobs).await?)?
        );
    }
    print_summary(&args, &report);
    Ok(())
}

/// The readable one-line summary after the JSON.
fn print_summary(args: &Args, report: &Value) {
    let lat = &report["latency_ms"];
    println!(
        "{} jobs: submitted {:.0}/s, completed {:.0}/s end to end; submit->start p50 {:.1} ms p99 {:.1} ms; \
         start->finish p50 {:.1} ms p99 {:.1} ms; exactly once: {}",
        args.jobs,
        report["submitted_per_second"].as_f64().unwrap_or(0.0),
        report["completed_per_second"].as_f64().unwrap_or(0.0),
        lat["submit_to_start"]["p50"].as_f64().unwrap_or(f64::NAN),
        lat["submit_to_start"]["p99"].as_f64().unwrap_or(f64::NAN),
        lat["start_to_finish"]["p50"].as_f64().unwrap_or(f64::NAN),
        lat["start_to_finish"]["p99"].as_f64().unwrap_or(f64::NAN),
        report["exactly_once"]
    );
}

async fn report(
    db: &mut tokio_postgres::Client,
    args: &Args,
    submit: Duration,
    total: Duration,
    controller_cpu: f64,
    controller_rss: u64,
    agents: &[(f64, u64)],
) -> anyhow::Result<Value> {
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'completed'), count(*),
               (SELECT count(*) FROM (SELECT job_id FROM job_events WHERE to_status = 'completed'
                                      GROUP BY job_id HAVING count(*) > 1) d)
             FROM jobs",
            &[],
        )
        .await?;
    let (completed, all, duplicated): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    Ok(json!({
        "jobs": args.jobs, "agents": args.agents, "capacity": args.capacity, "sleep_ms": args.sleep_ms,
        "batch": args.batch, "connections": args.connections, "rate": args.rate,
        "submitted_per_second": args.jobs as f64 / submit.as_secs_f64(),
        "completed_per_second": completed as f64 / total.as_secs_f64(),
        "wall_seconds": total.as_secs_f64(),
        "latency_ms": {
            "submit_to_start": percentiles(db, "s.started_at - j.created_at").await?,
            "start_to_finish": percentiles(db, "j.finished_at - s.started_at").await?,
        },
        "controller": {"cpu_seconds": controller_cpu, "peak_rss_kib": controller_rss,
                       "note": "in-process with the load generator and harness"},
        "agents": agents.iter().map(|(cpu, rss)| json!({"cpu_seconds": cpu, "peak_rss_kib": rss})).collect::<Vec<_>>(),
        "exactly_once": completed == all && all == args.jobs as i64 && duplicated == 0,
        "completed": completed, "duplicated_completions": duplicated,
        "not_completed": not_completed(db).await?,
    }))
}

/// The jobs that did not end `completed`, counted by final status and the
/// reason on their last event, so a failed run says why.
async fn not_completed(db: &tokio_postgres::Client) -> anyhow::Result<Value> {
    let rows = db
        .query(
            "SELECT j.status, coalesce(e.reason, ''), count(*) FROM jobs j
             LEFT JOIN LATERAL (SELECT reason FROM job_events WHERE job_id = j.job_id
                                ORDER BY event_id DESC LIMIT 1) e ON true
             WHERE j.status <> 'completed' GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| json!({"status": r.get::<_, String>(0), "reason": r.get::<_, String>(1), "jobs": r.get::<_, i64>(2)}))
        .collect())
}
