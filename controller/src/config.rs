//! The controller's settings. Every setting is a command-line flag that can
//! also come from an `ORCH_*` environment variable, so the same binary runs
//! from a shell, a compose file or a test. Secrets are a type that never
//! prints.

use clap::{Args, ValueEnum};
use ipnet::IpNet;
use orchestrator_shared::validate::{millis, seconds};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

pub use orchestrator_shared::Secret;

/// The JWT signing algorithms the controller can be pinned to. Only the
/// configured one is accepted when verifying, so `none` and algorithm
/// confusion are refused by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 (the default; the secret must be at least 32 bytes).
    #[value(name = "HS256")]
    Hs256,
    /// HMAC with SHA-384 (secret at least 48 bytes).
    #[value(name = "HS384")]
    Hs384,
    /// HMAC with SHA-512 (secret at least 64 bytes).
    #[value(name = "HS512")]
    Hs512,
}

/// Token issue and verification settings.
#[derive(Debug, Clone, Args)]
pub struct AuthConfig {
    /// HMAC key that signs and verifies tokens.
    #[arg(long, env = "ORCH_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Secret,
    /// The one algorithm tokens are signed with and accepted in.
    #[arg(long, env = "ORCH_JWT_ALGORITHM", value_enum, default_value = "HS256")]
    pub jwt_algorithm: JwtAlgorithm,
    /// `iss` written into and required of every token.
    #[arg(long, env = "ORCH_JWT_ISSUER", default_value = "orchestrator")]
    pub jwt_issuer: String,
    /// `aud` written into and required of every token.
    #[arg(long, env = "ORCH_JWT_AUDIENCE", default_value = "orchestrator-api")]
    pub jwt_audience: String,
    /// Lifetime of an access token, in seconds (the contract's `expires_in`).
    #[arg(long = "token-ttl-seconds", env = "ORCH_TOKEN_TTL_SECONDS", default_value = "3600", value_parser = seconds)]
    pub token_ttl: Duration,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[arg(long = "jwt-leeway-seconds", env = "ORCH_JWT_LEEWAY_SECONDS", default_value = "5", value_parser = seconds)]
    pub jwt_leeway: Duration,
    /// Username of the first admin, created on first start if absent.
    #[arg(long, env = "ORCH_ADMIN_USERNAME")]
    pub admin_username: Option<String>,
    /// Password of the first admin.
    #[arg(long, env = "ORCH_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<Secret>,
}

/// Lifetimes of allocations. Every allocation lapses, so no user can hold
/// workers indefinitely by forgetting (or refusing) to release them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct AllocationTtl {
    /// Lifetime of an allocation that names none, in seconds (default one day).
    #[arg(
        long = "allocation-default-ttl-seconds",
        env = "ORCH_ALLOCATION_DEFAULT_TTL_SECONDS",
        default_value = "86400",
        value_parser = seconds
    )]
    pub default: Duration,
    /// Longest lifetime an allocation may ask for, in seconds (default 30
    /// days, the contract's ceiling; a larger value is capped to it).
    #[arg(
        long = "allocation-max-ttl-seconds",
        env = "ORCH_ALLOCATION_MAX_TTL_SECONDS",
        default_value = "2592000",
        value_parser = seconds
    )]
    pub max: Duration,
}

