//! API benchmark: drives `POST /api/jobs/submit` and `GET /api/jobs/{id}`
//! with valid tokens and prints requests per second and latency
//! percentiles for each. Bounded in request count and in time.
//!
//! Against a running controller:
//!   api-bench --url https://127.0.0.1:8000 --ca-file deploy/.cache/tls/ca.pem \
//!             --username admin --password …
//! Without `--url` it starts the test containers and an in-process
//! controller on a fresh database (the same harness the tests use), over
//! plain HTTP, or over HTTPS with a throw-away CA with `--tls`: the same
//! command with and without it measures what TLS costs.
//!
//! `--login-flood N` measures memory instead: the process's RSS idle, after
//! N logins with distinct 64 KiB usernames (`--flood-username-bytes`) spread
//! over many client addresses, after a burst of 10,000 ordinary requests,
//! and after 15 s of quiet (in-process controller only, as the RSS is this
//! process's).

use anyhow::Context;
use clap::Parser;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Command-line options.
#[derive(Parser)]
struct Args {
    /// Controller base URL; omitted: start one in-process against containers.
    #[arg(long)]
    url: Option<String>,
    /// PEM file of a private CA to trust for an `https://` `--url`.
    #[arg(long, requires = "url")]
    ca_file: Option<std::path::PathBuf>,
    /// Serve the in-process controller over HTTPS (without `--url`).
    #[arg(long, conflicts_with = "url")]
    tls: bool,
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
    /// Instead of the submit and read phases: this many logins with long
    /// usernames, printing the RSS before and after (without `--url`).
    #[arg(long, value_name = "N")]
    login_flood: Option<usize>,
    /// Length of each username in the login flood: 64 KiB by default, far
    /// over the username limit; 128 or less reaches the login limiter.
    #[arg(long, default_value_t = 64 * 1024)]
    flood_username_bytes: usize,
}

/// What one phase measured: each successful call's latency, the failures,
/// and how long the phase took.
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

/// Where the benchmark sends its requests, with a valid token; cheap to
/// clone into every concurrent task.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// Submits job `i`, noting its id in `created`; answers whether the
    /// controller created it.
    async fn submit(&self, i: usize, created: &std::sync::Mutex<Vec<String>>) -> bool {
        let body = serde_json::json!({"task_description": format!("bench job {i}")});
        let resp = self
            .http
            .post(format!("{}/api/jobs/submit", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await;
        match resp {
            Ok(r) if r.status() == 201 => {
                let job: serde_json::Value = r.json().await.unwrap_or_default();
                if let (Some(id), Ok(mut created)) = (job["job_id"].as_str(), created.lock()) {
                    created.push(id.to_owned());
                }
                true
            }
            _ => false,
        }
    }

    /// Reads job `id`; answers whether the controller found it.
    async fn get(&self, id: &str) -> bool {
        let resp = self
            .http
            .get(format!("{}/api/jobs/{id}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await;
        matches!(resp, Ok(r) if r.status() == 200)
    }
}

/// An in-process controller and the CA of its certificate (with `--tls`),
/// kept until the benchmark ends.
type Local = (integration_tests::TestApp, Option<integration_tests::TestTls>);

/// A client for `--url`, or for an in-process controller on the test
/// containers (returned too, as it stops when dropped).
async fn connect(args: &Args) -> anyhow::Result<(Client, Option<Local>)> {
    let tls = match args.tls {
        true => Some(integration_tests::TestTls::new(&["localhost"])?),
        false => None,
    };
    let ca_pem = match (&args.ca_file, &tls) {
        (Some(path), _) => Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?),
        (None, Some(tls)) => Some(tls.ca_pem.clone().into_bytes()),
        (None, None) => None,
    };
    let mut builder = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency);
    if let Some(pem) = ca_pem {
        builder = builder.tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem)?);
    }
    let http = builder.build()?;
    let (base, token, local) = match &args.url {
        Some(url) => (
            url.trim_end_matches('/').to_owned(),
            login(&http, url, &args.username, &args.password).await?,
            None,
        ),
        None => {
            let app = match &tls {
                Some(tls) => integration_tests::spawn_https_app(tls, &[]).await,
                None => integration_tests::spawn_app().await,
            };
            (app.base_url.clone(), app.admin_token.clone(), Some((app, tls)))
        }
    };
    Ok((Client { http, base, token }, local))
}

