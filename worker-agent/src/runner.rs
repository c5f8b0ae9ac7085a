//! Running one shard as a child process: a private working directory,
//! empty when the run starts (its job slot's, emptied after each run: see
//! [`crate::isolation::workdir`]), the argument vector as given (never
//! through a shell), a clean environment, stdin fed and closed, the last
//! bytes of stdout and stderr kept, and a stop (timeout or cancel) that reaches the child's whole
//! process group: SIGTERM, a grace period, then SIGKILL. Knows nothing
//! about the broker or the controller.
//!
//! Where the agent isolates jobs ([`crate::isolation`]), the child runs as
//! the job's user inside the job's cgroup, started by its job slot's
//! launcher (or, without one, through the `exec-job` helper), and the run
//! ends by killing the whole cgroup but the launcher: nothing it started
//! survives it, `setsid` or not. Without a cgroup, what it left in its
//! process group is killed.

use crate::isolation::exec::slot::Launch;
use crate::isolation::launcher::{Launched, Launcher};
use crate::isolation::{exec, workdir, Cell, Sandbox};
use crate::tail::OutputTail;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use orchestrator_shared::api::OutputStream;
use orchestrator_shared::api::Resources;
use orchestrator_shared::messages::ShardOutcome;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How long the output readers may go on after the process group is gone: a
/// process that escaped the group (`setsid`) can hold the pipes open forever.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);
/// Size of one read from the child's pipes.
const READ_CHUNK: usize = 8 * 1024;
/// The only variables of the agent's environment a child inherits: none
/// of the agent's settings or secrets (`AGENT_TOKEN`, a broker URL) ever
/// reach a job.
const INHERITED_ENV: [&str; 4] = ["PATH", "LANG", "LC_ALL", "TZ"];
/// `PATH` when the agent has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Where a run's pipe readers hand what they read, besides the tails.
pub type OutputSink = mpsc::Sender<(OutputStream, Vec<u8>)>;

/// A cancel switch for one run, shared between the run and whoever may stop
/// it (a `CancelJob` command). Cheap to clone; cancelling twice is harmless.
#[derive(Debug, Clone)]
pub struct CancelHandle(Arc<watch::Sender<bool>>);

impl Default for CancelHandle {
    fn default() -> Self {
        CancelHandle(Arc::new(watch::channel(false).0))
    }
}

impl CancelHandle {
    /// A switch that is not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to stop; it ends `Cancelled`.
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }

    /// Whether [`CancelHandle::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once cancelled (at once if already).
    pub async fn cancelled(&self) {
        let mut rx = self.0.subscribe();
        if rx.wait_for(|c| *c).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// What to run, for one shard of one attempt.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The program (looked up in `PATH` when it has no `/`).
    pub program: OsString,
    /// Its arguments, passed as they are.
    pub args: Vec<String>,
    /// Variables added to the agent's environment (minus `AGENT_*`).
    pub env: Vec<(String, String)>,
    /// Written to the child's stdin, which is then closed.
    pub stdin: String,
    /// Run-time limit; `None` runs until the process ends.
    pub timeout: Option<Duration>,
    /// Name of the working directory under the work root (and of the
    /// run's cgroup); unique per run.
    pub workdir_name: String,
    /// The job's own resource limits (the agent's defaults fill the gaps).
    pub limits: Resources,
    /// Where to hand every piece read from stdout and stderr as well (the
    /// agent sends it on while the job runs); the readers wait while it is
    /// full, which holds a fast printer back. `None`: tails only.
    pub output: Option<OutputSink>,
}

/// Agent-wide settings every run obeys.
#[derive(Debug, Clone)]
pub struct RunLimits {
    /// Where working directories are created.
    pub work_root: PathBuf,
    /// Time between SIGTERM and SIGKILL when a run is stopped.
    pub kill_grace: Duration,
    /// Bytes of stdout and of stderr kept.
    pub tail_bytes: usize,
    /// Users and cgroups for jobs.
    pub sandbox: Arc<Sandbox>,
    /// Leave working directories in place after runs (for debugging).
    pub keep_workdirs: bool,
}

/// How a run ended: the body of a `ShardFinished` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// Succeeded, failed, cancelled or timed out.
    pub outcome: ShardOutcome,
    /// Exit code, when the process exited by itself.
    pub exit_code: Option<i32>,
    /// Last bytes of stdout.
    pub stdout_tail: String,
    /// Last bytes of stderr.
    pub stderr_tail: String,
    /// Why it did not succeed, for people.
    pub error: Option<String>,
}

