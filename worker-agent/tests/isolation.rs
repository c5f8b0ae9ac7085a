//! Job isolation on this machine's real kernel, through the runner the
//! agent uses: a job runs as another user (here `nobody`) in a cgroup of
//! its own (cgroup v1 on the development and CI machines, where tests run
//! as root), started by the `exec-job` helper (`worker-agent-exec`). What a job
//! tries is what an attacker with `jobs:write` would try; each assertion
//! is what the job could see or do.

use orchestrator_shared::api::Resources;
use orchestrator_shared::messages::ShardOutcome;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use worker_agent::isolation::{Sandbox, SandboxConfig};
use worker_agent::runner::{run, CancelHandle, RunLimits, RunReport, RunSpec};

/// A work root and a sandbox of their own, removed when the test ends.
struct Agent {
    limits: RunLimits,
}

/// The `exec-job` helper: the `worker-agent-exec` binary beside the agent's,
/// as the packages install it (the workspace's test command builds both),
/// else the agent's own binary, whose `exec-job` runs the same code.
fn helper() -> PathBuf {
    let agent = Path::new(env!("CARGO_BIN_EXE_worker-agent"));
    let beside = agent.with_file_name("worker-agent-exec");
    if beside.is_file() {
        beside
    } else {
        agent.to_path_buf()
    }
}

impl Agent {
    fn new() -> Agent {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let config = SandboxConfig {
            job_user: "nobody".into(),
            cgroup_root: None,
            require_isolation: false,
            defaults: Resources::default(),
            helper: Some(helper()),
            launchers: true,
        };
        let sandbox = Sandbox::setup(&config, &format!("isolation-test-{id}"), 4)
            .unwrap_or_else(|e| panic!("these tests run as root on a host with cgroups: {e:#}"));
        assert_eq!(sandbox.report().job_user.as_deref(), Some("nobody"));
        assert!(sandbox.report().cgroup.is_some(), "{:?}", sandbox.report());
        Agent {
            limits: RunLimits {
                work_root: std::env::temp_dir().join(format!("isolation-test-{id}")),
                kill_grace: Duration::from_millis(500),
                tail_bytes: 8192,
                sandbox: Arc::new(sandbox),
                keep_workdirs: false,
            },
        }
    }

    async fn run(&self, spec: &RunSpec) -> RunReport {
        run(spec, &self.limits, &CancelHandle::new()).await
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.limits.sandbox.release();
        let _ = std::fs::remove_dir_all(&self.limits.work_root);
    }
}

fn sh(script: &str) -> RunSpec {
    RunSpec {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        env: Vec::new(),
        stdin: String::new(),
        timeout: None,
        workdir_name: format!("run-{}", uuid::Uuid::new_v4().simple()),
        limits: Resources::default(),
        output: None,
    }
}

/// Whether a process whose command line holds `marker` is alive (not a
/// zombie waiting for a reaper).
fn running(marker: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let pid = e.file_name().into_string().ok()?;
            pid.parse::<u32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let state = stat.rsplit(')').next()?.trim_start().chars().next()?;
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (text.contains(marker) && state != 'Z').then(|| format!("{pid}: {text}"))
        })
        .collect()
}

#[tokio::test]
async fn a_job_runs_as_its_user_and_cannot_read_the_agent() {
    let agent = Agent::new();
    // As an agent started with AGENT_TOKEN would have it.
    std::env::set_var("AGENT_TOKEN_FOR_THIS_TEST", "orca_leaked");
    let secret = agent.limits.work_root.with_extension("credential");
    std::fs::write(&secret, "orca_secret").unwrap();
    let mut spec = sh("id -u; \
        cat /proc/$AGENT_PID/environ >/dev/null 2>&1 && echo read-environ || echo no-environ; \
        cat \"$SECRET\" >/dev/null 2>&1 && echo read-secret || echo no-secret; \
        stat -c '%a %U' .; env | grep -c '^AGENT_' || true");
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    spec.env = vec![
        ("AGENT_PID".into(), std::process::id().to_string()),
        ("SECRET".into(), secret.display().to_string()),
    ];
    let r = agent.run(&spec).await;
    let _ = std::fs::remove_file(&secret);
    assert_eq!(r.outcome, ShardOutcome::Succeeded, "{r:?}");
    let lines: Vec<&str> = r.stdout_tail.lines().collect();
    // The one AGENT_* variable is the job's own (AGENT_PID): the agent's
    // environment is not inherited.
    assert_eq!(
        lines,
        ["65534", "no-environ", "no-secret", "700 nobody", "1"],
        "{r:?}"
    );
}

