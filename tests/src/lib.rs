//! Test harness: real Postgres and RabbitMQ in containers started with
//! testcontainers, once per test binary, and a fresh database (cloned from a
//! migrated template) plus a unique broker name prefix for every test, so
//! tests run in parallel without seeing each other.
//!
//! # Layout
//! - `containers`: the images, the check that they exist, starting them once
//!   per process ([`infra`]) and waiting until they answer.
//! - `databases`: the migrated template, a fresh database per test
//!   ([`fresh_database`], [`database`]) and broker prefixes ([`unique_prefix`]).
//! - `fixtures`: users, jobs, workers and quotas for the database-level tests.
//! - `app`: a real controller per test ([`spawn_app`], [`TestApp`]) with one
//!   named request method per route, each answering a [`Reply`].
//! - [`cluster`]: a controller plus worker agents as real processes.
//! - [`browser`]: headless Chromium through chromedriver, for the dashboard.
//! - [`multihost`]: every component in a container of its own.
//! - `tls`: a throw-away CA and server certificate ([`TestTls`]).
//!
//! Everything the tests use is re-exported here, so they import
//! `integration_tests::{spawn_app, ...}` whatever module it lives in.

mod app;
pub mod browser;
pub mod cluster;
mod containers;
mod databases;
mod fixtures;
pub mod multihost;
mod tls;

pub use app::{
    broker_accounts_flag, set_cookie_line, set_cookie_value, spawn_app, spawn_app_process, spawn_app_with,
    spawn_https_app, test_config, Reply, Session, TestApp, ADMIN_PASSWORD, ADMIN_USER, TEST_JWT_SECRET,
    USER_PASSWORD,
};
pub(crate) use containers::{check_image, data_volume, image_from_env, MQ_DATA_DIR, PG_DATA_DIR};
pub use containers::{
    infra, pg_client, set_naptime, wait_for_management, wait_for_postgres, wait_for_rabbitmq,
    DeploymentPostgres, Infra, DEFAULT_POSTGRES_IMAGE, DEFAULT_RABBITMQ_IMAGE, TEST_LABEL,
};
pub use databases::{database, fresh_database, unique_prefix, TestDb};
pub use fixtures::{create_user, insert_finished_jobs, new_job, new_worker, submit, BIG_QUOTA};
pub use tls::{start_tls_postgres, start_tls_rabbitmq, TestTls, HOSTSSL_ONLY, IMAGE_PG_HBA, IMAGE_TLS_DIR};
