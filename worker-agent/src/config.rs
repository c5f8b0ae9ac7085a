//! The agent's settings. Every setting is a command-line flag that can also
//! come from an `AGENT_*` environment variable, so the same binary runs from
//! a shell, a systemd unit, a container or a test. Secrets (the agent token,
//! the broker URL with its password) are a type that never prints.

use clap::Args;
use orchestrator_shared::api::limits::{MAX_CPU, MAX_MEMORY_MB, MAX_PIDS, MIN_CPU, MIN_MEMORY_MB};
use orchestrator_shared::messages::MAX_TAIL_BYTES;
use orchestrator_shared::validate::{millis, positive_millis};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub use orchestrator_shared::Secret;

/// One `key=value` label the agent announces when it registers, so
/// operators can tell agents apart (zone, hardware, pool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// The label's name (non-empty).
    pub key: String,
    /// Its value (may be empty).
    pub value: String,
}

impl FromStr for Label {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok(Label {
                key: k.trim().to_owned(),
                value: v.to_owned(),
            }),
            _ => Err(format!("label {s:?} must be key=value with a non-empty key")),
        }
    }
}

/// The base URLs of the controller's replicas, in the order given: one or
/// more `http://` or `https://` URLs, without a trailing slash. Shown as
/// given, comma-separated, without any password a URL may carry.
#[derive(Clone, PartialEq, Eq)]
pub struct ControllerUrls(Vec<reqwest::Url>);

impl std::fmt::Debug for ControllerUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl ControllerUrls {
    /// The base URLs, each without a trailing slash, in order.
    pub fn bases(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|u| u.as_str().trim_end_matches('/').to_owned())
            .collect()
    }

    /// The base URLs as logs show them: any password a URL carries
    /// replaced, each without a trailing slash, in order.
    pub fn shown(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|url| {
                let mut url = url.clone();
                if url.password().is_some() {
                    let _ = url.set_password(Some("redacted"));
                }
                url.as_str().trim_end_matches('/').to_owned()
            })
            .collect()
    }
}

impl FromStr for ControllerUrls {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let entries = orchestrator_shared::replicas::split_urls(s).map_err(|e| e.to_string())?;
        let parse = |(i, entry): (usize, &str)| {
            let bad = |why: String| format!("entry {} of the controller URL list: {why}", i + 1);
            let url = reqwest::Url::parse(entry).map_err(|e| bad(e.to_string()))?;
            if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
                return Err(bad("expected an http:// or https:// URL".into()));
            }
            Ok(url)
        };
        entries
            .into_iter()
            .enumerate()
            .map(parse)
            .collect::<Result<_, _>>()
            .map(ControllerUrls)
    }
}

impl std::fmt::Display for ControllerUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown().join(","))
    }
}