/// How long finished work stays in Postgres (`crate::retention`). Each age
/// of 0 keeps that kind of row forever (as before retention existed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct RetentionConfig {
    /// Days a finished job (completed, failed, cancelled, timed out) is
    /// kept, counted from when it finished; then it is deleted with its
    /// events, shards, outbox rows and idempotency key (the API answers
    /// 404 for it), and allocations ended and schedules' runs handled as
    /// long ago go too. 0 keeps
    /// finished jobs forever.
    #[arg(
        long = "job-retention-days",
        env = "ORCH_JOB_RETENTION_DAYS",
        default_value = "30",
        value_parser = days
    )]
    pub jobs: Duration,
    /// Hours an idempotency key is remembered after the submission that
    /// used it; then the key is forgotten (a submission with it creates a
    /// new job) while the job stays. 0 remembers keys as long as their job.
    #[arg(
        long = "idempotency-key-retention-hours",
        env = "ORCH_IDEMPOTENCY_KEY_RETENTION_HOURS",
        default_value = "24",
        value_parser = hours
    )]
    pub idempotency_keys: Duration,
    /// Minutes an outbox row marked sent is kept (only a trail: nothing
    /// reads sent rows). The relay deletes rows at the broker's confirm, so
    /// only rows earlier versions marked sent are left to this. Unsent rows
    /// are never deleted. 0 keeps sent rows as long as their job.
    #[arg(
        long = "sent-outbox-retention-minutes",
        env = "ORCH_SENT_OUTBOX_RETENTION_MINUTES",
        default_value = "60",
        value_parser = minutes
    )]
    pub sent_outbox: Duration,
    /// Seconds between the leader's retention passes. A pass that stops at
    /// its time budget with rows left is followed by the next at once.
    #[arg(
        long = "retention-interval-seconds",
        env = "ORCH_RETENTION_INTERVAL_SECONDS",
        default_value = "60",
        value_parser = positive_seconds
    )]
    pub interval: Duration,
}

/// Longest retention age accepted, in seconds (about a hundred years):
/// beyond it Postgres's interval arithmetic would overflow, and nobody
/// means it (0 keeps rows forever).
const MAX_RETENTION_SECS: u64 = 100 * 365 * 86_400;

/// A whole number of `unit_secs`-second units as a `Duration`, at most
/// [`MAX_RETENTION_SECS`].
fn in_units(raw: &str, unit_secs: u64, unit: &str) -> Result<Duration, String> {
    let n = seconds(raw)?.as_secs();
    match n.checked_mul(unit_secs) {
        Some(secs) if secs <= MAX_RETENTION_SECS => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "must be at most {} {unit}",
            MAX_RETENTION_SECS / unit_secs
        )),
    }
}

/// A setting given in days (`--job-retention-days 30`).
fn days(raw: &str) -> Result<Duration, String> {
    in_units(raw, 86_400, "days")
}

/// A setting given in hours (`--idempotency-key-retention-hours 24`).
fn hours(raw: &str) -> Result<Duration, String> {
    in_units(raw, 3_600, "hours")
}

/// A setting given in minutes (`--sent-outbox-retention-minutes 60`).
fn minutes(raw: &str) -> Result<Duration, String> {
    in_units(raw, 60, "minutes")
}

/// Limits applied to a user who has no row in `quotas`.
#[derive(Debug, Clone, Copy, Args)]
pub struct DefaultQuota {
    /// Workers one user may hold allocated at once.
    #[arg(
        long = "default-max-workers",
        env = "ORCH_DEFAULT_MAX_WORKERS",
        default_value_t = 64
    )]
    pub max_workers: i32,
    /// Jobs one user may have running at once.
    #[arg(
        long = "default-max-concurrent-jobs",
        env = "ORCH_DEFAULT_MAX_CONCURRENT_JOBS",
        default_value_t = 10_000
    )]
    pub max_concurrent_jobs: i32,
    /// Jobs one user may have pending or queued at once.
    #[arg(
        long = "default-max-queued-jobs",
        env = "ORCH_DEFAULT_MAX_QUEUED_JOBS",
        default_value_t = 1_000_000
    )]
    pub max_queued_jobs: i32,
}

