//! First-start set-up that must be idempotent: the configured admin exists.

use crate::auth::password;
use crate::config::Secret;
use crate::db::{users, Database, DbError};
use orchestrator_shared::Scope;

/// Why the admin could not be ensured.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The database refused.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Hashing failed.
    #[error(transparent)]
    Password(#[from] password::PasswordError),
}

/// Creates `username` with the `admin` scope unless a user of that name
/// exists (its password is then left alone). Returns whether it created one.
pub async fn ensure_admin(db: &Database, username: &str, password: &Secret) -> Result<bool, BootstrapError> {
    let client = db.client().await?;
    if users::find_by_username(&client, username).await?.is_some() {
        return Ok(false);
    }
    let hash = password::hash(password.expose().to_owned()).await?;
    match users::create(&client, username, &hash, &[Scope::Admin.as_str().to_owned()]).await {
        Ok(_) => Ok(true),
        // Another replica created it between our check and insert.
        Err(DbError::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