/// Everything the agent needs to run; built by clap from flags and
/// `AGENT_*` variables, or by tests through [`AgentConfig::try_parse_from`].
#[derive(Debug, Clone, Args)]
pub struct AgentConfig {
    /// Base URL of the controller's API, or a comma-separated list of the
    /// base URLs of its replicas: the agent uses the one that last
    /// answered and moves to the next when one cannot be reached.
    #[arg(long, env = "AGENT_CONTROLLER_URL", default_value = "https://127.0.0.1:8000")]
    pub controller_url: ControllerUrls,
    /// This agent's credential (`orca_...`, issued for its worker id by
    /// an admin). Prefer `--agent-token-file`: a file is not visible in the
    /// process's environment or arguments.
    #[arg(
        long,
        env = "AGENT_TOKEN",
        hide_env_values = true,
        required_unless_present = "agent_token_file",
        conflicts_with = "agent_token_file"
    )]
    pub agent_token: Option<Secret>,
    /// File holding this agent's credential (e.g. systemd's
    /// `$CREDENTIALS_DIRECTORY/agent-token`); refused if group or others
    /// may read it.
    #[arg(long, env = "AGENT_TOKEN_FILE")]
    pub agent_token_file: Option<PathBuf>,
    /// RabbitMQ connection string. When the controller gives the agent a
    /// broker user of its own (it answers the registration with a login),
    /// the URL needs no login (`amqp://rabbitmq:5672/%2f`): the agent logs
    /// in as its own user whatever the URL says. Only when the controller
    /// runs on a shared broker login is the URL's login used (it may then
    /// contain a password).
    #[arg(
        long,
        env = "AGENT_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub amqp_url: Secret,
    /// PEM file of a private CA trusted, besides the system's roots (or
    /// `SSL_CERT_FILE`), for both the controller's `https://` and the
    /// broker's `amqps://` certificates.
    #[arg(long, env = "AGENT_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Prefix of every broker name; must match the controller's.
    #[arg(long, env = "AGENT_BROKER_PREFIX", default_value = "orchestrator")]
    pub broker_prefix: String,
    /// Unique id of this agent (`[A-Za-z0-9._:-]{1,128}`); defaults to the
    /// host name.
    #[arg(long, env = "AGENT_WORKER_ID", default_value_t = hostname(), value_parser = parse_worker_id)]
    pub worker_id: String,
    /// Shards run at once (also the broker prefetch).
    #[arg(long, env = "AGENT_CAPACITY", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=1024))]
    pub capacity: i32,
    /// Allow jobs to run their own `command` (otherwise only the executor runs).
    #[arg(long, env = "AGENT_ALLOW_COMMANDS", default_value_t = false)]
    pub allow_commands: bool,
    /// Program run for jobs without a `command`; it reads the task
    /// description on stdin.
    #[arg(long, env = "AGENT_EXECUTOR")]
    pub executor: Option<PathBuf>,
    /// Argument passed to the executor (repeatable, in order).
    #[arg(long = "executor-arg", env = "AGENT_EXECUTOR_ARG", allow_hyphen_values = true)]
    pub executor_args: Vec<String>,
    /// Directory under which each shard gets a fresh working directory (in
    /// this agent's own `agent-<worker id>` subdirectory, swept of leftovers
    /// at start).
    #[arg(long, env = "AGENT_WORK_ROOT", default_value_os_t = default_work_root())]
    pub work_root: PathBuf,
    /// Time between heartbeats, in milliseconds.
    #[arg(long = "heartbeat-ms", env = "AGENT_HEARTBEAT_MS", default_value = "2000", value_parser = positive_millis)]
    pub heartbeat: Duration,
    /// Time a stopped shard gets between SIGTERM and SIGKILL, in milliseconds.
    #[arg(long = "kill-grace-ms", env = "AGENT_KILL_GRACE_MS", default_value = "5000", value_parser = millis)]
    pub kill_grace: Duration,
    /// Bytes of stdout and of stderr kept (the last ones) for the report:
    /// at most 1 MiB, the most a report carries (`MAX_TAIL_BYTES`).
    #[arg(long, env = "AGENT_OUTPUT_TAIL_BYTES", default_value_t = 65536, value_parser = parse_tail_bytes)]
    pub output_tail_bytes: usize,
    /// Send each job's output to the controller while it runs (kept whole
    /// up to `--output-cap-bytes`); `false` sends only the tails in the report.
    #[arg(long, env = "AGENT_STREAM_OUTPUT", default_value_t = true, action = clap::ArgAction::Set)]
    pub stream_output: bool,
    /// Longest time, in milliseconds, output waits before it is sent (it is
    /// sent sooner once 128 KiB have gathered).
    #[arg(long, env = "AGENT_OUTPUT_FLUSH_MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub output_flush_ms: u64,
    /// Most bytes of one shard's output (stdout and stderr together) sent;
    /// past it one marker is sent and the rest is read and dropped while
    /// the job goes on.
    #[arg(long, env = "AGENT_OUTPUT_CAP_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub output_cap_bytes: u64,
    /// `key=value` label announced at registration (repeatable).
    #[arg(long = "label", env = "AGENT_LABEL")]
    pub labels: Vec<Label>,
    /// Log one JSON object per line.
    #[arg(long, env = "AGENT_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
    /// The unprivileged user jobs run as when the agent runs as root. If
    /// users `<job user>-0` … `<job user>-<capacity - 1>` exist (the image
    /// and the package create them), each running job gets one of its own.
    #[arg(long, env = "AGENT_JOB_USER", default_value = "orchestrator-job")]
    pub job_user: String,
    /// Where job cgroups are made: a v2 cgroup delegated to the agent, or a
    /// directory holding one cgroup per v1 controller (`memory`, `pids`,
    /// `cpu`, `freezer`). Default: the agent's own cgroup.
    #[arg(long, env = "AGENT_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,
    /// Refuse to start when any protection is off (no root to switch users,
    /// no writable cgroup hierarchy) instead of running jobs unconfined.
    #[arg(long, env = "AGENT_REQUIRE_ISOLATION", default_value_t = false)]
    pub require_isolation: bool,
    /// Start each job slot's jobs through a launcher that lives in the
    /// slot's cgroups (the helper's `serve-slot`, started once per slot), so
    /// a job is born in its cgroups and no helper runs per job; `false`
    /// starts every job through the `exec-job` helper instead.
    #[arg(long, env = "AGENT_JOB_LAUNCHERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub job_launchers: bool,
    /// Leave each run's working directory in place (for debugging).
    #[arg(long, env = "AGENT_KEEP_WORKDIRS", default_value_t = false)]
    pub keep_workdirs: bool,
    /// Runs no process: every claimed shard succeeds at once, without
    /// output. Not a flag or variable: only a program built on this library
    /// sets it (the load generator's `noop-agent`), to measure what the
    /// orchestration path (consume, claim, report, ack, and the
    /// controller's side) can carry without the cost of forking jobs.
    #[arg(skip)]
    pub noop_runner: bool,
    /// Memory limit in MiB for jobs that set none.
    #[arg(long, env = "AGENT_JOB_MEMORY_MB", value_parser = clap::value_parser!(i32).range(MIN_MEMORY_MB..=MAX_MEMORY_MB))]
    pub job_memory_mb: Option<i32>,
    /// CPU limit in CPUs for jobs that set none.
    #[arg(long, env = "AGENT_JOB_CPU", value_parser = parse_cpu)]
    pub job_cpu: Option<f64>,
    /// Process limit for jobs that set none: a fork bomb stops here.
    #[arg(long, env = "AGENT_JOB_MAX_PIDS", default_value_t = 4096, value_parser = clap::value_parser!(i32).range(1..=MAX_PIDS))]
    pub job_max_pids: i32,
    /// Memory this agent offers its jobs in all, in MiB, as the workers
    /// API shows it. Default: the host's memory.
    #[arg(long, env = "AGENT_MEMORY_MB", value_parser = clap::value_parser!(i32).range(MIN_MEMORY_MB..=MAX_MEMORY_MB))]
    pub memory_mb: Option<i32>,
    /// CPUs this agent offers its jobs in all. Default: the CPUs it may use.
    #[arg(long, env = "AGENT_CPU", value_parser = parse_cpu)]
    pub cpu: Option<f64>,
    /// A pool this agent serves (repeatable; default: `default`). It takes
    /// only jobs of its pools whose selector its `--label`s satisfy.
    #[arg(long = "pool", env = "AGENT_POOL", value_delimiter = ',', value_parser = parse_pool)]
    pub pools: Vec<String>,
    /// How often, in milliseconds, the agent asks the controller which job
    /// classes (pool and selector) it should consume: a class first
    /// submitted after the agent started reaches it within this time.
    #[arg(long = "classes-poll-ms", env = "AGENT_CLASSES_POLL_MS", default_value = "2000", value_parser = positive_millis)]
    pub classes_poll: Duration,
}

