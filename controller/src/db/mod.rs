//! Postgres access: the connection pool, the migrations, and one module of
//! queries per table. Every query is parameterised; every state change is a
//! compare-and-set that writes its event row in the same transaction.
//!
//! A statement that names its jobs by id and also checks their status
//! writes the status check as `(status = ..) IS TRUE`. Once the table holds
//! many finished jobs, the planner's statistics see almost no `pending` or
//! `queued` row and would walk the status index over the whole backlog for
//! every batch (a claim of 16 jobs took 18.7 ms with 5,000 queued, against
//! 3.4 ms by primary key); `IS TRUE` keeps the check off that index, so the
//! rows are found by id and their status is checked on them.

pub mod allocations;
pub mod at_once;
pub mod control;
pub mod credentials;
pub mod flow;
pub mod idempotency;
pub mod jobs;
pub mod locks;
pub mod outbox;
pub mod output;
pub mod pools;
pub mod quotas;
pub mod retention;
pub mod schedules;
pub mod stats;
pub mod timeline;
pub mod tls;
pub mod users;
pub mod workers;

pub use tls::PgTarget;

use deadpool_postgres::{GenericClient, ManagerConfig, Pool, RecyclingMethod, Runtime};
use orchestrator_shared::{StateMachine, StateTransitionError, StatusParseError};
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// Statements through the connection's prepared-statement cache. Every
/// query here is a fixed text, so after a connection's first use of one it
/// costs one round trip (bind and execute) instead of two (parse, then bind
/// and execute), and Postgres plans it once per connection instead of once
/// per call. Implemented for the pool's clients and for transactions.
pub(crate) trait Cached: GenericClient {
    /// `execute` of a cached statement: the rows changed.
    async fn exec(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.execute(&statement, params).await
    }

    /// `query` of a cached statement: every row.
    async fn rows(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query(&statement, params).await
    }

    /// `query_one` of a cached statement: exactly one row, or an error.
    async fn row(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query_one(&statement, params).await
    }

    /// `query_opt` of a cached statement: at most one row.
    async fn row_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query_opt(&statement, params).await
    }
}

