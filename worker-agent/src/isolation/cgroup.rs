//! A cgroup per job, on cgroup v1 (one hierarchy per controller: `memory`,
//! `pids`, `cpu`, `freezer`) or v2 (one unified hierarchy), behind one
//! interface: create with limits, list the `cgroup.procs` files a new
//! process joins, kill everything inside, read whether the OOM killer
//! struck, remove. Plain file I/O on cgroupfs: no FFI, no daemon.
//!
//! Layout: `<root>/<agent dir>/<job dir>` in each hierarchy, where the
//! agent dir is this agent's own (one per worker id), so a restarted agent
//! finds and kills whatever its previous life left ([`CgroupTree::sweep`]).

use orchestrator_shared::api::Resources;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The v1 controllers a job cgroup uses: limits (memory, pids, cpu) and the
/// freezer, which makes killing every process race-free.
const V1_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "freezer"];
/// The v2 controllers enabled for job cgroups.
const V2_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
/// Where cgroupfs is mounted when no root is configured.
const SYSFS_CGROUP: &str = "/sys/fs/cgroup";
/// CFS period for CPU quotas, in microseconds (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;
/// How long a kill waits for the cgroup to empty.
const EMPTY_WAIT: Duration = Duration::from_secs(5);
/// Pause between checks while freezing or emptying.
const POLL: Duration = Duration::from_millis(10);

/// Why job cgroups cannot be used on this host.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup hierarchy was found where it was looked for.
    #[error("no cgroup hierarchy at {0} (missing controllers: {1})")]
    NotFound(PathBuf, String),
    /// This process's own cgroup could not be read.
    #[error("reading this process's cgroup from /proc/self/cgroup: {0}")]
    OwnCgroup(std::io::Error),
    /// The hierarchy is there but this agent may not create cgroups in it
    /// (read-only in an unprivileged container, or not delegated).
    #[error("cannot create cgroups under {0}: {1}")]
    NotWritable(PathBuf, std::io::Error),
    /// A job cgroup could not be set up.
    #[error("setting up the cgroup {0}: {1}")]
    Setup(PathBuf, std::io::Error),
}

/// The limits applied to one job's cgroup, after defaults: the contract's
/// own figures (memory in MiB, CPUs, processes).
pub type Limits = Resources;

/// The cgroup version in use, with the directories this agent owns.
#[derive(Debug, Clone)]
enum Layout {
    /// One directory per controller hierarchy, in [`V1_CONTROLLERS`] order.
    V1(Vec<PathBuf>),
    /// One directory in the unified hierarchy.
    V2(PathBuf),
}

impl Layout {
    /// Its directories: one per hierarchy on v1, the one on v2.
    fn dirs(&self) -> Vec<&Path> {
        match self {
            Layout::V1(dirs) => dirs.iter().map(PathBuf::as_path).collect(),
            Layout::V2(dir) => vec![dir.as_path()],
        }
    }

    /// The same layout one level down, at `name` in each directory.
    fn join(&self, name: &str) -> Layout {
        match self {
            Layout::V1(dirs) => Layout::V1(dirs.iter().map(|d| d.join(name)).collect()),
            Layout::V2(dir) => Layout::V2(dir.join(name)),
        }
    }
}

/// This agent's subtree of cgroups: where its jobs' cgroups are made.
#[derive(Debug, Clone)]
pub struct CgroupTree {
    layout: Layout,
}

impl CgroupTree {
    /// Finds the hierarchy and makes this agent's directory in it. With
    /// `root`, that directory is a v2 cgroup (it has `cgroup.controllers`)
    /// or holds one directory per v1 controller; without, the agent's own
    /// cgroup under `/sys/fs/cgroup` is used.
    pub fn open(root: Option<&Path>, agent_dir: &str) -> Result<CgroupTree, CgroupError> {
        let layout = match root {
            Some(root) => layout_at(root, agent_dir)?,
            None => own_layout(agent_dir)?,
        };
        let tree = CgroupTree { layout };
        tree.make_agent_dirs()?;
        Ok(tree)
    }

