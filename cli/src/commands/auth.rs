//! `login` and `whoami`.

use super::Ctx;
use crate::args::LoginArgs;
use crate::client::Answer;
use crate::config::{self, ConfigFile};
use crate::error::UsageError;
use crate::views;
use anyhow::Result;
use orchestrator_shared::api::{LoginRequest, Me, TokenResponse};

/// `POST /api/auth/login`, then saves the URL (or the replicas' URLs) and
/// token to the config file.
pub async fn login(ctx: &Ctx, args: LoginArgs) -> Result<()> {
    let password = args
        .password
        .filter(|p| !p.is_empty())
        .ok_or_else(|| UsageError("no password: set ORCH_PASSWORD or pass --password".into()))?;
    let path = ctx.config_path.as_deref().ok_or_else(|| {
        UsageError("nowhere to save the token: set ORCH_CONFIG, XDG_CONFIG_HOME or HOME".into())
    })?;
    let request = LoginRequest {
        username: args.username.clone(),
        password,
    };
    UsageError::check(&request.problems())?;
    let token: Answer<TokenResponse> = ctx
        .client
        .anonymous()
        .post(&["api", "auth", "login"], &request)
        .await?;
    // Every replica's URL, in the order given, so later commands fail
    // over as this one would.
    let urls: Vec<&str> = ctx
        .client
        .bases()
        .iter()
        .map(|u| u.as_str().trim_end_matches('/'))
        .collect();
    let url = urls.join(",");
    let stored = ConfigFile {
        url: Some(url.clone()),
        token: Some(token.typed.access_token.clone()),
        username: Some(args.username.clone()),
        // Absolute, so later commands find it from any directory.
        ca_file: ctx.ca_file.as_deref().map(std::path::absolute).transpose()?,
    };
    config::save(path, &stored)?;
    let place = path.display().to_string();
    ctx.out.show(&token, |answer| {
        views::login(answer, &args.username, &url, &place)
    })
}

/// `GET /api/auth/me`.
pub async fn whoami(ctx: &Ctx) -> Result<()> {
    let me: Answer<Me> = ctx.client.get(&["api", "auth", "me"]).await?;
    ctx.out.show(&me, views::fields)
}
