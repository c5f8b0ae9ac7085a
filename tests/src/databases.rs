//! Isolation between tests that share the containers: a migrated template
//! database made once per process, a fresh database cloned from it for every
//! test, and a unique name prefix for every test's broker exchanges and
//! queues, so tests run in parallel without seeing each other.

use crate::containers::{infra, pg_client, Infra};
use anyhow::Context;
use std::time::Duration;

/// Name of the migrated database every test database is cloned from.
const TEMPLATE_DB: &str = "orchestrator_template";

static TEMPLATE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// Serialises `CREATE DATABASE … TEMPLATE`, which fails if two run at once.
static CLONE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Creates the migrated template database once per process.
async fn ensure_template(infra: &Infra) -> anyhow::Result<()> {
    TEMPLATE
        .get_or_try_init(|| async {
            let admin = admin_client(infra).await?;
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {TEMPLATE_DB}"))
                .await?;
            admin
                .batch_execute(&format!("CREATE DATABASE {TEMPLATE_DB}"))
                .await?;
            controller::db::migrate(&infra.postgres_url(TEMPLATE_DB))
                .await
                .context("migrating the template")?;
            anyhow::Ok(())
        })
        .await
        .map(|_| ())
}

/// A connection to the server's `postgres` database, for creating others.
async fn admin_client(infra: &Infra) -> anyhow::Result<tokio_postgres::Client> {
    Ok(pg_client(&infra.postgres_url("postgres")).await?)
}

/// A database of one test's own, already migrated.
#[derive(Debug, Clone)]
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// Its connection string.
    pub url: String,
}

/// A fresh migrated database for one test, so no test sees another's rows.
pub async fn fresh_database() -> TestDb {
    try_fresh_database()
        .await
        .unwrap_or_else(|e| panic!("creating a test database: {e:#}"))
}

async fn try_fresh_database() -> anyhow::Result<TestDb> {
    let infra = infra();
    ensure_template(infra).await?;
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    let admin = admin_client(infra).await?;
    {
        let _guard = CLONE_LOCK.lock().await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}"))
            .await?;
    }
    Ok(TestDb {
        url: infra.postgres_url(&name),
        name,
    })
}

/// A name prefix no other test uses, for broker exchanges and queues, so
/// tests share one broker without taking each other's messages.
pub fn unique_prefix() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A fresh database and a controller pool on it, for tests that call the
/// controller's database layer without an HTTP server.
pub async fn database() -> (TestDb, controller::db::Database) {
    let test_db = fresh_database().await;
    let pool = controller::db::Database::connect(&test_db.url, 8, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("building the pool: {e:#}"));
    (test_db, pool)
}
