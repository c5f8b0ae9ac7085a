//! What stands between a job and its agent, other jobs and the host: a
//! user of its own ([`user`]), a cgroup of its own with limits ([`cgroup`]),
//! entered before the program runs by the `exec-job` helper ([`exec`]).
//!
//! The agent sets this up once at start ([`Sandbox::setup`]) and says in
//! its log and its registration which protections are off (no root, no
//! writable cgroup hierarchy); with `--require-isolation` it refuses to
//! start instead. Each run then takes a [`Cell`]: its account and cgroup,
//! killed and removed when the run ends, whatever the run left behind.
//! A job slot's runs are started by the slot's [`launcher`], which lives in
//! the slot's cgroups, so a job is born inside them; a run without one (the
//! launcher could not be started or reached, a run beyond the slots) goes
//! through the `exec-job` helper, which enters them before it execs.

pub mod cgroup;
/// The `exec-job` helper's code, a crate of its own (`worker-agent-exec`)
/// so that its binary can be built statically linked on its own.
pub use worker_agent_exec as exec;
pub mod launcher;
pub mod user;
pub mod workdir;

use cgroup::{CgroupTree, JobCgroup, Limits};
use launcher::Launcher;
use orchestrator_shared::api::{Isolation, Resources};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use user::{Account, JobUsers};

/// The agent's settings for isolation (a part of its configuration).
#[derive(Debug, Clone, Default)]
pub struct SandboxConfig {
    /// The user jobs run as (and, when they exist, `<user>-<slot>`).
    pub job_user: String,
    /// Where job cgroups are made; `None`: this process's own cgroup.
    pub cgroup_root: Option<PathBuf>,
    /// Refuse to start when any protection is off.
    pub require_isolation: bool,
    /// Limits for jobs that set none of their own.
    pub defaults: Resources,
    /// The binary that serves `exec-job`; `None`: this process's own.
    pub helper: Option<PathBuf>,
    /// Start each job slot's jobs through a launcher of the slot's (the
    /// helper's `serve-slot`), not through the helper per job.
    pub launchers: bool,
}

/// The isolation this agent enforces, set up once.
#[derive(Debug, Default)]
pub struct Sandbox {
    users: Option<JobUsers>,
    cgroups: Option<CgroupTree>,
    defaults: Resources,
    helper: Option<PathBuf>,
    launchers: bool,
    report: Isolation,
    slots: Arc<Mutex<Slots>>,
}

/// The job slots (as many as the agent's capacity): each has a user and a
/// cgroup of its own, used by one job after another, so a job start makes
/// no cgroup and a job end removes none (on v1 that is eight directories
/// of four hierarchies per job saved).
#[derive(Debug, Default)]
struct Slots {
    /// Slots no run holds.
    free: Vec<usize>,
    /// The limits each slot's cgroup was last given (`None`: not known).
    applied: Vec<Option<Limits>>,
    /// Each idle slot's launcher, once started (a run holds its slot's).
    launchers: Vec<Option<Launcher>>,
    /// Each slot cgroup's OOM kills as its last run ended (`None`: not
    /// known), the next run's baseline: read once per run, not twice.
    oom_seen: Vec<Option<u64>>,
}

/// A run's hold on a slot, and on its launcher; gives both back when
/// dropped.
#[derive(Debug)]
struct SlotGuard {
    index: Option<usize>,
    slots: Arc<Mutex<Slots>>,
    launcher: Mutex<Option<Launcher>>,
}

impl SlotGuard {
    fn take(slots: &Arc<Mutex<Slots>>) -> SlotGuard {
        let mut held = lock(slots);
        let index = held.free.pop();
        let launcher = index.and_then(|i| held.launchers.get_mut(i)?.take());
        SlotGuard {
            index,
            slots: Arc::clone(slots),
            launcher: Mutex::new(launcher),
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let Some(index) = self.index else { return };
        let launcher = lock(&self.launcher).take();
        let mut slots = lock(&self.slots);
        if let Some(entry) = slots.launchers.get_mut(index) {
            *entry = launcher;
        }
        slots.free.push(index);
    }
}

/// Locks `mutex`, whatever a panic elsewhere left in it (its contents stay
/// consistent: every change under it is one assignment).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Sandbox {
    /// No isolation at all: jobs run as child processes of the agent, as
    /// its user. For tests of the runner's own logic.
    pub fn none() -> Sandbox {
        Sandbox::default()
    }

