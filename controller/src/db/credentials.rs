//! Queries on `agent_credentials`: issuing (which revokes the worker's
//! earlier credential in the same statement), looking one up for a
//! request, listing and revoking. Secrets are never stored, only their
//! SHA-256 (see `auth::agent_credential`).

use super::{is_unique_violation, Cached, DbError};
use deadpool_postgres::GenericClient;
use orchestrator_shared::api::AgentCredential;
use tokio_postgres::Row;
use uuid::Uuid;

const COLUMNS: &str = "credential_id, worker_id, created_at, revoked_at";

/// What a request's check needs of a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRow {
    /// The worker it names.
    pub worker_id: String,
    /// SHA-256 of its secret.
    pub secret_sha256: [u8; 32],
    /// Whether it was revoked.
    pub revoked: bool,
}

fn from_row(row: &Row) -> Result<AgentCredential, DbError> {
    Ok(AgentCredential {
        credential_id: row.try_get("credential_id")?,
        worker_id: row.try_get("worker_id")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn not_found(credential_id: Uuid) -> DbError {
    DbError::NotFound {
        kind: "Agent credential",
        id: credential_id.to_string(),
    }
}

/// Stores a new credential for `worker_id` and revokes the worker's live
/// one, if any, in one statement (one live credential per worker); answers
/// the new credential and the ids of those it replaced.
pub async fn issue(
    client: &impl GenericClient,
    credential_id: Uuid,
    worker_id: &str,
    secret_sha256: &[u8; 32],
    created_by: Option<Uuid>,
) -> Result<(AgentCredential, Vec<Uuid>), DbError> {
    let sql = format!(
        "WITH old AS (UPDATE agent_credentials SET revoked_at = now()
                      WHERE worker_id = $2 AND revoked_at IS NULL RETURNING credential_id),
              new AS (INSERT INTO agent_credentials (credential_id, worker_id, secret_sha256, created_by)
                      SELECT $1, $2, $3, $4 FROM (SELECT count(*) FROM old) AS revoked
                      RETURNING {COLUMNS})
         SELECT new.*, ARRAY(SELECT credential_id FROM old) AS replaced FROM new"
    );
    let hash = secret_sha256.as_slice();
    match client
        .row(&sql, &[&credential_id, &worker_id, &hash, &created_by])
        .await
    {
        Ok(row) => Ok((from_row(&row)?, row.try_get("replaced")?)),
        // Another credential for the worker was issued at the same moment.
        Err(e) if is_unique_violation(&e) => Err(DbError::AlreadyExists {
            kind: "Live credential for worker",
            id: worker_id.to_owned(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The credential `credential_id`, as a request's check needs it.
pub async fn lookup(
    client: &impl GenericClient,
    credential_id: Uuid,
) -> Result<Option<CredentialRow>, DbError> {
    let row = client
        .row_opt(
            "SELECT worker_id, secret_sha256, revoked_at IS NOT NULL FROM agent_credentials WHERE credential_id = $1",
            &[&credential_id],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let hash: Vec<u8> = row.try_get(1)?;
    let secret_sha256 = <[u8; 32]>::try_from(hash.as_slice())
        .map_err(|_| DbError::Invariant(format!("credential {credential_id}: hash is not 32 bytes")))?;
    Ok(Some(CredentialRow {
        worker_id: row.try_get(0)?,
        secret_sha256,
        revoked: row.try_get(2)?,
    }))
}

/// Whether `credential_id` is live (not revoked), holding it so (`FOR
/// SHARE`) until the caller's transaction ends: a registration holds its
/// credential while it sets up the agent's broker account, so a revocation
/// (whose update of the row waits for that) deletes the account after it,
/// or the registration, waiting for the revocation, finds it revoked.
pub async fn hold_live(client: &impl GenericClient, credential_id: Uuid) -> Result<bool, DbError> {
    let row = client
        .row_opt(
            "SELECT 1 FROM agent_credentials WHERE credential_id = $1 AND revoked_at IS NULL FOR SHARE",
            &[&credential_id],
        )
        .await?;
    Ok(row.is_some())
}

/// Every credential, newest first.
pub async fn list(client: &impl GenericClient) -> Result<Vec<AgentCredential>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM agent_credentials ORDER BY created_at DESC, credential_id");
    let rows = client.rows(&sql, &[]).await?;
    rows.iter().map(from_row).collect()
}

/// Revokes `credential_id` (revoking a revoked one changes nothing and
/// answers it as it is); an unknown id is `NotFound`.
pub async fn revoke(client: &impl GenericClient, credential_id: Uuid) -> Result<AgentCredential, DbError> {
    let sql = format!(
        "UPDATE agent_credentials SET revoked_at = coalesce(revoked_at, now())
         WHERE credential_id = $1 RETURNING {COLUMNS}"
    );
    let row = client.row_opt(&sql, &[&credential_id]).await?;
    row.as_ref()
        .map(from_row)
        .transpose()?
        .ok_or_else(|| not_found(credential_id))
}