/// The job flow's broker names and timings.
#[derive(Debug, Clone, Args)]
pub struct FlowConfig {
    /// Prefix of every exchange and queue (agents must use the same).
    #[arg(long, env = "ORCH_BROKER_PREFIX", default_value = "orchestrator")]
    pub broker_prefix: String,
    /// An agent silent this long (ms) is marked offline and its jobs handled.
    #[arg(long = "heartbeat-timeout-ms", env = "ORCH_HEARTBEAT_TIMEOUT_MS", default_value = "10000", value_parser = millis)]
    pub heartbeat_timeout: Duration,
    /// How often (ms) the reaper looks for lost agents and overdue jobs.
    #[arg(long = "reaper-interval-ms", env = "ORCH_REAPER_INTERVAL_MS", default_value = "1000", value_parser = millis)]
    pub reaper_interval: Duration,
    /// Extra time (ms) past a job's timeout before the controller itself
    /// times it out (the agent normally does it first).
    #[arg(long = "timeout-grace-ms", env = "ORCH_TIMEOUT_GRACE_MS", default_value = "30000", value_parser = millis)]
    pub timeout_grace: Duration,
    /// Delay (ms) before a failed job's first retry; doubles per attempt.
    #[arg(long = "retry-base-ms", env = "ORCH_RETRY_BASE_MS", default_value = "1000", value_parser = millis)]
    pub retry_base: Duration,
    /// Longest delay (ms) between retries.
    #[arg(long = "retry-max-ms", env = "ORCH_RETRY_MAX_MS", default_value = "60000", value_parser = millis)]
    pub retry_max: Duration,
    /// Safety-net poll interval (ms) of the outbox relay; submissions in
    /// this process wake it at once.
    #[arg(long = "relay-poll-ms", env = "ORCH_RELAY_POLL_MS", default_value = "200", value_parser = millis)]
    pub relay_poll: Duration,
    /// Most agent events applied in one transaction. Each commit costs a
    /// WAL flush; one per event capped the controller at a few dozen
    /// events a second, one per batch lets it keep up with many agents.
    #[arg(
        long,
        env = "ORCH_EVENT_BATCH_MAX",
        default_value_t = 256,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub event_batch_max: u16,
    /// How long (ms) the events consumer keeps gathering deliveries after
    /// the first one of a batch arrives. Short, so a lone event (a shard
    /// report someone is waiting for) is hardly delayed; 0 takes only what
    /// has already arrived.
    #[arg(long = "event-batch-window-ms", env = "ORCH_EVENT_BATCH_WINDOW_MS", default_value = "2", value_parser = millis)]
    pub event_batch_window: Duration,
    /// Whether registering agents are told they may send several events
    /// in one message (a busy agent's shard reports then cost a few
    /// messages instead of one each). Turn it off while replicas older
    /// than this controller still consume the events queue: they would
    /// refuse such a message.
    #[arg(
        long = "agent-event-batches",
        env = "ORCH_AGENT_EVENT_BATCHES",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub agent_event_batches: bool,
    /// How late (ms) a schedule's tick may still be fired normally. Of the
    /// ticks older than this (missed while no controller ran) only the
    /// latest is handled: fired once if the schedule catches up, else
    /// recorded `missed`.
    #[arg(long = "schedule-grace-ms", env = "ORCH_SCHEDULE_GRACE_MS", default_value = "60000", value_parser = millis)]
    pub schedule_grace: Duration,
}

/// How agents get their access to the broker. By default each agent gets
/// a broker user of its own, created by the controller through RabbitMQ's
/// management API when the agent registers; the controller then knows
/// which agent sent each event. Without a management URL the controller
/// refuses to start, unless told to run on a shared broker login.
#[derive(Debug, Clone, Args)]
pub struct BrokerAccountsConfig {
    /// RabbitMQ's management HTTP API (e.g. `http://rabbitmq:15672`),
    /// through which the controller creates, refreshes and deletes the
    /// agents' broker users. Only the controller needs to reach it.
    #[arg(long, env = "ORCH_BROKER_MANAGEMENT_URL")]
    pub broker_management_url: Option<String>,
    /// Broker user the controller manages accounts as (it needs the
    /// `administrator` tag); default: the user of the AMQP URL.
    #[arg(long, env = "ORCH_BROKER_MANAGEMENT_USER", requires = "broker_management_url")]
    pub broker_management_user: Option<String>,
    /// That user's password; default: the AMQP URL's password.
    #[arg(
        long,
        env = "ORCH_BROKER_MANAGEMENT_PASSWORD",
        hide_env_values = true,
        requires = "broker_management_url"
    )]
    pub broker_management_password: Option<Secret>,
    /// Run without per-agent broker users: agents connect with the login
    /// in their own broker URL, may declare the topology, and the events
    /// consumer trusts the worker id written inside each event. Anyone with
    /// that login can then report for any agent. For tests and trusted
    /// single-host set-ups only; the controller logs a warning.
    #[arg(
        long,
        env = "ORCH_INSECURE_SHARED_BROKER",
        conflicts_with = "broker_management_url"
    )]
    pub insecure_shared_broker: bool,
}