    /// Looks up the job users and the cgroup hierarchy for an agent with
    /// `slots` job slots. Fails when the job user is missing or privileged
    /// (running jobs as root is never the fallback), or when
    /// `--require-isolation` is set and a protection is off.
    pub fn setup(config: &SandboxConfig, worker_id: &str, slots: usize) -> anyhow::Result<Sandbox> {
        let mut disabled = Vec::new();
        let users = job_users(config, slots, &mut disabled)?;
        let cgroups = match CgroupTree::open(
            config.cgroup_root.as_deref(),
            &format!("orchestrator-agent-{worker_id}"),
        ) {
            Ok(tree) => Some(tree),
            Err(e) => {
                disabled.push(format!("no cgroup per job ({e}): memory, CPU and process limits are not enforced, and processes a job leaves behind may outlive it"));
                None
            }
        };
        if config.require_isolation && !disabled.is_empty() {
            anyhow::bail!(
                "isolation is required (--require-isolation) but {}",
                disabled.join("; ")
            );
        }
        let helper = match (&config.helper, users.is_some() || cgroups.is_some()) {
            (_, false) => None,
            (Some(helper), true) => Some(helper.clone()),
            (None, true) => Some(default_helper()?),
        };
        let report = Isolation {
            job_user: users.as_ref().map(JobUsers::describe),
            cgroup: cgroups.as_ref().map(|t| t.version().to_owned()),
            disabled,
        };
        let slots = Slots {
            free: (0..slots).rev().collect(),
            applied: vec![None; slots],
            launchers: (0..slots).map(|_| None).collect(),
            oom_seen: vec![None; slots],
        };
        Ok(Sandbox {
            slots: Arc::new(Mutex::new(slots)),
            launchers: config.launchers && helper.is_some() && cgroups.is_some(),
            users,
            cgroups,
            defaults: config.defaults,
            helper,
            report,
        })
    }

    /// Which protections are on and off, as registered and logged.
    pub fn report(&self) -> &Isolation {
        &self.report
    }

    /// Kills whatever an earlier life of this agent left in its cgroups;
    /// before the agent takes work. Returns how many cgroups there were.
    pub async fn sweep(&self) -> usize {
        match &self.cgroups {
            Some(tree) => tree.sweep().await,
            None => 0,
        }
    }

    /// Stops the slots' launchers and removes this agent's (empty) cgroup
    /// directories: at a clean stop, when no run is left, so that nothing
    /// of the agent stays on the host.
    pub fn release(&self) {
        let launchers: Vec<Launcher> = lock(&self.slots)
            .launchers
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        launchers.into_iter().for_each(Launcher::stop);
        if let Some(tree) = &self.cgroups {
            tree.remove_agent_dirs();
        }
    }

    /// The limits a job with `own` limits runs under: its own, else the
    /// agent's defaults.
    pub fn effective(&self, own: &Resources) -> Limits {
        Limits {
            memory_mb: own.memory_mb.or(self.defaults.memory_mb),
            cpu: own.cpu.or(self.defaults.cpu),
            max_pids: own.max_pids.or(self.defaults.max_pids),
        }
    }

    /// A cell for one run named `name`: a job slot, its account (if users
    /// are switched) and its cgroup set to the run's limits (if cgroups are
    /// used). A run beyond the capacity gets a cgroup of its own, removed
    /// when it ends.
    pub fn prepare(&self, name: &str, own: &Resources) -> Result<Cell, String> {
        let limits = self.effective(own);
        let slot = SlotGuard::take(&self.slots);
        // A live launcher keeps its slot's cgroup in being (see
        // `CgroupTree::existing`).
        let kept = lock(&slot.launcher).as_mut().is_some_and(Launcher::is_alive);
        let cgroup = match (&self.cgroups, slot.index) {
            (None, _) => None,
            (Some(tree), Some(index)) => Some(self.slot_cgroup(tree, index, &limits, kept)?),
            (Some(tree), None) => Some(
                tree.create(&format!("run-{name}"), &limits)
                    .map_err(|e| format!("creating the job's cgroup: {e}"))?,
            ),
        };
        let account = self.users.as_ref().map(|u| u.account(slot.index));
        if let (Some(cgroup), Some(_), false) = (&cgroup, slot.index, kept) {
            self.start_launcher(&slot, cgroup, account.as_ref());
        }
        let spare = lock(&slot.launcher)
            .as_ref()
            .and_then(|l| i32::try_from(l.pid()).ok());
        Ok(Cell {
            account,
            oom_before: self.oom_baseline(cgroup.as_ref(), slot.index, kept),
            one_off: slot.index.is_none(),
            spare,
            slot,
            cgroup,
            helper: self.helper.clone(),
            memory_mb: limits.memory_mb,
        })
    }

