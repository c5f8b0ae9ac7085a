//! The command line: global options, subcommands and their arguments.

use crate::input::{parse_label, parse_pool_quota, parse_time, parse_worker_id};
use chrono::{DateTime, FixedOffset};
use clap::builder::{NonEmptyStringValueParser, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use orchestrator_shared::api::jobs::{
    DEFAULT_PAGE_LIMIT, DEFAULT_PRIORITY, DEFAULT_WORKERS, MAX_DESCRIPTION, MAX_PAGE_LIMIT, MAX_PRIORITY,
    MAX_RETRIES, MAX_TIMEOUT_SECONDS, MAX_WORKERS,
};
use orchestrator_shared::api::limits::{MAX_CPU, MAX_MEMORY_MB, MAX_PIDS, MIN_CPU, MIN_MEMORY_MB};
use orchestrator_shared::api::resources::{MAX_ALLOCATION_WORKERS, MAX_TTL_SECONDS};
use orchestrator_shared::{JobStatus, Scope, StatusParseError, WorkerStatus};
use std::path::PathBuf;
use std::str::FromStr;
use uuid::Uuid;

/// Shown under every `--help`: the environment and the exit statuses.
pub const AFTER_HELP: &str = "\
Environment:
  ORCH_URL       controller URL, or its replicas' URLs comma-separated, each
                 tried in turn when the one before cannot be reached (else
                 the config file's, else https://127.0.0.1:8000)
  ORCH_TOKEN     bearer token (else the config file's, if saved for the same URL)
  ORCH_PASSWORD  password for `login` (safer than --password, which `ps` shows)
  ORCH_NEW_PASSWORD  the password of `users create` and `users update --new-password`
  ORCH_CONFIG    config file (else $XDG_CONFIG_HOME/orchestrator/config.json,
                 else ~/.config/orchestrator/config.json)
  ORCH_CA_FILE   PEM file of a private CA trusted for an https:// controller
                 (else the config file's, if saved for the same URL); the
                 system's roots are trusted too, or SSL_CERT_FILE's instead

Exit status:
  0  success; for `submit --wait`, the job completed
  1  the waited-for job failed, was cancelled or timed out, or the wait timed out;
     `cancel` of several jobs left one of them (each refusal is printed);
     a server error (HTTP 5xx), a network error, or a local I/O error
  2  a usage error: invalid arguments, or an HTTP 4xx answer (not authenticated,
     missing scope, unknown id, conflict, invalid request)";

/// Command-line client of the orchestrator's HTTP API.
#[derive(Debug, Parser)]
#[command(name = "orchestrator", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Controller base URL, or a comma-separated list of its replicas'
    /// URLs: a request that cannot connect to one goes to the next.
    #[arg(long, env = "ORCH_URL", global = true)]
    pub url: Option<String>,
    /// Bearer token (default: the one saved by `login`).
    #[arg(long, env = "ORCH_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of a private CA that signed the controller's certificate
    /// (default: the one saved by `login`); trusted besides the system's roots.
    #[arg(long, env = "ORCH_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Print the API's JSON answers instead of tables, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands; each maps to API routes.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in and save the URL and token to the config file (POST /api/auth/login).
    Login(LoginArgs),
    /// Show the token's user and scopes (GET /api/auth/me).
    Whoami,
    /// Submit a job, optionally waiting for it to end (POST /api/jobs/submit).
    Submit(Box<SubmitArgs>),
    /// Show a job (GET /api/jobs/{id}).
    Status(JobRef),
    /// List jobs, newest first (GET /api/jobs).
    List(ListArgs),
    /// Find jobs by status, user, label, time, worker, with the count of matches (GET /api/jobs/search).
    Search(SearchArgs),
    /// Cancel one job (POST /api/jobs/{id}/cancel), or several (POST /api/jobs/cancel_batch).
    Cancel(CancelArgs),
    /// Show a job's status transitions (GET /api/jobs/{id}/events).
    Events(JobRef),
    /// Show the jobs a job waits for and those waiting for it, as trees (GET /api/jobs/{id}/graph).
    Graph(JobRef),
    /// Show the tail of a job's stdout and stderr and its exit code (GET /api/jobs/{id}/output).
    Output(JobRef),
    /// Print a job's stdout and stderr, whole; with -f, follow it until the job ends (GET /api/jobs/{id}/output).
    Logs(LogsArgs),
    /// List workers (GET /api/supervisor/workers).
    Workers(WorkersArgs),
    /// Show a worker (GET /api/supervisor/workers/{id}).
    Worker(WorkerRef),
    /// Stop a worker from taking new jobs (POST /api/supervisor/workers/{id}/pause).
    Pause(WorkerRef),
    /// Let a paused worker take jobs again (POST /api/supervisor/workers/{id}/resume).
    Resume(WorkerRef),
    /// Drain a worker and make it exit (POST /api/supervisor/workers/{id}/terminate).
    Terminate(WorkerRef),
    /// Show worker and job counts, queue depth and latencies (GET /api/supervisor/metrics).
    Metrics,
    /// Show your limits and what is left (GET /api/resources/quotas).
    Quotas,
    /// Reserve workers (POST /api/resources/allocate).
    Allocate(AllocateArgs),
    /// Release an allocation (POST /api/resources/release).
    Release(AllocationRef),
    /// Show allocated workers, running jobs and worker-seconds per user (GET /api/resources/usage).
    Usage,
    /// Manage users (admins only; GET, POST, PATCH and DELETE /api/auth/users).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage worker agents' credentials (admins only; /api/agents/credentials).
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Manage schedules: a job submitted on a cron expression (/api/schedules).
    #[command(subcommand)]
    Schedules(SchedulesCommand),
}

/// `schedules` subcommands.
#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// List your schedules (an admin's: all) (GET /api/schedules).
    List,
    /// Show a schedule, its next fire times and last runs (GET /api/schedules/{id}).
    Show(ScheduleRef),
    /// Create a schedule (POST /api/schedules).
    Create(Box<CreateScheduleArgs>),
    /// Pause a schedule: no tick fires (PATCH /api/schedules/{id}).
    Pause(ScheduleRef),
    /// Resume a paused schedule; ticks passed while paused are not caught up (PATCH /api/schedules/{id}).
    Resume(ScheduleRef),
    /// Delete a schedule; its jobs stay (DELETE /api/schedules/{id}).
    Delete(ScheduleRef),
}

/// A schedule, by id.
#[derive(Debug, Args)]
pub struct ScheduleRef {
    /// The schedule's id (from `schedules list`).
    pub schedule_id: Uuid,
}

/// Arguments of `schedules create`: when, and the job each tick submits.
#[derive(Debug, Args)]
pub struct CreateScheduleArgs {
    /// A name for people.
    #[arg(long)]
    pub name: String,
    /// Cron expression: 5 fields (`"0 9 * * MON-FRI"`), or 6 with seconds first.
    #[arg(long)]
    pub cron: String,
    /// IANA time zone the expression is read in.
    #[arg(long, default_value = "UTC")]
    pub timezone: String,
    /// While the previous job is unfinished: allow, skip, or cancel_previous.
    #[arg(long, default_value = "allow", value_parser = PossibleValuesParser::new(["allow", "skip", "cancel_previous"]))]
    pub overlap: String,
    /// Fire the latest tick missed while no controller ran, once, on return.
    #[arg(long)]
    pub catch_up: bool,
    /// Create it paused.
    #[arg(long)]
    pub paused: bool,
    /// What each tick's job does.
    #[arg(help = format!("What each job does (1 to {MAX_DESCRIPTION} characters)"))]
    pub task_description: String,
    /// Priority of each job.
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..=MAX_PRIORITY))]
    pub priority: Option<i64>,
    /// A label of each job, `key=value`; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Where each job may run.
    #[command(flatten)]
    pub placement: PlacementArgs,
    /// Program and arguments each job runs, after `--` (taken verbatim).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `agents` subcommands.
