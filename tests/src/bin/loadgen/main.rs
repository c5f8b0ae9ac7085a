//! Load generator: starts a cluster (containers, an in-process controller,
//! K agent processes of capacity C), or uses one given by `--url`, submits
//! N jobs through
//! `POST /api/jobs/submit_batch` over H connections (optionally at a target
//! rate), waits for every job to finish, and prints a readable summary and a
//! JSON line: jobs/s submitted and completed, latency percentiles from the
//! database's own timestamps, CPU seconds and peak RSS of the controller and
//! the agents, the box's CPU per job attributed to each part (controller,
//! agents, what they ran, Postgres, RabbitMQ, docker-proxy, the rest: see
//! `cpu`), and an exactly-once check. Bounded in count and in time.
//!
//!   cargo run --release -p integration-tests --bin loadgen -- \
//!       --agent-bin target/release/worker-agent --jobs 10000 --agents 2 --capacity 16
//!
//! With `--tls` the started controller serves HTTPS with a throw-away CA's
//! certificate, which the agents and the load generator trust.
//!
//! Against a running cluster (e.g. `deploy/up.sh`; its Postgres must be
//! reachable for the timestamps), with the processes' ids for CPU and RSS:
//!
//!   ORCH_PASSWORD=… cargo run --release -p integration-tests --bin loadgen -- \
//!       --url http://127.0.0.1:8000 --database-url postgres://… --jobs 10000
//!
//! Every job carries the label `loadgen-run=<uuid>`, and every figure counts
//! only this run's jobs.

mod cpu;
mod prune;
mod rss;

use anyhow::{ensure, Context};
use clap::Parser;
use integration_tests::cluster::Cluster;
use integration_tests::TestTls;
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
    /// Serve the started controller's API over HTTPS, with a certificate of
    /// a throw-away CA that the agents trust (`--ca-file`).
    #[arg(long, conflicts_with = "url")]
    tls: bool,
    /// Run the started cluster's controller as a process of its own, from
    /// this binary (e.g. target/release/controller), so that its CPU and
    /// RSS are its own and not shared with the load generator's.
    #[arg(long, conflicts_with_all = ["url", "tls"])]
    controller_bin: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
    /// Also print where Postgres spent its time (pg_stat_statements), and
    /// commits and WAL flushes per job.
    #[arg(long)]
    profile: bool,
    /// Load this running controller instead of starting a cluster (its own
    /// agents run the jobs; --agents, --capacity and --agent-bin are unused).
    #[arg(long, requires = "database_url")]
    url: Option<String>,
    /// With --url: PEM file of a private CA that signed its certificate.
    #[arg(long, requires = "url")]
    ca_file: Option<std::path::PathBuf>,
    /// With --url: its Postgres, for the database's own timestamps.
    #[arg(long, env = "ORCH_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// With --url: a token with `jobs:write`; without one, --username logs
    /// in with the password in ORCH_PASSWORD.
    #[arg(long, env = "ORCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// With --url and no token: the user to log in as.
    #[arg(long, default_value = "admin")]
    username: String,
    /// With --url: the controller's process id on this host (CPU, RSS).
    #[arg(long)]
    controller_pid: Option<u32>,
    /// With --url: the agents' process ids on this host (CPU, RSS).
    #[arg(long, value_delimiter = ',')]
    agent_pids: Vec<u32>,
    /// Before submitting, fill the jobs table with this many jobs that
    /// finished a day ago (kept by retention), to measure submissions and
    /// claims against a large table.
    #[arg(long, default_value_t = 0)]
    finished_rows: i64,
    /// Before submitting, fill the jobs table with this many jobs that
    /// finished 31 days ago, past the default retention of 30 days, and
    /// report how fast the leader prunes them while the load runs and
    /// after it (`prune`).
    #[arg(long, default_value_t = 0)]
    aged_rows: i64,
}

