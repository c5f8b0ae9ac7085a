//! Whether a verified token still stands: its user exists, is neither
//! disabled nor deleted, still has the token's version (disabling, deleting
//! or a new password bumps it), and the request gets only the scopes that
//! both the token and the user's current scopes grant.
//!
//! Postgres is the truth; each controller keeps, per user, a reading of
//! the user's row for at most the configured recheck interval, so most
//! requests cost no query and a change made on any replica reaches every
//! replica's checks within that interval (the bound `docs/api.md` states).
//! The replica that made the change forgets its reading at once. Every
//! change that can make a refused user acceptable again (enabling, a new
//! password) bumps the user's token version, and a reading older than the
//! token it judges is read again, so a new token is accepted at once on
//! every replica.

use crate::db::users::{self, Standing};
use crate::db::{Database, DbError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Most users whose readings are kept at once. Only holders of validly
/// signed tokens add entries, so this is the number of distinct users
/// active within one interval; beyond it the least used entries are
/// evicted, which costs queries, not correctness.
const MAX_ENTRIES: u64 = 50_000;

/// Why a validly signed token is refused. The API answers every one with
/// the same 401; the variants exist for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The token's `sub` names no user.
    #[error("the token's user does not exist")]
    NoSuchUser,
    /// The user is disabled or deleted.
    #[error("the token's user is disabled or deleted")]
    Disabled,
    /// The user's token version moved on since the token was issued.
    #[error("the token was issued before its user's tokens were revoked")]
    Revoked,
}

/// Judges a token's `scopes` and `version` against its user's current
/// `standing` (`None`: no such user); answers the scopes the request may
/// use. A token naming no user never stands: agents prove themselves with
/// credentials of their own (`auth::agent_credential`), not with JWTs.
pub fn judge(scopes: &[String], version: i64, standing: Option<&Standing>) -> Result<Vec<String>, Refusal> {
    let Some(standing) = standing else {
        return Err(Refusal::NoSuchUser);
    };
    if standing.disabled {
        return Err(Refusal::Disabled);
    }
    if standing.token_version != version {
        return Err(Refusal::Revoked);
    }
    Ok(orchestrator_shared::scope::effective(scopes, &standing.scopes))
}

/// A reading of one user's row, and when it was taken.
#[derive(Clone)]
struct Reading {
    /// The user's standing then (`None`: no such user).
    standing: Option<Arc<Standing>>,
    /// When the query that read it was sent: the reading serves until
    /// this plus the recheck interval, so it is never older than that.
    read_at: Instant,
}

/// Per-user readings of the users table, each used for at most the
/// recheck interval, in a bounded cache (moka: concurrent, size-bounded,
/// evicts by recency and frequency).
pub struct StandingCache {
    /// The readings, by user id.
    readings: moka::sync::Cache<Uuid, Reading>,
    /// How long a reading may be used: the revocation bound.
    recheck: Duration,
}

impl StandingCache {
    /// An empty cache whose readings serve for `recheck`.
    pub fn new(recheck: Duration) -> Self {
        StandingCache {
            readings: moka::sync::Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(recheck)
                .build(),
            recheck,
        }
    }

    /// The standing of `user_id` for a token of `version`: a reading
    /// younger than the recheck interval, else a fresh one from Postgres
    /// (one primary-key lookup). A reading of an older version than the
    /// token's is stale (the token was issued after it: a new password or
    /// re-enabling on another replica) and is read again, so a new token
    /// is never refused on an old reading.
    pub async fn standing(
        &self,
        db: &Database,
        user_id: Uuid,
        version: i64,
    ) -> Result<Option<Arc<Standing>>, DbError> {
        if let Some(reading) = self.readings.get(&user_id) {
            let older = reading
                .standing
                .as_ref()
                .is_some_and(|standing| standing.token_version < version);
            if reading.read_at.elapsed() < self.recheck && !older {
                return Ok(reading.standing);
            }
        }
        let read_at = Instant::now();
        let client = db.client().await?;
        let standing = users::standing(&client, user_id).await?.map(Arc::new);
        drop(client);
        self.readings.insert(
            user_id,
            Reading {
                standing: standing.clone(),
                read_at,
            },
        );
        Ok(standing)
    }

    /// Drops the reading of `user_id`, after this controller changed the
    /// user, so its own next request reads the change.
    pub fn forget(&self, user_id: Uuid) {
        self.readings.invalidate(&user_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_shared::Scope;

    fn standing(scopes: &[&str], disabled: bool, token_version: i64) -> Standing {
        Standing {
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            disabled,
            token_version,
        }
    }

    fn scopes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_token_gets_only_what_its_user_still_holds() {
        let user = standing(&["jobs:read"], false, 0);
        assert_eq!(
            judge(&scopes(&["jobs:write"]), 0, Some(&user)),
            Ok(scopes(&["jobs:read"]))
        );
        let admin = standing(&["admin"], false, 2);
        let all: Vec<String> = Scope::ALL.iter().map(|s| s.as_str().to_owned()).collect();
        assert_eq!(judge(&scopes(&["admin"]), 2, Some(&admin)), Ok(all));
    }

    #[test]
    fn disabled_users_and_older_versions_are_refused() {
        let off = standing(&["admin"], true, 0);
        assert_eq!(judge(&scopes(&["admin"]), 0, Some(&off)), Err(Refusal::Disabled));
        let bumped = standing(&["admin"], false, 1);
        assert_eq!(
            judge(&scopes(&["admin"]), 0, Some(&bumped)),
            Err(Refusal::Revoked)
        );
        assert_eq!(
            judge(&scopes(&["admin"]), 2, Some(&bumped)),
            Err(Refusal::Revoked)
        );
    }

    #[test]
    fn a_token_of_no_user_never_stands_not_even_an_agent_jwt() {
        for refused in [
            &["agent"][..],
            &["admin"],
            &["agent", "admin"],
            &["jobs:write"],
            &[],
        ] {
            assert_eq!(
                judge(&scopes(refused), 0, None),
                Err(Refusal::NoSuchUser),
                "{refused:?}"
            );
        }
    }
}