    /// `v1` or `v2`, as the isolation report says it.
    pub fn version(&self) -> &'static str {
        match self.layout {
            Layout::V1(_) => "v1",
            Layout::V2(_) => "v2",
        }
    }

    fn dirs(&self) -> Vec<&Path> {
        self.layout.dirs()
    }

    fn make_agent_dirs(&self) -> Result<(), CgroupError> {
        for dir in self.dirs() {
            make_dir(dir).map_err(|e| CgroupError::NotWritable(dir.to_owned(), e))?;
        }
        if let Layout::V2(dir) = &self.layout {
            enable_v2_controllers(dir)?;
        }
        Ok(())
    }

    /// Removes this agent's directories and its idle job cgroups (at a
    /// clean stop, and by tests, which make trees of their own); a cgroup
    /// with a process in it stays.
    pub fn remove_agent_dirs(&self) {
        for dir in self.dirs() {
            let children = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .filter_map(Result::ok);
            for child in children.filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
                let _ = std::fs::remove_dir(child.path());
            }
            let _ = std::fs::remove_dir(dir);
        }
    }

    /// Makes the cgroup `name` for one job, with `limits` applied.
    pub fn create(&self, name: &str, limits: &Limits) -> Result<JobCgroup, CgroupError> {
        let cgroup = self.child(name)?;
        cgroup.apply(None, limits)?;
        Ok(cgroup)
    }

    /// The cgroup `name` under this agent's, made if it is missing (a job
    /// slot's cgroup is made once and used by one job after another).
    pub fn child(&self, name: &str) -> Result<JobCgroup, CgroupError> {
        let cgroup = self.existing(name);
        // The agent's own directory again first: a cleanup of empty cgroups
        // on the host may have removed it while the agent was idle.
        for (agent_dir, dir) in self.dirs().into_iter().zip(cgroup.dirs()) {
            make_dir(agent_dir)
                .and_then(|()| make_dir(dir))
                .map_err(|e| CgroupError::Setup(dir.to_owned(), e))?;
        }
        Ok(cgroup)
    }

    /// The cgroup `name` under this agent's, taken to exist: a job slot's
    /// while its launcher lives in it, which the kernel will not let anyone
    /// remove (a cgroup with a process in it cannot be). [`CgroupTree::child`]
    /// makes sure with a `mkdir` per directory, eight on v1, which was 6 %
    /// of a busy agent's CPU when done for every run.
    pub fn existing(&self, name: &str) -> JobCgroup {
        JobCgroup {
            layout: self.layout.join(name),
            reserved_pids: 0,
        }
    }

    /// Kills and removes every job cgroup left under this agent's
    /// directory (by an earlier life killed before it could clean up).
    /// Returns how many there were.
    pub async fn sweep(&self) -> usize {
        let first = self.dirs()[0].to_owned();
        let Ok(entries) = std::fs::read_dir(&first) else {
            return 0;
        };
        let names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        for name in &names {
            let leftover = JobCgroup {
                layout: self.layout.join(name),
                reserved_pids: 0,
            };
            let killed = leftover.kill().await;
            tracing::warn!(
                cgroup = name,
                processes = killed,
                "killed a job left running by an earlier life of this agent"
            );
            leftover.remove().await;
        }
        names.len()
    }
}

/// Creates `dir`; one that already exists is fine.
fn make_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// The layout under an explicit root.
fn layout_at(root: &Path, agent_dir: &str) -> Result<Layout, CgroupError> {
    if root.join("cgroup.controllers").is_file() {
        return Ok(Layout::V2(root.join(agent_dir)));
    }
    let missing: Vec<&str> = V1_CONTROLLERS
        .into_iter()
        .filter(|c| !root.join(c).join("cgroup.procs").is_file())
        .collect();
    if !missing.is_empty() {
        return Err(CgroupError::NotFound(root.to_owned(), missing.join(", ")));
    }
    Ok(Layout::V1(
        V1_CONTROLLERS
            .iter()
            .map(|c| root.join(c).join(agent_dir))
            .collect(),
    ))
}