/// Where the load goes: the cluster this run started, or one given by URL.
struct Target {
    http: reqwest::Client,
    base_url: String,
    token: String,
    db_url: String,
    /// The process counted as the controller (`self` when in-process).
    controller: Option<String>,
    agents: Vec<u32>,
    /// A started cluster (containers, agents), alive for the whole run.
    _cluster: Option<Cluster>,
    /// With `--tls`: the CA and certificate files, removed when dropped
    /// (after the cluster).
    _tls: Option<TestTls>,
}

impl Target {
    /// Starts a cluster with `--agents` agents, its controller's tasks on
    /// the `controller` runtime, or connects to `--url`.
    async fn new(args: &Args, controller: &tokio::runtime::Handle) -> anyhow::Result<Target> {
        match (&args.url, &args.database_url) {
            (Some(url), Some(db_url)) => Target::connect(args, url, db_url).await,
            _ => {
                let args = args.clone();
                controller
                    .spawn(async move { Target::start(&args).await })
                    .await
                    .context("starting the cluster")?
            }
        }
    }

    /// The running controller at `url`, whose Postgres is at `db_url`.
    async fn connect(args: &Args, url: &str, db_url: &str) -> anyhow::Result<Target> {
        let mut http = reqwest::Client::builder();
        if let Some(path) = &args.ca_file {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            http = http.tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem)?);
        }
        let http = http.build()?;
        let token = match &args.token {
            Some(token) => token.clone(),
            None => login(&http, url, &args.username).await?,
        };
        Ok(Target {
            http,
            base_url: url.trim_end_matches('/').to_owned(),
            token,
            db_url: db_url.to_owned(),
            controller: args.controller_pid.map(|p| p.to_string()),
            agents: args.agent_pids.clone(),
            _cluster: None,
            _tls: None,
        })
    }

    /// A cluster of its own: containers, an in-process controller (over
    /// HTTPS with `--tls`) and `--agents` agent processes.
    async fn start(args: &Args) -> anyhow::Result<Target> {
        ensure!(
            std::path::Path::new(&args.agent_bin).exists(),
            "no agent binary at {} (cargo build --release)",
            args.agent_bin
        );
        let tls = args.tls.then(|| TestTls::new(&["localhost"])).transpose()?;
        let mut c = match (&tls, &args.controller_bin) {
            (Some(tls), _) => Cluster::start_https(&args.agent_bin, tls).await,
            (None, Some(bin)) => Cluster::start_process(&args.agent_bin, bin).await,
            (None, None) => Cluster::start(&args.agent_bin).await,
        };
        for i in 0..args.agents {
            c.add_agent(&format!("load-{i}"), args.capacity).await;
        }
        // The run measures a deployment: the image's autovacuum, not the
        // test harness's slower one.
        integration_tests::set_naptime(&integration_tests::infra().postgres_url("postgres"), None).await?;
        Ok(Target {
            http: c.app.http.clone(),
            base_url: c.app.base_url.clone(),
            token: c.app.admin_token.clone(),
            db_url: c.app.test_db.url.clone(),
            controller: Some(
                c.app
                    .process_id()
                    .map_or_else(|| "self".into(), |p| p.to_string()),
            ),
            agents: c.agent_pids(),
            _cluster: Some(c),
            _tls: tls,
        })
    }
}

/// A token for `username`, whose password is in ORCH_PASSWORD.
async fn login(http: &reqwest::Client, url: &str, username: &str) -> anyhow::Result<String> {
    let password =
        std::env::var("ORCH_PASSWORD").context("--url needs --token, ORCH_TOKEN or ORCH_PASSWORD")?;
    let resp = http
        .post(format!("{}/api/auth/login", url.trim_end_matches('/')))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await?;
    ensure!(resp.status() == 200, "login refused: {}", resp.status());
    let body: Value = resp.json().await?;
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("login answer without access_token")
}

