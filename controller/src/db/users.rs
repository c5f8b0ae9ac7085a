//! Queries on `users`. Password hashes are produced by [`crate::auth::password`];
//! this module only stores and fetches them.
//!
//! Users are never removed by the API: jobs are history and name their
//! submitter, so a deleted user's row stays, marked deleted (and
//! disabled), and its name is free for a new account. Every change that
//! could leave no enabled admin takes one transaction-scoped advisory lock
//! and is refused (`LastAdmin`) when it would, so two admins disabling
//! each other at once cannot both succeed.

use super::locks::AdvisoryLock;
use super::{is_unique_violation, Cached, DbError};
use crate::models::User;
use deadpool_postgres::GenericClient;
use orchestrator_shared::scope::has_scope;
use orchestrator_shared::Scope;
use tokio_postgres::Row;
use uuid::Uuid;

const COLUMNS: &str =
    "user_id, username, password_hash, scopes, created_at, disabled, deleted_at, token_version";

fn from_row(row: &Row) -> Result<User, DbError> {
    Ok(User {
        user_id: row.try_get("user_id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        scopes: row.try_get("scopes")?,
        created_at: row.try_get("created_at")?,
        disabled: row.try_get("disabled")?,
        deleted_at: row.try_get("deleted_at")?,
        token_version: row.try_get("token_version")?,
    })
}

/// Creates a user; a taken username is `AlreadyExists`.
pub async fn create(
    client: &impl GenericClient,
    username: &str,
    password_hash: &str,
    scopes: &[String],
) -> Result<User, DbError> {
    let sql = format!(
        "INSERT INTO users (user_id, username, password_hash, scopes) VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
    );
    match client
        .row(&sql, &[&Uuid::new_v4(), &username, &password_hash, &scopes])
        .await
    {
        Ok(row) => from_row(&row),
        Err(e) if is_unique_violation(&e) => Err(DbError::AlreadyExists {
            kind: "User",
            id: username.to_owned(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The user with this login name, if any (deleted users have none: their
/// names are free).
pub async fn find_by_username(client: &impl GenericClient, username: &str) -> Result<Option<User>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE username = $1 AND deleted_at IS NULL");
    client
        .row_opt(&sql, &[&username])
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// The user with this id; a deleted one is `NotFound`.
pub async fn get(client: &impl GenericClient, user_id: Uuid) -> Result<User, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE user_id = $1 AND deleted_at IS NULL");
    one(client, &sql, user_id).await
}

/// The row `sql` selects for `user_id`, or `NotFound`.
async fn one(client: &impl GenericClient, sql: &str, user_id: Uuid) -> Result<User, DbError> {
    client
        .row_opt(sql, &[&user_id])
        .await?
        .as_ref()
        .map(from_row)
        .transpose()?
        .ok_or_else(|| DbError::NotFound {
            kind: "User",
            id: user_id.to_string(),
        })
}

/// Every user that is not deleted, disabled ones included, by name.
pub async fn list(client: &impl GenericClient) -> Result<Vec<User>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE deleted_at IS NULL ORDER BY username, user_id");
    client.rows(&sql, &[]).await?.iter().map(from_row).collect()
}

/// What a token of a user is judged against on every request: the user's
/// current scopes, whether it is refused, and its token version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The scopes the user holds now.
    pub scopes: Vec<String>,
    /// Disabled or deleted: every token of the user is refused.
    pub disabled: bool,
    /// Tokens must carry this version to be accepted.
    pub token_version: i64,
}

/// The standing of the user `user_id`, or `None` when no user has that id
/// (agent tokens name none). One primary-key lookup.
pub async fn standing(client: &impl GenericClient, user_id: Uuid) -> Result<Option<Standing>, DbError> {
    let row = client
        .row_opt(
            "SELECT scopes, disabled, token_version FROM users WHERE user_id = $1",
            &[&user_id],
        )
        .await?;
    row.map(|row| {
        Ok(Standing {
            scopes: row.try_get(0)?,
            disabled: row.try_get(1)?,
            token_version: row.try_get(2)?,
        })
    })
    .transpose()
}

/// What an admin changes about a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChange {
    /// The user's new scopes.
    pub scopes: Option<Vec<String>>,
    /// Disable (`true`) or enable (`false`) the user.
    pub disabled: Option<bool>,
    /// A new password's Argon2id PHC string.
    pub password_hash: Option<String>,
}

impl UserChange {
    /// Whether applying this change to `before` bumps the user's token
    /// version: disabling it or a new password, which take back every
    /// token issued before; and enabling it, so that its new tokens are
    /// newer than any controller's reading of it while disabled (a reading
    /// older than a token is read again, see `auth::standing`). Scopes need
    /// no bump: each request gets only what the user still holds.
    pub fn bumps_version(&self, before: &User) -> bool {
        let flips = self.disabled.is_some_and(|disabled| disabled != before.disabled);
        flips || self.password_hash.is_some()
    }
}

/// Whether `user` is an admin that can act: not deleted, not disabled,
/// holding `admin`.
pub fn is_enabled_admin(user: &User) -> bool {
    user.deleted_at.is_none() && !user.disabled && has_scope(&user.scopes, Scope::Admin)
}

/// Takes the lock of changes that can take an admin away, then the user's
/// row (not deleted; `NotFound` otherwise), until the transaction ends.
async fn lock_for_change(tx: &impl GenericClient, user_id: Uuid) -> Result<User, DbError> {
    tx.exec(
        "SELECT pg_advisory_xact_lock($1)",
        &[&AdvisoryLock::AdminChange.key()],
    )
    .await?;
    let sql =
        format!("SELECT {COLUMNS} FROM users WHERE user_id = $1 AND deleted_at IS NULL FOR NO KEY UPDATE");
    one(tx, &sql, user_id).await
}

/// `LastAdmin` when the change from `before` to `after` took the last
/// enabled admin away (the caller then rolls back).
async fn ensure_an_admin_remains(
    tx: &impl GenericClient,
    before: &User,
    after: &User,
) -> Result<(), DbError> {
    if !is_enabled_admin(before) || is_enabled_admin(after) {
        return Ok(());
    }
    let row = tx
        .row(
            "SELECT count(*) FROM users WHERE deleted_at IS NULL AND NOT disabled AND 'admin' = ANY (scopes)",
            &[],
        )
        .await?;
    let admins: i64 = row.try_get(0)?;
    if admins == 0 {
        return Err(DbError::LastAdmin);
    }
    Ok(())
}

/// Applies `change` to the user `user_id` (not deleted) in transaction
/// `tx`, bumping its token version when [`UserChange::bumps_version`].
/// Refused with `LastAdmin` when it would leave no enabled admin; the
/// caller must then roll back.
pub async fn update(tx: &impl GenericClient, user_id: Uuid, change: &UserChange) -> Result<User, DbError> {
    let before = lock_for_change(tx, user_id).await?;
    let bump = i64::from(change.bumps_version(&before));
    let sql = format!(
        "UPDATE users SET scopes = coalesce($2, scopes), disabled = coalesce($3, disabled),
           password_hash = coalesce($4, password_hash), token_version = token_version + $5
         WHERE user_id = $1 RETURNING {COLUMNS}"
    );
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
        &user_id,
        &change.scopes,
        &change.disabled,
        &change.password_hash,
        &bump,
    ];
    let after = from_row(&tx.row(&sql, &params).await?)?;
    ensure_an_admin_remains(tx, &before, &after).await?;
    Ok(after)
}

/// Deletes the user `user_id` (not deleted already) in transaction `tx`:
/// the row stays for its jobs' history, marked deleted and disabled, with
/// its token version bumped; its name is free again; its active
/// allocations are released and its quota row goes. Its jobs are left as
/// they are. Refused with `LastAdmin` like [`update`].
pub async fn mark_deleted(tx: &impl GenericClient, user_id: Uuid) -> Result<User, DbError> {
    let before = lock_for_change(tx, user_id).await?;
    let sql = format!(
        "UPDATE users SET deleted_at = now(), disabled = true, token_version = token_version + 1
         WHERE user_id = $1 RETURNING {COLUMNS}"
    );
    let after = from_row(&tx.row(&sql, &[&user_id]).await?)?;
    ensure_an_admin_remains(tx, &before, &after).await?;
    tx.exec(
        "UPDATE allocations SET status = 'released', released_at = now() WHERE user_id = $1 AND status = 'active'",
        &[&user_id],
    )
    .await?;
    tx.exec("DELETE FROM quotas WHERE user_id = $1", &[&user_id])
        .await?;
    Ok(after)
}

/// Removes a user's row for good (tests and maintenance; the API marks
/// users deleted instead, see [`mark_deleted`]). Refused (`InUse`) while
/// jobs they submitted exist: jobs are history. Their quota, allocations
/// and keys go with them.
pub async fn delete(client: &impl GenericClient, user_id: Uuid) -> Result<(), DbError> {
    match client
        .exec("DELETE FROM users WHERE user_id = $1", &[&user_id])
        .await
    {
        Ok(0) => Err(DbError::NotFound {
            kind: "User",
            id: user_id.to_string(),
        }),
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) => {
            Err(DbError::InUse {
                kind: "User",
                id: user_id.to_string(),
                why: "still has jobs",
            })
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(scopes: &[&str], disabled: bool) -> User {
        User {
            user_id: Uuid::nil(),
            username: "u".into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            password_hash: String::new(),
            created_at: chrono::Utc::now(),
            disabled,
            deleted_at: None,
            token_version: 3,
        }
    }

    #[test]
    fn disabling_enabling_and_a_new_password_bump_the_version_and_scopes_do_not() {
        let enabled = user(&["jobs:write"], false);
        let disabled = user(&["jobs:write"], true);
        let change = |scopes: Option<&[&str]>, disabled: Option<bool>, password: bool| UserChange {
            scopes: scopes.map(|s| s.iter().map(|s| (*s).to_owned()).collect()),
            disabled,
            password_hash: password.then(|| "$argon2id$x".to_owned()),
        };
        assert!(change(None, Some(true), false).bumps_version(&enabled));
        assert!(
            !change(None, Some(true), false).bumps_version(&disabled),
            "already off"
        );
        assert!(
            change(None, Some(false), false).bumps_version(&disabled),
            "enabling"
        );
        assert!(
            !change(None, Some(false), false).bumps_version(&enabled),
            "already on"
        );
        assert!(change(None, None, true).bumps_version(&enabled));
        assert!(
            !change(Some(&[]), None, false).bumps_version(&enabled),
            "scope cuts apply per request"
        );
        assert!(!UserChange::default().bumps_version(&enabled));
    }

    #[test]
    fn an_enabled_admin_is_live_enabled_and_holds_admin() {
        assert!(is_enabled_admin(&user(&["admin"], false)));
        assert!(!is_enabled_admin(&user(&["admin"], true)));
        assert!(!is_enabled_admin(&user(
            &["jobs:write", "supervisor:write"],
            false
        )));
        let mut deleted = user(&["admin"], true);
        deleted.deleted_at = Some(chrono::Utc::now());
        assert!(!is_enabled_admin(&deleted));
    }
}
