//! Command-line client of the orchestrator's HTTP API (binary `orchestrator`).
//!
//! # Layout
//! - [`args`]: the command line (clap): global options, subcommands, and the
//!   help text that documents the environment and the exit statuses.
//! - [`commands`]: one function per subcommand, each calling the API routes
//!   it is named after, and [`commands::dispatch`].
//! - [`client`]: the HTTP client: route URLs, bearer token, answers read as
//!   the contract's types (`orchestrator_shared::api`), error answers.
//! - [`config`]: where the config file is, reading and writing it (0600), and
//!   how the URL and token are chosen.
//! - [`error`]: [`error::ApiError`], [`error::UsageError`] and the exit status.
//! - [`input`]: labels and worker ids as typed by the user (ids checked with
//!   the contract's rule).
//! - [`render`] and [`views`]: tables and key-value lines for people.
//! - [`wait`]: polling a job until it ends, with a spinner.
//! - [`output`]: writing to stdout and stderr without panicking.
//!
//! Only [`commands`], [`client`], [`config`]'s `load`/`save`, [`output`] and
//! [`wait`] do I/O; the rest is pure and unit-tested.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod args;
pub mod client;
pub mod commands;
pub mod config;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod input;
pub mod output;
pub mod render;
pub mod views;
pub mod wait;

use std::process::ExitCode;

/// Runs the parsed command line; on error, prints it (and a hint, except
/// for a failed `login`) to stderr and returns its exit status (see
/// [`error::exit_code`]).
pub async fn run(cli: args::Cli) -> ExitCode {
    let logging_in = matches!(cli.command, args::Command::Login(_));
    match commands::dispatch(cli).await {
        Ok(code) => code,
        Err(err) => {
            output::note(&format!("error: {err:#}"));
            if let Some(hint) = error::hint(&err).filter(|_| !logging_in) {
                output::note(hint);
            }
            ExitCode::from(error::exit_code(&err))
        }
    }
}