/// The layout under this process's own cgroup in `/sys/fs/cgroup`.
fn own_layout(agent_dir: &str) -> Result<Layout, CgroupError> {
    let own = std::fs::read_to_string("/proc/self/cgroup").map_err(CgroupError::OwnCgroup)?;
    let sysfs = Path::new(SYSFS_CGROUP);
    if sysfs.join("cgroup.controllers").is_file() {
        let path = v2_path(&own).unwrap_or("/");
        return Ok(Layout::V2(under(sysfs, path).join(agent_dir)));
    }
    let mut dirs = Vec::new();
    let mut missing = Vec::new();
    for controller in V1_CONTROLLERS {
        let dir = v1_path(&own, controller).map(|p| under(&sysfs.join(controller), p));
        match dir {
            Some(dir) if dir.join("cgroup.procs").is_file() => dirs.push(dir.join(agent_dir)),
            _ => missing.push(controller),
        }
    }
    if !missing.is_empty() {
        return Err(CgroupError::NotFound(sysfs.to_owned(), missing.join(", ")));
    }
    Ok(Layout::V1(dirs))
}

/// `base` joined with a cgroup path (which starts with `/`).
fn under(base: &Path, cgroup_path: &str) -> PathBuf {
    base.join(cgroup_path.trim_start_matches('/'))
}

/// The unified hierarchy's line of `/proc/self/cgroup` (`0::/path`).
fn v2_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// The path of `controller`'s hierarchy in `/proc/self/cgroup`
/// (`4:memory:/path`, or `2:cpu,cpuacct:/path` when co-mounted).
fn v1_path<'a>(proc_cgroup: &'a str, controller: &str) -> Option<&'a str> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|c| c == controller).then_some(path)
    })
}

/// On v2, limits need the controllers enabled in each parent's
/// `cgroup.subtree_control`, and a cgroup with controllers enabled for its
/// children may hold no process itself: the agent moves itself into a leaf
/// (`supervisor`) of its own cgroup first when it runs in the parent.
fn enable_v2_controllers(agent_dir: &Path) -> Result<(), CgroupError> {
    let setup = |path: &Path, e| CgroupError::Setup(path.to_owned(), e);
    let Some(parent) = agent_dir.parent() else {
        return Ok(());
    };
    let parent_procs = std::fs::read_to_string(parent.join("cgroup.procs")).unwrap_or_default();
    if parent_procs
        .lines()
        .any(|p| p.trim() == std::process::id().to_string())
    {
        let leaf = parent.join("supervisor");
        make_dir(&leaf).map_err(|e| setup(&leaf, e))?;
        let procs = leaf.join("cgroup.procs");
        std::fs::write(&procs, std::process::id().to_string()).map_err(|e| setup(&procs, e))?;
    }
    let wanted: String = V2_CONTROLLERS.iter().map(|c| format!("+{c} ")).collect();
    for dir in [parent, agent_dir] {
        let control = dir.join("cgroup.subtree_control");
        std::fs::write(&control, wanted.trim_end()).map_err(|e| setup(&control, e))?;
    }
    Ok(())
}

/// One job's cgroup (one directory per hierarchy on v1).
#[derive(Debug)]
pub struct JobCgroup {
    layout: Layout,
    /// Processes the agent keeps in the cgroup besides the job's (a job
    /// slot's launcher), added to the job's process limit.
    reserved_pids: i32,
}

impl JobCgroup {
    /// The same cgroup, with room for one process of the agent's (its job
    /// slot's launcher) beyond the job's own process limit.
    pub fn with_launcher(self) -> JobCgroup {
        JobCgroup {
            reserved_pids: 1,
            ..self
        }
    }

    fn dirs(&self) -> Vec<&Path> {
        self.layout.dirs()
    }

    /// The directory of `controller` (v1) or the one directory (v2).
    fn dir(&self, controller: &str) -> &Path {
        match &self.layout {
            Layout::V1(dirs) => V1_CONTROLLERS
                .iter()
                .position(|c| *c == controller)
                .and_then(|i| dirs.get(i))
                .unwrap_or(&dirs[0]),
            Layout::V2(dir) => dir,
        }
    }