/// Inserts `n` jobs of the oldest user that finished `days_ago` days
/// ago, in chunks.
async fn prefill(db: &tokio_postgres::Client, n: i64, days_ago: i32) -> anyhow::Result<()> {
    if n <= 0 {
        return Ok(());
    }
    let started = Instant::now();
    let user: uuid::Uuid = db
        .query_one("SELECT user_id FROM users ORDER BY created_at LIMIT 1", &[])
        .await?
        .get(0);
    let mut left = n;
    while left > 0 {
        let chunk = left.min(100_000);
        integration_tests::insert_finished_jobs(db, user, chunk, days_ago).await?;
        left -= chunk;
    }
    eprintln!(
        "filled {n} jobs finished {days_ago} days ago in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// After a fill, brings the tables to the state a long-lived deployment's
/// are in: vacuumed (hint bits and visibility map set, so the run does not
/// pay for the fill's first reads or race autovacuum), analysed, and
/// checkpointed (so the fill's own WAL does not set off a checkpoint, and
/// its full-page images, in the middle of the measured run).
async fn settle(db: &tokio_postgres::Client) -> anyhow::Result<()> {
    let started = Instant::now();
    for table in ["jobs", "job_events"] {
        db.batch_execute(&format!("VACUUM (ANALYZE) {table}")).await?;
    }
    db.batch_execute("CHECKPOINT").await?;
    eprintln!(
        "vacuumed, analysed and checkpointed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Clears Postgres's statement and WAL statistics before a profiled run.
async fn reset_pg_stats(db: &tokio_postgres::Client) -> anyhow::Result<String> {
    db.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; CREATE EXTENSION IF NOT EXISTS pg_walinspect;
         SELECT pg_stat_statements_reset(); SELECT pg_stat_reset_shared('wal'); SELECT pg_stat_reset();",
    )
    .await?;
    let lsn = db.query_one("SELECT pg_current_wal_lsn()::text", &[]).await?;
    Ok(lsn.try_get(0)?)
}

/// The statements that took the most time, commits and WAL flushes per
/// job, and the WAL written per job by record type, since
/// [`reset_pg_stats`] (which returned the WAL position `since`).
async fn pg_profile(db: &tokio_postgres::Client, jobs: usize, since: &str) -> anyhow::Result<Value> {
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
                    (SELECT wal_sync FROM pg_stat_wal)::float8,
                    (SELECT wal_bytes FROM pg_stat_wal)::float8,
                    (SELECT wal_records FROM pg_stat_wal)::float8",
            &[],
        )
        .await?;
    let per_job = |v: f64| v / jobs.max(1) as f64;
    Ok(json!({
        "commits_per_job": per_job(row.get(0)),
        "wal_flushes_per_job": per_job(row.get(1)),
        "wal_bytes_per_job": per_job(row.get(2)),
        "wal_records_per_job": per_job(row.get(3)),
        "rows_written_per_job": rows_written(db, jobs).await?,
        "wal_records_by_type_per_job": wal_by_type(db, jobs, since).await?,
        "top_statements": top,
    }))
}

/// The WAL records written since the position `since`, per job, by
/// resource manager and record type (`pg_walinspect`): which heap, index,
/// lock and commit records a job costs, with their bytes (full-page images
/// included). Every database on the server counts; a run has it alone.
/// It reads up to the WAL flushed so far: `pg_walinspect` refuses an end
/// past it (the insert position, when records not yet flushed were
/// waiting, failed a 30,000-job run at its end with "cannot accept future
/// end LSN").
async fn wal_by_type(db: &tokio_postgres::Client, jobs: usize, since: &str) -> anyhow::Result<Value> {
    let rows = db
        .query(
            "SELECT \"resource_manager/record_type\", count::float8, combined_size::float8
             FROM pg_get_wal_stats($1::text::pg_lsn, pg_current_wal_flush_lsn(), true)
             WHERE count > 0 ORDER BY count DESC LIMIT 20",
            &[&since],
        )
        .await?;
    let per_job = |v: f64| (v / jobs.max(1) as f64 * 100.0).round() / 100.0;
    Ok(rows
        .iter()
        .map(|r| {
            let kind: String = r.get(0);
            (
                kind,
                json!({"records": per_job(r.get(1)), "bytes": per_job(r.get(2))}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into())
}

/// Rows inserted, updated and deleted per job in each table written to,
/// since [`reset_pg_stats`] (Postgres flushes these counters within a
/// second, hence the wait).
async fn rows_written(db: &tokio_postgres::Client, jobs: usize) -> anyhow::Result<Value> {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rows = db
        .query(
            "SELECT relname::text, (n_tup_ins + n_tup_upd + n_tup_del)::float8 FROM pg_stat_user_tables
             WHERE n_tup_ins + n_tup_upd + n_tup_del > 0 ORDER BY 2 DESC",
            &[],
        )
        .await?;
    let per_job = |v: f64| (v / jobs.max(1) as f64 * 100.0).round() / 100.0;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), json!(per_job(r.get(1)))))
        .collect::<serde_json::Map<_, _>>()
        .into())
}

fn command(sleep_ms: u64) -> Vec<String> {
    if sleep_ms == 0 {
        vec!["/bin/true".into()]
    } else {
        vec!["sleep".into(), format!("{:.3}", sleep_ms as f64 / 1000.0)]
    }
}

/// Submits every batch, spread over `connections` tasks, paced to `rate`.
async fn submit_all(t: &Target, args: &Args, run: &str) -> anyhow::Result<(Duration, Value)> {
    let batches = args.jobs.div_ceil(args.batch.max(1));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.connections.max(1) {
        let (http, url, token, next, args, run) = (
            t.http.clone(),
            format!("{}/api/jobs/submit_batch", t.base_url),
            t.token.clone(),
            next.clone(),
            args.clone(),
            run.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let mut took = Vec::new();
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return anyhow::Ok(took);
                }
                if args.rate > 0 {
                    let due = Duration::from_secs_f64((b * args.batch) as f64 / args.rate as f64);
                    tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
                }
                let n = args.batch.min(args.jobs - b * args.batch);
                let body = batch_body(n, args.sleep_ms, &run);
                let sent = Instant::now();
                let resp = http.post(&url).bearer_auth(&token).json(&body).send().await?;
                took.push(sent.elapsed().as_secs_f64() * 1000.0);
                ensure!(
                    resp.status() == 201,
                    "batch refused: {}",
                    resp.text().await.unwrap_or_default()
                );
            }
        }));
    }
    let mut took = Vec::new();
    for t in tasks {
        took.extend(t.await??);
    }
    Ok((started.elapsed(), request_percentiles(took)))
}

