//! The `worker-agent` binary: parses its configuration, installs logging,
//! and runs the agent until SIGTERM or SIGINT (see the library for the rest).

use worker_agent::AgentConfig;

fn main() -> anyhow::Result<()> {
    let config = AgentConfig::try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit());
    worker_agent::run_process(config)
}