/// The submit phase; answers it and the ids of the jobs it created.
async fn bench_submit(client: &Client, args: &Args) -> (Phase, Vec<String>) {
    let ids = Arc::new(std::sync::Mutex::new(Vec::with_capacity(args.requests)));
    let (client, created) = (client.clone(), ids.clone());
    let deadline = Duration::from_secs(args.max_seconds);
    let phase = run(
        "POST /api/jobs/submit",
        args.requests,
        args.concurrency,
        deadline,
        move |i| {
            let (client, created) = (client.clone(), created.clone());
            async move { client.submit(i, &created).await }
        },
    )
    .await;
    let ids = ids.lock().map(|v| v.clone()).unwrap_or_default();
    (phase, ids)
}

/// The read phase, cycling through `ids`.
async fn bench_get(client: &Client, args: &Args, ids: Vec<String>) -> Phase {
    let (client, ids) = (client.clone(), Arc::new(ids));
    let deadline = Duration::from_secs(args.max_seconds);
    run(
        "GET /api/jobs/{id}",
        args.requests,
        args.concurrency,
        deadline,
        move |i| {
            let (client, ids) = (client.clone(), ids.clone());
            async move { client.get(&ids[i % ids.len()]).await }
        },
    )
    .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(logins) = args.login_flood {
        // The allocator setting of the controller binary (its main.rs), so
        // the in-process controller's memory is measured as deployed.
        // SAFETY: mallopt only changes the allocator's tuning.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
        anyhow::ensure!(
            args.url.is_none(),
            "--login-flood measures this process's memory: run it without --url"
        );
        let (client, _app) = connect(&args).await?;
        return login_flood(&client, &args, logins).await;
    }
    let (client, _app) = connect(&args).await?;
    println!(
        "target {}, {} requests per route, concurrency {}",
        client.base, args.requests, args.concurrency
    );
    let (mut submit, ids) = bench_submit(&client, &args).await;
    submit.print();
    anyhow::ensure!(!ids.is_empty(), "no job was submitted");
    let mut get = bench_get(&client, &args, ids).await;
    get.print();
    Ok(())
}

/// Logs in at `url` and answers the access token.
async fn login(http: &reqwest::Client, url: &str, username: &str, password: &str) -> anyhow::Result<String> {
    let resp: serde_json::Value = http
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

/// Ordinary requests after the flood, to see whether memory comes back.
const BURST_REQUESTS: usize = 10_000;
/// The flood's client addresses, 127.0.0.2 to 127.0.0.254: a spread of
/// sources, so per-address caps do not stop it before the limiter's
/// per-username bookkeeping sees it.
const FLOOD_SOURCES: std::ops::RangeInclusive<u8> = 2..=254;
/// Time the controller gets to notice the flood's connections closing.
const SETTLE: Duration = Duration::from_secs(2);
/// A last pause before the final figure: longer than the 10 s Tokio keeps
/// idle blocking threads (where Argon2 ran), so their memory is gone too.
const QUIET: Duration = Duration::from_secs(15);

/// This process's resident set size in KiB, from `/proc/self/status`.
fn rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")
}

