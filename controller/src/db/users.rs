//! Queries on `users`. Password hashes are produced by [`crate::auth::password`];
//! this module only stores and fetches them.

use super::{is_unique_violation, Cached, DbError};
use crate::models::User;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

const COLUMNS: &str = "user_id, username, password_hash, scopes, created_at";

fn from_row(row: &Row) -> Result<User, DbError> {
    Ok(User {
        user_id: row.try_get("user_id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        scopes: row.try_get("scopes")?,
        created_at: row.try_get("created_at")?,
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

/// The user with this login name, if any.
pub async fn find_by_username(client: &impl GenericClient, username: &str) -> Result<Option<User>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE username = $1");
    client
        .row_opt(&sql, &[&username])
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// The user with this id.
pub async fn get(client: &impl GenericClient, user_id: Uuid) -> Result<User, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE user_id = $1");
    client
        .row_opt(&sql, &[&user_id])
        .await?
        .as_ref()
        .map(from_row)
        .transpose()?
        .ok_or_else(|| DbError::NotFound {
            kind: "User",
            id: user_id.to_string(),
        })
}

/// Deletes a user. Refused (`InUse`) while jobs they submitted exist:
/// jobs are history. Their quota, allocations and keys go with them.
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