    /// Starts a launcher in `cgroup` for the slot held by `slot`, which has
    /// none alive (`prepare` checked, once per run). A launcher that cannot
    /// be started is logged; the run then goes through the helper.
    fn start_launcher(&self, slot: &SlotGuard, cgroup: &JobCgroup, account: Option<&Account>) {
        let (true, Some(helper)) = (self.launchers, &self.helper) else {
            return;
        };
        let mut held = lock(&slot.launcher);
        let user = account.map(|a| (a.uid, a.gid));
        match Launcher::start(helper, &cgroup.procs_files(), user) {
            Ok(launcher) => *held = Some(launcher),
            Err(e) => {
                *held = None;
                tracing::warn!(error = %e, "could not start a job slot's launcher; its jobs start through the helper");
            }
        }
    }

    /// The OOM kills of a run's cgroup before it starts: read, unless the
    /// slot's last run read them as it ended and its cgroup was `kept`
    /// since (a cgroup made again counts from zero).
    fn oom_baseline(&self, cgroup: Option<&JobCgroup>, index: Option<usize>, kept: bool) -> u64 {
        let Some(cgroup) = cgroup else { return 0 };
        let seen = index.and_then(|i| lock(&self.slots).oom_seen.get_mut(i)?.take());
        match seen {
            Some(count) if kept => count,
            _ => cgroup.oom_kills(),
        }
    }

    /// Slot `index`'s cgroup, made if missing unless it is `kept` by its
    /// launcher, with its limits changed to `limits` (only the files that
    /// differ are written).
    fn slot_cgroup(
        &self,
        tree: &CgroupTree,
        index: usize,
        limits: &Limits,
        kept: bool,
    ) -> Result<JobCgroup, String> {
        let failed = |e| format!("setting up the job's cgroup: {e}");
        let name = format!("slot-{index}");
        let mut cgroup = match kept {
            true => tree.existing(&name),
            false => tree.child(&name).map_err(failed)?,
        };
        if self.launchers {
            cgroup = cgroup.with_launcher();
        }
        let applied = lock(&self.slots).applied.get(index).copied().flatten();
        let result = cgroup.apply(applied.as_ref(), limits);
        if let Some(entry) = lock(&self.slots).applied.get_mut(index) {
            *entry = result.is_ok().then_some(*limits);
        }
        result.map_err(failed)?;
        Ok(cgroup)
    }
}

/// The job user as configured, or why users are not switched.
fn job_users(
    config: &SandboxConfig,
    slots: usize,
    disabled: &mut Vec<String>,
) -> anyhow::Result<Option<JobUsers>> {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        disabled.push(format!(
            "jobs run as the agent's own user (uid {euid}): only an agent started as root can switch to the job user"
        ));
        return Ok(None);
    }
    let users = JobUsers::resolve(&config.job_user, slots)?;
    if !users.per_slot() {
        let name = &config.job_user;
        disabled.push(format!(
            "every job runs as {name}: jobs running at the same time can read each other's files (create {name}-0 to {name}-{} for a user per job)",
            slots.saturating_sub(1)
        ));
    }
    Ok(Some(users))
}

