//! The chaos soak (`deploy/soak.sh`): a multi-host deployment with two
//! controller replicas, one broker, one Postgres and four agents, each in a
//! container of its own on the project's own network. For a set time it
//! submits a steady stream of jobs of mixed kinds while, at random
//! intervals, it kills one part or cuts an agent off; then it drains and
//! checks every job (see `check`). It exits non-zero if any check fails.

mod check;
mod faults;
mod kinds;

use anyhow::Context;
use clap::Parser;
use integration_tests::multihost::Deployment;
use kinds::Kind;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::RwLock;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The soak's settings.
#[derive(Debug, Parser)]
#[command(about = "Chaos soak: jobs of mixed kinds while parts are killed and cut off")]
struct Args {
    /// How long jobs are submitted and faults injected, in minutes.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Jobs submitted per second.
    #[arg(long, default_value_t = 3.0)]
    rate: f64,
    /// Shortest interval between faults, in seconds.
    #[arg(long, default_value_t = 15)]
    fault_min_s: u64,
    /// Longest interval between faults, in seconds.
    #[arg(long, default_value_t = 60)]
    fault_max_s: u64,
    /// Seed of the random draws (kinds, faults, targets, intervals).
    #[arg(long)]
    seed: Option<u64>,
    /// Agents, in containers of their own.
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Job slots per agent.
    #[arg(long, default_value_t = 4)]
    capacity: u32,
}

/// What the submitting and the faulting tasks share.
pub struct Soak {
    /// The deployment; written only to switch the replica the soak's own
    /// requests go to.
    pub d: RwLock<Deployment>,
    rng: Mutex<fastrand::Rng>,
}

impl Soak {
    /// A random draw in `0..n` (`n` at least 1).
    pub fn draw(&self, n: u64) -> u64 {
        match self.rng.lock() {
            Ok(mut rng) => rng.u64(0..n.max(1)),
            Err(poisoned) => poisoned.into_inner().u64(0..n.max(1)),
        }
    }
}

/// One job the soak submitted.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// Its id.
    pub id: String,
    /// Its kind.
    pub kind: Kind,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    eprintln!("soak: seed {seed}, {} min, {} jobs/s", args.minutes, args.rate);
    let d = Deployment::start_replicated(2, args.agents, args.capacity)
        .await
        .context("starting the deployment")?;
    let soak = Arc::new(Soak {
        d: RwLock::new(d),
        rng: Mutex::new(fastrand::Rng::with_seed(seed)),
    });
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(args.minutes.max(0.0) * 60.0);
    let (min, max) = (
        Duration::from_secs(args.fault_min_s),
        Duration::from_secs(args.fault_max_s.max(args.fault_min_s)),
    );
    let faulting = {
        let soak = soak.clone();
        tokio::spawn(async move { faults::inject(&soak, until, min, max).await })
    };
    let submitted = submit(&soak, until, args.rate).await?;
    let injected = faulting.await.context("the fault task")?;
    eprintln!("soak: {} jobs submitted; draining", submitted.len());
    let d = soak.d.read().await;
    check::report(&d, &submitted, &injected, started.elapsed()).await
}

/// Submits jobs at `rate` per second until `until`, cancelling each
/// cancelled-kind job a second after its submission.
async fn submit(soak: &Arc<Soak>, until: Instant, rate: f64) -> anyhow::Result<Vec<Submitted>> {
    let every = Duration::from_secs_f64(1.0 / rate.clamp(0.01, 100.0));
    let mut next = Instant::now();
    let mut submitted = Vec::new();
    let mut cancels: Vec<JoinHandle<anyhow::Result<()>>> = Vec::new();
    while next < until {
        tokio::time::sleep_until(next).await;
        next += every;
        let kind = Kind::pick(soak.draw(100) as u32);
        let sleep_s = 1 + soak.draw(5) as u32;
        let key = format!("soak-{}", uuid::Uuid::new_v4());
        let body = kind.body(sleep_s, &key);
        let id = with_retries(soak, "/api/jobs/submit", &body).await?;
        if kind == Kind::Cancelled {
            let (soak, path) = (soak.clone(), format!("/api/jobs/{id}/cancel"));
            cancels.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                // A 409: an earlier try was applied but its answer lost.
                match with_retries(&soak, &path, &serde_json::Value::Null).await {
                    Err(e) if format!("{e:#}").contains(": 409 Conflict") => Ok(()),
                    other => other.map(drop),
                }
            }));
        }
        submitted.push(Submitted { id, kind });
    }
    for cancel in cancels {
        cancel.await.context("a cancel task")??;
    }
    Ok(submitted)
}

/// How long one request is retried while a part is down.
const RETRY_FOR: Duration = Duration::from_secs(180);

/// POSTs `body` to `path` until it succeeds (a replica or Postgres down
/// answers an error; the idempotency key makes a retried submission the
/// same job); the job id of the answer.
async fn with_retries(soak: &Soak, path: &str, body: &serde_json::Value) -> anyhow::Result<String> {
    let deadline = Instant::now() + RETRY_FOR;
    loop {
        let answer = soak.d.read().await.post(path, body).await;
        match answer {
            Ok(job) => return Ok(job["job_id"].as_str().unwrap_or_default().to_owned()),
            Err(e) if Instant::now() > deadline || format!("{e:#}").contains(": 409 Conflict") => {
                return Err(e).context("POST, retried")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}
