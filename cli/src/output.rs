//! Writing to the terminal without panicking: `println!` panics when stdout
//! is a closed pipe (`orchestrator list | head -1`); these functions do not.

use anyhow::{Context, Result};
use serde_json::Value;
use std::io::{self, Write};

/// Prints either the raw JSON (`--json`) or a rendering for people.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    /// `--json`: print responses as JSON for scripts.
    pub json: bool,
}

impl Printer {
    /// Prints `value` as pretty JSON, or as `human` renders it.
    pub fn show(&self, value: &Value, human: impl FnOnce(&Value) -> String) -> Result<()> {
        let text = if self.json {
            serde_json::to_string_pretty(value).context("encoding JSON")?
        } else {
            human(value)
        };
        stdout_line(&text)
    }
}

/// Writes `text` and a newline to stdout; a closed pipe is not an error.
pub fn stdout_line(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(err) if err.kind() != io::ErrorKind::BrokenPipe => Err(err).context("writing to standard output"),
        _ => Ok(()),
    }
}

/// Writes a message for people to stderr; failure to do so is ignored, as
/// there is nowhere left to report it.
pub fn note(text: &str) {
    let _ = writeln!(io::stderr().lock(), "{text}");
}
