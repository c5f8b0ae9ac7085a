//! `orchestrator`: the command-line client; see the library for the layout.

use clap::Parser;
use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    orchestrator_cli::run(orchestrator_cli::args::Cli::parse()).await
}
