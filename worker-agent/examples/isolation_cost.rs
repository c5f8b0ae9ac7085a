//! What job isolation costs per job: runs the same no-op job (`/bin/true`)
//! through the agent's runner without isolation and with it (its own user,
//! a cgroup of its own with limits, the `exec-job` helper), and prints
//! no-op jobs per second, milliseconds per job, and the CPU per job of the
//! runner and of what it started (helpers, launchers, jobs) for each. Run
//! as root on
//! a host with cgroups:
//!
//! ```text
//! cargo build --release -p worker-agent --examples
//! target/release/examples/isolation_cost [RUNS] [CONCURRENCY]
//! ```
//!
//! The helper is the `worker-agent-exec` binary beside the examples
//! directory, else `worker-agent` there (or `ISOLATION_HELPER`). A third
//! variant switches the user through the helper but makes no cgroup, which
//! splits the cost between the two; the fourth is isolated as the third
//! but with each job slot's jobs started by the slot's launcher (the
//! agent's default), not by the helper per job.

use orchestrator_shared::api::Resources;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use worker_agent::isolation::{Sandbox, SandboxConfig};
use worker_agent::runner::{run, CancelHandle, RunLimits, RunSpec};

fn helper() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("ISOLATION_HELPER") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|examples| examples.parent())
        .ok_or_else(|| anyhow::anyhow!("no directory above {}", exe.display()))?;
    let small = dir.join("worker-agent-exec");
    Ok(if small.is_file() {
        small
    } else {
        dir.join("worker-agent")
    })
}

fn limits(sandbox: Sandbox, tag: &str) -> RunLimits {
    RunLimits {
        work_root: std::env::temp_dir().join(format!("isolation-cost-{tag}-{}", std::process::id())),
        kill_grace: Duration::from_secs(1),
        tail_bytes: 1024,
        sandbox: Arc::new(sandbox),
        keep_workdirs: false,
    }
}

fn spec(i: usize) -> RunSpec {
    RunSpec {
        program: "/bin/true".into(),
        args: Vec::new(),
        env: Vec::new(),
        stdin: String::new(),
        timeout: None,
        workdir_name: format!("run-{i}"),
        limits: Resources {
            memory_mb: Some(256),
            cpu: Some(1.0),
            max_pids: Some(64),
        },
        output: None,
    }
}

/// Runs `runs` no-op jobs, `concurrency` at a time; returns the seconds.
async fn measure(limits: Arc<RunLimits>, runs: usize, concurrency: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (limits, next) = (Arc::clone(&limits), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= runs {
                    return Ok::<_, anyhow::Error>(());
                }
                let report = run(&spec(i), &limits, &CancelHandle::new()).await;
                anyhow::ensure!(report.exit_code == Some(0), "run {i}: {report:?}");
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let _ = std::fs::remove_dir_all(&limits.work_root);
    Ok(started.elapsed().as_secs_f64())
}

/// The four variants, in the order they are measured and compared.
fn variants(concurrency: usize) -> anyhow::Result<Vec<(&'static str, Arc<RunLimits>)>> {
    let config = SandboxConfig {
        job_user: "nobody".into(),
        helper: Some(helper()?),
        ..SandboxConfig::default()
    };
    let pid = std::process::id();
    let isolated = Sandbox::setup(&config, &format!("isolation-cost-{pid}"), concurrency)?;
    println!("isolation: {:?}", isolated.report());
    let launched = SandboxConfig {
        launchers: true,
        ..config.clone()
    };
    let launched = Sandbox::setup(&launched, &format!("isolation-cost-launched-{pid}"), concurrency)?;
    let user_only = SandboxConfig {
        cgroup_root: Some(PathBuf::from("/nonexistent-cgroup-root")),
        ..config
    };
    let user_only = Sandbox::setup(&user_only, "isolation-cost-user", concurrency)?;
    Ok(vec![
        ("plain", Arc::new(limits(Sandbox::none(), "plain"))),
        ("user only", Arc::new(limits(user_only, "user"))),
        ("isolated", Arc::new(limits(isolated, "isolated"))),
        ("launched", Arc::new(limits(launched, "launched"))),
    ])
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map_or(Ok(500), |a| a.parse())?;
    let concurrency: usize = args.next().map_or(Ok(4), |a| a.parse())?;
    let variants = variants(concurrency)?;
    // One warm-up round each (page cache, the helper binary).
    for (_, limits) in &variants {
        measure(Arc::clone(limits), concurrency, concurrency).await?;
    }
    let mut figures = Vec::new();
    for (name, limits) in &variants {
        let before = cpu_seconds();
        let seconds = measure(Arc::clone(limits), runs, concurrency).await?;
        // Launchers are reaped here, so their CPU (and their jobs') is
        // counted as the children's, as a helper's is when it is reaped.
        limits.sandbox.release();
        let after = cpu_seconds();
        let per_job_ms = seconds * 1000.0 / runs as f64;
        let cpu_ms = |i: usize| (after[i] - before[i]) * 1000.0 / runs as f64;
        println!(
            "{name:>10}: {runs} no-op jobs, {concurrency} at a time: {:.0} jobs/s, {per_job_ms:.2} ms per job; \
             CPU per job: the runner {:.3} ms, what it started {:.3} ms",
            runs as f64 / seconds,
            cpu_ms(0),
            cpu_ms(1)
        );
        figures.push(per_job_ms);
    }
    println!(
        "per job at this concurrency: the helper and the user switch add {:.2} ms, the cgroup {:.2} ms more; \
         the slots' launchers instead of the helper {:+.2} ms",
        figures[1] - figures[0],
        figures[2] - figures[1],
        figures[3] - figures[2]
    );
    Ok(())
}

/// This process's CPU seconds and its waited-for children's (user and
/// system time, from `getrusage`).
fn cpu_seconds() -> [f64; 2] {
    use nix::sys::resource::{getrusage, UsageWho};
    let seconds = |who| {
        getrusage(who).map_or(0.0, |u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
    };
    [seconds(UsageWho::RUSAGE_SELF), seconds(UsageWho::RUSAGE_CHILDREN)]
}
