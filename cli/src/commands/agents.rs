//! `agents credentials create|list|revoke` (admins only): one credential
//! per worker agent, naming its worker id.

use super::Ctx;
use crate::args::{AgentsCommand, CredentialsCommand};
use crate::client::Answer;
use crate::error::UsageError;
use crate::views;
use anyhow::Result;
use orchestrator_shared::api::{AgentCredential, CredentialList, CredentialRequest, IssuedCredential};
use uuid::Uuid;

/// Runs an `agents` subcommand.
pub async fn run(ctx: &Ctx, command: AgentsCommand) -> Result<()> {
    match command {
        AgentsCommand::Credentials(CredentialsCommand::Create(args)) => create(ctx, &args.worker_id).await,
        AgentsCommand::Credentials(CredentialsCommand::List) => list(ctx).await,
        AgentsCommand::Credentials(CredentialsCommand::Revoke(args)) => revoke(ctx, args.credential_id).await,
    }
}

/// `POST /api/agents/credentials`, the worker id checked first.
async fn create(ctx: &Ctx, worker_id: &str) -> Result<()> {
    let request = CredentialRequest {
        worker_id: worker_id.to_owned(),
    };
    UsageError::check(&request.problems())?;
    let issued: Answer<IssuedCredential> = ctx
        .client
        .post(&["api", "agents", "credentials"], &request)
        .await?;
    ctx.out.show(&issued, |c| {
        format!(
            "credential {} for worker {}; give the agent this token (shown once), \
             e.g. in the file AGENT_TOKEN_FILE names, mode 0600:\n{}",
            c.credential_id, c.worker_id, c.token
        )
    })
}

/// `GET /api/agents/credentials`.
async fn list(ctx: &Ctx) -> Result<()> {
    let list: Answer<CredentialList> = ctx.client.get(&["api", "agents", "credentials"]).await?;
    ctx.out.show(&list, |list| {
        views::list_of(
            &list.credentials,
            views::CREDENTIAL_COLUMNS,
            "no agent credentials",
        )
    })
}

/// `DELETE /api/agents/credentials/{id}`.
async fn revoke(ctx: &Ctx, credential_id: Uuid) -> Result<()> {
    let id = credential_id.to_string();
    let reply = ctx.client.delete(&["api", "agents", "credentials", &id]).await?;
    let revoked: Answer<AgentCredential> = reply.read()?;
    ctx.out.show(&revoked, |c| {
        format!("credential {} of worker {} revoked", c.credential_id, c.worker_id)
    })
}
