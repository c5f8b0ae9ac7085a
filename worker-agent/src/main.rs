//! The `worker-agent` binary: parses its configuration, installs logging,
//! and runs the agent until SIGTERM or SIGINT (see the library for the rest).
//! Started as `worker-agent exec-job …` it is instead the helper that puts
//! one job's program in its cgroup and user ([`worker_agent::isolation::exec`]),
//! and as `worker-agent serve-slot …` a job slot's launcher, before any
//! runtime or thread exists.

use worker_agent::isolation::exec;
use worker_agent::AgentConfig;

fn main() -> anyhow::Result<()> {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| exec::SUBCOMMANDS.iter().any(|s| a == *s))
    {
        std::process::exit(exec::main(std::env::args_os()));
    }
    let config = AgentConfig::try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit());
    worker_agent::run_process(config)
}