/// The body of one `submit_batch` of `n` jobs of this run.
fn batch_body(n: usize, sleep_ms: u64, run: &str) -> Value {
    let jobs: Vec<Value> = (0..n)
        .map(|_| {
            json!({"task_description": "load", "command": command(sleep_ms),
                   "labels": {"loadgen-run": run}})
        })
        .collect();
    json!({ "jobs": jobs })
}

/// p50, p99 and max (ms) of the submission requests' times: a job's
/// submit→start starts when its request's transaction does, so this is
/// the part of it spent before the job can be published.
fn request_percentiles(mut took: Vec<f64>) -> Value {
    took.sort_by(f64::total_cmp);
    let at = |q: f64| {
        took.get(((took.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    json!({"p50": at(0.5), "p99": at(0.99), "max": took.last()})
}

/// Waits until no job of this run is pending, queued or running (bounded),
/// and answers how long after `since` (the database's clock, in seconds
/// since the epoch) the last one finished.
///
/// Polled with `EXISTS`, which stops at the first unfinished job: a
/// `count(*)` every 50 ms read every unfinished job each time and cost
/// Postgres about 18 ms a call (8 of a 45-s run's CPU seconds), which the
/// report then charged to the jobs. Even the `EXISTS` walks the status
/// index's entries of rows updated since the last vacuum (4.6 ms a call in
/// a 5,000-job run, 0.2 ms of Postgres's CPU per job at 50 ms), so it polls
/// every `POLL` (250 ms) and the end of the run is the last `finished_at`, not
/// the poll that saw it.
async fn wait_all(
    db: &tokio_postgres::Client,
    run: &Value,
    since: f64,
    deadline: Instant,
) -> anyhow::Result<Duration> {
    const ACTIVE: &str = "status IN ('pending', 'queued', 'running') AND labels @> $1";
    const POLL: Duration = Duration::from_millis(250);
    loop {
        let any_left: bool = db
            .query_one(
                &format!("SELECT EXISTS (SELECT 1 FROM jobs WHERE {ACTIVE})"),
                &[run],
            )
            .await?
            .get(0);
        if !any_left {
            let sql = "SELECT extract(epoch FROM max(finished_at))::float8 FROM jobs WHERE labels @> $1";
            let last: Option<f64> = db.query_one(sql, &[run]).await?.get(0);
            return Ok(Duration::from_secs_f64((last.unwrap_or(since) - since).max(0.0)));
        }
        if Instant::now() >= deadline {
            let sql = format!("SELECT count(*) FROM jobs WHERE {ACTIVE}");
            let left: i64 = db.query_one(&sql, &[run]).await?.get(0);
            anyhow::bail!("{left} jobs still unfinished at the time limit");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Percentiles (ms) of an interval expression over finished jobs.
async fn percentiles(db: &tokio_postgres::Client, run: &Value, expr: &str) -> anyhow::Result<Value> {
    let sql = format!(
        "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY d), max(d) FROM
           (SELECT (extract(epoch FROM {expr}) * 1000)::float8 AS d FROM jobs j
            JOIN job_shards s ON s.job_id = j.job_id AND s.attempt = j.attempts
            WHERE j.finished_at IS NOT NULL AND j.labels @> $1) x"
    );
    let row = db.query_one(&sql, &[run]).await?;
    let p: Vec<f64> = row.try_get::<_, Option<Vec<f64>>>(0)?.unwrap_or_default();
    let max: Option<f64> = row.try_get(1)?;
    Ok(json!({"p50": p.first(), "p95": p.get(1), "p99": p.get(2), "max": max}))
}

/// One process's CPU seconds, peak RSS and current RSS (KiB), from /proc.
/// For this process (`self`, an in-process controller), `cpu_seconds` is
/// the controller's runtime threads' and `rest_seconds` the other
/// threads' (the load generator and the harness).
struct Proc {
    cpu_seconds: f64,
    rest_seconds: f64,
    /// CPU of its children: those it has waited for (an agent's jobs and
    /// helpers) and those still running (its job slots' launchers, with
    /// the jobs they waited for).
    children_seconds: f64,
    peak_rss_kib: u64,
    rss_kib: u64,
}

impl Proc {
    fn read(pid: &str) -> Proc {
        let (own, children) = cpu::process_seconds(std::path::Path::new(&format!("/proc/{pid}/stat")));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |key: &str| rss::status_kib(&status, key);
        let controller = match pid {
            "self" => cpu::own_threads_seconds(cpu::CONTROLLER_THREADS),
            _ => own,
        };
        Proc {
            cpu_seconds: controller,
            rest_seconds: own - controller,
            children_seconds: match pid {
                "self" => children,
                _ => children + cpu::live_children_seconds(pid),
            },
            peak_rss_kib: kib("VmHWM:"),
            rss_kib: kib("VmRSS:"),
        }
    }

    /// This process's figures for the report; `idle` is the same process
    /// before the load (its RSS then, and the CPU it had already used).
    fn json(&self, idle: Option<&Proc>, in_process: bool) -> Value {
        let before = idle.map_or(0.0, |i| i.cpu_seconds);
        let mut v = json!({
            "cpu_seconds": self.cpu_seconds - before,
            "peak_rss_kib": self.peak_rss_kib,
            "idle_rss_kib": idle.map(|i| i.rss_kib),
        });
        if in_process {
            v["note"] = json!(
                "in-process: CPU of the controller's runtime threads only (the load generator's is \
                 cpu_ms_per_job.load_generator); RSS of the whole process"
            );
        }
        v
    }
}

/// The controller's and the agents' processes, and the box, at one moment.
struct Usage {
    controller: Option<Proc>,
    /// This process: the load generator (and, in-process, the controller).
    own: Proc,
    /// Whether the controller runs in this process.
    in_process: bool,
    agents: Vec<Proc>,
    host: cpu::Host,
}

impl Usage {
    fn of(t: &Target) -> Usage {
        // The containers are known only when this run started them.
        let infra = t._cluster.as_ref().map(|_| integration_tests::infra());
        Usage {
            controller: t.controller.as_deref().map(Proc::read),
            in_process: t.controller.as_deref() == Some("self"),
            own: Proc::read("self"),
            agents: t.agents.iter().map(|p| Proc::read(&p.to_string())).collect(),
            host: cpu::Host::read(
                infra.map(|i| i.postgres_id.as_str()),
                infra.map(|i| i.rabbitmq_id.as_str()),
            ),
        }
    }

    /// CPU seconds between `idle` and this moment: the controller, the
    /// load generator (this process, less the controller's threads when
    /// it runs here), the agents, and the agents' children.
    fn processes_since(&self, idle: &Usage) -> [f64; 4] {
        let of = |usage: &Usage, f: fn(&Proc) -> f64| usage.controller.as_ref().map_or(0.0, f);
        let controller = of(self, |p| p.cpu_seconds) - of(idle, |p| p.cpu_seconds);
        let loadgen = |u: &Usage| u.own.rest_seconds + if u.in_process { 0.0 } else { u.own.cpu_seconds };
        let loadgen = loadgen(self) - loadgen(idle);
        let sum = |usage: &Usage, f: fn(&Proc) -> f64| usage.agents.iter().map(f).sum::<f64>();
        let agents = sum(self, |p| p.cpu_seconds) - sum(idle, |p| p.cpu_seconds);
        let children = sum(self, |p| p.children_seconds) - sum(idle, |p| p.children_seconds);
        [controller, loadgen, agents, children]
    }
}

/// Runs the load generator on one runtime and a cluster's in-process
/// controller on another, whose threads are named
/// [`cpu::CONTROLLER_THREADS`], so the report tells the controller's CPU
/// from the load generator's. Its idle threads are kept for the whole run:
/// a thread that exits takes its CPU figure with it.
fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let controller = tokio::runtime::Builder::new_multi_thread()
        .thread_name(cpu::CONTROLLER_THREADS)
        .thread_keep_alive(Duration::from_secs(24 * 3600))
        .enable_all()
        .build()
        .context("starting the controller's runtime")?;
    let main = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the load generator's runtime")?;
    main.block_on(run(args, controller.handle().clone()))
}

/// Starts or connects to the target, loads it, and prints the report.
async fn run(args: Args, controller: tokio::runtime::Handle) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let target = Target::new(&args, &controller).await?;
    let (mut pg, conn) = tokio_postgres::connect(&target.db_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    prefill(&pg, args.finished_rows, 1)
        .await
        .context("filling finished jobs")?;
    prefill(&pg, args.aged_rows, prune::AGED_DAYS)
        .await
        .context("filling aged jobs")?;
    if args.finished_rows > 0 || args.aged_rows > 0 {
        settle(&pg).await.context("vacuuming after the fill")?;
    }
    let backlog = prune::Backlog::start(&pg, args.aged_rows).await?;
    let wal_since = match args.profile {
        true => reset_pg_stats(&pg).await?,
        false => String::new(),
    };
    let run_id = uuid::Uuid::new_v4().to_string();
    let run = json!({ "loadgen-run": run_id });
    let idle = Usage::of(&target);
    let since: f64 = pg
        .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
        .await?
        .get(0);
    let rss = target.controller.as_deref().map(rss::Sampler::start);
    let (submit, requests) = submit_all(&target, &args, &run_id).await.context("submitting")?;
    let total = wait_all(&pg, &run, since, deadline).await?;
    let used = Usage::of(&target);
    let mut report = report(&mut pg, &args, &run, (submit, total), &idle, &used).await?;
    report["latency_ms"]["submit_request"] = requests;
    if let Some(rss) = rss {
        report["controller_rss_mib"] = rss.finish().await;
    }
    report["events_per_message"] = events_per_message(&target).await;
    if let Some(backlog) = backlog {
        report["pruning"] = backlog.finish(&pg, deadline).await?;
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    if args.profile {
        println!(
            "{}",
            serde_json::to_string_pretty(&pg_profile(&pg, args.jobs, &wal_since).await?)?
        );
    }
    print_summary(&args, &report);
    prune::print_summary(&report["pruning"]);
    Ok(())
}

/// Agent events per message on the events queue over the controller's
/// life (its `/metrics`): how many shard reports agents gather into one
/// message. `null` when the controller does not count them.
async fn events_per_message(target: &Target) -> Value {
    let url = format!("{}/metrics", target.base_url);
    let Ok(text) = async { target.http.get(url).send().await?.text().await }.await else {
        return Value::Null;
    };
    let counter = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    match (
        counter("broker_events_received_total"),
        counter("broker_event_messages_received_total"),
    ) {
        (Some(events), Some(messages)) if messages > 0.0 => json!(events / messages),
        _ => Value::Null,
    }
}

/// The readable one-line summary after the JSON.
fn print_summary(args: &Args, report: &Value) {
    let lat = &report["latency_ms"];
    println!(
        "{} jobs{}: submitted {:.0}/s, completed {:.0}/s end to end; submit->start p50 {:.1} ms p99 {:.1} ms \
         (submit requests p50 {:.1} ms p99 {:.1} ms); start->finish p50 {:.1} ms p99 {:.1} ms; exactly once: {}",
        args.jobs,
        if report["https"] == true { " over HTTPS" } else { "" },
        report["submitted_per_second"].as_f64().unwrap_or(0.0),
        report["completed_per_second"].as_f64().unwrap_or(0.0),
        lat["submit_to_start"]["p50"].as_f64().unwrap_or(f64::NAN),
        lat["submit_to_start"]["p99"].as_f64().unwrap_or(f64::NAN),
        lat["submit_request"]["p50"].as_f64().unwrap_or(f64::NAN),
        lat["submit_request"]["p99"].as_f64().unwrap_or(f64::NAN),
        lat["start_to_finish"]["p50"].as_f64().unwrap_or(f64::NAN),
        lat["start_to_finish"]["p99"].as_f64().unwrap_or(f64::NAN),
        report["exactly_once"]
    );
    println!(
        "submit->start in legs: submit->queued p50 {:.1} ms p99 {:.1} ms, queued->start p50 {:.1} ms p99 {:.1} ms",
        lat["submit_to_queued"]["p50"].as_f64().unwrap_or(f64::NAN),
        lat["submit_to_queued"]["p99"].as_f64().unwrap_or(f64::NAN),
        lat["queued_to_start"]["p50"].as_f64().unwrap_or(f64::NAN),
        lat["queued_to_start"]["p99"].as_f64().unwrap_or(f64::NAN),
    );
    let cpu = &report["cpu_ms_per_job"];
    let part = |key: &str| {
        cpu[key]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
    };
    println!(
        "CPU ms per job: controller {}, load generator {}, agents {}, their jobs {}, postgres {}, rabbitmq {}, docker-proxy {}, rest {}; box {}; events per message {}",
        part("controller"),
        part("load_generator"),
        part("agents"),
        part("agents_children"),
        part("postgres"),
        part("rabbitmq"),
        part("docker_proxy"),
        part("rest_of_box"),
        part("box_total"),
        report["events_per_message"].as_f64().map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
    );
    rss::print_summary(report);
}

/// The JSON report of this run's jobs: rates, latencies, processes and
/// the exactly-once check. `times` is (submitting, submit to last finish).
async fn report(
    db: &mut tokio_postgres::Client,
    args: &Args,
    run: &Value,
    times: (Duration, Duration),
    idle: &Usage,
    used: &Usage,
) -> anyhow::Result<Value> {
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'completed'), count(*),
               (SELECT count(*) FROM (SELECT e.job_id FROM job_events e JOIN jobs j ON j.job_id = e.job_id
                                      WHERE e.to_status = 'completed' AND j.labels @> $1
                                      GROUP BY e.job_id HAVING count(*) > 1) d)
             FROM jobs WHERE labels @> $1",
            &[run],
        )
        .await?;
    let (completed, all, duplicated): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let (submit, total) = times;
    Ok(json!({
        "jobs": args.jobs, "sleep_ms": args.sleep_ms,
        // With --url the cluster's own agents run the jobs.
        "agent_count": args.url.is_none().then_some(args.agents),
        "capacity": args.url.is_none().then_some(args.capacity),
        "batch": args.batch, "connections": args.connections, "rate": args.rate, "url": args.url,
        "https": args.tls || args.url.as_deref().is_some_and(|u| u.starts_with("https://")),
        "submitted_per_second": args.jobs as f64 / submit.as_secs_f64(),
        "completed_per_second": completed as f64 / total.as_secs_f64(),
        "wall_seconds": total.as_secs_f64(),
        "latency_ms": {
            "submit_to_start": percentiles(db, run, "s.started_at - j.created_at").await?,
            // The two legs of submit->start: until the relay (or a claim
            // ahead of it) took the dispatch, then publish, delivery and claim.
            "submit_to_queued": percentiles(db, run, "j.queued_at - j.created_at").await?,
            "queued_to_start": percentiles(db, run, "s.started_at - j.queued_at").await?,
            "start_to_finish": percentiles(db, run, "j.finished_at - s.started_at").await?,
        },
        "controller": used.controller.as_ref().map(|u| u.json(idle.controller.as_ref(), used.in_process)),
        "agents": used.agents.iter().zip(&idle.agents).map(|(u, i)| u.json(Some(i), false)).collect::<Vec<_>>(),
        "cpu_ms_per_job": cpu::per_job(&idle.host, &used.host, used.processes_since(idle), args.jobs),
        "exactly_once": completed == all && all == args.jobs as i64 && duplicated == 0,
        "completed": completed, "duplicated_completions": duplicated,
        "not_completed": not_completed(db, run).await?,
    }))
}

/// The jobs that did not end `completed`, counted by final status and the
/// reason on their last event, so a failed run says why.
async fn not_completed(db: &tokio_postgres::Client, run: &Value) -> anyhow::Result<Value> {
    let rows = db
        .query(
            "SELECT j.status, coalesce(e.reason, ''), count(*) FROM jobs j
             LEFT JOIN LATERAL (SELECT reason FROM job_events WHERE job_id = j.job_id
                                ORDER BY event_id DESC LIMIT 1) e ON true
             WHERE j.status <> 'completed' AND j.labels @> $1 GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10",
            &[run],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| json!({"status": r.get::<_, String>(0), "reason": r.get::<_, String>(1), "jobs": r.get::<_, i64>(2)}))
        .collect())
}