#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Issue, list and revoke agent credentials, one per worker id.
    #[command(subcommand)]
    Credentials(CredentialsCommand),
}

/// `agents credentials` subcommands.
#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Issue a credential for one worker id, revoking its earlier one; the
    /// token is shown this once (POST /api/agents/credentials).
    Create(CredentialFor),
    /// List every credential, newest first, without secrets (GET /api/agents/credentials).
    List,
    /// Revoke a credential: its agent is refused and loses its broker
    /// access (DELETE /api/agents/credentials/{id}).
    Revoke(CredentialRef),
}

/// The worker a new credential names.
#[derive(Debug, Args)]
pub struct CredentialFor {
    /// The worker id the agent registers as.
    #[arg(long)]
    pub worker_id: String,
}

/// A credential, by id.
#[derive(Debug, Args)]
pub struct CredentialRef {
    /// The credential's id (from `agents credentials list`).
    pub credential_id: Uuid,
}

/// `users` subcommands. A user is named by its id or its username.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List the users that are not deleted (GET /api/auth/users).
    List,
    /// Show a user (GET /api/auth/users/{id}).
    Show(UserRef),
    /// Create a user, its password from ORCH_NEW_PASSWORD (POST /api/auth/users).
    Create(CreateUserArgs),
    /// Replace a user's scopes, set a new password or per-pool quotas (PATCH /api/auth/users/{id}).
    Update(UpdateUserArgs),
    /// Refuse a user's logins and every token it holds (PATCH /api/auth/users/{id}).
    Disable(UserRef),
    /// Let a disabled user log in again; its old tokens stay refused (PATCH /api/auth/users/{id}).
    Enable(UserRef),
    /// Delete a user: no login, tokens refused, name free; its jobs stay (DELETE /api/auth/users/{id}).
    Delete(UserRef),
}