impl<T: GenericClient> Cached for T {}

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Why a database call failed, typed so the API can map each case to its
/// status code (503, 404, 409) without looking at message text.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had: Postgres is down or the pool is exhausted.
    #[error("database unavailable")]
    Unavailable(#[source] deadpool_postgres::PoolError),
    /// Postgres refused or failed a statement.
    #[error("database error")]
    Postgres(#[from] tokio_postgres::Error),
    /// The row asked for does not exist. Display is the contract's 404 detail.
    #[error("{kind} {id} not found")]
    NotFound {
        /// "Job", "Worker", "Allocation", "User".
        kind: &'static str,
        /// The id that was asked for.
        id: String,
    },
    /// The state machine forbids the change.
    #[error(transparent)]
    Transition(#[from] StateTransitionError),
    /// A quota refused the write; the text names the limit (409).
    #[error("{0}")]
    QuotaExceeded(String),
    /// An idempotency key was reused with another request (409).
    #[error("Idempotency key {key} was already used with a different request")]
    IdempotencyKeyReused {
        /// The reused key.
        key: String,
    },
    /// The row to create exists already (409), e.g. a taken username.
    #[error("{kind} {id} already exists")]
    AlreadyExists {
        /// "User".
        kind: &'static str,
        /// The clashing id or name.
        id: String,
    },
    /// Other rows still depend on this one, so it cannot go (409).
    #[error("{kind} {id} {why}")]
    InUse {
        /// "User".
        kind: &'static str,
        /// The row's id.
        id: String,
        /// What depends on it, as a predicate ("still has jobs").
        why: &'static str,
    },
    /// The change would leave no enabled admin (409): nobody could then
    /// manage users or issue agent credentials.
    #[error("The last enabled admin cannot be disabled, deleted or lose the admin scope")]
    LastAdmin,
    /// A claim names a worker that never registered (409): the agent must
    /// register before it claims.
    #[error("worker {0} is not registered: register (POST /api/agents/register) before claiming")]
    NotRegistered(String),
    /// Fewer live, unallocated workers than an allocation asks for (409).
    #[error("Not enough free workers: {wanted} requested, {free} free")]
    NotEnoughWorkers {
        /// Workers asked for.
        wanted: i64,
        /// Workers free now.
        free: i64,
    },
    /// A compare-and-set lost to a concurrent change of the same row (409:
    /// the client may read again and retry).
    #[error("{kind} {id} changed concurrently")]
    ChangedConcurrently {
        /// "Job", "Worker".
        kind: &'static str,
        /// The row's id.
        id: String,
    },
    /// A submission's `depends_on` names jobs that are not the
    /// submitter's (422, each located at its entry).
    #[error("dependencies that are not the submitter's jobs")]
    InvalidDependencies(Vec<orchestrator_shared::api::FieldError>),
    /// A rule of the controller's own code broke: a bug, never the client's
    /// doing (500, logged).
    #[error("invariant broken: {0}")]
    Invariant(String),
    /// A stored value no longer parses (a status outside the enum, labels
    /// that are not a string map).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The pool could not be built from the configuration.
    #[error("invalid pool configuration")]
    PoolConfig(#[source] deadpool_postgres::BuildError),
    /// Applying the schema migrations failed.
    #[error("migration failed")]
    Migration(#[from] refinery::Error),
    /// The connection string does not parse.
    #[error("invalid database URL")]
    InvalidUrl(#[source] tokio_postgres::Error),
    /// TLS to Postgres cannot be set up (the CA file).
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

impl DbError {
    /// True when the failure means Postgres cannot be reached (the API's 503),
    /// as opposed to a statement that Postgres answered with an error or
    /// an answer this process could not read (a column of another type, a
    /// row count not expected): work held while Postgres is unavailable is
    /// tried again until it is back, and such an error would never pass.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Unavailable(_) => true,
            DbError::Postgres(e) => {
                e.is_closed()
                    || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
                    || e.code().is_some_and(is_shutting_down)
            }
            _ => false,
        }
    }

    /// True when Postgres aborted the work only because of a concurrent
    /// transaction (deadlock, serialization failure): the same work tried
    /// again, alone, is expected to succeed, so it must not be dropped.
    pub fn is_transient(&self) -> bool {
        let DbError::Postgres(e) = self else {
            return false;
        };
        e.code().is_some_and(|c| {
            *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
        })
    }
}

/// Whether Postgres answered that it is going away or not yet taking work
/// (a shutdown, a crash restart, a connection failure it reports itself):
/// the next attempt, once it is back, may pass.
fn is_shutting_down(code: &SqlState) -> bool {
    [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
    ]
    .contains(code)
        || code.code().starts_with("08")
}

impl From<StatusParseError> for DbError {
    fn from(e: StatusParseError) -> Self {
        DbError::Corrupt(e.to_string())
    }
}

/// Why a compare-and-set from an expected status to `to` changed no row,
/// given the status the row has now: the state machine's refusal (409
/// naming the move), or, when the move is allowed from there, a lost race.
pub(crate) fn refused_transition<S: StateMachine>(
    current: S,
    to: S,
    kind: &'static str,
    id: String,
) -> DbError {
    match current.transition(to) {
        Err(refusal) => DbError::Transition(refusal),
        Ok(_) => DbError::ChangedConcurrently { kind, id },
    }
}

/// Whether `err` is Postgres refusing a duplicate key.
pub fn is_unique_violation(err: &tokio_postgres::Error) -> bool {
    err.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// The controller's handle on Postgres: a pool of verified connections.
/// Cheap to clone; every clone shares the pool.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
}

impl Database {
    /// Builds a pool on `url` with no CA file (tools and tests): see
    /// [`Database::connect_to`].
    pub fn connect(url: &str, max_size: usize, wait: Duration) -> Result<Self, DbError> {
        Self::connect_to(&PgTarget::new(url, None)?, max_size, wait)
    }

    /// Builds the pool. No connection is opened until the first query, so
    /// the controller can start (and say "not ready") while Postgres is down.
    pub fn connect_to(target: &PgTarget, max_size: usize, wait: Duration) -> Result<Self, DbError> {
        // Verified, not Fast: after a database restart Fast hands out dead
        // connections; Verified checks each one before reuse.
        let manager = target.manager(ManagerConfig {
            recycling_method: RecyclingMethod::Verified,
        });
        let timeouts = deadpool_postgres::Timeouts {
            wait: Some(wait),
            create: Some(wait),
            recycle: Some(wait),
        };
        let pool = Pool::builder(manager)
            .max_size(max_size.max(1))
            .runtime(Runtime::Tokio1)
            .timeouts(timeouts)
            .build()
            .map_err(DbError::PoolConfig)?;
        Ok(Database { pool })
    }

    /// One pooled connection, or `Unavailable` within the configured wait.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, DbError> {
        self.pool.get().await.map_err(DbError::Unavailable)
    }

    /// Whether Postgres answers a trivial query now (for `/readyz`).
    pub async fn ping(&self) -> bool {
        match self.client().await {
            Ok(c) => c.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }

    /// Current pool status (size, available), for metrics and tests.
    pub fn pool_status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }
}

/// [`migrate_to`] the database at `url`, with no CA file (tools and tests).
pub async fn migrate(url: &str) -> Result<Vec<i32>, DbError> {
    migrate_to(&PgTarget::new(url, None)?).await
}

/// Applies every pending migration on a dedicated connection (never a pooled
/// one: cached prepared statements break when the schema changes under them).
/// Returns the versions applied by this call.
pub async fn migrate_to(target: &PgTarget) -> Result<Vec<i32>, DbError> {
    let (mut client, driver) = target.connect().await?;
    let report = embedded::migrations::runner().run_async(&mut client).await;
    drop(client);
    let _ = driver.await;
    let applied = report?.applied_migrations().iter().map(|m| m.version()).collect();
    Ok(applied)
}

/// The versions this binary's embedded migrations would bring a database to,
/// in order; used by `controller migrate --list` and tests.
pub fn known_migrations() -> Vec<(i32, String)> {
    let mut known: Vec<(i32, String)> = embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| (m.version(), m.name().to_owned()))
        .collect();
    // In version order, as they apply: the embedding lists them by file
    // name, where V10 sorts before V2.
    known.sort_unstable_by_key(|(version, _)| *version);
    known
}

/// Reads a JSON column into `T` (labels, command; `Option<T>` for a
/// nullable column such as an agent's isolation report, where SQL null is
/// `None`), as a typed error rather than a silent default.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    row: &tokio_postgres::Row,
    column: &str,
) -> Result<T, DbError> {
    let raw: Option<serde_json::Value> = row.try_get(column)?;
    serde_json::from_value(raw.unwrap_or_default()).map_err(|e| DbError::Corrupt(format!("{column}: {e}")))
}

/// Reads a status column into its enum, as a typed error rather than a panic.
pub(crate) fn parse_status<T: std::str::FromStr<Err = StatusParseError>>(
    row: &tokio_postgres::Row,
    column: &str,
) -> Result<T, DbError> {
    let raw: String = row.try_get(column)?;
    Ok(raw.parse()?)
}

/// Reads the `memory_mb`, `cpu_millis` and `max_pids` columns (of a job or
/// a worker) into the contract's limits; the CPU is stored in thousandths.
pub(crate) fn parse_limits(
    row: &tokio_postgres::Row,
) -> Result<orchestrator_shared::api::Resources, DbError> {
    Ok(orchestrator_shared::api::Resources {
        memory_mb: row.try_get("memory_mb")?,
        cpu: orchestrator_shared::api::Resources::cpu_from_millis(row.try_get("cpu_millis")?),
        max_pids: row.try_get("max_pids")?,
    })
}
