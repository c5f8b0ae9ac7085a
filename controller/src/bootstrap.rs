//! First-start set-up that must be idempotent: the configured admin exists.

use crate::auth::password;
use crate::config::Secret;
use crate::db::{users, Database, DbError};
use orchestrator_shared::api::auth::{is_valid_username, login_name, password_problems, USERNAME_RULE};
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
    /// The configured name breaks the username rule even after NFKC
    /// normalisation, and no user of that exact name exists: creating it
    /// would make an account no user created through the API could have.
    #[error("the admin username {0:?} {rule}", rule = USERNAME_RULE)]
    Username(String),
}

/// Creates `username` with the `admin` scope unless a user of that name
/// exists (its password is then left alone). Returns whether it created one.
///
/// The name goes through the API's username rules: it is looked up as a
/// login would look it up (so an admin stored before the rules keeps its
/// exact name), and created under its NFKC form, which must meet the rule.
/// A password that breaks the API's strength rule is logged as a warning
/// but kept: the operator chose it, and refusing it would stop the
/// controller from starting.
pub async fn ensure_admin(db: &Database, username: &str, password: &Secret) -> Result<bool, BootstrapError> {
    let name = login_name(username);
    let client = db.client().await?;
    if users::find_by_username(&client, &name).await?.is_some() {
        return Ok(false);
    }
    if !is_valid_username(&name) {
        return Err(BootstrapError::Username(username.to_owned()));
    }
    for problem in password_problems(&name, password.expose()) {
        tracing::warn!(username = %name, "the configured admin password {problem}; choose a stronger one");
    }
    let hash = password::hash(password.expose().to_owned()).await?;
    match users::create(&client, &name, &hash, &[Scope::Admin.as_str().to_owned()]).await {
        Ok(_) => Ok(true),
        // Another replica created it between our check and insert.
        Err(DbError::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
