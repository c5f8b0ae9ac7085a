use super::*;
use std::time::Instant;

/// A work root of its own, removed when the test ends.
struct Root(PathBuf);

impl Root {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("worker-agent-test-{}", uuid::Uuid::new_v4().simple()));
        Root(dir)
    }

    fn limits(&self, grace: Duration) -> RunLimits {
        RunLimits {
            work_root: self.0.clone(),
            kill_grace: grace,
            tail_bytes: 1024,
            sandbox: Arc::new(Sandbox::none()),
            keep_workdirs: false,
        }
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
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

/// Whether `pid` is gone or a zombie (a reparented grandchild may wait for
/// a reaper that this container's init does not run).
fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

fn pids(text: &str) -> Vec<i32> {
    text.split_whitespace().filter_map(|w| w.parse().ok()).collect()
}

#[tokio::test]
async fn exit_code_tails_and_environment() {
    let root = Root::new();
    let mut spec = sh("echo \"$JOB_ID/$SHARD_INDEX\"; echo err >&2; exit 3");
    spec.env = vec![
        ("JOB_ID".into(), "j-1".into()),
        ("SHARD_INDEX".into(), "2".into()),
    ];
    let r = run(&spec, &root.limits(Duration::from_secs(1)), &CancelHandle::new()).await;
    assert_eq!(r.outcome, ShardOutcome::Failed);
    assert_eq!(r.exit_code, Some(3));
    assert_eq!(r.stdout_tail, "j-1/2\n");
    assert_eq!(r.stderr_tail, "err\n");
    assert_eq!(r.error.as_deref(), Some("exited with code 3"));
}

#[tokio::test]
async fn success_and_bounded_output() {
    let root = Root::new();
    let spec = sh("i=0; while [ $i -lt 500 ]; do echo line-$i; i=$((i+1)); done");
    let r = run(&spec, &root.limits(Duration::from_secs(1)), &CancelHandle::new()).await;
    assert_eq!(r.outcome, ShardOutcome::Succeeded);
    assert_eq!(r.exit_code, Some(0));
    assert_eq!(r.error, None);
    assert_eq!(r.stdout_tail.len(), 1024);
    assert!(r.stdout_tail.ends_with("line-499\n"), "{}", r.stdout_tail);
}

#[tokio::test]
async fn the_agent_token_is_not_inherited() {
    let root = Root::new();
    std::env::set_var("AGENT_TEST_CREDENTIAL", "do-not-leak");
    let spec = sh("env | grep '^AGENT_' || true");
    let r = run(&spec, &root.limits(Duration::from_secs(1)), &CancelHandle::new()).await;
    assert_eq!(r.outcome, ShardOutcome::Succeeded);
    assert_eq!(r.stdout_tail, "");
}

#[tokio::test]
async fn stdin_carries_the_input_then_closes() {
    let root = Root::new();
    let mut spec = sh("cat; echo '<eof>'");
    spec.stdin = "build the thing\n".into();
    let r = run(&spec, &root.limits(Duration::from_secs(1)), &CancelHandle::new()).await;
    assert_eq!(r.outcome, ShardOutcome::Succeeded);
    assert_eq!(r.stdout_tail, "build the thing\n<eof>\n");
}

#[tokio::test]
async fn the_working_directory_is_fresh_and_removed() {
    let root = Root::new();
    let spec = sh("pwd; ls -A | wc -l; touch left-behind");
    let dir = root.0.join(&spec.workdir_name);
    let r = run(&spec, &root.limits(Duration::from_secs(1)), &CancelHandle::new()).await;
    assert_eq!(r.outcome, ShardOutcome::Succeeded, "{r:?}");
    let mut lines = r.stdout_tail.lines();
    let pwd = PathBuf::from(lines.next().unwrap_or_default());
    assert_eq!(pwd.canonicalize().ok(), None, "removed afterwards");
    assert_eq!(pwd.file_name(), dir.file_name());
    assert_eq!(lines.next().map(str::trim), Some("0"), "empty at the start");
    assert!(!dir.exists());
}

#[tokio::test]
async fn kept_working_directories_stay_private() {
    use std::os::unix::fs::PermissionsExt;
    let root = Root::new();
    let spec = sh("echo kept > result");
    let limits = RunLimits {
        keep_workdirs: true,
        ..root.limits(Duration::from_secs(1))
    };
    let r = run(&spec, &limits, &CancelHandle::new()).await;
    assert_eq!(r.outcome, ShardOutcome::Succeeded, "{r:?}");
    let dir = root.0.join(&spec.workdir_name);
    assert_eq!(std::fs::read_to_string(dir.join("result")).unwrap(), "kept\n");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&root.0), mode(&dir)), (0o711, 0o700));
}

