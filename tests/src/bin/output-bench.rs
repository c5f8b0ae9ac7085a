//! Output streaming's benchmark, not a test: one job printing `--mb` MB at
//! full speed on one agent, run once per mode (streamed with the default
//! 16 MiB cap, streamed with a cap above the output, not streamed), each on
//! a fresh cluster. Prints per mode the time from submission to
//! completion, the bytes kept, and the agent's peak RSS; and at the end the
//! peak RSS of this process, which holds the controller.
//!
//! ```sh
//! cargo build --release -p worker-agent
//! cargo run --release -p integration-tests --bin output-bench -- --agent-bin target/release/worker-agent
//! ```

use anyhow::{ensure, Context};
use clap::Parser;
use integration_tests::cluster::Cluster;
use serde_json::{json, Value};
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// The worker-agent binary to start.
    #[arg(long, default_value = "target/release/worker-agent")]
    agent_bin: String,
    /// Megabytes (10^6 bytes) the job prints.
    #[arg(long, default_value_t = 100)]
    mb: u64,
}

/// Peak resident set (`VmHWM`) of process `pid`, in MiB.
fn peak_rss_mib(pid: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM")?;
    Ok(kib / 1024.0)
}

/// Runs the job on a fresh cluster whose agent has `flags`; prints a line.
async fn run_mode(args: &Args, name: &str, flags: &[&str]) -> anyhow::Result<()> {
    let mut c = Cluster::start(&args.agent_bin).await;
    c.agent_args = flags.iter().map(|f| (*f).to_owned()).collect();
    c.add_agent("bench-1", 1).await;
    let agent = c.agent_pids().first().copied().context("no agent")?;
    let bytes = args.mb * 1_000_000;
    let script =
        format!("yes 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ | head -c {bytes}");
    let started = Instant::now();
    let job = c.submit(&["/bin/sh", "-c", &script], json!({})).await;
    let id = job["job_id"].as_str().unwrap_or_default().to_owned();
    let done = c.wait_job(&id, |j| j["finished_at"] != Value::Null).await;
    let elapsed = started.elapsed();
    ensure!(done["status"] == "completed", "the job did not complete: {done}");
    let out: Value = c
        .app
        .get(&format!("/api/jobs/{id}/output?limit=1"), &c.app.admin_token)
        .await
        .json()
        .await?;
    let rss = peak_rss_mib(&agent.to_string())?;
    println!(
        "{name:<34} {:>7.2} s  kept {:>10} B  truncated {:<5}  agent peak RSS {rss:>6.1} MiB",
        elapsed.as_secs_f64(),
        out["stdout_bytes"],
        out["truncated"],
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        std::path::Path::new(&args.agent_bin).exists(),
        "no agent binary at {} (cargo build --release -p worker-agent)",
        args.agent_bin
    );
    let above = (args.mb * 1_000_000 + (1 << 20)).to_string();
    println!("one job printing {} MB at full speed, one agent:", args.mb);
    run_mode(&args, "streamed, default cap (16 MiB)", &[]).await?;
    run_mode(
        &args,
        "streamed, cap above the output",
        &["--output-cap-bytes", &above],
    )
    .await?;
    run_mode(
        &args,
        "not streamed (--stream-output false)",
        &["--stream-output", "false"],
    )
    .await?;
    println!(
        "this process (controller, harness) peak RSS {:.1} MiB",
        peak_rss_mib("self")?
    );
    Ok(())
}
