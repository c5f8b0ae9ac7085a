//! The users jobs run as. The agent (root, with only the capabilities it
//! needs) runs each job as an unprivileged user, never as itself: a job
//! then cannot read the agent's memory, environment or credential files.
//! When the host has one user per job slot (`<job user>-0`,
//! `<job user>-1`, …, as the agent's image and package create), each
//! running job has a uid of its own, so jobs cannot read each other's
//! working directories or signal each other's processes either.

/// The traditional overflow uid and gid, used only if no slot account
/// could be found (never root).
const NOBODY: u32 = 65534;

/// One account a job may run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name (for `USER`, `LOGNAME`).
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid (the job's only group).
    pub gid: u32,
}

/// Why the job user cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// No such user on this host.
    #[error("the job user {0:?} does not exist on this host (create it, as the agent's package and image do, or choose another with --job-user)")]
    Unknown(String),
    /// The user is root (or shares the agent's uid): no protection.
    #[error("the job user {0:?} has uid {1}, which gives jobs the agent's own privileges; choose an unprivileged user")]
    Privileged(String, u32),
    /// The user database could not be read.
    #[error("looking up the job user {0:?}: {1}")]
    Lookup(String, nix::Error),
}

/// The accounts jobs run as, one per job slot.
#[derive(Debug)]
pub struct JobUsers {
    name: String,
    slots: Vec<Account>,
    per_slot: bool,
}

impl JobUsers {
    /// Looks up `name` and, for each of `slots` slots, `<name>-<slot>`. If
    /// every per-slot user exists, each slot has its own; otherwise every
    /// job runs as `name`.
    pub fn resolve(name: &str, slots: usize) -> Result<JobUsers, UserError> {
        let base = lookup(name)?.ok_or_else(|| UserError::Unknown(name.to_owned()))?;
        let agent_uid = nix::unistd::geteuid().as_raw();
        let per_slot: Option<Vec<Account>> = (0..slots)
            .map(|i| lookup(&format!("{name}-{i}")).ok().flatten())
            .collect();
        let per_slot_found = per_slot.is_some();
        let accounts = per_slot.unwrap_or_else(|| vec![base; slots.max(1)]);
        if let Some(bad) = accounts.iter().find(|a| a.uid == 0 || a.uid == agent_uid) {
            return Err(UserError::Privileged(bad.name.clone(), bad.uid));
        }
        Ok(JobUsers {
            name: name.to_owned(),
            slots: accounts,
            per_slot: per_slot_found,
        })
    }

    /// Whether each job slot has a user of its own.
    pub fn per_slot(&self) -> bool {
        self.per_slot
    }

    /// The job user as reported: `<name>-0..<name>-N` when per slot.
    pub fn describe(&self) -> String {
        if self.per_slot {
            format!("{0}-0..{0}-{1}", self.name, self.slots.len().saturating_sub(1))
        } else {
            self.name.clone()
        }
    }

    /// The account of job slot `slot` (the first one's for a run beyond
    /// the capacity, which shares it rather than failing).
    pub fn account(&self, slot: Option<usize>) -> Account {
        slot.and_then(|i| self.slots.get(i))
            .or_else(|| self.slots.first())
            .cloned()
            .unwrap_or_else(|| Account {
                name: self.name.clone(),
                uid: NOBODY,
                gid: NOBODY,
            })
    }
}

fn lookup(name: &str) -> Result<Option<Account>, UserError> {
    let user = nix::unistd::User::from_name(name).map_err(|e| UserError::Lookup(name.to_owned(), e))?;
    Ok(user.map(|u| Account {
        name: u.name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_job_user_is_refused_by_name() {
        let err = JobUsers::resolve("no-such-user-here", 2).unwrap_err();
        assert!(err.to_string().contains("no-such-user-here"), "{err}");
    }

    #[test]
    fn root_is_not_a_job_user() {
        let err = JobUsers::resolve("root", 1).unwrap_err();
        assert!(matches!(err, UserError::Privileged(_, 0)), "{err}");
    }

    #[test]
    fn without_per_slot_users_every_slot_shares_the_job_user() {
        // `nobody` exists on every Debian host; `nobody-0` does not.
        let users = JobUsers::resolve("nobody", 2).unwrap();
        assert!(!users.per_slot());
        assert_eq!(users.describe(), "nobody");
        for slot in [Some(0), Some(1), Some(7), None] {
            assert_eq!(users.account(slot).uid, 65534);
        }
    }
}