impl RunReport {
    /// A run that ended without output, for the reason given.
    pub fn ended(outcome: ShardOutcome, error: impl Into<String>) -> Self {
        RunReport {
            outcome,
            exit_code: None,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            error: Some(error.into()),
        }
    }

    /// A run of no process that succeeded (see `AgentConfig::noop_runner`).
    pub fn succeeded_at_once() -> Self {
        RunReport {
            exit_code: Some(0),
            error: None,
            ..Self::ended(ShardOutcome::Succeeded, String::new())
        }
    }

    /// A run that failed before or around its process.
    pub fn failed(error: impl Into<String>) -> Self {
        Self::ended(ShardOutcome::Failed, error)
    }
}

/// Why a running process was stopped by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    TimedOut(Duration),
    Cancelled,
}

/// How the main process ended.
enum Ending {
    /// By itself.
    Exited(std::io::Result<ExitStatus>),
    /// Stopped by the agent.
    Stopped(StopReason),
}

/// Runs `spec` to its end and reports how it went. Never fails: every
/// problem (no such program, no working directory) is a `Failed` report.
pub async fn run(spec: &RunSpec, limits: &RunLimits, cancel: &CancelHandle) -> RunReport {
    if cancel.is_cancelled() {
        return RunReport::ended(ShardOutcome::Cancelled, "cancelled before it started");
    }
    let cell = match limits.sandbox.prepare(&spec.workdir_name, &spec.limits) {
        Ok(cell) => cell,
        Err(e) => return RunReport::failed(e),
    };
    let dir = working_dir(spec, limits, &cell).await;
    let mut report = match &dir {
        Ok(dir) => run_in(spec, limits, cancel, &dir.path, &cell).await,
        Err(e) => RunReport::failed(e.clone()),
    };
    if let Some(reason) = cell.finish().await {
        if report.outcome == ShardOutcome::Failed {
            report.error = Some(reason);
        }
    }
    if let Ok(dir) = dir {
        if !limits.keep_workdirs {
            dir.clean_up().await;
        }
    }
    // Only now is the slot free: its next run finds its directory empty,
    // never being emptied under it.
    drop(cell);
    report
}

/// Where a run works: its slot's directory (see [`workdir`]), or one of
/// its own when it holds no slot, keeps its directory, or the slot's cannot
/// be made ready.
struct WorkingDir {
    path: PathBuf,
    /// The slot's: emptied after the run, not removed.
    shared: bool,
}

impl WorkingDir {
    /// After the run (and its cgroup's last process): empties a slot's
    /// directory, removes a run's own.
    async fn clean_up(self) {
        let path = self.path.clone();
        let cleaned = off_runtime(move || match self.shared {
            true => workdir::empty(&self.path),
            false => workdir::remove(&self.path),
        })
        .await;
        if let Err(e) = cleaned {
            tracing::warn!(dir = %path.display(), error = %e, "could not clean up a working directory");
        }
    }
}

/// Makes the run's working directory ready, off the async runtime.
async fn working_dir(spec: &RunSpec, limits: &RunLimits, cell: &Cell) -> Result<WorkingDir, String> {
    let root = limits.work_root.clone();
    let own = root.join(&spec.workdir_name);
    let slot = cell
        .slot()
        .filter(|_| !limits.keep_workdirs)
        .map(|i| root.join(format!("slot-{i}")));
    let owner = cell.owner().cloned();
    let ready = move || {
        if let Some(path) = slot {
            match workdir::ready(&root, &path, owner.as_ref()) {
                Ok(()) => return Ok(WorkingDir { path, shared: true }),
                Err(e) => tracing::warn!(dir = %path.display(), error = %e,
                    "the slot's working directory cannot be used; making one for this run"),
            }
        }
        match workdir::ready(&root, &own, owner.as_ref()) {
            Ok(()) => Ok(WorkingDir {
                path: own,
                shared: false,
            }),
            Err(e) => Err(format!("creating the working directory {}: {e}", own.display())),
        }
    };
    tokio::task::spawn_blocking(ready)
        .await
        .unwrap_or_else(|e| Err(format!("creating the working directory: {e}")))
}

/// Runs `f` (file-system work) on the blocking pool, so that a slow disk
/// never stalls the agent's async tasks; a panic in it is an error like
/// the others.
async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Removes working directories left by an earlier life of this agent (one
/// killed with SIGKILL cannot clean up after itself). `root` must be this
/// agent's own directory: nothing else may run there now.
pub async fn sweep_work_root(root: &Path) {
    let dir = root.to_path_buf();
    let sweep = move || {
        for path in std::fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
        {
            match workdir::remove(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "removed a leftover working directory"),
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover"),
            }
        }
        Ok(())
    };
    warn_unless_missing(off_runtime(sweep).await, root, "cannot sweep the work root");
}

