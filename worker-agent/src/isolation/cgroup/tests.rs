//! The cgroup interface on both versions. v2 runs against a directory laid
//! out like a delegated v2 subtree (cgroupfs is plain files to this code);
//! v1 also runs for real on the test machine's hierarchies (the
//! development and CI machines run cgroup v1 as root).

use super::*;

/// A temporary directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("cg-{tag}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fake delegated v2 cgroup at `dir`, holding `pids`.
fn fake_v2(dir: &Path, pids: &str) {
    std::fs::write(dir.join("cgroup.controllers"), "cpu memory pids").unwrap();
    std::fs::write(dir.join("cgroup.procs"), pids).unwrap();
}

const LIMITS: Limits = Limits {
    memory_mb: Some(256),
    cpu: Some(0.5),
    max_pids: Some(64),
};

#[test]
fn v2_limits_go_to_the_unified_files() {
    let root = Dir::new("v2");
    fake_v2(&root.0, "");
    let tree = CgroupTree::open(Some(&root.0), "agent-w").unwrap();
    assert_eq!(tree.version(), "v2");
    let control = read(&root.0.join("agent-w/cgroup.subtree_control"));
    assert_eq!(control, "+memory +pids +cpu");
    let job = tree.create("job-1", &LIMITS).unwrap();
    let dir = root.0.join("agent-w/job-1");
    assert_eq!(read(&dir.join("memory.max")), (256u64 << 20).to_string());
    assert_eq!(read(&dir.join("pids.max")), "64");
    assert_eq!(read(&dir.join("cpu.max")), "50000 100000");
    assert_eq!(read(&dir.join("cpu.weight")), "50");
    assert_eq!(job.procs_files(), [dir.join("cgroup.procs")]);
}

#[test]
fn v2_agent_in_the_delegated_cgroup_moves_itself_to_a_leaf() {
    let root = Dir::new("v2leaf");
    fake_v2(&root.0, &format!("1\n{}\n", std::process::id()));
    CgroupTree::open(Some(&root.0), "agent-w").unwrap();
    let leaf = read(&root.0.join("supervisor/cgroup.procs"));
    assert_eq!(leaf, std::process::id().to_string());
    assert_eq!(read(&root.0.join("cgroup.subtree_control")), "+memory +pids +cpu");
}

#[test]
fn oom_kills_are_read_on_both_versions() {
    let root = Dir::new("oom");
    fake_v2(&root.0, "");
    let tree = CgroupTree::open(Some(&root.0), "a").unwrap();
    let job = tree.create("j", &Limits::default()).unwrap();
    assert_eq!(job.oom_kills(), 0);
    let events = "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n";
    std::fs::write(root.0.join("a/j/memory.events"), events).unwrap();
    assert_eq!(job.oom_kills(), 2);
}

#[test]
fn v1_needs_every_controller_and_names_the_missing_ones() {
    let root = Dir::new("v1");
    for c in ["memory", "pids"] {
        std::fs::create_dir_all(root.0.join(c)).unwrap();
        std::fs::write(root.0.join(c).join("cgroup.procs"), "").unwrap();
    }
    let err = CgroupTree::open(Some(&root.0), "a").unwrap_err();
    assert!(err.to_string().contains("cpu, freezer"), "{err}");
}

#[test]
fn proc_self_cgroup_lines_are_parsed() {
    let text = "9:name=systemd:/\n4:memory:/process_api/x\n2:cpu,cpuacct:/a/b\n0::/unified\n";
    assert_eq!(v1_path(text, "memory"), Some("/process_api/x"));
    assert_eq!(v1_path(text, "cpu"), Some("/a/b"));
    assert_eq!(v1_path(text, "cpuacct"), Some("/a/b"));
    assert_eq!(v1_path(text, "pids"), None);
    assert_eq!(v2_path(text), Some("/unified"));
}

/// The machine's own hierarchy (cgroup v1 on the development and CI
/// machines, where tests run as root).
fn real_tree(tag: &str) -> CgroupTree {
    let name = format!("orchestrator-test-{tag}-{}", std::process::id());
    CgroupTree::open(None, &name)
        .unwrap_or_else(|e| panic!("these tests need a writable cgroup hierarchy (run as root): {e}"))
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

#[tokio::test]
async fn killing_a_real_cgroup_reaches_processes_that_left_the_process_group() {
    let tree = real_tree("kill");
    let job = tree.create("job", &LIMITS).unwrap();
    // It starts its escaping child only once it is in the cgroup.
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", "read go; setsid sleep 600 & echo $!; sleep 600"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    for procs in job.procs_files() {
        std::fs::write(procs, pid.to_string()).unwrap();
    }
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"go\n")
        .await
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line)
        .await
        .unwrap();
    let escaped: u32 = line.trim().parse().unwrap();
    assert!(alive(escaped));
    // The shell, its `sleep 600` and the escaped `sleep 600`.
    assert!(job.kill().await >= 2);
    child.wait().await.unwrap();
    assert!(!alive(escaped), "the setsid child survived the kill");
    job.remove().await;
    assert_eq!(tree.sweep().await, 0);
    tree.remove_agent_dirs();
}

#[tokio::test]
async fn a_restarted_agent_sweeps_what_its_earlier_life_left() {
    let tree = real_tree("sweep");
    let job = tree.create("left-behind", &Limits::default()).unwrap();
    let mut child = tokio::process::Command::new("sleep").arg("600").spawn().unwrap();
    let pid = child.id().unwrap();
    for procs in job.procs_files() {
        std::fs::write(procs, pid.to_string()).unwrap();
    }
    drop(job);
    assert_eq!(tree.sweep().await, 1);
    child.wait().await.unwrap();
    assert!(!alive(pid));
    tree.remove_agent_dirs();
}

#[test]
fn a_reused_cgroup_gets_only_the_changes_and_unset_limits_back_to_default() {
    let root = Dir::new("reuse");
    fake_v2(&root.0, "");
    let tree = CgroupTree::open(Some(&root.0), "a").unwrap();
    let slot = tree.child("slot-0").unwrap();
    slot.apply(None, &LIMITS).unwrap();
    let dir = root.0.join("a/slot-0");
    // The same limits again write nothing.
    std::fs::remove_file(dir.join("pids.max")).unwrap();
    slot.apply(Some(&LIMITS), &LIMITS).unwrap();
    assert!(!dir.join("pids.max").exists());
    // A job without limits after one with them: every limit lifted.
    slot.apply(Some(&LIMITS), &Limits::default()).unwrap();
    assert_eq!(read(&dir.join("memory.max")), "max");
    assert_eq!(read(&dir.join("pids.max")), "max");
    assert_eq!(read(&dir.join("cpu.max")), "max 100000");
    assert_eq!(read(&dir.join("cpu.weight")), "100");
}