/// A user, by id or username.
#[derive(Debug, Args)]
pub struct UserRef {
    /// The user's id (a UUID) or username.
    pub user: String,
}

/// A scope as the contract spells it, listed in `--help`.
fn scope_name() -> PossibleValuesParser {
    PossibleValuesParser::new(Scope::ALL.iter().map(|scope| scope.as_str()))
}

/// Arguments of `users create`.
#[derive(Debug, Args)]
pub struct CreateUserArgs {
    /// Login name.
    #[arg(long)]
    pub username: String,
    /// A scope to grant; repeatable.
    #[arg(long = "scope", value_name = "SCOPE", value_parser = scope_name())]
    pub scopes: Vec<String>,
}

/// Arguments of `users update`.
#[derive(Debug, Args)]
pub struct UpdateUserArgs {
    /// The user.
    #[command(flatten)]
    pub user: UserRef,
    /// A scope the user holds from now on, replacing all it held; repeatable.
    #[arg(long = "scope", value_name = "SCOPE", value_parser = scope_name())]
    pub scopes: Vec<String>,
    /// Take every scope away from the user.
    #[arg(long, conflicts_with = "scopes")]
    pub no_scopes: bool,
    /// Set a new password, read from ORCH_NEW_PASSWORD; the user's tokens are taken back.
    #[arg(long)]
    pub new_password: bool,
    /// A per-pool quota, `pool=N` (at most N workers of the pool allocated
    /// at once) or `pool=none` (lift that pool's limit); repeatable.
    #[arg(long = "pool-quota", value_name = "POOL=N", value_parser = parse_pool_quota)]
    pub pool_quotas: Vec<(String, Option<i64>)>,
}

/// Arguments of `login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// User name.
    #[arg(long)]
    pub username: String,
    /// Password (prefer ORCH_PASSWORD: a flag is visible to other users in `ps`).
    #[arg(long, env = "ORCH_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

/// Seconds in a day, to say long limits in days.
const DAY_SECONDS: i64 = 24 * 3600;

/// A parser that accepts exactly the wire spellings of `all` (case-sensitive,
/// like the server) and lists them in `--help`.
fn statuses<S>(all: &'static [S], name: fn(S) -> &'static str) -> impl TypedValueParser<Value = S>
where
    S: Copy + FromStr<Err = StatusParseError> + Send + Sync + 'static,
{
    PossibleValuesParser::new(all.iter().map(|status| name(*status))).try_map(|text| text.parse::<S>())
}