/// A job slot's runs share its working directory, and a run never sees
/// what the run before it left there: files, hidden files, a tree its
/// owner can no longer enter, links. Emptying follows no link.
#[tokio::test]
async fn the_next_run_in_a_slot_starts_in_an_empty_private_directory() {
    let agent = Agent::new();
    let outside = agent.limits.work_root.with_extension("outside");
    std::fs::write(&outside, "not the job's").unwrap();
    let mut first = sh(
        "pwd; touch a .hidden; mkdir -p d/e; echo secret > d/e/f; chmod 000 d; \
        ln -s \"$OUTSIDE\" link; ls -A | wc -l",
    );
    first.env = vec![("OUTSIDE".into(), outside.display().to_string())];
    let r1 = agent.run(&first).await;
    assert_eq!(r1.outcome, ShardOutcome::Succeeded, "{r1:?}");
    let r2 = agent.run(&sh("pwd; ls -A | wc -l; stat -c '%a %U' .")).await;
    assert_eq!(r2.outcome, ShardOutcome::Succeeded, "{r2:?}");
    let kept = std::fs::read_to_string(&outside);
    let _ = std::fs::remove_file(&outside);
    let (one, two): (Vec<&str>, Vec<&str>) =
        (r1.stdout_tail.lines().collect(), r2.stdout_tail.lines().collect());
    assert_eq!(one.get(1), Some(&"4"), "{r1:?}");
    assert_eq!(two.first(), one.first(), "the slot's directory, reused");
    assert_eq!(two.get(1..), Some(&["0", "700 nobody"][..]), "{r2:?}");
    assert_eq!(kept.ok().as_deref(), Some("not the job's"));
}

/// What the `exec-job` helper sets up before it execs the program holds
/// from the program's first instruction: its only group is its own, it
/// cannot regain privileges, and it is in the job's cgroup in every
/// hierarchy.
#[tokio::test]
async fn a_job_starts_in_its_cgroup_with_one_group_and_no_new_privileges() {
    let agent = Agent::new();
    let r = agent
        .run(&sh(
            "id -G; grep NoNewPrivs /proc/self/status; grep -c isolation-test- /proc/self/cgroup",
        ))
        .await;
    assert_eq!(r.outcome, ShardOutcome::Succeeded, "{r:?}");
    let lines: Vec<&str> = r.stdout_tail.lines().collect();
    let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    // The hierarchies the agent uses: on v1 the memory, pids, cpu and
    // freezer controllers it writes limits to; on v2 the one.
    let used = if mine.lines().any(|l| l.starts_with("0::")) && mine.lines().count() == 1 {
        1
    } else {
        mine.lines()
            .filter(|l| {
                ["memory", "pids", "cpu", "freezer"]
                    .iter()
                    .any(|c| l.split(':').nth(1).is_some_and(|s| s.split(',').any(|x| x == *c)))
            })
            .count()
    };
    assert_eq!(lines, ["65534", "NoNewPrivs:\t1", &used.to_string()], "{r:?}");
}

#[tokio::test]
async fn a_job_past_its_memory_limit_fails_with_the_memory_reason() {
    let agent = Agent::new();
    let mut spec = sh("head -c 200000000 /dev/zero | tail > /dev/null");
    spec.limits.memory_mb = Some(32);
    let r = agent.run(&spec).await;
    assert_eq!(r.outcome, ShardOutcome::Failed, "{r:?}");
    let error = r.error.unwrap_or_default();
    assert!(error.starts_with("memory limit of 32 MB exceeded"), "{error}");
}

#[tokio::test]
async fn a_fork_past_max_pids_fails_and_other_jobs_are_unaffected() {
    let agent = Agent::new();
    // A bounded loop: 40 background sleeps against a limit of 8.
    let mut greedy = sh("i=0; while [ $i -lt 40 ]; do sleep 5 & i=$((i+1)); done; echo all-started");
    greedy.limits.max_pids = Some(8);
    let neighbour = sh("sleep 1; i=0; while [ $i -lt 20 ]; do sleep 0 & i=$((i+1)); done; wait; echo fine");
    let (g, n) = tokio::join!(agent.run(&greedy), agent.run(&neighbour));
    assert_eq!(g.outcome, ShardOutcome::Failed, "{g:?}");
    assert!(!g.stdout_tail.contains("all-started"), "{g:?}");
    assert!(g.stderr_tail.to_lowercase().contains("fork"), "{g:?}");
    assert_eq!(n.outcome, ShardOutcome::Succeeded, "{n:?}");
    assert_eq!(n.stdout_tail, "fine\n");
}