/// How the HTTP server treats connections and finds out who a client is:
/// the limits that keep slow or idle clients from holding the server.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Seconds a client has to send a request's headers, counted from when
    /// the connection opens or its previous response ends; then the
    /// connection is closed. Bounds what a slow or idle client holds; the
    /// TLS handshake of a new connection gets as long again.
    #[arg(long = "header-read-timeout-seconds", env = "ORCH_HEADER_READ_TIMEOUT_SECONDS", default_value = "10", value_parser = positive_seconds)]
    pub header_read_timeout: Duration,
    /// Most connections served at once; further ones wait, unanswered, in
    /// the listen backlog until one closes.
    #[arg(long, env = "ORCH_MAX_CONNECTIONS", default_value = "1024")]
    pub max_connections: NonZeroUsize,
    /// Proxies in front of the controller (IP addresses or CIDR networks,
    /// comma-separated) whose `X-Forwarded-For` names the client. Default
    /// none: the header is ignored and the peer address is the client.
    #[arg(long, env = "ORCH_TRUSTED_PROXIES", value_delimiter = ',', value_parser = network)]
    pub trusted_proxies: Vec<IpNet>,
}

/// How the API's port speaks: HTTPS with a certificate, or plain HTTP only
/// when asked for by name, since plain HTTP carries passwords and tokens in
/// clear text. With neither, the controller refuses to start.
#[derive(Debug, Clone, Args)]
pub struct TlsConfig {
    /// PEM file of the certificate the API serves HTTPS with, followed by
    /// any intermediate certificates (the chain, leaf first).
    #[arg(long, env = "ORCH_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file of the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "ORCH_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS (behind a TLS-terminating proxy, or
    /// on a trusted host only): logged as a warning at start.
    #[arg(long, env = "ORCH_INSECURE_HTTP", conflicts_with = "tls_cert_file")]
    pub insecure_http: bool,
}

/// Like [`seconds`], but zero is refused: a zero timeout would close
/// every connection before its first request.
fn positive_seconds(raw: &str) -> Result<Duration, String> {
    match seconds(raw)? {
        Duration::ZERO => Err("must be at least 1 second".to_owned()),
        d => Ok(d),
    }
}

/// Longest revocation bound the contract allows (`docs/api.md` §5).
pub const MAX_TOKEN_RECHECK: Duration = Duration::from_secs(5);

/// Like [`millis`], but at most [`MAX_TOKEN_RECHECK`]: the contract
/// promises that revocations take effect within it.
fn recheck_millis(raw: &str) -> Result<Duration, String> {
    match millis(raw)? {
        d if d > MAX_TOKEN_RECHECK => Err(format!("must be at most {} ms", MAX_TOKEN_RECHECK.as_millis())),
        d => Ok(d),
    }
}

/// An IP network (`10.0.0.0/8`) or a single address (a network of one).
fn network(raw: &str) -> Result<IpNet, String> {
    let raw = raw.trim();
    raw.parse::<IpNet>()
        .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{raw:?} is not an IP address or network"))
}