/// Where a job may run: its pool and the labels an agent must carry. One
/// set of flags, for `submit` and `schedules create` alike.
#[derive(Debug, Args)]
pub struct PlacementArgs {
    /// The pool of agents that may run it (server default `default`).
    #[arg(long, value_name = "POOL")]
    pub pool: Option<String>,
    /// A label an agent must carry to run it, `key=value`; repeatable.
    #[arg(long = "selector", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub selector: Vec<(String, String)>,
}

/// Arguments of `submit`. Ranges are the contract's; the server's defaults
/// apply to what is not given.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// What the job does.
    #[arg(help = format!("What the job does (1 to {MAX_DESCRIPTION} characters)"))]
    pub task_description: String,
    /// Program and arguments to run, as `--command prog arg...`; an argument
    /// starting with `-` needs the `-- prog arg...` form instead.
    #[arg(long, num_args = 1.., value_name = "ARG", conflicts_with = "trailing_command")]
    pub command: Vec<String>,
    /// Program and arguments to run, after `--` (taken verbatim).
    #[arg(last = true, value_name = "COMMAND")]
    pub trailing_command: Vec<String>,
    /// Number of workers (shards) the job runs on.
    #[arg(
        long,
        value_parser = clap::value_parser!(i64).range(1..=MAX_WORKERS),
        help = format!(
            "Number of workers (shards) the job runs on, 1 to {MAX_WORKERS} (server default {DEFAULT_WORKERS})"
        )
    )]
    pub workers: Option<i64>,
    /// Priority, 0 (lowest) upwards.
    #[arg(
        long,
        value_parser = clap::value_parser!(i64).range(0..=MAX_PRIORITY),
        help = format!("Priority, 0 to {MAX_PRIORITY} (server default {DEFAULT_PRIORITY})")
    )]
    pub priority: Option<i64>,
    /// Time limit of a run, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(i64).range(1..=MAX_TIMEOUT_SECONDS),
        help = format!(
            "Time limit of a run, in seconds, 1 to {MAX_TIMEOUT_SECONDS} ({} days)",
            MAX_TIMEOUT_SECONDS / DAY_SECONDS
        )
    )]
    pub timeout: Option<i64>,
    /// Retries after a failure.
    #[arg(
        long,
        value_parser = clap::value_parser!(i64).range(0..=MAX_RETRIES),
        help = format!("Retries after a failure, 0 to {MAX_RETRIES} (server default 0)")
    )]
    pub max_retries: Option<i64>,
    /// Key that makes resubmission safe: the same key returns the first job.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// A label, `key=value`; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Where it may run.
    #[command(flatten)]
    pub placement: PlacementArgs,
    /// Memory limit of each shard, in MiB.
    #[arg(
        long,
        value_name = "MIB",
        value_parser = clap::value_parser!(i64).range(MIN_MEMORY_MB..=MAX_MEMORY_MB),
        help = format!(
            "Memory limit, in MiB, {MIN_MEMORY_MB} to {MAX_MEMORY_MB}; past it the job fails (default: the agent's)"
        )
    )]
    pub memory_mb: Option<i64>,
    /// CPU limit of each shard, in CPUs (checked with the other rules
    /// before sending: clap has no range parser for fractions).
    #[arg(
        long,
        value_name = "CPUS",
        help = format!("CPU limit, in CPUs, {MIN_CPU} to {MAX_CPU} (0.5: half a core; default: the agent's)")
    )]
    pub cpu: Option<f64>,
    /// Most processes and threads of each shard at once.
    #[arg(
        long,
        value_parser = clap::value_parser!(i64).range(1..=MAX_PIDS),
        help = format!("Most processes and threads at once, 1 to {MAX_PIDS} (default: the agent's)")
    )]
    pub max_pids: Option<i64>,
    /// A job this one waits for (it runs once that one completed); repeatable.
    #[arg(long = "depends-on", value_name = "JOB_ID")]
    pub depends_on: Vec<Uuid>,
    /// Run even if a dependency failed, was cancelled or timed out.
    #[arg(long, requires = "depends_on")]
    pub run_on_failure: bool,
    /// Wait for the job to end, then print its output; exit 0 only if it completed.
    #[arg(long)]
    pub wait: bool,
    /// Longest wait, in seconds, with --wait (the job keeps running after it).
    #[arg(long, value_name = "SECONDS", default_value_t = 3600, requires = "wait")]
    pub wait_timeout: u64,
}