/// One run's isolation: its account and its cgroup. Dropping it gives the
/// account back; [`Cell::finish`] kills and removes the cgroup.
#[derive(Debug)]
pub struct Cell {
    slot: SlotGuard,
    account: Option<Account>,
    cgroup: Option<JobCgroup>,
    /// The cgroup is this run's alone (not a slot's): removed at the end.
    one_off: bool,
    /// The cgroup's OOM kills before the run (a slot's counter goes on).
    oom_before: u64,
    /// The slot's launcher's pid: the one process its cgroup keeps.
    spare: Option<i32>,
    helper: Option<PathBuf>,
    memory_mb: Option<i32>,
}

impl Cell {
    /// The account the run's processes belong to (`None`: the agent's).
    pub fn owner(&self) -> Option<&Account> {
        self.account.as_ref()
    }

    /// The job slot this run holds (`None`: a run beyond the capacity, or
    /// no sandbox); its runs share the slot's working directory.
    pub fn slot(&self) -> Option<usize> {
        self.slot.index
    }

    /// The program and arguments to start for `program args`: through the
    /// `exec-job` helper when there is a cgroup to join or a user to
    /// become, as they are otherwise.
    pub fn command_line(&self, program: &OsString, args: &[String]) -> (OsString, Vec<OsString>) {
        let Some(helper) = &self.helper else {
            return (program.clone(), args.iter().map(OsString::from).collect());
        };
        let mut line: Vec<OsString> = vec![exec::SUBCOMMAND.into()];
        for procs in self.cgroup.iter().flat_map(JobCgroup::procs_files) {
            line.extend(["--join".into(), procs.into_os_string()]);
        }
        if let Some(account) = self.owner() {
            line.extend(["--uid".into(), account.uid.to_string().into()]);
            line.extend(["--gid".into(), account.gid.to_string().into()]);
        }
        line.push("--".into());
        line.push(program.clone());
        line.extend(args.iter().map(OsString::from));
        (helper.clone().into_os_string(), line)
    }

    /// The slot's launcher, for this run to start its job through (`None`:
    /// none, or taken already). Give it back with [`Cell::keep_launcher`]
    /// when it is ready for the slot's next job.
    pub fn take_launcher(&self) -> Option<Launcher> {
        lock(&self.slot.launcher).take()
    }

    /// Gives the slot's launcher back, ready for its next job.
    pub fn keep_launcher(&self, launcher: Launcher) {
        *lock(&self.slot.launcher) = Some(launcher);
    }

    /// Kills every process left in the run's cgroup (none without one) but
    /// the slot's launcher.
    pub async fn kill(&self) {
        if let Some(cgroup) = &self.cgroup {
            let killed = cgroup.kill_sparing(self.spare).await;
            if killed > 0 {
                tracing::info!(killed, "killed the processes a run left in its cgroup");
            }
        }
    }

    /// Ends the run in the cell: kills what is left (so the slot's next run
    /// starts in an empty cgroup), removes a one-off cgroup, and says why
    /// the run failed if the OOM killer ended it. The slot stays held until
    /// the cell is dropped, so that the run's working directory can be
    /// emptied first: the slot's next run uses the same one.
    pub async fn finish(&self) -> Option<String> {
        let cgroup = self.cgroup.as_ref()?;
        cgroup.kill_sparing(self.spare).await;
        let kills = cgroup.oom_kills();
        if let Some(index) = self.slot.index {
            if let Some(seen) = lock(&self.slot.slots).oom_seen.get_mut(index) {
                *seen = Some(kills);
            }
        }
        let oom = kills.saturating_sub(self.oom_before);
        if self.one_off {
            cgroup.remove().await;
        }
        (oom > 0).then(|| match self.memory_mb {
            Some(mb) => format!("memory limit of {mb} MB exceeded (killed by the OOM killer)"),
            None => "killed by the OOM killer".to_owned(),
        })
    }
}

/// The binary of the small `exec-job` helper, looked for beside the agent's
/// own (the packages and the image install both).
const HELPER_BINARY: &str = "worker-agent-exec";

/// The helper to start jobs through: [`HELPER_BINARY`] beside the agent's
/// binary when it is there (cheaper to start for every job), else the
/// agent's own binary, whose `exec-job` subcommand runs the same code.
fn default_helper() -> anyhow::Result<PathBuf> {
    let own = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("finding the agent's own binary for exec-job: {e}"))?;
    let beside = own.with_file_name(HELPER_BINARY);
    Ok(if beside.is_file() { beside } else { own })
}
