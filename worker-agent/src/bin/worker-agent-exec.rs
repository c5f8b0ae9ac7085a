//! `worker-agent-exec`: the `exec-job` helper as a binary of its own. It
//! runs the same code as `worker-agent exec-job`
//! ([`worker_agent::isolation::exec`]), but it is a tenth of the agent's
//! size and has a twentieth of its relocations. The helper starts once for
//! every job, so loading the whole agent binary there cost about 0.35 ms of
//! CPU per job. The agent uses this binary when it is installed beside its
//! own, and runs `worker-agent exec-job` otherwise.

fn main() {
    std::process::exit(worker_agent::isolation::exec::main(std::env::args_os()));
}
