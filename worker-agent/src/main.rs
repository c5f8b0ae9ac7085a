//! The `worker-agent` binary: runs on each worker host, consumes job shards
//! from the broker and runs them as child processes. This first version
//! parses its configuration, logs, and exits cleanly on SIGTERM/SIGINT; the
//! job flow arrives with the broker topology.

use anyhow::Context;
use clap::Parser;

/// A worker agent of the orchestrator.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Config {
    /// Base URL of the controller's API.
    #[arg(long, env = "AGENT_CONTROLLER_URL", default_value = "http://127.0.0.1:8000")]
    controller_url: String,
    /// RabbitMQ connection string.
    #[arg(
        long,
        env = "AGENT_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    amqp_url: String,
    /// Unique id of this agent; defaults to the host name.
    #[arg(long, env = "AGENT_WORKER_ID")]
    worker_id: Option<String>,
    /// Jobs run at once (also the broker prefetch).
    #[arg(long, env = "AGENT_CAPACITY", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=1024))]
    capacity: i32,
    /// Allow jobs to run their own `command` (otherwise only the executor runs).
    #[arg(long, env = "AGENT_ALLOW_COMMANDS", default_value_t = false)]
    allow_commands: bool,
    /// Log one JSON object per line.
    #[arg(long, env = "AGENT_LOG_JSON", default_value_t = false)]
    log_json: bool,
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "worker".to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    orchestrator_shared::runtime::init_logging(config.log_json, "info")
        .context("installing the log subscriber")?;
    let worker_id = config.worker_id.clone().unwrap_or_else(hostname);
    if !orchestrator_shared::validate::is_valid_worker_id(&worker_id) {
        anyhow::bail!("worker id {worker_id:?} must be 1-128 chars of [A-Za-z0-9._:-]");
    }
    tracing::info!(%worker_id, capacity = config.capacity, controller = %config.controller_url, "agent started");
    orchestrator_shared::runtime::shutdown_signal().await;
    tracing::info!(%worker_id, "agent stopped");
    Ok(())
}