/// `setsid sleep <marker>` started by a job, which then ends as `end` says.
async fn nothing_survives(end: &str, timeout: Option<Duration>, cancel_after: Option<Duration>) -> RunReport {
    let agent = Agent::new();
    let marker = format!("{}.{}", 600, std::process::id() * 1000 + rand_suffix());
    let mut spec = sh(&format!("setsid sleep {marker} & sleep 0.3; {end}"));
    spec.timeout = timeout;
    let cancel = CancelHandle::new();
    if let Some(after) = cancel_after {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            cancel.cancel();
        });
    }
    let r = run(&spec, &agent.limits, &cancel).await;
    assert_eq!(running(&format!("sleep {marker}")), Vec::<String>::new(), "{r:?}");
    r
}

fn rand_suffix() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32 % 1000
}

#[tokio::test]
async fn a_detached_process_does_not_outlive_a_completed_job() {
    let r = nothing_survives("exit 0", None, None).await;
    assert_eq!(r.outcome, ShardOutcome::Succeeded, "{r:?}");
}

#[tokio::test]
async fn a_detached_process_does_not_outlive_a_cancelled_job() {
    let r = nothing_survives("sleep 30", None, Some(Duration::from_secs(1))).await;
    assert_eq!(r.outcome, ShardOutcome::Cancelled, "{r:?}");
}

#[tokio::test]
async fn a_detached_process_does_not_outlive_a_timed_out_job() {
    let r = nothing_survives("sleep 30", Some(Duration::from_secs(1)), None).await;
    assert_eq!(r.outcome, ShardOutcome::TimedOut, "{r:?}");
}

/// CPU seconds a busy loop of `seconds` wall-clock seconds got under `cpu`.
fn busy(cpu: f64, seconds: u32) -> RunSpec {
    let mut spec = RunSpec {
        program: "/bin/bash".into(),
        args: vec![
            "-c".into(),
            format!("while (( SECONDS < {seconds} )); do :; done; times"),
        ],
        ..sh("")
    };
    spec.limits.cpu = Some(cpu);
    spec
}

/// The user CPU time `times` printed for the shell itself (`0m1.234s 0m0.010s`).
fn user_seconds(times: &str) -> f64 {
    let first = times.split_whitespace().next().unwrap_or_default();
    let (minutes, rest) = first.split_once('m').unwrap_or(("0", "0s"));
    minutes.parse::<f64>().unwrap_or(0.0) * 60.0 + rest.trim_end_matches('s').parse::<f64>().unwrap_or(0.0)
}

#[tokio::test]
async fn cpu_limits_share_a_busy_agent_in_their_ratio() {
    let agent = Agent::new();
    let (half_spec, one_spec) = (busy(0.5, 4), busy(1.0, 4));
    let (half, one) = tokio::join!(agent.run(&half_spec), agent.run(&one_spec));
    assert_eq!(half.outcome, ShardOutcome::Succeeded, "{half:?}");
    assert_eq!(one.outcome, ShardOutcome::Succeeded, "{one:?}");
    let (h, o) = (user_seconds(&half.stdout_tail), user_seconds(&one.stdout_tail));
    println!(
        "cpu 0.5 got {h:.2} s, cpu 1.0 got {o:.2} s of 4 s: ratio {:.2}",
        o / h
    );
    assert!(h > 0.0 && h < 3.0, "cpu 0.5 got {h} s of CPU in 4 s");
    assert!(o / h > 1.3 && o / h < 3.0, "ratio {:.2} ({o} / {h})", o / h);
}

/// The parent of a job's shell: its pid and command line.
fn parent_of_job() -> RunSpec {
    sh("echo $PPID; tr '\\0' ' ' < /proc/$PPID/cmdline; echo")
}

fn parent(report: &RunReport) -> (u32, String) {
    assert_eq!(report.outcome, ShardOutcome::Succeeded, "{report:?}");
    let mut lines = report.stdout_tail.lines();
    let pid = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0);
    (pid, lines.next().unwrap_or_default().to_owned())
}

/// A slot's jobs are started by the slot's launcher, one process that
/// stays in the slot's cgroups from one job to the next (killing what a
/// job left spares it), not by a helper executed per job.
#[tokio::test]
async fn a_slots_jobs_are_started_by_one_launcher_that_outlives_each_job() {
    let agent = Agent::new();
    let (first, line) = parent(&agent.run(&parent_of_job()).await);
    assert!(line.contains("serve-slot"), "the job's parent: {line}");
    // Its job left a process behind, which the end of the job kills.
    let r = agent.run(&sh("setsid sleep 30 & echo $PPID")).await;
    assert_eq!(r.stdout_tail.trim(), first.to_string(), "{r:?}");
    let (again, _) = parent(&agent.run(&parent_of_job()).await);
    assert_eq!(again, first, "the same launcher");
}