/// A pool name by the pools rule (`orchestrator_shared::pools`).
fn parse_pool(s: &str) -> Result<String, String> {
    if orchestrator_shared::pools::is_valid_pool(s) {
        Ok(s.to_owned())
    } else {
        Err(format!("pool {s:?} {}", orchestrator_shared::pools::POOL_RULE))
    }
}

impl AgentConfig {
    /// Parses a configuration from command-line style arguments (the first
    /// one is the program name) and the `AGENT_*` environment; used by
    /// `main`, tests and embedders.
    pub fn try_parse_from<I, T>(args: I) -> Result<AgentConfig, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        #[command(name = "worker-agent", version, about = "A worker agent of the orchestrator.")]
        struct Wrapper {
            #[command(flatten)]
            config: AgentConfig,
        }
        <Wrapper as clap::Parser>::try_parse_from(args).map(|w| w.config)
    }

    /// The agent's credential: `--agent-token`, or the first line of
    /// `--agent-token-file`, which must be readable by its owner only.
    pub fn credential(&self) -> Result<Secret, CredentialError> {
        if let Some(token) = &self.agent_token {
            return Ok(token.clone());
        }
        let Some(path) = &self.agent_token_file else {
            return Err(CredentialError::Missing);
        };
        let text = read_private(path)?;
        let token = text.lines().next().unwrap_or_default().trim();
        if token.is_empty() {
            return Err(CredentialError::Empty(path.clone()));
        }
        Ok(Secret::new(token.to_owned()))
    }

    /// The isolation settings, for [`crate::isolation::Sandbox::setup`].
    pub fn sandbox(&self) -> crate::isolation::SandboxConfig {
        crate::isolation::SandboxConfig {
            job_user: self.job_user.clone(),
            cgroup_root: self.cgroup_root.clone(),
            require_isolation: self.require_isolation,
            defaults: orchestrator_shared::api::Resources {
                memory_mb: self.job_memory_mb,
                cpu: self.job_cpu,
                max_pids: Some(self.job_max_pids),
            },
            helper: None,
            launchers: self.job_launchers,
        }
    }

    /// What this agent offers its jobs in all: the flags, else the host's
    /// memory and the CPUs this process may use.
    pub fn offered(&self) -> orchestrator_shared::api::Resources {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        orchestrator_shared::api::Resources {
            memory_mb: self.memory_mb.or_else(host_memory_mb),
            cpu: self.cpu.or(Some(cpus as f64)),
            max_pids: None,
        }
    }

    /// Labels as the registration body wants them (a later duplicate key wins).
    pub fn label_map(&self) -> BTreeMap<String, String> {
        self.labels
            .iter()
            .map(|l| (l.key.clone(), l.value.clone()))
            .collect()
    }
}

