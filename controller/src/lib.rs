//! The orchestrator's controller: it keeps every job, worker and allocation in
//! Postgres, serves the authenticated HTTP API, and (through an outbox)
//! publishes work to RabbitMQ.
//!
//! # Layout
//! - [`config`]: typed settings, every one a flag and an environment variable.
//! - [`db`]: the pool, migrations and one module of queries per table.
//! - [`auth`]: Argon2id password hashing and JWT issue/verify.
//! - [`models`]: the rows the API returns, in the contract's JSON shape.
//! - [`bootstrap`]: idempotent first-start set-up (the configured admin).
//!
//! Only this crate touches Postgres; agents never do.

#![forbid(unsafe_code)]

pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod db;
pub mod models;
