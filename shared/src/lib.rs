//! Everything that crosses a process boundary between the controller and the
//! worker agents: statuses, the state machines that govern them, scopes and
//! wire messages. Nothing here does I/O, so both daemons (and tests) can rely on
//! it without pulling in a database or a broker.
//!
//! # Layout
//! - [`api`]: the HTTP contract's request and response bodies (OpenAPI
//!   schemas behind the `openapi` feature).
//! - [`status`]: job, worker and shard statuses, spelled as on the wire.
//! - [`state_machine`]: the one table of allowed transitions per machine.
//! - [`scope`]: API scopes and the rule that decides whether one grants another.
//! - [`validate`]: shared input rules (worker ids).
//! - [`secret`]: a string that never prints.
//! - [`messages`]: what travels through the broker.
//! - [`pools`]: worker pools, label selectors, and the job class (broker
//!   queue) each pair of them routes to.
//! - [`backoff`]: the capped exponential retry rhythm of both daemons.
//! - [`replicas`]: lists of controller URLs, and the one rule of which
//!   failures move the agent and the CLI to the next replica.
//! - `broker` (feature): declaring the RabbitMQ topology both daemons use.
//! - `runtime` (feature): logging set-up and the shutdown signal of both daemons.
//! - `batches` (feature `runtime`): requests gathered into batches by taking
//!   turns (the agent's claims and reports, the controller's submissions).
//! - `tls` (feature): CA files, and TLS failures in words.

#![forbid(unsafe_code)]

pub mod api;
pub mod backoff;
#[cfg(feature = "runtime")]
pub mod batches;
#[cfg(feature = "broker")]
pub mod broker;
pub mod messages;
pub mod pools;
pub mod replicas;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod scope;
pub mod secret;
pub mod state_machine;
pub mod status;
#[cfg(feature = "tls")]
pub mod tls;
pub mod validate;

pub use scope::{Scope, ScopeParseError};
pub use secret::Secret;
pub use state_machine::{StateMachine, StateTransitionError};
pub use status::{JobStatus, ShardStatus, StatusParseError, WorkerStatus};