/// Everything the controller's server needs.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Postgres connection string (`postgres://user:pass@host:port/db`).
    #[arg(long, env = "ORCH_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// PEM file of the CA that signed Postgres's certificate. Given, every
    /// connection to Postgres requires TLS and checks that the certificate
    /// names the URL's host (libpq's `sslmode=verify-full`).
    #[arg(long, env = "ORCH_DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,
    /// Most Postgres connections the controller holds.
    #[arg(long, env = "ORCH_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,
    /// Seconds to wait for a free pooled connection before answering 503.
    #[arg(long = "db-wait-seconds", env = "ORCH_DB_WAIT_SECONDS", default_value = "5", value_parser = seconds)]
    pub db_wait: Duration,
    /// RabbitMQ connection string.
    #[arg(
        long,
        env = "ORCH_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_url: String,
    /// PEM file of a CA to trust, besides the system's roots, for the
    /// broker's certificate on an `amqps://` URL.
    #[arg(long, env = "ORCH_AMQP_CA_FILE")]
    pub amqp_ca_file: Option<PathBuf>,
    /// Address the HTTP API listens on.
    #[arg(long, env = "ORCH_LISTEN", default_value = "0.0.0.0:8000")]
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes (413 above it).
    #[arg(long, env = "ORCH_BODY_LIMIT_BYTES", default_value_t = 1024 * 1024)]
    pub body_limit_bytes: usize,
    /// Largest body of `POST /api/jobs/submit_batch`, in bytes: a whole
    /// graph of up to 10,000 jobs is one request (about 100 bytes a small
    /// job, so the general limit would cut it at some 10,000 of the
    /// smallest).
    #[arg(long, env = "ORCH_BATCH_BODY_LIMIT_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub batch_body_limit_bytes: usize,
    /// Most bytes of output the controller stores for one shard run
    /// (`POST /api/agents/output`; 413 past it). The agents stop at their
    /// own `--output-cap-bytes` (16 MiB by default) well before; this cap
    /// holds whatever an agent sends, so a faulty or hostile agent cannot
    /// fill the database through a shard it runs. Keep it above every
    /// agent's cap.
    #[arg(long, env = "ORCH_MAX_SHARD_OUTPUT_BYTES", default_value_t = 64 * 1024 * 1024,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub max_shard_output_bytes: i64,
    /// Seconds a request may take before it is answered 503.
    #[arg(long = "request-timeout-seconds", env = "ORCH_REQUEST_TIMEOUT_SECONDS", default_value = "30", value_parser = seconds)]
    pub request_timeout: Duration,
    /// Login attempts allowed per minute from one client address, for all
    /// usernames together: a generous cap on the hashing work one address
    /// causes.
    #[arg(long, env = "ORCH_LOGIN_PER_IP_PER_MINUTE", default_value_t = 300)]
    pub login_per_ip_per_minute: u32,
    /// Login attempts one client may make for one username before each
    /// further one waits, first a minute divided by this number, then
    /// twice as long each time (at most 15 minutes); a successful login
    /// clears the count. Other clients of the username are not affected.
    #[arg(long, env = "ORCH_LOGIN_PER_USER_PER_MINUTE", default_value_t = 10)]
    pub login_per_user_per_minute: u32,
    /// Longest time, in milliseconds, a check of a token's user (scopes,
    /// disabled or deleted, token version) may rely on an earlier reading
    /// of the user's row: the bound within which disabling, deleting or
    /// cutting the scopes of a user takes effect on tokens issued before,
    /// on every replica. 0 reads the row on every request; at most 5000.
    #[arg(long = "token-recheck-ms", env = "ORCH_TOKEN_RECHECK_MS", default_value = "2000", value_parser = recheck_millis)]
    pub token_recheck: Duration,
    /// Connection limits and trusted proxies.
    #[command(flatten)]
    pub serve: ServeConfig,
    /// HTTPS, or plain HTTP by explicit choice.
    #[command(flatten)]
    pub tls: TlsConfig,
    /// Token settings.
    #[command(flatten)]
    pub auth: AuthConfig,
    /// Job flow timing and broker names.
    #[command(flatten)]
    pub flow: FlowConfig,
    /// Agents' broker users (or the shared login).
    #[command(flatten)]
    pub broker_accounts: BrokerAccountsConfig,
    /// Quota for users without their own.
    #[command(flatten)]
    pub default_quota: DefaultQuota,
    /// How long allocations of workers may live.
    #[command(flatten)]
    pub allocation_ttl: AllocationTtl,
    /// How long finished jobs, idempotency keys and sent outbox rows stay.
    #[command(flatten)]
    pub retention: RetentionConfig,
}