/// Why the agent has no credential to present.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// Neither `--agent-token` nor `--agent-token-file` was given.
    #[error("no credential: set AGENT_TOKEN_FILE (or AGENT_TOKEN)")]
    Missing,
    /// The file could not be read.
    #[error("reading the credential file {0}: {1}")]
    Unreadable(PathBuf, std::io::Error),
    /// Group or others may read the file: the credential may have leaked.
    #[error("the credential file {0} may be read by group or others (mode {1:o}); make it 0600 or 0400")]
    TooOpen(PathBuf, u32),
    /// The file holds no credential.
    #[error("the credential file {0} is empty")]
    Empty(PathBuf),
}

/// The contents of `path`, refused when group or others may read it.
fn read_private(path: &std::path::Path) -> Result<String, CredentialError> {
    use std::os::unix::fs::PermissionsExt;
    let unreadable = |e| CredentialError::Unreadable(path.to_owned(), e);
    let mode = std::fs::metadata(path).map_err(unreadable)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CredentialError::TooOpen(path.to_owned(), mode));
    }
    std::fs::read_to_string(path).map_err(unreadable)
}

fn parse_worker_id(s: &str) -> Result<String, String> {
    if orchestrator_shared::validate::is_valid_worker_id(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "worker id {s:?} {}",
            orchestrator_shared::validate::WORKER_ID_RULE
        ))
    }
}

/// This host's name, the default worker id: the kernel's, else `HOSTNAME`,
/// else `worker`.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned())
}

/// `MemTotal` of `/proc/meminfo`, in MiB, within the contract's range.
fn host_memory_mb() -> Option<i32> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    i32::try_from((kib / 1024).clamp(MIN_MEMORY_MB, MAX_MEMORY_MB)).ok()
}

