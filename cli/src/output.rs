//! Writing to the terminal without panicking: `println!` panics when stdout
//! is a closed pipe (`orchestrator list | head -1`); these functions do not.

use crate::client::Answer;
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
    /// Prints an answer: with `--json` as the server sent it, else as
    /// `human` renders its typed form.
    pub fn show<T>(&self, answer: &Answer<T>, human: impl FnOnce(&T) -> String) -> Result<()> {
        self.print(&answer.raw, || human(&answer.typed))
    }

    /// Prints `raw` as pretty JSON (`--json`), or the text `human` makes.
    pub fn print(&self, raw: &Value, human: impl FnOnce() -> String) -> Result<()> {
        let text = if self.json {
            serde_json::to_string_pretty(raw).context("encoding JSON")?
        } else {
            human()
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