impl SubmitArgs {
    /// The command, whichever form it was given in.
    pub fn command_args(&self) -> &[String] {
        if self.trailing_command.is_empty() {
            &self.command
        } else {
            &self.trailing_command
        }
    }
}

/// Arguments of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only jobs in this status.
    #[arg(long, value_parser = statuses(JobStatus::ALL, JobStatus::as_str))]
    pub status: Option<JobStatus>,
    /// Jobs per page.
    #[arg(
        long,
        value_parser = clap::value_parser!(i64).range(1..=MAX_PAGE_LIMIT),
        help = format!("Jobs per page, 1 to {MAX_PAGE_LIMIT} (server default {DEFAULT_PAGE_LIMIT})")
    )]
    pub limit: Option<i64>,
    /// Start after this cursor (the `next_cursor` of a previous page).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Only jobs submitted by this schedule (its id).
    #[arg(long)]
    pub schedule: Option<Uuid>,
    /// Follow `next_cursor` to the last page.
    #[arg(long)]
    pub all_pages: bool,
}

/// Arguments of `search`: the filters of `GET /api/jobs/search`, each
/// checked as the server would (a value it would refuse with a 422 is a
/// usage error, and nothing is sent), and one page of it.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Only jobs in this status.
    #[arg(long, value_parser = statuses(JobStatus::ALL, JobStatus::as_str))]
    pub status: Option<JobStatus>,
    /// Only jobs submitted by this user (user name, exact).
    #[arg(long, value_name = "USERNAME", value_parser = NonEmptyStringValueParser::new())]
    pub user: Option<String>,
    /// Only jobs carrying this label, `key=value`.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    pub label: Option<(String, String)>,
    /// Only jobs created at or after this time (RFC 3339, e.g. 2025-03-01T09:30:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<DateTime<FixedOffset>>,
    /// Only jobs created before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<DateTime<FixedOffset>>,
    /// Only jobs one of whose shards this worker took (any attempt).
    #[arg(long, value_name = "WORKER_ID", value_parser = parse_worker_id)]
    pub worker: Option<String>,
    /// Jobs per page.
    #[arg(
        long,
        value_parser = clap::value_parser!(i64).range(1..=MAX_PAGE_LIMIT),
        help = format!("Jobs per page, 1 to {MAX_PAGE_LIMIT} (server default {DEFAULT_PAGE_LIMIT})")
    )]
    pub limit: Option<i64>,
    /// Start after this cursor (the `next_cursor` of a previous page of the same search).
    #[arg(long)]
    pub cursor: Option<String>,
}

/// Arguments of `cancel`: the jobs, by id. One id is cancelled by its own
/// route, as it always was; several go through the bulk route.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The jobs' ids (UUIDs); one given twice is cancelled once.
    #[arg(required = true, value_name = "JOB_ID")]
    pub job_ids: Vec<Uuid>,
}

/// Arguments of `workers`.
#[derive(Debug, Args)]
pub struct WorkersArgs {
    /// Only workers in this status.
    #[arg(long, value_parser = statuses(WorkerStatus::ALL, WorkerStatus::as_str))]
    pub status: Option<WorkerStatus>,
}