impl Config {
    /// Parses a configuration from command-line style arguments (the first
    /// one is the program name) and the `ORCH_*` environment; used by tests
    /// and embedders that do not go through `main`.
    pub fn try_parse_from<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        <Wrapper as clap::Parser>::try_parse_from(args).map(|w| w.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn secrets_never_print() {
        let cli = Cli::try_parse_from([
            "controller",
            "--database-url",
            "postgres://u:p@h/db",
            "--jwt-secret",
            "super-secret-value",
        ])
        .unwrap();
        let shown = format!("{:?}", cli.config);
        assert!(!shown.contains("super-secret-value"), "{shown}");
        assert_eq!(cli.config.auth.jwt_secret.expose(), "super-secret-value");
        assert_eq!(cli.config.auth.jwt_algorithm, JwtAlgorithm::Hs256);
        assert_eq!(cli.config.auth.token_ttl, Duration::from_secs(3600));
    }

    #[test]
    fn event_batching_defaults_and_refuses_empty_batches() {
        let base = ["controller", "--database-url", "x", "--jwt-secret", "s"];
        let cli = Cli::try_parse_from(base).unwrap();
        assert_eq!(cli.config.flow.event_batch_max, 256);
        assert_eq!(cli.config.flow.event_batch_window, Duration::from_millis(2));
        assert!(cli.config.flow.agent_event_batches);
        let off = base.iter().copied().chain(["--agent-event-batches", "false"]);
        assert!(!Cli::try_parse_from(off).unwrap().config.flow.agent_event_batches);
        let empty = base.iter().copied().chain(["--event-batch-max", "0"]);
        assert!(Cli::try_parse_from(empty).is_err());
    }

    #[test]
    fn serving_limits_default_and_parse_proxies() {
        let base = ["controller", "--database-url", "x", "--jwt-secret", "s"];
        let serve = Cli::try_parse_from(base).unwrap().config.serve;
        assert_eq!(serve.header_read_timeout, Duration::from_secs(10));
        assert_eq!(serve.max_connections.get(), 1024);
        assert!(serve.trusted_proxies.is_empty());
        let proxies = base
            .iter()
            .copied()
            .chain(["--trusted-proxies", "10.0.0.0/8, 192.0.2.1,2001:db8::/32"]);
        let serve = Cli::try_parse_from(proxies).unwrap().config.serve;
        let shown: Vec<String> = serve.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"]);
        for bad in [
            ["--trusted-proxies", "proxy.example"],
            ["--header-read-timeout-seconds", "0"],
            ["--max-connections", "0"],
        ] {
            assert!(
                Cli::try_parse_from(base.iter().copied().chain(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tls_files_come_in_pairs_and_exclude_plain_http() {
        let base = ["controller", "--database-url", "x", "--jwt-secret", "s"];
        let tls = Cli::try_parse_from(base).unwrap().config.tls;
        assert!(tls.tls_cert_file.is_none() && !tls.insecure_http);
        let pair = ["--tls-cert-file", "c.pem", "--tls-key-file", "k.pem"];
        let tls = Cli::try_parse_from(base.iter().copied().chain(pair))
            .unwrap()
            .config
            .tls;
        assert_eq!(tls.tls_key_file, Some(PathBuf::from("k.pem")));
        for bad in [
            &["--tls-cert-file", "c.pem"][..],
            &["--tls-key-file", "k.pem"][..],
            &[
                "--tls-cert-file",
                "c.pem",
                "--tls-key-file",
                "k.pem",
                "--insecure-http",
            ][..],
        ] {
            let args = base.iter().chain(bad).copied();
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn broker_accounts_need_a_management_url_or_an_explicit_shared_login() {
        let base = ["controller", "--database-url", "x", "--jwt-secret", "s"];
        let accounts = Cli::try_parse_from(base).unwrap().config.broker_accounts;
        assert_eq!(accounts.broker_management_url, None);
        assert!(!accounts.insecure_shared_broker);
        let url = ["--broker-management-url", "http://mq:15672"];
        let with_url = Cli::try_parse_from(base.iter().copied().chain(url)).unwrap();
        let accounts = with_url.config.broker_accounts;
        assert_eq!(accounts.broker_management_url.as_deref(), Some("http://mq:15672"));
        let both = base
            .iter()
            .copied()
            .chain(url)
            .chain(["--insecure-shared-broker"]);
        assert!(Cli::try_parse_from(both).is_err(), "contradictory");
        let user_alone = base.iter().copied().chain(["--broker-management-user", "admin"]);
        assert!(Cli::try_parse_from(user_alone).is_err(), "a user needs a URL");
        let password = ["--broker-management-password", "mgmt-secret-value"];
        let shown = Cli::try_parse_from(base.iter().copied().chain(url).chain(password)).unwrap();
        assert!(!format!("{:?}", shown.config).contains("mgmt-secret-value"));
    }

    #[test]
    fn the_token_recheck_defaults_to_two_seconds_and_is_bounded() {
        let base = ["controller", "--database-url", "x", "--jwt-secret", "s"];
        let config = Cli::try_parse_from(base).unwrap().config;
        assert_eq!(config.token_recheck, Duration::from_secs(2));
        let with =
            |ms: &'static str| Cli::try_parse_from(base.iter().copied().chain(["--token-recheck-ms", ms]));
        assert_eq!(with("0").unwrap().config.token_recheck, Duration::ZERO);
        assert_eq!(with("5000").unwrap().config.token_recheck, MAX_TOKEN_RECHECK);
        assert!(with("5001").is_err());
    }

    #[test]
    fn retention_defaults_parse_units_and_zero_keeps_forever() {
        let base = ["controller", "--database-url", "x", "--jwt-secret", "s"];
        let r = Cli::try_parse_from(base).unwrap().config.retention;
        assert_eq!(r.jobs, Duration::from_secs(30 * 86_400));
        assert_eq!(r.idempotency_keys, Duration::from_secs(24 * 3_600));
        assert_eq!(r.sent_outbox, Duration::from_secs(3_600));
        assert_eq!(r.interval, Duration::from_secs(60));
        let with = |flags: &[&'static str]| Cli::try_parse_from(base.iter().chain(flags).copied());
        let set = with(&[
            "--job-retention-days",
            "7",
            "--idempotency-key-retention-hours",
            "0",
            "--sent-outbox-retention-minutes",
            "5",
            "--retention-interval-seconds",
            "10",
        ])
        .unwrap()
        .config
        .retention;
        assert_eq!(set.jobs, Duration::from_secs(7 * 86_400));
        assert_eq!(set.idempotency_keys, Duration::ZERO, "0 keeps keys");
        assert_eq!(set.sent_outbox, Duration::from_secs(300));
        assert_eq!(set.interval, Duration::from_secs(10));
        for bad in [
            ["--job-retention-days", "-1"],
            ["--job-retention-days", "1.5"],
            ["--job-retention-days", "36501"],
            ["--idempotency-key-retention-hours", "18446744073709551615"],
            ["--retention-interval-seconds", "0"],
        ] {
            assert!(with(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_algorithm_is_refused() {
        let r = Cli::try_parse_from([
            "controller",
            "--database-url",
            "x",
            "--jwt-secret",
            "s",
            "--jwt-algorithm",
            "none",
        ]);
        assert!(r.is_err());
    }
}
