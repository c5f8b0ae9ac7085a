//! API benchmark: drives `POST /api/jobs/submit` and `GET /api/jobs/{id}`
//! with valid tokens and prints requests per second and latency
//! percentiles for each. Bounded in request count and in time.
//!
//! Against a running controller:
//!   api-bench --url http://127.0.0.1:8000 --username admin --password …
//! Without `--url` it starts the test containers and an in-process
//! controller on a fresh database (the same harness the tests use).

use anyhow::Context;
use clap::Parser;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Controller base URL; omitted: start one in-process against containers.
    #[arg(long)]
    url: Option<String>,
    /// Login name (with `--url`).
    #[arg(long, default_value = "admin")]
    username: String,
    /// Password (with `--url`).
    #[arg(long, env = "BENCH_PASSWORD", default_value = "admin-password")]
    password: String,
    /// Requests per route.
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Hard limit on each phase's duration, in seconds.
    #[arg(long, default_value_t = 120)]
    max_seconds: u64,
}

struct Phase {
    name: &'static str,
    latencies: Vec<Duration>,
    errors: usize,
    elapsed: Duration,
}

impl Phase {
    fn print(&mut self) {
        self.latencies.sort_unstable();
        let pct = |p: f64| {
            let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
            self.latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        let ok = self.latencies.len();
        println!(
            "{:<22} {:>7} ok {:>5} err {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
            self.name,
            ok,
            self.errors,
            ok as f64 / self.elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            pct(1.0)
        );
    }
}

/// Runs `total` calls of `call(i)` with `concurrency` workers, stopping early
/// at `deadline`.
async fn run<F, Fut>(
    name: &'static str,
    total: usize,
    concurrency: usize,
    deadline: Duration,
    call: F,
) -> Phase
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (call, next) = (call.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || started.elapsed() > deadline {
                    break;
                }
                let t = Instant::now();
                if call(i).await {
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut phase = Phase {
        name,
        latencies: Vec::new(),
        errors: 0,
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        if let Ok((lat, errors)) = t.await {
            phase.latencies.extend(lat);
            phase.errors += errors;
        }
    }
    phase.elapsed = started.elapsed();
    phase
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (base, token, _app) = match &args.url {
        Some(url) => (
            url.trim_end_matches('/').to_owned(),
            login(url, &args.username, &args.password).await?,
            None,
        ),
        None => {
            let app = integration_tests::spawn_app().await;
            (app.base_url.clone(), app.admin_token.clone(), Some(app))
        }
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let deadline = Duration::from_secs(args.max_seconds);
    println!(
        "target {base}, {} requests per route, concurrency {}",
        args.requests, args.concurrency
    );
    let ids = Arc::new(std::sync::Mutex::new(Vec::with_capacity(args.requests)));
    let (h, b, t, ids2) = (http.clone(), base.clone(), token.clone(), ids.clone());
    let mut submit = run(
        "POST /api/jobs/submit",
        args.requests,
        args.concurrency,
        deadline,
        move |i| {
            let (h, b, t, ids) = (h.clone(), b.clone(), t.clone(), ids2.clone());
            async move {
                let body = serde_json::json!({"task_description": format!("bench job {i}")});
                match h
                    .post(format!("{b}/api/jobs/submit"))
                    .bearer_auth(&t)
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 201 => {
                        let job: serde_json::Value = r.json().await.unwrap_or_default();
                        if let (Some(id), Ok(mut ids)) = (job["job_id"].as_str(), ids.lock()) {
                            ids.push(id.to_owned());
                        }
                        true
                    }
                    _ => false,
                }
            }
        },
    )
    .await;
    submit.print();
    let ids: Arc<Vec<String>> = Arc::new(ids.lock().map(|v| v.clone()).unwrap_or_default());
    anyhow::ensure!(!ids.is_empty(), "no job was submitted");
    let (h, b, t) = (http.clone(), base.clone(), token.clone());
    let mut get = run("GET /api/jobs/{id}", args.requests, args.concurrency, deadline, move |i| {
        let (h, b, t, ids) = (h.clone(), b.clone(), t.clone(), ids.clone());
        async move {
            let id = &ids[i % ids.len()];
            matches!(h.get(format!("{b}/api/jobs/{id}")).bearer_auth(&t).send().await, Ok(r) if r.status() == 200)
        }
    })
    .await;
    get.print();
    Ok(())
}

async fn login(url: &str, username: &str, password: &str) -> anyhow::Result<String> {
    let resp: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api/auth/login", url.trim_end_matches('/')))
        .json(&serde_json::json!({"username": username, "password": password}))
        .send()
        .await
        .context("login request")?
        .error_for_status()
        .context("login refused")?
        .json()
        .await?;
    resp["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("no access_token in the login response")
}