/// Arguments of `allocate`.
#[derive(Debug, Args)]
pub struct AllocateArgs {
    /// Number of workers to reserve.
    #[arg(
        value_parser = clap::value_parser!(i32).range(1..=i64::from(MAX_ALLOCATION_WORKERS)),
        help = format!("Number of workers to reserve, 1 to {MAX_ALLOCATION_WORKERS}")
    )]
    pub workers: i32,
    /// The job the workers are for.
    #[arg(long)]
    pub job_id: Option<Uuid>,
    /// Lifetime of the allocation, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(i64).range(1..=MAX_TTL_SECONDS),
        help = format!(
            "Lifetime of the allocation, in seconds, 1 to {MAX_TTL_SECONDS} ({} days; default: until released)",
            MAX_TTL_SECONDS / DAY_SECONDS
        )
    )]
    pub ttl: Option<i64>,
    /// Workers of this pool only (its per-pool quota applies).
    #[arg(long, value_name = "POOL")]
    pub pool: Option<String>,
}

/// `logs`: which job and shard, and whether to follow.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The job's id (a UUID).
    pub job_id: Uuid,
    /// Keep printing new output as the job runs, until it ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The shard whose output to print.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=63))]
    pub shard: i32,
}

/// A job, by id.
#[derive(Debug, Args)]
pub struct JobRef {
    /// The job's id (a UUID).
    pub job_id: Uuid,
}

/// A worker, by id.
#[derive(Debug, Args)]
pub struct WorkerRef {
    /// The worker's id.
    #[arg(value_parser = parse_worker_id)]
    pub worker_id: String,
}