#[tokio::test]
async fn the_sweep_removes_leftovers_of_an_earlier_life() {
    let root = Root::new();
    std::fs::create_dir_all(root.0.join("old-run/nested")).unwrap();
    std::fs::write(root.0.join("old-run/nested/file"), b"x").unwrap();
    std::fs::write(root.0.join("stray-file"), b"x").unwrap();
    sweep_work_root(&root.0).await;
    assert_eq!(std::fs::read_dir(&root.0).unwrap().count(), 0);
    sweep_work_root(&root.0.join("missing")).await;
}

#[tokio::test]
async fn a_missing_program_fails_clearly() {
    let root = Root::new();
    let spec = RunSpec {
        program: "/no/such/program".into(),
        ..sh("")
    };
    let r = run(&spec, &root.limits(Duration::from_secs(1)), &CancelHandle::new()).await;
    assert_eq!(r.outcome, ShardOutcome::Failed);
    assert_eq!(r.exit_code, None);
    let error = r.error.unwrap_or_default();
    assert!(
        error.contains("could not start") && error.contains("/no/such/program"),
        "{error}"
    );
    assert!(!root.0.join(&spec.workdir_name).exists());
}

#[tokio::test]
async fn a_timeout_stops_the_whole_group() {
    let root = Root::new();
    let mut spec = sh("echo $$; sleep 30 & echo $!; wait");
    spec.timeout = Some(Duration::from_secs(1));
    let started = Instant::now();
    let r = run(&spec, &root.limits(Duration::from_secs(5)), &CancelHandle::new()).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.outcome, ShardOutcome::TimedOut);
    assert_eq!(r.exit_code, None);
    let pids = pids(&r.stdout_tail);
    assert_eq!(pids.len(), 2, "{}", r.stdout_tail);
    for pid in pids {
        assert!(is_dead(pid), "process {pid} survived");
    }
}

#[tokio::test]
async fn sigterm_ignored_means_sigkill_after_the_grace() {
    let root = Root::new();
    let mut spec = sh("trap '' TERM; sleep 30 & echo $!; wait");
    spec.timeout = Some(Duration::from_millis(300));
    let started = Instant::now();
    let r = run(
        &spec,
        &root.limits(Duration::from_millis(700)),
        &CancelHandle::new(),
    )
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(r.outcome, ShardOutcome::TimedOut);
    for pid in pids(&r.stdout_tail) {
        assert!(is_dead(pid), "process {pid} survived");
    }
}

#[tokio::test]
async fn cancel_ends_cancelled() {
    let root = Root::new();
    let spec = sh("sleep 30");
    let cancel = CancelHandle::new();
    let limits = root.limits(Duration::from_secs(5));
    let stopper = {
        let cancel = cancel.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            cancel.cancel();
        }
    };
    let started = Instant::now();
    let (r, ()) = tokio::join!(run(&spec, &limits, &cancel), stopper);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.outcome, ShardOutcome::Cancelled);
    assert_eq!(r.error.as_deref(), Some("cancelled"));
}

#[tokio::test]
async fn cancelled_before_start_never_runs() {
    let root = Root::new();
    let cancel = CancelHandle::new();
    cancel.cancel();
    let r = run(&sh("echo ran"), &root.limits(Duration::from_secs(1)), &cancel).await;
    assert_eq!(r.outcome, ShardOutcome::Cancelled);
    assert_eq!(r.stdout_tail, "");
}

#[tokio::test]
async fn a_signal_is_named() {
    let root = Root::new();
    let r = run(
        &sh("kill -USR1 $$"),
        &root.limits(Duration::from_secs(1)),
        &CancelHandle::new(),
    )
    .await;
    assert_eq!(r.outcome, ShardOutcome::Failed);
    assert_eq!(r.exit_code, None);
    assert_eq!(r.error.as_deref(), Some("killed by signal SIGUSR1 (10)"));
}
