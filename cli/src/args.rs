//! The command line: global options, subcommands and their arguments.

use crate::input::{parse_label, parse_worker_id};
use crate::status::{JOB_STATUSES, WORKER_STATUSES};
use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

/// Shown under every `--help`: the environment and the exit statuses.
pub const AFTER_HELP: &str = "\
Environment:
  ORCH_URL       controller URL (else the config file's, else http://127.0.0.1:8000)
  ORCH_TOKEN     bearer token (else the config file's, if saved for the same URL)
  ORCH_PASSWORD  password for `login` (safer than --password, which `ps` shows)
  ORCH_CONFIG    config file (else $XDG_CONFIG_HOME/orchestrator/config.json,
                 else ~/.config/orchestrator/config.json)

Exit status:
  0  success; for `submit --wait`, the job completed
  1  the waited-for job failed, was cancelled or timed out, or the wait timed out;
     a server error (HTTP 5xx), a network error, or a local I/O error
  2  a usage error: invalid arguments, or an HTTP 4xx answer (not authenticated,
     missing scope, unknown id, conflict, invalid request)";

/// Command-line client of the orchestrator's HTTP API.
#[derive(Debug, Parser)]
#[command(name = "orchestrator", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Controller base URL.
    #[arg(long, env = "ORCH_URL", global = true)]
    pub url: Option<String>,
    /// Bearer token (default: the one saved by `login`).
    #[arg(long, env = "ORCH_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
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
    Submit(SubmitArgs),
    /// Show a job (GET /api/jobs/{id}).
    Status(JobRef),
    /// List jobs, newest first (GET /api/jobs).
    List(ListArgs),
    /// Cancel a job (POST /api/jobs/{id}/cancel).
    Cancel(JobRef),
    /// Show a job's status transitions (GET /api/jobs/{id}/events).
    Events(JobRef),
    /// Show the tail of a job's stdout and stderr and its exit code (GET /api/jobs/{id}/output).
    Output(JobRef),
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

/// Arguments of `submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// What the job does (1 to 10000 characters).
    pub task_description: String,
    /// Program and arguments to run, as `--command prog arg...`; an argument
    /// starting with `-` needs the `-- prog arg...` form instead.
    #[arg(long, num_args = 1.., value_name = "ARG", conflicts_with = "trailing_command")]
    pub command: Vec<String>,
    /// Program and arguments to run, after `--` (taken verbatim).
    #[arg(last = true, value_name = "COMMAND")]
    pub trailing_command: Vec<String>,
    /// Number of workers (shards) the job runs on, 1 to 64 (server default 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: Option<u32>,
    /// Priority, 0 to 9 (server default 5).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub priority: Option<u8>,
    /// Time limit of a run, in seconds.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// Retries after a failure (server default 0).
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// Key that makes resubmission safe: the same key returns the first job.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// A label, `key=value`; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
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
    #[arg(long, value_parser = PossibleValuesParser::new(JOB_STATUSES))]
    pub status: Option<String>,
    /// Jobs per page, 1 to 500 (server default 50).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: Option<u32>,
    /// Start after this cursor (the `next_cursor` of a previous page).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow `next_cursor` to the last page.
    #[arg(long)]
    pub all_pages: bool,
}

/// Arguments of `workers`.
#[derive(Debug, Args)]
pub struct WorkersArgs {
    /// Only workers in this status.
    #[arg(long, value_parser = PossibleValuesParser::new(WORKER_STATUSES))]
    pub status: Option<String>,
}

/// Arguments of `allocate`.
#[derive(Debug, Args)]
pub struct AllocateArgs {
    /// Number of workers to reserve.
    #[arg(value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: u32,
    /// The job the workers are for.
    #[arg(long)]
    pub job_id: Option<Uuid>,
    /// Lifetime of the allocation, in seconds.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub ttl: Option<u64>,
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
            Command::Submit(submit) => Some(submit),
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
    fn global_options_go_anywhere() {
        let cli = parse(&["list", "--json", "--url", "http://h:1"]);
        assert!(cli.is_ok_and(|c| c.json && c.url.as_deref() == Some("http://h:1")));
    }
}