    /// The `cgroup.procs` files a process writes its pid to, to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs().iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Sets the cgroup's limits to `to`, writing only what differs from
    /// `from` (the limits it was last given, if known).
    pub fn apply(&self, from: Option<&Limits>, to: &Limits) -> Result<(), CgroupError> {
        for (file, value) in self.limit_files(from, to) {
            std::fs::write(&file, value).map_err(|e| CgroupError::Setup(file.clone(), e))?;
        }
        Ok(())
    }

    /// The files and values that take the cgroup from limits `from` (`None`:
    /// unknown, so every file is written) to `to`, in the order they must
    /// be written. A limit `to` leaves out is reset to the kernel's
    /// default, so a reused cgroup keeps nothing of its previous job's.
    fn limit_files(&self, from: Option<&Limits>, to: &Limits) -> Vec<(PathBuf, String)> {
        let v1 = matches!(self.layout, Layout::V1(_));
        let mut writes = Vec::new();
        if from.is_none_or(|f| f.memory_mb != to.memory_mb) {
            writes.extend(memory_files(self.dir("memory"), to.memory_mb, v1));
        }
        if from.is_none_or(|f| f.max_pids != to.max_pids) {
            let pids = to.max_pids.map_or_else(
                || "max".to_owned(),
                |p| p.saturating_add(self.reserved_pids).to_string(),
            );
            writes.push((self.dir("pids").join("pids.max"), pids));
        }
        if from.is_none_or(|f| f.cpu != to.cpu) {
            writes.extend(cpu_files(self.dir("cpu"), to.cpu, v1));
        }
        writes
    }

    /// Kills every process in the cgroup, however it was started (`setsid`,
    /// double fork): `cgroup.kill` on v2 where the kernel has it, otherwise
    /// freeze, SIGKILL each process, thaw. Waits until the cgroup is empty.
    /// Returns how many processes were signalled.
    pub async fn kill(&self) -> usize {
        self.kill_sparing(None).await
    }

    /// [`JobCgroup::kill`], sparing the process `spare` (a job slot's
    /// launcher, which lives in the slot's cgroup between jobs): empty then
    /// means that only it is left, and `cgroup.kill`, which spares nothing,
    /// is not used.
    pub async fn kill_sparing(&self, spare: Option<i32>) -> usize {
        // The usual end: the job's processes have all exited already. One
        // hierarchy tells: every process joined all of them, and a job's
        // processes cannot move themselves (the files are root's).
        let others = |procs: &Path| read_pids(procs).into_iter().any(|p| Some(p) != spare);
        if !others(&self.dir("freezer").join("cgroup.procs")) {
            return 0;
        }
        let killed = match &self.layout {
            Layout::V2(dir) if spare.is_none() && dir.join("cgroup.kill").exists() => {
                let n = read_pids(&dir.join("cgroup.procs")).len();
                write_quiet(&dir.join("cgroup.kill"), "1");
                n
            }
            Layout::V2(dir) => frozen_kill(&dir.join("cgroup.freeze"), "1", "0", dir, spare).await,
            Layout::V1(_) => {
                let freezer = self.dir("freezer");
                frozen_kill(&freezer.join("freezer.state"), "FROZEN", "THAWED", freezer, spare).await
            }
        };
        self.wait_empty(others).await;
        killed
    }

