//! Starting a job's program confined, in the agent's own fork: between
//! the fork and the `exec`, the child joins the job's cgroups (so the
//! program and everything it starts are inside before it runs a single
//! instruction), drops every supplementary group, switches to the job's
//! gid and uid, checks the switch took, and forbids regaining privileges
//! (`no_new_privs`, so a setuid binary cannot undo the switch).
//!
//! Until this module, a small helper binary did these steps and then
//! `exec`ed the program: one more `exec` and dynamic load per job, a fifth
//! of the whole box's CPU in a no-op-job benchmark. Doing them in the fork
//! needs `pre_exec`, the one `unsafe` block of the agent (see [`confine`]).
//! The cgroup files are opened in the agent, before the fork, so the child
//! only writes to them.

use super::user::Account;
use nix::unistd::{Gid, Uid};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What the child does between the fork and the `exec`.
#[derive(Debug)]
pub struct Confinement {
    /// One `cgroup.procs` file per hierarchy, open for writing.
    joins: Vec<File>,
    /// The uid and gid to switch to (`None`: the agent's).
    account: Option<(u32, u32)>,
}

/// Why a confinement could not be prepared.
#[derive(Debug, thiserror::Error)]
#[error("opening the cgroup file {0}: {1}")]
pub struct JoinError(PathBuf, std::io::Error);

impl Confinement {
    /// Opens `procs_files` (the job cgroup's `cgroup.procs`, one per
    /// hierarchy) for the child to join, and notes `account` to switch to.
    pub fn prepare(procs_files: &[PathBuf], account: Option<&Account>) -> Result<Confinement, JoinError> {
        let joins = procs_files
            .iter()
            .map(|path| open_for_writing(path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Confinement {
            joins,
            account: account.map(|a| (a.uid, a.gid)),
        })
    }

    /// Whether there is anything to do (else the program is started as is).
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.account.is_none()
    }

    /// The steps, in the forked child. Only system calls that allocate
    /// nothing and take no lock (`write`, `setgroups`, `setgid`, `setuid`,
    /// `getuid`, `prctl`); errors are bare OS errors, which allocate
    /// nothing either.
    fn enter(&self) -> std::io::Result<()> {
        for mut file in self.joins.iter() {
            // Writing 0 moves the writing process itself (both versions).
            file.write_all(b"0")?;
        }
        if let Some((uid, gid)) = self.account {
            // The groups first, then the gid, then the uid: after the uid
            // the others cannot be changed.
            nix::unistd::setgroups(&[Gid::from_raw(gid)])?;
            nix::unistd::setgid(Gid::from_raw(gid))?;
            nix::unistd::setuid(Uid::from_raw(uid))?;
            if nix::unistd::getuid().as_raw() != uid || nix::unistd::geteuid().as_raw() != uid {
                return Err(std::io::Error::from_raw_os_error(nix::libc::EPERM));
            }
        }
        nix::sys::prctl::set_no_new_privs()?;
        Ok(())
    }
}

fn open_for_writing(path: &Path) -> Result<File, JoinError> {
    // std opens with O_CLOEXEC: the program never inherits these.
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| JoinError(path.to_owned(), e))
}

/// Makes `command` run `confinement`'s steps in its child before the
/// `exec`. A failed step fails the spawn with that step's OS error (the
/// program never runs).
#[allow(unsafe_code)]
pub fn confine(command: &mut tokio::process::Command, confinement: Confinement) {
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are sound. `enter` makes only raw
    // system calls on values prepared before the fork (open files, plain
    // integers); it allocates nothing, takes no lock and touches no state
    // shared with the parent's other threads.
    unsafe {
        command.pre_exec(move || confinement.enter());
    }
}