/// A job runs as another user: it cannot signal the root launcher that
/// started it, which serves the slot's next job.
#[tokio::test]
async fn a_job_cannot_kill_its_launcher() {
    let agent = Agent::new();
    let r = agent.run(&sh("kill -9 $PPID 2>&1 || echo refused")).await;
    assert!(r.stdout_tail.contains("refused"), "{r:?}");
    let (_, line) = parent(&agent.run(&parent_of_job()).await);
    assert!(line.contains("serve-slot"), "{line}");
}

/// A launcher that died between jobs is replaced at the slot's next job,
/// and a clean stop leaves no launcher running.
#[tokio::test]
async fn a_dead_launcher_is_replaced_and_a_stop_ends_them() {
    let agent = Agent::new();
    let (first, line) = parent(&agent.run(&parent_of_job()).await);
    assert!(line.contains("serve-slot"), "the job's parent: {line}");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(first).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (second, line) = parent(&agent.run(&parent_of_job()).await);
    assert_ne!(second, first);
    assert!(line.contains("serve-slot"), "{line}");
    agent.limits.sandbox.release();
    let state = std::fs::read_to_string(format!("/proc/{second}/stat")).unwrap_or_default();
    let alive = !state.is_empty()
        && !state
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z');
    assert!(!alive, "the launcher still runs after the stop: {state}");
}

/// A slot's runs after an OOM kill: the kill counter of its cgroup goes
/// on from run to run, so the next run's failure of its own is not blamed
/// on memory, and the run after, past the limit again, is.
#[tokio::test]
async fn after_an_oom_kill_a_slots_next_failure_is_its_own() {
    let agent = Agent::new();
    let mut greedy = sh("head -c 200000000 /dev/zero | tail > /dev/null");
    greedy.limits.memory_mb = Some(32);
    let mut failing = sh("exit 3");
    failing.limits.memory_mb = Some(32);
    let first = agent.run(&greedy).await;
    assert!(first
        .error
        .unwrap_or_default()
        .starts_with("memory limit of 32 MB"));
    let r = agent.run(&failing).await;
    assert_eq!((r.outcome, r.exit_code), (ShardOutcome::Failed, Some(3)), "{r:?}");
    assert!(!r.error.clone().unwrap_or_default().contains("OOM"), "{r:?}");
    let again = agent.run(&greedy).await;
    assert!(again
        .error
        .unwrap_or_default()
        .starts_with("memory limit of 32 MB"));
}

/// The directories of the cgroups a job ran in (memory, pids, cpu and
/// freezer), from the `/proc/self/cgroup` it printed, and its parent.
fn cgroups_and_parent(report: &RunReport) -> (Vec<PathBuf>, i32) {
    assert_eq!(report.outcome, ShardOutcome::Succeeded, "{report:?}");
    let mut lines: Vec<&str> = report.stdout_tail.lines().collect();
    let parent = lines.pop().and_then(|l| l.parse().ok()).unwrap_or(0);
    let dirs = lines
        .iter()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':').skip(1);
            let (controller, path) = (parts.next()?, parts.next()?);
            ["memory", "pids", "cpu", "freezer"]
                .contains(&controller)
                .then(|| PathBuf::from(format!("/sys/fs/cgroup/{controller}{path}")))
        })
        .collect();
    (dirs, parent)
}

/// A slot's cgroup that was removed while no launcher lived in it (a
/// host's cleanup of empty cgroups) is made again at the slot's next run.
#[tokio::test]
async fn a_slots_cgroup_removed_while_its_launcher_was_dead_is_made_again() {
    let agent = Agent::new();
    let job = sh("cat /proc/self/cgroup; echo $PPID");
    let (dirs, launcher) = cgroups_and_parent(&agent.run(&job).await);
    assert!(
        dirs.len() == 4 && dirs.iter().all(|d| d.ends_with("slot-0")),
        "{dirs:?}"
    );
    let pid = nix::unistd::Pid::from_raw(launcher);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    for dir in &dirs {
        for _ in 0..100 {
            if std::fs::remove_dir(dir).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!dir.exists(), "{} is still there", dir.display());
    }
    let (again, _) = cgroups_and_parent(&agent.run(&job).await);
    assert_eq!(again, dirs);
    assert!(dirs.iter().all(|d| d.is_dir()), "{dirs:?}");
}