    async fn wait_empty(&self, others: impl Fn(&Path) -> bool) {
        let procs = self.procs_files();
        let deadline = tokio::time::Instant::now() + EMPTY_WAIT;
        while procs.iter().any(|p| others(p)) {
            if tokio::time::Instant::now() > deadline {
                tracing::warn!(cgroup = %self.dir("freezer").display(), "processes still in a killed cgroup");
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// How many times the OOM killer killed a process of this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let file = match self.layout {
            Layout::V1(_) => "memory.oom_control",
            Layout::V2(_) => "memory.events",
        };
        let text = std::fs::read_to_string(self.dir("memory").join(file)).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Removes the (empty) cgroup; retries briefly while the kernel
    /// finishes tearing down the killed processes.
    pub async fn remove(&self) {
        for dir in self.dirs() {
            let mut tries = 0;
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e) if tries >= 50 => {
                        tracing::warn!(cgroup = %dir.display(), error = %e, "could not remove a job cgroup");
                        break;
                    }
                    Err(_) => tries += 1,
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// A memory limit (`None`: none) and no swap beyond it. On v1 the
/// memory+swap limit may never be below the memory limit, so it is lifted
/// first and set last.
fn memory_files(dir: &Path, mb: Option<i32>, v1: bool) -> Vec<(PathBuf, String)> {
    let bytes = mb.map(|mb| (u64::try_from(mb).unwrap_or(0) << 20).to_string());
    let mut writes = Vec::new();
    if v1 {
        let (limit, memsw) = (
            dir.join("memory.limit_in_bytes"),
            dir.join("memory.memsw.limit_in_bytes"),
        );
        let swap = memsw.exists();
        if swap {
            writes.push((memsw.clone(), "-1".to_owned()));
        }
        writes.push((limit, bytes.clone().unwrap_or_else(|| "-1".to_owned())));
        if let (true, Some(bytes)) = (swap, bytes) {
            writes.push((memsw, bytes));
        }
    } else {
        let swap = dir.join("memory.swap.max");
        if swap.exists() {
            let swap_max = if bytes.is_some() { "0" } else { "max" };
            writes.push((swap, swap_max.to_owned()));
        }
        writes.push((dir.join("memory.max"), bytes.unwrap_or_else(|| "max".to_owned())));
    }
    writes
}

/// A CPU limit as a quota (a hard ceiling: `cpu` CPUs' worth of time per
/// period) and as a weight in proportion (so that jobs on a host busy with
/// other work still share what they get in the ratio of their limits);
/// `None` puts back the kernel's defaults (no quota, the default weight).
fn cpu_files(dir: &Path, cpu: Option<f64>, v1: bool) -> Vec<(PathBuf, String)> {
    let quota = cpu.map(|c| ((c * CPU_PERIOD_US as f64).round() as u64).max(1000));
    if v1 {
        let shares = cpu.map_or(1024, |c| ((c * 1024.0).round() as u64).max(2));
        vec![
            (dir.join("cpu.cfs_period_us"), CPU_PERIOD_US.to_string()),
            (
                dir.join("cpu.cfs_quota_us"),
                quota.map_or_else(|| "-1".to_owned(), |q| q.to_string()),
            ),
            (dir.join("cpu.shares"), shares.to_string()),
        ]
    } else {
        let weight = cpu.map_or(100, |c| ((c * 100.0).round() as u64).clamp(1, 10_000));
        let max = quota.map_or_else(|| "max".to_owned(), |q| q.to_string());
        vec![
            (dir.join("cpu.max"), format!("{max} {CPU_PERIOD_US}")),
            (dir.join("cpu.weight"), weight.to_string()),
        ]
    }
}

/// Freezes through `state_file`, SIGKILLs every process listed in `dir`
/// but `spare`, thaws (a frozen process cannot die). Returns how many were
/// signalled.
async fn frozen_kill(state_file: &Path, frozen: &str, thawed: &str, dir: &Path, spare: Option<i32>) -> usize {
    write_quiet(state_file, frozen);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < deadline {
        let state = std::fs::read_to_string(state_file).unwrap_or_default();
        if state.trim() == frozen || state.trim() == "1" || state.is_empty() {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let mut pids = read_pids(&dir.join("cgroup.procs"));
    pids.retain(|p| Some(*p) != spare);
    for pid in &pids {
        let pid = nix::unistd::Pid::from_raw(*pid);
        match nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => tracing::warn!(%pid, error = %e, "could not kill a job's process"),
        }
    }
    write_quiet(state_file, thawed);
    pids.len()
}

/// The pids listed in a `cgroup.procs` file (none if it cannot be read).
fn read_pids(procs: &Path) -> Vec<i32> {
    std::fs::read_to_string(procs)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Writes a control file; a failure is logged, not returned (killing goes
/// on with what works).
fn write_quiet(file: &Path, value: &str) {
    if let Err(e) = std::fs::write(file, value) {
        tracing::warn!(file = %file.display(), error = %e, "writing a cgroup control file failed");
    }
}

#[cfg(test)]
mod tests;
