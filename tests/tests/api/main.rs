//! Black-box tests of the controller's HTTP API (`docs/api.md`), each
//! against a real controller on a port of its own with its own database.
//! Requests go through the named methods of `integration_tests::TestApp`
//! (`app.submit_job(..)`, `app.pause_worker(..)`), and bodies are checked
//! against the shared types of `orchestrator_shared::api`.
//!
//! # Layout
//! - `helpers`: shape, error and token helpers, and short fixtures.
//! - `agent_identity`: agent credentials, each bound to one worker id:
//!   issued, listed, revoked; registering or claiming as another worker.
//! - `claims`: batches of claims: the same answers as one claim each,
//!   in order, in one request and one transaction.
//! - `auth`: login, users, scopes, and refused tokens on every route.
//! - `users`: listing, changing and deleting users; revocation of their
//!   tokens within the bound, on another replica too; the last admin.
//! - `supervisor`: workers and their transitions, fleet metrics.
//! - `pools`: jobs' pools and selectors and workers' pools and labels:
//!   checked, shown, matched by the classes agents consume and by claims.
//! - `resources`: quotas, allocation, release.
//! - `retention`: an old finished job is gone (404) and an expired
//!   idempotency key forgotten, by the running controller's own passes.
//! - `schedules`: schedules made, changed, refused and owned; firing once
//!   per tick with two replicas, overlap policies, catch-up across a restart.
//! - `jobs`: submission, batches, idempotency, reading, cancelling, events,
//!   output, listing.
//! - `dependencies`: `depends_on` and batch keys: order, waiting, release
//!   exactly once, cancellation down the graph, `run_on_failure`, cycles
//!   and unknown ids refused, the graph route, a 10,000-job fan-out.
//! - `limits`: per-job resource limits and agents' offers and isolation
//!   reports: stored, shown, bounded, handed out with a claim.
//! - `errors`: the 413 and 422 shapes of bad bodies.
//! - `concurrency`: idempotency and allocation under races.
//! - `output`: pieces of output stored once, in order, by the holder only;
//!   byte ranges; gone with their job.
//! - `ops`: the unauthenticated operational routes.
//! - `contract`: every served route is documented.
//! - `session`: browser sessions: the HttpOnly cookie, its flags, and the
//!   CSRF rule on every write it authenticates.
//! - `dashboard`: `/ui` under its Content-Security-Policy, the overview's
//!   timeline and stream, job search and bulk cancel, allocations listed.
//! - `tls`: HTTPS: trusted and untrusted clients, plain HTTP on the HTTPS
//!   port, bounded handshakes, no start without a transport chosen.

mod agent_identity;
mod auth;
mod claims;
mod concurrency;
mod contract;
mod dashboard;
mod dependencies;
mod errors;
mod hardening_input;
mod hardening_limits;
mod hardening_resources;
mod helpers;
mod jobs;
mod limits;
mod ops;
mod output;
mod pools;
mod resources;
mod retention;
mod schedules;
mod session;
mod supervisor;
mod tls;
mod users;
