//! The `worker-agent` binary: parses its configuration, installs logging,
//! and runs the agent until SIGTERM or SIGINT (see the library for the rest).

use anyhow::Context;
use worker_agent::AgentConfig;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let config = AgentConfig::try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit());
    orchestrator_shared::runtime::init_logging(config.log_json, "info")
        .context("installing the log subscriber")?;
    worker_agent::run(config, orchestrator_shared::runtime::shutdown_signal()).await
}
