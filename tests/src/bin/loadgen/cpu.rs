//! Where the box's CPU went during a run, per job: the controller (an
//! in-process one by its runtime's threads), the load generator, the
//! agents, what the agents ran (their children: the job slots' launchers,
//! the `exec-job` helper and the job), Postgres and RabbitMQ (from their containers' cgroups),
//! `docker-proxy` (the engine's port forwarding), and the rest of the box
//! (from `/proc/stat`: everything busy that none of these account for).

use serde_json::{json, Value};
use std::path::PathBuf;

/// Clock ticks per second of `/proc/*/stat` and `/proc/stat` (USER_HZ,
/// 100 on every Linux this runs on).
const TICKS: f64 = 100.0;

/// CPU seconds used so far by each part of the box.
#[derive(Debug, Clone, Copy, Default)]
pub struct Host {
    /// Every CPU's busy time (user, nice, system, irq, softirq, steal).
    pub busy: f64,
    /// The Postgres container's cgroup.
    pub postgres: Option<f64>,
    /// The RabbitMQ container's cgroup.
    pub rabbitmq: Option<f64>,
    /// Every `docker-proxy` process.
    pub docker_proxy: f64,
}

impl Host {
    /// The figures now, for the containers with these ids (if known).
    pub fn read(postgres: Option<&str>, rabbitmq: Option<&str>) -> Host {
        Host {
            busy: busy_seconds(),
            postgres: postgres.and_then(container_seconds),
            rabbitmq: rabbitmq.and_then(container_seconds),
            docker_proxy: named_seconds("docker-proxy"),
        }
    }
}

/// The busy seconds of all CPUs, from the first line of `/proc/stat`.
fn busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum::<f64>()
        / TICKS
}

/// A container's CPU seconds from its cgroup: v1's `cpuacct.usage`
/// (nanoseconds) or v2's `usage_usec`, under the engine's cgroupfs or
/// systemd layout.
fn container_seconds(id: &str) -> Option<f64> {
    let v1 = [
        format!("/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage"),
        format!("/sys/fs/cgroup/cpu,cpuacct/docker/{id}/cpuacct.usage"),
    ];
    for path in v1.iter().map(PathBuf::from) {
        if let Some(ns) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
        {
            return Some(ns / 1e9);
        }
    }
    let v2 = [
        format!("/sys/fs/cgroup/docker/{id}/cpu.stat"),
        format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/cpu.stat"),
    ];
    v2.iter().find_map(|path| {
        let stat = std::fs::read_to_string(path).ok()?;
        let usec: f64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))?
            .trim()
            .parse()
            .ok()?;
        Some(usec / 1e6)
    })
}

/// The name of the threads of the runtime the in-process controller runs
/// on (Linux keeps 15 bytes of a thread's name), so that its CPU is told
/// apart from the load generator's, which shares the process.
pub const CONTROLLER_THREADS: &str = "orch-controller";

/// The CPU seconds of this process's threads named `comm` (alive now: the
/// controller's runtime keeps its threads for the whole run).
pub fn own_threads_seconds(comm: &str) -> f64 {
    seconds_named_in("/proc/self/task", comm)
}

/// The CPU seconds of every process named `comm` (alive now).
fn named_seconds(comm: &str) -> f64 {
    seconds_named_in("/proc", comm)
}

/// The CPU seconds of the entries of `dir` (processes in `/proc`, threads
/// in a process's `task`) whose `comm` is `comm`.
fn seconds_named_in(dir: &str, comm: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir(dir) else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == comm))
        .map(|e| process_seconds(&e.path().join("stat")).0)
        .sum()
}

/// A process's own CPU seconds (utime + stime) and those of the children
/// it has waited for (cutime + cstime), from its `stat` file.
pub fn process_seconds(stat: &std::path::Path) -> (f64, f64) {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    let fields: Vec<f64> = text
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|v| v.parse().ok())
        .collect();
    let sum =
        |range: std::ops::Range<usize>| fields.get(range).map_or(0.0, |f| f.iter().sum::<f64>() / TICKS);
    (sum(0..2), sum(2..4))
}

/// CPU seconds of `pid`'s children that are still running, their own and
/// their waited-for children's: an agent's job slot launchers, which live
/// as long as the agent and wait for its jobs themselves, so neither shows
/// in the agent's `cutime` while it runs.
pub fn live_children_seconds(pid: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|e| e.path().join("stat"))
        .filter(|stat| parent_pid(stat).is_some_and(|p| p == pid))
        .map(|stat| {
            let (own, children) = process_seconds(&stat);
            own + children
        })
        .sum()
}

/// The parent pid in a `stat` file (its fourth field).
fn parent_pid(stat: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(stat).ok()?;
    text.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)
        .map(str::to_owned)
}

/// Milliseconds of CPU per job for each part, from the figures before and
/// after the run and the processes' own (controller, load generator,
/// agents, agents' children) already measured as differences.
pub fn per_job(before: &Host, after: &Host, processes: [f64; 4], jobs: usize) -> Value {
    let ms = |seconds: f64| seconds * 1000.0 / jobs.max(1) as f64;
    let diff = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| b - a);
    let postgres = diff(before.postgres, after.postgres);
    let rabbitmq = diff(before.rabbitmq, after.rabbitmq);
    let proxy = after.docker_proxy - before.docker_proxy;
    let total = after.busy - before.busy;
    let [controller, loadgen, agents, children] = processes;
    let known =
        controller + loadgen + agents + children + postgres.unwrap_or(0.0) + rabbitmq.unwrap_or(0.0) + proxy;
    json!({
        "controller": ms(controller),
        "load_generator": ms(loadgen),
        "agents": ms(agents),
        "agents_children": ms(children),
        "postgres": postgres.map(ms),
        "rabbitmq": rabbitmq.map(ms),
        "docker_proxy": ms(proxy),
        "rest_of_box": ms((total - known).max(0.0)),
        "box_total": ms(total),
    })
}
