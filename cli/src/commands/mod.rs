//! One function per subcommand, and [`dispatch`], which picks it.

mod agents;
mod auth;
mod graph;
mod jobs;
mod resources;
mod schedules;
mod supervisor;
mod users;

use crate::args::{Cli, Command};
use crate::client::ApiClient;
use crate::config::{self, Settings};
use crate::output::{note, Printer};
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What every command needs.
pub struct Ctx {
    /// Client of the chosen controller, with the chosen token.
    pub client: ApiClient,
    /// Table or JSON output.
    pub out: Printer,
    /// The config file, where `login` saves the token (`None`: nowhere known).
    pub config_path: Option<PathBuf>,
    /// The private CA file the client trusts, which `login` saves.
    pub ca_file: Option<PathBuf>,
}

/// Runs the command line; the exit code is that of a successful run (only
/// `submit --wait`, `logs -f` and `cancel` of several jobs can end without
/// an error yet with a non-zero one).
pub async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let config_path = config::config_path(|name| std::env::var(name).ok());
    let settings = resolve_settings(&cli, config_path.as_deref());
    let ctx = Ctx {
        client: ApiClient::new(&settings.url, settings.token, settings.ca_file.as_deref())?,
        ca_file: settings.ca_file,
        out: Printer { json: cli.json },
        config_path,
    };
    run(&ctx, cli.command).await
}

/// The URL and token: flags and environment first, then the config file,
/// which is read only when needed. An unreadable file is reported and ignored,
/// so that `login` can replace it.
fn resolve_settings(cli: &Cli, path: Option<&Path>) -> Settings {
    let (url, token) = (given(cli.url.as_deref()), given(cli.token.as_deref()));
    let ca_file = cli.ca_file.clone().filter(|p| !p.as_os_str().is_empty());
    let file = match path {
        Some(path) if url.is_none() || token.is_none() || ca_file.is_none() => config::load(path)
            .unwrap_or_else(|err| {
                note(&format!("warning: ignoring the config file: {err:#}"));
                None
            }),
        _ => None,
    };
    let mut settings = Settings::resolve(url, token, file.as_ref());
    if ca_file.is_some() {
        settings.ca_file = ca_file;
    }
    settings
}

/// Calls the subcommand's function.
async fn run(ctx: &Ctx, command: Command) -> Result<ExitCode> {
    match command {
        Command::Submit(args) => return jobs::submit(ctx, *args).await,
        Command::Login(args) => auth::login(ctx, args).await,
        Command::Whoami => auth::whoami(ctx).await,
        Command::Status(job) => jobs::status(ctx, job.job_id).await,
        Command::List(args) => jobs::list(ctx, args).await,
        Command::Search(args) => jobs::search(ctx, args).await,
        Command::Cancel(args) => return jobs::cancel(ctx, args).await,
        Command::Events(job) => jobs::events(ctx, job.job_id).await,
        Command::Graph(job) => graph::graph(ctx, job.job_id).await,
        Command::Output(job) => jobs::output(ctx, job.job_id).await,
        Command::Logs(args) => return jobs::logs(ctx, args).await,
        Command::Workers(args) => supervisor::workers(ctx, args.status).await,
        Command::Worker(worker) => supervisor::worker(ctx, &worker.worker_id).await,
        Command::Pause(worker) => supervisor::act(ctx, &worker.worker_id, "pause").await,
        Command::Resume(worker) => supervisor::act(ctx, &worker.worker_id, "resume").await,
        Command::Terminate(worker) => supervisor::act(ctx, &worker.worker_id, "terminate").await,
        Command::Metrics => supervisor::metrics(ctx).await,
        Command::Quotas => resources::quotas(ctx).await,
        Command::Allocate(args) => resources::allocate(ctx, args).await,
        Command::Release(allocation) => resources::release(ctx, allocation.allocation_id).await,
        Command::Usage => resources::usage(ctx).await,
        Command::Users(command) => users::run(ctx, command).await,
        Command::Agents(command) => agents::run(ctx, command).await,
        Command::Schedules(command) => schedules::run(ctx, command).await,
    }?;
    Ok(ExitCode::SUCCESS)
}

/// A flag's value, with an empty one (`ORCH_TOKEN=`) counted as absent.
fn given(flag: Option<&str>) -> Option<&str> {
    flag.filter(|value| !value.trim().is_empty())
}