/// A CPU figure: a number of CPUs within the contract's range.
fn parse_cpu(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(c) if c.is_finite() && (MIN_CPU..=MAX_CPU).contains(&c) => Ok(c),
        _ => Err(format!(
            "{s:?} is not a number of CPUs between {MIN_CPU} and {MAX_CPU}"
        )),
    }
}

/// A tail size: whole bytes, at most what one report may carry (a larger
/// tail would only be cut by the controller, and made reports that the
/// broker could refuse as too large, forever).
fn parse_tail_bytes(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n <= MAX_TAIL_BYTES => Ok(n),
        _ => Err(format!(
            "{s:?} is not a number of bytes from 0 to {MAX_TAIL_BYTES} (the most a report carries)"
        )),
    }
}

/// Flags for unit tests that build a whole agent state: a job user every
/// Debian host has, and no cgroups (nothing is left on the host).
#[cfg(test)]
pub(crate) const NO_ISOLATION: [&str; 2] = ["--job-user=nobody", "--cgroup-root=/nonexistent-cgroup-root"];

fn default_work_root() -> PathBuf {
    std::env::temp_dir().join("orchestrator-agent")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_the_token_never_prints() {
        let c = AgentConfig::try_parse_from([
            "worker-agent",
            "--agent-token",
            "very-secret-token",
            "--worker-id",
            "w-1",
        ])
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("very-secret-token"), "{shown}");
        assert!(!shown.contains("guest:guest"), "{shown}");
        assert_eq!(c.credential().unwrap().expose(), "very-secret-token");
        assert_eq!(c.controller_url.bases(), ["https://127.0.0.1:8000"]);
        assert_eq!(c.broker_prefix, "orchestrator");
        assert_eq!(c.worker_id, "w-1");
        assert_eq!(c.capacity, 1);
        assert!(!c.allow_commands);
        assert_eq!(c.executor, None);
        assert_eq!(c.work_root, std::env::temp_dir().join("orchestrator-agent"));
        assert_eq!(c.heartbeat, Duration::from_secs(2));
        assert_eq!(c.kill_grace, Duration::from_secs(5));
        assert_eq!(c.output_tail_bytes, 65536);
        assert!(c.stream_output);
        assert_eq!((c.output_flush_ms, c.output_cap_bytes), (200, 16 * 1024 * 1024));
        assert!(c.labels.is_empty());
    }

    #[test]
    fn a_tail_larger_than_a_report_carries_is_refused_at_start() {
        let base = ["worker-agent", "--agent-token=t", "--worker-id=w"];
        let most = format!("--output-tail-bytes={MAX_TAIL_BYTES}");
        let c = AgentConfig::try_parse_from(base.iter().copied().chain([most.as_str()])).unwrap();
        assert_eq!(c.output_tail_bytes, MAX_TAIL_BYTES);
        for bad in [
            format!("--output-tail-bytes={}", MAX_TAIL_BYTES + 1),
            "--output-tail-bytes=-1".into(),
        ] {
            let refused = AgentConfig::try_parse_from(base.iter().copied().chain([bad.as_str()]))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(refused.contains("the most a report carries"), "{bad}: {refused}");
        }
    }

    #[test]
    fn pools_are_repeatable_and_checked() {
        let base = ["worker-agent", "--agent-token=t", "--worker-id=w"];
        let c = AgentConfig::try_parse_from(base).unwrap();
        assert!(c.pools.is_empty(), "no flag: the controller's default pool");
        assert_eq!(c.classes_poll, Duration::from_secs(2));
        let c = AgentConfig::try_parse_from(base.iter().copied().chain([
            "--pool=gpu",
            "--pool",
            "default,big_1",
        ]))
        .unwrap();
        assert_eq!(c.pools, ["gpu", "default", "big_1"]);
        for bad in ["--pool=GPU", "--pool=a.b", "--pool="] {
            let args = base.iter().copied().chain([bad]);
            assert!(AgentConfig::try_parse_from(args).is_err(), "{bad}");
        }
    }

    #[test]
    fn repeatable_flags_and_ranges() {
        let c = AgentConfig::try_parse_from([
            "worker-agent",
            "--agent-token=t",
            "--worker-id=w",
            "--capacity=4",
            "--executor=/usr/bin/env",
            "--executor-arg=-i",
            "--executor-arg",
            "x",
            "--label=zone=a",
            "--label=gpu=",
        ])
        .unwrap();
        assert_eq!(c.capacity, 4);
        assert_eq!(c.executor_args, ["-i", "x"]);
        let labels = c.label_map();
        assert_eq!(labels["zone"], "a");
        assert_eq!(labels["gpu"], "");
        for bad in [
            "--capacity=0",
            "--capacity=1025",
            "--worker-id=a b",
            "--label=novalue",
        ] {
            let r = AgentConfig::try_parse_from(["worker-agent", "--agent-token=t", "--worker-id=w", bad]);
            assert!(r.is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn the_controller_url_is_one_url_or_a_list_of_them() {
        let urls = |value: &str| {
            AgentConfig::try_parse_from([
                "worker-agent",
                "--agent-token=t",
                "--worker-id=w",
                "--controller-url",
                value,
            ])
            .map(|c| c.controller_url)
        };
        let one = urls("https://c:8000/").unwrap();
        assert_eq!(one.bases(), ["https://c:8000"]);
        assert_eq!(one.to_string(), "https://c:8000");
        let two = urls("https://x-controller:8000,https://x-controller-2:8000").unwrap();
        assert_eq!(
            two.bases(),
            ["https://x-controller:8000", "https://x-controller-2:8000"]
        );
        assert_eq!(
            two.to_string(),
            "https://x-controller:8000,https://x-controller-2:8000"
        );
        let spaced = urls(" http://a:1 , http://b:2/api ").unwrap();
        assert_eq!(spaced.bases(), ["http://a:1", "http://b:2/api"]);
        for (bad, says) in [
            ("https://a:8000,", "entry 2 of the controller URL list is empty"),
            (
                "https://a:8000,,https://b:8000",
                "entry 2 of the controller URL list is empty",
            ),
            (
                "https://a:8000,b:8000",
                "entry 2 of the controller URL list: expected an http",
            ),
            ("not a url", "entry 1 of the controller URL list:"),
        ] {
            let refused = urls(bad).unwrap_err().to_string();
            assert!(refused.contains(says), "{bad}: {refused}");
        }
        let with_login = urls("https://user:hunter2@c:8000").unwrap();
        assert!(!with_login.to_string().contains("hunter2"), "{with_login}");
        assert!(!format!("{with_login:?}").contains("hunter2"), "{with_login:?}");
    }

    #[test]
    fn the_credential_comes_from_a_private_file_or_not_at_all() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("agent-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("agent-token");
        std::fs::write(&file, "orca_secret\n").unwrap();
        let path = file.display().to_string();
        let config = |extra: &[&str]| {
            let args = ["worker-agent", "--worker-id=w"]
                .iter()
                .chain(extra)
                .map(|s| s.to_string());
            AgentConfig::try_parse_from(args.collect::<Vec<_>>())
        };
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = config(&["--agent-token-file", &path]).unwrap();
        assert_eq!(c.credential().unwrap().expose(), "orca_secret");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let refused = c.credential().unwrap_err().to_string();
        assert!(
            refused.contains("group or others") && refused.contains("640"),
            "{refused}"
        );
        assert!(config(&[]).is_err(), "no credential at all");
        assert!(
            config(&["--agent-token=t", "--agent-token-file", &path]).is_err(),
            "both"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn default_worker_id_is_a_valid_hostname_or_refused() {
        let h = hostname();
        let r = AgentConfig::try_parse_from(["worker-agent", "--agent-token=t"]);
        if orchestrator_shared::validate::is_valid_worker_id(&h) {
            assert_eq!(r.unwrap().worker_id, h);
        } else {
            assert!(r.is_err());
        }
    }
}
