//! The orchestrator's controller: it keeps every job, worker and allocation in
//! Postgres, serves the authenticated HTTP API, and (through an outbox)
//! publishes work to RabbitMQ.
//!
//! # Layout
//! - [`config`]: typed settings, every one a flag and an environment variable.
//! - [`db`]: the pool, migrations and one module of queries per table.
//! - [`auth`]: Argon2id password hashing and JWT issue/verify.
//! - [`models`]: the rows the API returns, in the contract's JSON shape.
//! - [`api`]: the HTTP routes, their scope table, extractors and error mapping.
//! - [`app`]: start-up (`App::build`) and serving until shutdown.
//! - [`broker`]: the RabbitMQ connection: outbox relay and agent-event consumer.
//! - [`reaper`]: single-leader work (lost agents, overdue jobs, lapsed allocations).
//! - [`retention`]: the leader's deletion of finished jobs past their age,
//!   expired idempotency keys and old sent outbox rows, in small batches.
//! - [`schedules`]: the leader's firing of schedules' due ticks (the pure
//!   tick planning and the exactly-once submission).
//! - [`bootstrap`]: idempotent first-start set-up (the configured admin).
//! - [`tls`]: HTTPS of the API (certificate files, plain HTTP refused
//!   clearly, bounded handshakes) and the client side of TLS to Postgres.
//! - [`ui`]: the web dashboard at `/ui`, its files compiled in, served under
//!   a strict Content-Security-Policy; a client of the same API.
//!
//! Only this crate touches Postgres; agents never do.

#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod auth;
pub mod bootstrap;
pub mod broker;
pub mod config;
pub mod db;
pub mod models;
pub mod reaper;
pub mod retention;
pub mod schedules;
pub mod tls;
pub mod ui;