/// An allocation, by id.
#[derive(Debug, Args)]
pub struct AllocationRef {
    /// The allocation's id (a UUID).
    pub allocation_id: Uuid,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("orchestrator").chain(args.iter().copied()))
    }

    fn submit(args: &[&str]) -> Option<SubmitArgs> {
        match parse(args).ok()?.command {
            Command::Submit(submit) => Some(*submit),
            _ => None,
        }
    }

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn submit_takes_the_command_after_a_double_dash() {
        let args = submit(&["submit", "build", "--wait", "--", "make", "-j2", "--keep-going"]);
        let args = args.map(|a| (a.command_args().to_vec(), a.wait, a.wait_timeout));
        assert_eq!(
            args,
            Some((
                vec!["make".into(), "-j2".into(), "--keep-going".into()],
                true,
                3600
            ))
        );
    }

    #[test]
    fn submit_takes_the_command_from_the_flag() {
        let args = submit(&["submit", "hi", "--command", "echo", "hello", "--priority", "7"]);
        let args = args.map(|a| (a.command_args().to_vec(), a.priority));
        assert_eq!(args, Some((vec!["echo".into(), "hello".into()], Some(7))));
    }

    #[test]
    fn submit_checks_ranges_and_labels() {
        assert!(parse(&["submit", "x", "--priority", "10"]).is_err());
        assert!(parse(&["submit", "x", "--workers", "0"]).is_err());
        assert!(parse(&["submit", "x", "--label", "novalue"]).is_err());
        assert!(
            parse(&["submit", "x", "--wait-timeout", "5"]).is_err(),
            "needs --wait"
        );
        let labels = submit(&["submit", "x", "--label", "a=1", "--label", "b=2"]).map(|a| a.labels);
        assert_eq!(labels.map(|l| l.len()), Some(2));
    }

    #[test]
    fn ids_are_checked_before_any_request() {
        assert!(parse(&["status", "not-a-uuid"]).is_err());
        assert!(parse(&["status", "3f0c9a4e-8f5e-4f7a-9a53-1c2b3d4e5f60"]).is_ok());
        assert!(parse(&["pause", "../admin"]).is_err());
        assert!(parse(&["pause", "host-1:agent"]).is_ok());
    }

    #[test]
    fn status_filters_are_the_contract_statuses() {
        assert!(parse(&["list", "--status", "timed_out", "--all-pages"]).is_ok());
        assert!(parse(&["list", "--status", "done"]).is_err());
        assert!(parse(&["workers", "--status", "offline"]).is_ok());
        assert!(parse(&["workers", "--status", "running"]).is_err());
    }

    #[test]
    fn status_filters_parse_into_the_shared_statuses() {
        for status in JobStatus::ALL {
            let cli = parse(&["list", "--status", status.as_str()]).ok();
            let parsed = cli.and_then(|c| match c.command {
                Command::List(args) => args.status,
                _ => None,
            });
            assert_eq!(parsed, Some(*status));
        }
        for status in WorkerStatus::ALL {
            let cli = parse(&["workers", "--status", status.as_str()]).ok();
            let parsed = cli.and_then(|c| match c.command {
                Command::Workers(args) => args.status,
                _ => None,
            });
            assert_eq!(parsed, Some(*status));
        }
    }

    #[test]
    fn status_filters_are_case_sensitive_like_the_server() {
        for line in [
            ["list", "--status", "RUNNING"],
            ["list", "--status", "Timed_Out"],
            ["workers", "--status", "IDLE"],
        ] {
            let kind = parse(&line).err().map(|e| e.kind());
            assert_eq!(kind, Some(clap::error::ErrorKind::InvalidValue), "{line:?}");
        }
    }

    #[test]
    fn submit_limits_are_the_contracts() {
        assert!(parse(&["submit", "x", "--max-retries", "100"]).is_ok());
        assert!(parse(&["submit", "x", "--max-retries", "101"]).is_err());
        assert!(parse(&["submit", "x", "--timeout", "604800"]).is_ok());
        assert!(parse(&["submit", "x", "--timeout", "604801"]).is_err());
        assert!(parse(&["submit", "x", "--timeout", "0"]).is_err());
        assert!(parse(&["submit", "x", "--workers", "64", "--priority", "0"]).is_ok());
        assert!(parse(&["submit", "x", "--workers", "65"]).is_err());
        assert!(parse(&["submit", "x", "--memory-mb", "4", "--max-pids", "4194304"]).is_ok());
        assert!(parse(&["submit", "x", "--memory-mb", "1048577"]).is_err());
        assert!(parse(&["submit", "x", "--max-pids", "4194305"]).is_err());
        assert!(parse(&["submit", "x", "--cpu", "0.25"]).is_ok());
    }

    #[test]
    fn agent_credentials_take_a_worker_id_or_a_credential_id() {
        let create = parse(&["agents", "credentials", "create", "--worker-id", "agent-1"]);
        assert!(matches!(
            create.map(|c| c.command),
            Ok(Command::Agents(AgentsCommand::Credentials(CredentialsCommand::Create(c)))) if c.worker_id == "agent-1"
        ));
        assert!(parse(&["agents", "credentials", "list"]).is_ok());
        let id = Uuid::new_v4().to_string();
        assert!(parse(&["agents", "credentials", "revoke", &id]).is_ok());
        assert!(parse(&["agents", "credentials", "revoke", "agent-1"]).is_err());
        assert!(parse(&["agents", "credentials", "create"]).is_err());
    }

    #[test]
    fn allocation_and_page_limits_are_the_contracts() {
        assert!(parse(&["allocate", "1024", "--ttl", "2592000"]).is_ok());
        assert!(parse(&["allocate", "1025"]).is_err());
        assert!(parse(&["allocate", "0"]).is_err());
        assert!(parse(&["allocate", "1", "--ttl", "2592001"]).is_err());
        assert!(parse(&["list", "--limit", "500"]).is_ok());
        assert!(parse(&["list", "--limit", "501"]).is_err());
    }

    #[test]
    fn help_states_the_contracts_limits() {
        let mut command = Cli::command();
        let help = command
            .find_subcommand_mut("submit")
            .map(|submit| submit.render_help().to_string())
            .unwrap_or_default();
        for text in [
            "1 to 10000 characters",
            "1 to 64 (server default 1)",
            "0 to 9 (server default 5)",
        ] {
            assert!(help.contains(text), "{text} in {help}");
        }
        assert!(help.contains("1 to 604800 (7 days)"), "{help}");
        assert!(help.contains("0 to 100 (server default 0)"), "{help}");
        assert!(help.contains("4 to 1048576"), "{help}");
        assert!(help.contains("0.01 to 1024"), "{help}");
        assert!(help.contains("1 to 4194304"), "{help}");
    }

    fn users(args: &[&str]) -> Option<UsersCommand> {
        match parse(args).ok()?.command {
            Command::Users(users) => Some(users),
            _ => None,
        }
    }

    #[test]
    fn users_take_a_name_or_id_and_known_scopes() {
        assert!(matches!(users(&["users", "list"]), Some(UsersCommand::List)));
        assert!(
            matches!(users(&["users", "disable", "bob"]), Some(UsersCommand::Disable(u)) if u.user == "bob")
        );
        let update = users(&[
            "users",
            "update",
            "bob",
            "--scope",
            "jobs:read",
            "--scope",
            "admin",
            "--new-password",
        ]);
        let Some(UsersCommand::Update(update)) = update else {
            panic!("users update did not parse");
        };
        assert_eq!(
            (update.scopes, update.no_scopes, update.new_password),
            (vec!["jobs:read".into(), "admin".into()], false, true)
        );
        assert!(parse(&["users", "update", "bob", "--scope", "root"]).is_err());
        assert!(parse(&["users", "update", "bob", "--scope", "admin", "--no-scopes"]).is_err());
        assert!(parse(&["users", "create", "--username", "carol", "--scope", "jobs:write"]).is_ok());
        assert!(parse(&["users", "delete"]).is_err(), "names a user");
    }

    fn search(args: &[&str]) -> Result<SearchArgs, clap::Error> {
        match parse(args)?.command {
            Command::Search(search) => Ok(search),
            other => panic!("not a search: {other:?}"),
        }
    }

    #[test]
    fn search_takes_every_filter_of_the_contract() {
        let line = [
            "search",
            "--status",
            "failed",
            "--user",
            "bob",
            "--label",
            "team=ml",
            "--since",
            "2025-03-01T09:30:00Z",
            "--until",
            "2025-03-02T00:00:00+02:00",
            "--worker",
            "agent-1",
            "--limit",
            "500",
            "--cursor",
            "c1",
        ];
        let args = search(&line).map_err(|e| e.to_string());
        let args = args
            .as_ref()
            .map(|a| (a.status, a.label.clone(), a.worker.as_deref(), a.limit));
        let label = Some(("team".to_owned(), "ml".to_owned()));
        assert_eq!(
            args,
            Ok((Some(JobStatus::Failed), label, Some("agent-1"), Some(500)))
        );
        assert!(search(&["search"]).is_ok(), "every filter is optional");
    }

    #[test]
    fn search_refuses_what_the_server_would_refuse_with_a_422() {
        use clap::error::ErrorKind::{InvalidValue, ValueValidation};
        for (line, kind) in [
            (["search", "--status", "done"], InvalidValue),
            (["search", "--label", "team"], ValueValidation),
            (["search", "--label", "=ml"], ValueValidation),
            (["search", "--since", "2025-03-01"], ValueValidation),
            (["search", "--until", "yesterday"], ValueValidation),
            (["search", "--user", ""], InvalidValue),
            (["search", "--worker", "a/b"], ValueValidation),
            (["search", "--limit", "501"], ValueValidation),
        ] {
            let err = search(&line).err();
            assert_eq!(err.as_ref().map(clap::Error::kind), Some(kind), "{line:?}");
            assert_eq!(err.map(|e| e.exit_code()), Some(2), "a usage error: {line:?}");
        }
        let err = search(&["search", "--label", "team"])
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("expected key=value")));
    }

    #[test]
    fn cancel_takes_one_or_more_job_ids() {
        let ids = [Uuid::new_v4().to_string(), Uuid::new_v4().to_string()];
        let cancel = |line: &[&str]| match parse(line).map(|c| c.command) {
            Ok(Command::Cancel(args)) => Ok(args.job_ids.len()),
            other => Err(format!("{other:?}")),
        };
        assert_eq!(cancel(&["cancel", &ids[0]]), Ok(1));
        assert_eq!(cancel(&["cancel", &ids[0], &ids[1], &ids[0]]), Ok(3));
        assert!(cancel(&["cancel"]).is_err(), "names a job");
        assert!(cancel(&["cancel", &ids[0], "not-a-uuid"]).is_err());
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = parse(&["list", "--json", "--url", "http://h:1"]);
        assert!(cli.is_ok_and(|c| c.json && c.url.as_deref() == Some("http://h:1")));
    }
}