/// Empties this agent's work root at a clean stop (the job slots'
/// directories; every run has ended by then), leaving the root itself.
pub async fn empty_work_root(root: &Path) {
    let dir = root.to_path_buf();
    let emptied = off_runtime(move || workdir::empty(&dir)).await;
    warn_unless_missing(emptied, root, "could not empty the work root");
}

/// Logs a failure to handle the work root, unless there is no work root
/// (nothing to sweep or empty).
fn warn_unless_missing(result: std::io::Result<()>, root: &Path, what: &str) {
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(root = %root.display(), error = %e, "{what}");
        }
        _ => {}
    }
}

async fn run_in(
    spec: &RunSpec,
    limits: &RunLimits,
    cancel: &CancelHandle,
    dir: &Path,
    cell: &Cell,
) -> RunReport {
    let Started {
        mut process,
        group,
        stdin,
        stdout: out_pipe,
        stderr: err_pipe,
    } = match start(spec, dir, cell).await {
        Ok(started) => started,
        Err(report) => return report,
    };
    let feeder = feed_stdin(stdin, spec.stdin.clone());
    let stdout = Arc::new(Mutex::new(OutputTail::new(limits.tail_bytes)));
    let stderr = Arc::new(Mutex::new(OutputTail::new(limits.tail_bytes)));
    let readers = [
        spawn_reader(out_pipe, stdout.clone(), sink(spec, OutputStream::Stdout)),
        spawn_reader(err_pipe, stderr.clone(), sink(spec, OutputStream::Stderr)),
    ];
    let ending = supervise(&mut process, group, spec.timeout, cancel).await;
    let status = match ending {
        Ending::Exited(status) => Ok(status),
        Ending::Stopped(why) => {
            stop(&mut process, group, limits.kill_grace).await;
            Err(why)
        }
    };
    signal_group(group, Signal::SIGKILL);
    cell.kill().await;
    if let Some(launcher) = process.into_launcher() {
        cell.keep_launcher(launcher);
    }
    feeder.abort();
    finish_readers(readers).await;
    let mut report = report_for(status);
    report.stdout_tail = tail_text(&stdout);
    report.stderr_tail = tail_text(&stderr);
    explain_setup_failure(&mut report);
    report
}

/// The agent's ends of a started job's pipes.
type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// A job's main process once started, with the agent's ends of its pipes.
struct Started {
    process: Process,
    /// Its process group (its pid), when known.
    group: Option<Pid>,
    stdin: Option<Writer>,
    stdout: Option<Reader>,
    stderr: Option<Reader>,
}

/// The job's main process: a child of the agent (the job's program, or
/// the `exec-job` helper that becomes it), or of its slot's launcher.
enum Process {
    Child(Child),
    Launched(LaunchedRun),
}

impl Process {
    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            Process::Child(child) => child.wait().await,
            Process::Launched(run) => run.wait().await,
        }
    }

    /// SIGKILL to the process itself, for a child whose group is not known.
    fn start_kill(&mut self) {
        if let Process::Child(child) = self {
            let _ = child.start_kill();
        }
    }

    /// The slot's launcher, once it has answered the job's end (ready for
    /// the slot's next job).
    fn into_launcher(self) -> Option<Launcher> {
        match self {
            Process::Launched(mut run) if run.status.is_some() => run.launcher.take(),
            _ => None,
        }
    }
}

/// A job its slot's launcher started: the launcher answers its end.
struct LaunchedRun {
    /// `None` once it failed (it is then dropped, and killed).
    launcher: Option<Launcher>,
    pid: Pid,
    status: Option<ExitStatus>,
}

impl LaunchedRun {
    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let launcher = self
            .launcher
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the job slot's launcher failed"))?;
        match launcher.exited().await {
            Ok(status) => {
                self.status = Some(status);
                Ok(status)
            }
            Err(e) => {
                self.launcher = None;
                Err(e)
            }
        }
    }
}

impl Drop for LaunchedRun {
    /// As `kill_on_drop` for a child: a run dropped before its job ended
    /// leaves nothing of the job's group running.
    fn drop(&mut self) {
        if self.status.is_none() {
            signal_group(Some(self.pid), Signal::SIGKILL);
        }
    }
}

