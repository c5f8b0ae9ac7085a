//! The `controller` binary: parses configuration, then serves, migrates or
//! creates an admin. All logic lives in the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use controller::config::Config;
use controller::db;
use std::time::Duration;

/// Allocations of this size and more get their own mapping, which `free`
/// gives back to the system at once.
const MMAP_THRESHOLD: libc::c_int = 1 << 20;

/// Tunes glibc's allocator for a long-running server, before any thread
/// but this one exists.
///
/// - The mmap threshold is pinned. By default glibc raises it to the size
///   of the largest block freed so far (up to 32 MiB), after which each
///   Argon2 run's 19 MiB lands in a per-thread heap that keeps it: a login
///   flood left the controller 60 MiB larger for good (measured with
///   `api-bench --login-flood`). Pinned, those blocks are mapped and
///   unmapped per run and the resident size returns to idle.
/// - The number of heaps ("arenas") is capped at one per core, unless
///   `MALLOC_ARENA_MAX` is set, which then wins. glibc's default is eight
///   per core, and every runtime and blocking thread that meets another in
///   `malloc` takes a heap of its own that keeps its high-water mark. In
///   alternated 100,000-job runs the controller peaked at 60–65 MiB with
///   glibc's default and at 56–60 MiB capped, at the same rate
///   (`docs/benchmarks.md`, "The controller's memory at full rate").
fn tune_the_allocator() {
    let cap_arenas = std::env::var_os("MALLOC_ARENA_MAX").is_none();
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only changes the allocator's tuning and takes the
    // allocator's own lock; it touches no memory of ours. Called once, at
    // start-up, before the runtime's threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        if cap_arenas {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// The orchestrator's controller.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    command: Option<Command>,
    /// Log one JSON object per line.
    #[arg(long, env = "ORCH_LOG_JSON", global = true)]
    log_json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations, create the configured admin, and run until SIGTERM.
    Serve(Box<Config>),
    /// Apply pending schema migrations and exit.
    Migrate {
        /// Postgres connection string.
        #[arg(long, env = "ORCH_DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// PEM file of the CA of Postgres's certificate (TLS required).
        #[arg(long, env = "ORCH_DATABASE_CA_FILE")]
        database_ca_file: Option<std::path::PathBuf>,
    },
    /// Print a new agent credential for one worker id (revoking the
    /// worker's earlier one): what `deploy/up.sh` gives its agents before
    /// any admin has logged in. Admins otherwise use the API or the CLI.
    IssueAgentCredential {
        /// Postgres connection string.
        #[arg(long, env = "ORCH_DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// PEM file of the CA of Postgres's certificate (TLS required).
        #[arg(long, env = "ORCH_DATABASE_CA_FILE")]
        database_ca_file: Option<std::path::PathBuf>,
        /// The worker id the credential names.
        #[arg(long)]
        worker_id: String,
    },
    /// Create a user with the `admin` scope (password from the environment).
    CreateAdmin {
        /// Postgres connection string.
        #[arg(long, env = "ORCH_DATABASE_URL", hide_env_values = true)]
        database_url: String,
        /// PEM file of the CA of Postgres's certificate (TLS required).
        #[arg(long, env = "ORCH_DATABASE_CA_FILE")]
        database_ca_file: Option<std::path::PathBuf>,
        /// Login name.
        #[arg(long, env = "ORCH_ADMIN_USERNAME")]
        username: String,
        /// Password.
        #[arg(long, env = "ORCH_ADMIN_PASSWORD", hide_env_values = true)]
        password: controller::config::Secret,
    },
}

fn main() -> anyhow::Result<()> {
    tune_the_allocator();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run())
}

/// What `main` runs once the allocator is tuned and the runtime is up.
async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse_from(with_default_subcommand(std::env::args_os().collect()));
    orchestrator_shared::runtime::init_logging(cli.log_json, "info")
        .context("installing the log subscriber")?;
    match cli.command {
        Some(Command::Migrate {
            database_url,
            database_ca_file,
        }) => {
            let target = db::PgTarget::new(&database_url, database_ca_file.as_deref())
                .context("the Postgres connection settings")?;
            let applied = db::migrate_to(&target).await.context("applying migrations")?;
            tracing::info!(?applied, "migrations applied");
            Ok(())
        }
        Some(Command::CreateAdmin {
            database_url,
            database_ca_file,
            username,
            password,
        }) => {
            let target = db::PgTarget::new(&database_url, database_ca_file.as_deref())
                .context("the Postgres connection settings")?;
            create_admin(&target, &username, password).await
        }
        Some(Command::Serve(config)) => serve(*config).await,
        Some(Command::IssueAgentCredential {
            database_url,
            database_ca_file,
            worker_id,
        }) => {
            let target = db::PgTarget::new(&database_url, database_ca_file.as_deref())
                .context("the Postgres connection settings")?;
            issue_agent_credential(&target, &worker_id).await
        }
        None => unreachable_default(),
    }
}

/// `controller` alone (or with only flags) means `controller serve`, so a
/// container can run the bare binary with configuration in the environment.
fn with_default_subcommand(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let first = args.get(1).map(|a| a.to_string_lossy().into_owned());
    let is_meta = matches!(
        first.as_deref(),
        Some("-h" | "--help" | "-V" | "--version" | "help")
    );
    let is_flag_or_none = first.as_deref().is_none_or(|a| a.starts_with('-'));
    if is_flag_or_none && !is_meta {
        args.insert(1.min(args.len()), "serve".into());
    }
    args
}

fn unreachable_default() -> anyhow::Result<()> {
    anyhow::bail!("no subcommand given (expected serve, migrate, create-admin or issue-agent-credential)")
}

async fn create_admin(
    target: &db::PgTarget,
    username: &str,
    password: controller::config::Secret,
) -> anyhow::Result<()> {
    db::migrate_to(target).await.context("applying migrations")?;
    let database =
        db::Database::connect_to(target, 2, Duration::from_secs(10)).context("building the pool")?;
    let created = controller::bootstrap::ensure_admin(&database, username, &password)
        .await
        .context("creating the admin")?;
    tracing::info!(username, created, "admin ready");
    Ok(())
}

async fn issue_agent_credential(target: &db::PgTarget, worker_id: &str) -> anyhow::Result<()> {
    let request = orchestrator_shared::api::CredentialRequest {
        worker_id: worker_id.to_owned(),
    };
    if let Some(problem) = request.problems().first() {
        anyhow::bail!("--worker-id: {}", problem.msg);
    }
    db::migrate_to(target).await.context("applying migrations")?;
    let database =
        db::Database::connect_to(target, 1, Duration::from_secs(10)).context("building the pool")?;
    let made = controller::auth::agent_credential::generate()?;
    let client = database.client().await.context("connecting to Postgres")?;
    let (stored, _) =
        db::credentials::issue(&client, made.credential_id, worker_id, &made.secret_sha256, None)
            .await
            .context("storing the credential")?;
    tracing::info!(credential_id = %stored.credential_id, worker_id, "agent credential issued");
    println!("{}", made.token);
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = controller::app::App::build(config).await?;
    tracing::info!(addr = %app.local_addr(), "controller ready");
    app.run_until(orchestrator_shared::runtime::shutdown_signal())
        .await
        .context("serving HTTP")?;
    tracing::info!("controller stopped");
    Ok(())
}
