//! `noop-agent`: the real worker agent (the `worker_agent` library, its
//! flags and variables) with one change: it runs no process, and every
//! shard it claims succeeds at once. Consume, claim, report, confirm and
//! ack stay real, and so does everything the controller, Postgres and
//! RabbitMQ do for a job, so `loadgen --agent-bin target/release/noop-agent`
//! measures what one controller can drive when the agents' hosts do the
//! forking. A benchmark tool only: it is not packaged.

use worker_agent::AgentConfig;

fn main() -> anyhow::Result<()> {
    let mut config = AgentConfig::try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit());
    config.noop_runner = true;
    worker_agent::run_process(config)
}