/// Starts the job: through its slot's launcher when the cell has one,
/// otherwise (or when the launcher cannot be reached) as a child of the
/// agent. `Err`: a report of a job that could not start.
async fn start(spec: &RunSpec, dir: &Path, cell: &Cell) -> Result<Started, RunReport> {
    if let Some(launcher) = cell.take_launcher() {
        match start_launched(spec, dir, cell, launcher).await {
            Ok(started) => return started,
            Err(e) => tracing::warn!(error = %e,
                "the job slot's launcher cannot be reached; starting the job through the helper"),
        }
    }
    let mut child = command(spec, dir, cell)
        .spawn()
        .map_err(|e| not_started(spec, e))?;
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    Ok(Started {
        group,
        stdin: child.stdin.take().map(|p| Box::new(p) as Writer),
        stdout: child.stdout.take().map(|p| Box::new(p) as Reader),
        stderr: child.stderr.take().map(|p| Box::new(p) as Reader),
        process: Process::Child(child),
    })
}

/// Starts the job through `launcher`. `Err`: the request did not reach it,
/// so the job did not start (and may be started another way); past that,
/// a launcher that fails fails the run, since the job may have started.
async fn start_launched(
    spec: &RunSpec,
    dir: &Path,
    cell: &Cell,
    mut launcher: Launcher,
) -> std::io::Result<Result<Started, RunReport>> {
    let launch = Launch {
        dir: dir.to_path_buf(),
        program: spec.program.clone(),
        args: spec.args.iter().map(OsString::from).collect(),
        env: job_env(spec, dir, cell),
    };
    let (stdin_r, stdin_w) = std::io::pipe()?;
    let (stdout_r, stdout_w) = std::io::pipe()?;
    let (stderr_r, stderr_w) = std::io::pipe()?;
    let stdin = pipe::Sender::from_owned_fd(stdin_w.into())?;
    let stdout = pipe::Receiver::from_owned_fd(stdout_r.into())?;
    let stderr = pipe::Receiver::from_owned_fd(stderr_r.into())?;
    launcher
        .send(&launch, [stdin_r.into(), stdout_w.into(), stderr_w.into()])
        .await?;
    let pid = match launcher.started().await {
        Ok(Launched::Started(pid)) if pid > 0 => Pid::from_raw(pid),
        Ok(Launched::Refused(e)) => {
            cell.keep_launcher(launcher);
            return Ok(Err(not_started(spec, e)));
        }
        Ok(Launched::Started(pid)) => {
            let e = format!("the job slot's launcher answered pid {pid}");
            return Ok(Err(not_started(spec, e)));
        }
        Err(e) => return Ok(Err(not_started(spec, e))),
    };
    Ok(Ok(Started {
        process: Process::Launched(LaunchedRun {
            launcher: Some(launcher),
            pid,
            status: None,
        }),
        group: Some(pid),
        stdin: Some(Box::new(stdin)),
        stdout: Some(Box::new(stdout)),
        stderr: Some(Box::new(stderr)),
    }))
}

/// The report of a job whose program could not be started, for `why`.
fn not_started(spec: &RunSpec, why: impl std::fmt::Display) -> RunReport {
    let program = spec.program.to_string_lossy();
    RunReport::failed(format!("could not start {program:?}: {why}"))
}

/// A run whose `exec-job` helper could not set it up (its program never
/// ran) fails with the helper's own reason, not a bare exit code.
fn explain_setup_failure(report: &mut RunReport) {
    if report.exit_code != Some(exec::SETUP_FAILED) {
        return;
    }
    let reason = report
        .stderr_tail
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(exec::FAILURE_PREFIX));
    if let Some(reason) = reason {
        report.error = Some(reason.to_owned());
    }
}

fn command(spec: &RunSpec, dir: &Path, cell: &Cell) -> Command {
    let (program, args) = cell.command_line(&spec.program, &spec.args);
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .env_clear()
        .envs(job_env(spec, dir, cell));
    cmd
}

/// The job's whole environment: a few of the agent's variables
/// ([`INHERITED_ENV`]), its home and temporary directory (its working
/// directory), its user's name, then its own variables.
fn job_env(spec: &RunSpec, dir: &Path, cell: &Cell) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = INHERITED_ENV
        .iter()
        .filter_map(|key| Some((OsString::from(key), std::env::var_os(key)?)))
        .collect();
    if std::env::var_os("PATH").is_none() {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env.push(("HOME".into(), dir.into()));
    env.push(("TMPDIR".into(), dir.into()));
    if let Some(account) = cell.owner() {
        env.push(("USER".into(), (&account.name).into()));
        env.push(("LOGNAME".into(), (&account.name).into()));
    }
    env.extend(spec.env.iter().map(|(k, v)| (k.into(), v.into())));
    env
}

