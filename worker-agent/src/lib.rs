//! The orchestrator's worker agent: runs on each worker host, takes job
//! shards from RabbitMQ, asks the controller whether to run each one (the
//! claim), runs it as a child process, and reports how it ended. It never
//! touches Postgres: the controller is the only writer of state, and the
//! agent only talks HTTP to it and AMQP to the broker.
//!
//! A delivery is acknowledged only after its `ShardFinished` report is
//! confirmed by the broker, so a shard whose agent dies, or whose report
//! cannot be sent, is handed out again; the controller's fencing (attempt
//! numbers and the claim) makes the second run harmless.
//!
//! # Layout
//! - [`config`]: flags and `AGENT_*` variables ([`AgentConfig`]), `Secret`.
//! - `agent`: the life cycle behind [`run`]: register, heartbeat, drain,
//!   `Stopped`.
//! - `session`: the supervised broker connection: topology, the control
//!   and jobs consumers (pause and resume start and stop the latter),
//!   reconnection with backoff.
//! - `job`: one job delivery: parse, claim, run, report, acknowledge.
//! - `control`: commands on the agent's control queue.
//! - `state`: what the tasks share (switches, running shards, deliveries
//!   in hand); it outlives connections.
//! - `publisher`: events to the broker with publisher confirms, on
//!   whichever connection is current.
//! - `client`: the controller's HTTP agent API (register, claim).
//! - `claims`: claims gathered into batches, one request for many.
//! - `reports`: shard reports gathered into messages, one for many when
//!   the controller takes batches.
//! - `classes`: which job queues (pools and selectors) to consume, asked
//!   of the controller now and then.
//! - `output`: a shard's output sent to the controller while it runs.
//! - `retry`: a request to the controller retried for a bounded time.
//! - [`runner`]: one child process: working directory, stdin, output tails,
//!   timeout and cancel through its process group.
//! - [`isolation`]: the job's user, its cgroup and limits, each job slot's
//!   launcher (which lives in the slot's cgroups and forks its jobs as its
//!   user), and the `exec-job` helper that enters both before the program
//!   runs, for a run without a launcher.
//! - [`tail`]: the bounded output buffer.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod agent;
mod claims;
mod classes;
mod client;
pub mod config;
mod control;
pub mod isolation;
mod job;
mod output;
mod publisher;
mod reports;
mod retry;
pub mod runner;
mod session;
mod state;
pub mod tail;

/// Runs the agent until its shutdown future resolves (the one entry point
/// for `main`, tests and embedders).
pub use agent::run;
/// The agent's settings, re-exported because every caller of [`run`] needs
/// them.
pub use config::AgentConfig;

/// Runs the agent as its own process: a single-threaded runtime, logging
/// installed, until SIGTERM or SIGINT. What the `worker-agent` binary does,
/// and the load generator's `noop-agent` with its runner switched off.
pub fn run_process(config: AgentConfig) -> anyhow::Result<()> {
    use anyhow::Context;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async move {
            orchestrator_shared::runtime::init_logging(config.log_json, "info")
                .context("installing the log subscriber")?;
            run(config, orchestrator_shared::runtime::shutdown_signal()).await
        })
}
