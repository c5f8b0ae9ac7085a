//! The `exec-job` helper: the small step between the worker agent and a
//! job's program. The agent starts this crate's binary, `worker-agent-exec`
//! (or its own binary as `worker-agent exec-job`, which runs the same code),
//! for every job; it joins the job's cgroups (so the program and everything
//! it starts are inside before it runs a single instruction), drops every
//! supplementary group, switches to the job's gid and uid, forbids
//! regaining privileges (`no_new_privs`, so a setuid binary cannot undo the
//! switch), checks the switch took, and `exec`s the program in its place:
//! same pid, same pipes. Safe code only (nix and std wrap the system calls).
//!
//! It is a crate of its own, apart from the agent's, because it starts once
//! per job: with three small dependencies it builds quickly a second time
//! statically linked (`deploy/build-exec-helper.sh`), and a static binary
//! starts without the dynamic loader.
//!
//! A failure before the `exec` exits with [`SETUP_FAILED`] and one line on
//! stderr that starts with [`FAILURE_PREFIX`], which the runner turns into
//! the job's error.

#![forbid(unsafe_code)]

pub mod slot;

use clap::Parser;
use nix::unistd::{Gid, Uid};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

/// The subcommand's name (the first argument).
pub const SUBCOMMAND: &str = "exec-job";
/// Every subcommand this crate serves: a binary whose first argument is one
/// of these hands its arguments to [`main`].
pub const SUBCOMMANDS: [&str; 2] = [SUBCOMMAND, slot::SUBCOMMAND];
/// Exit code of a helper that could not set the job up (the program never
/// ran).
pub const SETUP_FAILED: i32 = 125;
/// Start of the `exec-job` helper's one line of error on stderr (the
/// launcher has its own, [`slot::FAILURE_PREFIX`]).
pub const FAILURE_PREFIX: &str = "worker-agent exec-job: ";

/// Where a job's processes live and as whom they run: the helper's and the
/// launcher's shared arguments.
#[derive(Debug, clap::Args)]
pub struct Placement {
    /// A `cgroup.procs` file to join (repeatable: one per v1 hierarchy).
    #[arg(long = "join")]
    pub join: Vec<PathBuf>,
    /// Uid to run as.
    #[arg(long, requires = "gid")]
    pub uid: Option<u32>,
    /// Gid to run as (the only group).
    #[arg(long, requires = "uid")]
    pub gid: Option<u32>,
}

/// The helper's arguments, as the runner passes them.
#[derive(Debug, Parser)]
#[command(
    name = "worker-agent exec-job",
    about = "Runs one job's program inside its cgroups as its user (used by the agent)."
)]
pub struct ExecArgs {
    /// Its cgroups and user.
    #[command(flatten)]
    pub place: Placement,
    /// The program and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<OsString>,
}

/// Why setting the job up failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// A cgroup could not be joined.
    #[error("joining the cgroup {0}: {1}")]
    Join(PathBuf, std::io::Error),
    /// The user could not be switched.
    #[error("switching to uid {0} gid {1}: {2}")]
    Switch(u32, u32, nix::Error),
    /// The switch did not take (still privileged).
    #[error("still uid {0} after switching to {1}")]
    NotSwitched(u32, u32),
    /// `no_new_privs` could not be set.
    #[error("setting no_new_privs: {0}")]
    NoNewPrivs(nix::Error),
    /// The program could not be executed.
    #[error("could not start {0:?}: {1}")]
    Exec(OsString, std::io::Error),
    /// The slot's launcher lost its socket to the agent.
    #[error("serving the job slot: {0}")]
    Serve(std::io::Error),
}

/// Entry point of the subcommands: `args` are the process's arguments
/// (`worker-agent exec-job …` or `worker-agent serve-slot …`). `exec-job`
/// returns only on failure (the program runs in this process's place
/// otherwise), with the exit code; `serve-slot` see [`slot::main`].
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args: Vec<OsString> = args.into_iter().skip(1).collect();
    if args.first().is_some_and(|a| a == slot::SUBCOMMAND) {
        return slot::main(args);
    }
    let parsed = match ExecArgs::try_parse_from(args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("{FAILURE_PREFIX}{e}");
            return SETUP_FAILED;
        }
    };
    let Err(e) = run(&parsed);
    eprintln!("{FAILURE_PREFIX}{e}");
    SETUP_FAILED
}

/// Joins, switches, and execs; returns only on failure.
fn run(args: &ExecArgs) -> Result<std::convert::Infallible, ExecError> {
    join_cgroups(&args.place.join)?;
    if let (Some(uid), Some(gid)) = (args.place.uid, args.place.gid) {
        switch_user(uid, gid)?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(ExecError::NoNewPrivs)?;
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| ExecError::Exec(OsString::new(), std::io::ErrorKind::InvalidInput.into()))?;
    let error = std::process::Command::new(program).args(rest).exec();
    Err(ExecError::Exec(program.clone(), error))
}

/// Moves this process into each cgroup whose `cgroup.procs` file is given.
fn join_cgroups(procs_files: &[PathBuf]) -> Result<(), ExecError> {
    let pid = std::process::id().to_string();
    for procs in procs_files {
        std::fs::write(procs, &pid).map_err(|e| ExecError::Join(procs.clone(), e))?;
    }
    Ok(())
}

/// Drops supplementary groups, then the gid, then the uid (in that order:
/// after the uid, the others cannot be changed), and checks the result.
fn switch_user(uid: u32, gid: u32) -> Result<(), ExecError> {
    let fail = |e| ExecError::Switch(uid, gid, e);
    nix::unistd::setgroups(&[Gid::from_raw(gid)]).map_err(fail)?;
    nix::unistd::setgid(Gid::from_raw(gid)).map_err(fail)?;
    nix::unistd::setuid(Uid::from_raw(uid)).map_err(fail)?;
    let now = nix::unistd::geteuid().as_raw();
    if now != uid || nix::unistd::getuid().as_raw() != uid {
        return Err(ExecError::NotSwitched(now, uid));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_comes_after_the_double_dash() {
        let args = ExecArgs::try_parse_from([
            "exec-job",
            "--join",
            "/a/cgroup.procs",
            "--uid",
            "7",
            "--gid",
            "8",
            "--",
            "sh",
            "-c",
            "true",
        ])
        .unwrap();
        assert_eq!(args.place.join, [PathBuf::from("/a/cgroup.procs")]);
        assert_eq!((args.place.uid, args.place.gid), (Some(7), Some(8)));
        assert_eq!(args.command, ["sh", "-c", "true"]);
    }

    #[test]
    fn a_uid_without_a_gid_is_refused() {
        assert!(ExecArgs::try_parse_from(["exec-job", "--uid", "7", "--", "true"]).is_err());
    }
}