/// Prints the RSS after `what`, with its growth over `idle`; then again
/// once the allocator has handed its free pages back, which is what is
/// still in use (glibc keeps freed memory of busy threads otherwise).
fn print_rss(what: &str, idle: u64) -> anyhow::Result<()> {
    let show = |label: &str, kib: u64| {
        let growth = (kib as f64 - idle as f64) / 1024.0;
        println!(
            "RSS {label:<44} {:>8.1} MiB ({growth:+.1} MiB)",
            kib as f64 / 1024.0
        );
    };
    show(what, rss_kib()?);
    // SAFETY: malloc_trim only returns free heap pages to the system.
    unsafe { libc::malloc_trim(0) };
    show(&format!("{what}, trimmed"), rss_kib()?);
    Ok(())
}

/// Statuses of the flood's answers, counted as they arrive.
#[derive(Default)]
struct Statuses(std::sync::Mutex<std::collections::BTreeMap<u16, usize>>);

impl Statuses {
    /// Counts one answer (0: no answer at all).
    fn count(&self, status: u16) {
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry(status).or_default() += 1;
        }
    }

    /// `401: 12, 429: 988`.
    fn summary(&self) -> String {
        let counts = self.0.lock().map(|c| c.clone()).unwrap_or_default();
        let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        parts.join(", ")
    }
}

/// `logins` logins with distinct usernames of `--flood-username-bytes`,
/// from every address of [`FLOOD_SOURCES`] in turn; then a burst of
/// ordinary requests. Prints the RSS idle and after each.
async fn login_flood(client: &Client, args: &Args, logins: usize) -> anyhow::Result<()> {
    let idle = rss_kib()?;
    print_rss("idle", idle)?;
    let statuses = Arc::new(Statuses::default());
    let mut flood = flood_logins(client, args, logins, statuses.clone()).await?;
    flood.print();
    println!("login answers: {}", statuses.summary());
    tokio::time::sleep(SETTLE).await;
    print_rss(&format!("after {logins} logins"), idle)?;
    let mut burst = bench_healthz(client, args).await;
    burst.print();
    print_rss(&format!("after {BURST_REQUESTS} more requests"), idle)?;
    tokio::time::sleep(QUIET).await;
    print_rss(&format!("after {} s quiet", QUIET.as_secs()), idle)
}

/// Sends the flood's logins, counting their statuses; its clients (and
/// their connections) are gone when it returns.
async fn flood_logins(
    client: &Client,
    args: &Args,
    logins: usize,
    statuses: Arc<Statuses>,
) -> anyhow::Result<Phase> {
    let senders = FLOOD_SOURCES
        .map(|last| {
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
            reqwest::Client::builder().local_address(source).build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let senders = Arc::new(senders);
    let url = format!("{}/api/auth/login", client.base);
    let padding = "u".repeat(args.flood_username_bytes.saturating_sub(8));
    let deadline = Duration::from_secs(args.max_seconds);
    let name = "POST /api/auth/login (flood)";
    Ok(run(name, logins, args.concurrency, deadline, move |i| {
        let (senders, statuses, url) = (senders.clone(), statuses.clone(), url.clone());
        let body =
            serde_json::json!({"username": format!("{i:08}{padding}"), "password": "not-the-password"});
        async move {
            let status = match senders[i % senders.len()].post(url).json(&body).send().await {
                Ok(r) => r.status().as_u16(),
                Err(e) => {
                    eprintln!("flood error: {e:?}");
                    0
                }
            };
            statuses.count(status);
            matches!(status, 401 | 422 | 429)
        }
    })
    .await)
}

/// [`BURST_REQUESTS`] calls of `GET /healthz`.
async fn bench_healthz(client: &Client, args: &Args) -> Phase {
    let (http, url) = (client.http.clone(), format!("{}/healthz", client.base));
    let deadline = Duration::from_secs(args.max_seconds);
    run(
        "GET /healthz",
        BURST_REQUESTS,
        args.concurrency,
        deadline,
        move |_| {
            let (http, url) = (http.clone(), url.clone());
            async move { matches!(http.get(url).send().await, Ok(r) if r.status() == 200) }
        },
    )
    .await
}
