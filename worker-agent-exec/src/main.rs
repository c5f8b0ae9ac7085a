//! `worker-agent-exec`: the `exec-job` helper as a binary of its own. It
//! runs the same code as `worker-agent exec-job` (this crate's library),
//! but it is a small fraction of the agent's size, and it can be linked
//! statically: it starts once for every job, so what its start costs is
//! paid per job. The agent uses this binary when it is installed beside
//! its own, and runs `worker-agent exec-job` otherwise.

fn main() {
    std::process::exit(worker_agent_exec::main(std::env::args_os()));
}