fn feed_stdin(stdin: Option<Writer>, input: String) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Some(mut pipe) = stdin else { return };
        if let Err(e) = pipe.write_all(input.as_bytes()).await {
            tracing::debug!(error = %e, "the child did not read all of its stdin");
        }
        // Dropping the pipe closes it: the child sees end of input.
    })
}

/// `spec`'s output sink, for the reader of `stream`.
fn sink(spec: &RunSpec, stream: OutputStream) -> Option<(OutputSink, OutputStream)> {
    spec.output.clone().map(|tx| (tx, stream))
}

fn spawn_reader<R>(
    pipe: Option<R>,
    tail: Arc<Mutex<OutputTail>>,
    mut sink: Option<(OutputSink, OutputStream)>,
) -> JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let Some(mut pipe) = pipe else { return };
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            tail.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(&buf[..n]);
            if let Some((tx, stream)) = &sink {
                if tx.send((*stream, buf[..n].to_vec())).await.is_err() {
                    // The sender stopped (cap reached, refused): keep
                    // draining the pipe into the tail only.
                    sink = None;
                }
            }
        }
    })
}

async fn finish_readers(readers: [JoinHandle<()>; 2]) {
    for reader in readers {
        let abort = reader.abort_handle();
        if tokio::time::timeout(OUTPUT_DRAIN, reader).await.is_err() {
            tracing::warn!("a process outside the job's group kept its output open; stopped reading");
            abort.abort();
        }
    }
}

fn tail_text(tail: &Mutex<OutputTail>) -> String {
    tail.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .to_string_lossy()
}

/// Waits for the main process to end, or for the timeout or a cancel.
async fn supervise(
    child: &mut Process,
    group: Option<Pid>,
    timeout: Option<Duration>,
    cancel: &CancelHandle,
) -> Ending {
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        status = child.wait() => Ending::Exited(status),
        () = deadline => {
            tracing::info!(?group, "run timed out; stopping its process group");
            Ending::Stopped(StopReason::TimedOut(timeout.unwrap_or_default()))
        }
        () = cancel.cancelled() => {
            tracing::info!(?group, "run cancelled; stopping its process group");
            Ending::Stopped(StopReason::Cancelled)
        }
    }
}

/// SIGTERM to the group, up to `grace` for the main process to end, then
/// SIGKILL to whatever is left of the group.
async fn stop(child: &mut Process, group: Option<Pid>, grace: Duration) {
    if group.is_none() {
        child.start_kill();
    }
    signal_group(group, Signal::SIGTERM);
    let exited = tokio::time::timeout(grace, child.wait()).await.is_ok();
    signal_group(group, Signal::SIGKILL);
    if !exited {
        if let Err(e) = child.wait().await {
            tracing::warn!(error = %e, "waiting for a killed child failed");
        }
    }
}

/// Sends `signal` to the process group; a group that is already gone is
/// not an error.
fn signal_group(group: Option<Pid>, signal: Signal) {
    let Some(group) = group else { return };
    match killpg(group, signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(%group, %signal, error = %e, "signalling a process group failed"),
    }
}

fn report_for(ending: Result<std::io::Result<ExitStatus>, StopReason>) -> RunReport {
    match ending {
        Err(StopReason::TimedOut(after)) => {
            RunReport::ended(ShardOutcome::TimedOut, format!("timed out after {after:?}"))
        }
        Err(StopReason::Cancelled) => RunReport::ended(ShardOutcome::Cancelled, "cancelled"),
        Ok(Err(e)) => RunReport::failed(format!("waiting for the process failed: {e}")),
        Ok(Ok(status)) => report_for_status(status),
    }
}

fn report_for_status(status: ExitStatus) -> RunReport {
    match (status.code(), status.signal()) {
        (Some(0), _) => RunReport {
            outcome: ShardOutcome::Succeeded,
            error: None,
            exit_code: Some(0),
            ..RunReport::failed("")
        },
        (Some(code), _) => RunReport {
            exit_code: Some(code),
            ..RunReport::failed(format!("exited with code {code}"))
        },
        (None, Some(sig)) => {
            let name = Signal::try_from(sig).map_or("an unknown signal", |s| s.as_str());
            RunReport::failed(format!("killed by signal {name} ({sig})"))
        }
        (None, None) => RunReport::failed(format!("ended without an exit code ({status})")),
    }
}

#[cfg(test)]
mod tests;
