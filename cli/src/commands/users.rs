//! `users list|show|create|update|disable|enable|delete` (admins only).

use super::Ctx;
use crate::args::{CreateUserArgs, UpdateUserArgs, UsersCommand};
use crate::client::Answer;
use crate::error::UsageError;
use crate::views;
use anyhow::Result;
use orchestrator_shared::api::{
    CreateUserRequest, Me, PoolQuotaChanges, UpdateUserRequest, UserAccount, UserList,
};
use serde_json::{Number, Value};
use uuid::Uuid;

/// Where `users create` and `users update --new-password` read the password
/// (not a flag: other users see flags in `ps`).
pub const NEW_PASSWORD_VAR: &str = "ORCH_NEW_PASSWORD";

/// Runs a `users` subcommand.
pub async fn run(ctx: &Ctx, command: UsersCommand) -> Result<()> {
    let env = |name: &str| std::env::var(name).ok();
    match command {
        UsersCommand::List => list(ctx).await,
        UsersCommand::Show(user) => show(ctx, &user.user).await,
        UsersCommand::Create(args) => create(ctx, creation(&args, env)?).await,
        UsersCommand::Update(args) => update(ctx, &args.user.user, &change(&args, env)?).await,
        UsersCommand::Disable(user) => update(ctx, &user.user, &disabled(true)).await,
        UsersCommand::Enable(user) => update(ctx, &user.user, &disabled(false)).await,
        UsersCommand::Delete(user) => delete(ctx, &user.user).await,
    }
}

/// `GET /api/auth/users`.
async fn list(ctx: &Ctx) -> Result<()> {
    let list: Answer<UserList> = ctx.client.get(&["api", "auth", "users"]).await?;
    ctx.out.show(&list, |list| {
        views::list_of(&list.users, views::USER_COLUMNS, "no users")
    })
}

/// The id of the user `given`: itself when it is a UUID, else the id of
/// the user of that name (from the list of users).
async fn resolve(ctx: &Ctx, given: &str) -> Result<Uuid> {
    if let Ok(id) = Uuid::parse_str(given) {
        return Ok(id);
    }
    let list: Answer<UserList> = ctx.client.get(&["api", "auth", "users"]).await?;
    list.typed
        .users
        .iter()
        .find(|user| user.username == given)
        .map(|user| user.user_id)
        .ok_or_else(|| UsageError(format!("no user named {given:?} (nor is it a user id)")).into())
}

/// `GET /api/auth/users/{id}`.
async fn show(ctx: &Ctx, given: &str) -> Result<()> {
    let id = resolve(ctx, given).await?.to_string();
    let user: Answer<UserAccount> = ctx.client.get(&["api", "auth", "users", &id]).await?;
    ctx.out.show(&user, views::fields)
}

/// `POST /api/auth/users`.
async fn create(ctx: &Ctx, request: CreateUserRequest) -> Result<()> {
    let user: Answer<Me> = ctx.client.post(&["api", "auth", "users"], &request).await?;
    ctx.out.show(&user, views::fields)
}

/// `PATCH /api/auth/users/{id}` with `request`.
async fn update(ctx: &Ctx, given: &str, request: &UpdateUserRequest) -> Result<()> {
    let id = resolve(ctx, given).await?.to_string();
    let user: Answer<UserAccount> = ctx.client.patch(&["api", "auth", "users", &id], request).await?;
    ctx.out.show(&user, views::fields)
}

/// `DELETE /api/auth/users/{id}`.
async fn delete(ctx: &Ctx, given: &str) -> Result<()> {
    let id = resolve(ctx, given).await?;
    ctx.client
        .delete(&["api", "auth", "users", &id.to_string()])
        .await?;
    ctx.out
        .print(&Value::Null, || format!("user {given} ({id}) deleted"))
}

/// The password in [`NEW_PASSWORD_VAR`], as `env` reads variables.
fn new_password(env: impl Fn(&str) -> Option<String>) -> Result<String, UsageError> {
    env(NEW_PASSWORD_VAR)
        .filter(|password| !password.is_empty())
        .ok_or_else(|| UsageError(format!("no password: set {NEW_PASSWORD_VAR}")))
}

/// The user `users create` asks for, checked against the contract's rules
/// before it is sent.
pub fn creation(
    args: &CreateUserArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<CreateUserRequest, UsageError> {
    let request = CreateUserRequest {
        username: args.username.clone(),
        password: new_password(env)?,
        scopes: args.scopes.clone(),
    };
    UsageError::check(&request.problems())?;
    Ok(request)
}

/// The change `users update` asks for, checked before it is sent; asking
/// for none is a usage error.
pub fn change(
    args: &UpdateUserArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<UpdateUserRequest, UsageError> {
    let scopes = if args.no_scopes {
        Some(Vec::new())
    } else {
        Some(args.scopes.clone()).filter(|scopes| !scopes.is_empty())
    };
    let password = if args.new_password {
        Some(new_password(env)?)
    } else {
        None
    };
    let pool_quotas = pool_quota_changes(&args.pool_quotas)?;
    if scopes.is_none() && password.is_none() && pool_quotas.is_none() {
        return Err(UsageError(
            "nothing to change: give --scope, --no-scopes, --new-password or --pool-quota".into(),
        ));
    }
    let request = UpdateUserRequest {
        scopes,
        disabled: None,
        password,
        pool_quotas,
    };
    UsageError::check(&request.problems())?;
    Ok(request)
}

/// The `pool_quotas` of `--pool-quota` flags (`None`: none given); a pool
/// given twice is a usage error rather than a silent choice.
fn pool_quota_changes(pairs: &[(String, Option<i64>)]) -> Result<Option<PoolQuotaChanges>, UsageError> {
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut changes = PoolQuotaChanges::default();
    for (pool, limit) in pairs {
        if changes.0.insert(pool.clone(), limit.map(Number::from)).is_some() {
            return Err(UsageError(format!("--pool-quota names pool {pool:?} twice")));
        }
    }
    Ok(Some(changes))
}

/// The change of `users disable` (`true`) and `users enable` (`false`).
fn disabled(disabled: bool) -> UpdateUserRequest {
    UpdateUserRequest {
        disabled: Some(disabled),
        ..UpdateUserRequest::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::UserRef;
    use serde_json::json;

    fn update_args(scopes: &[&str], no_scopes: bool, new_password: bool) -> UpdateUserArgs {
        UpdateUserArgs {
            user: UserRef { user: "bob".into() },
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            no_scopes,
            new_password,
            pool_quotas: Vec::new(),
        }
    }

    fn env_with(password: &'static str) -> impl Fn(&str) -> Option<String> {
        move |name| (name == NEW_PASSWORD_VAR).then(|| password.to_owned())
    }

    #[test]
    fn update_bodies_carry_only_what_was_asked() -> Result<()> {
        let body =
            |args| -> Result<Value> { Ok(serde_json::to_value(change(&args, env_with("quiet-river-31"))?)?) };
        assert_eq!(
            body(update_args(&["jobs:read"], false, false))?,
            json!({"scopes": ["jobs:read"]})
        );
        assert_eq!(body(update_args(&[], true, false))?, json!({"scopes": []}));
        assert_eq!(
            body(update_args(&[], false, true))?,
            json!({"password": "quiet-river-31"})
        );
        assert_eq!(serde_json::to_value(disabled(true))?, json!({"disabled": true}));
        Ok(())
    }

    #[test]
    fn pool_quotas_are_set_or_lifted_and_checked_before_sending() -> Result<()> {
        let with = |quotas: &[(&str, Option<i64>)]| {
            let mut args = update_args(&[], false, false);
            args.pool_quotas = quotas.iter().map(|(p, n)| ((*p).to_owned(), *n)).collect();
            change(&args, |_: &str| None)
        };
        let body = serde_json::to_value(with(&[("gpu", Some(2)), ("cpu-big", None)])?)?;
        assert_eq!(body, json!({"pool_quotas": {"cpu-big": null, "gpu": 2}}));
        let bad = with(&[("GPU", Some(1)), ("gpu", Some(-1))]).err().map(|e| e.0);
        let bad = bad.unwrap_or_default();
        assert!(
            bad.contains("body.pool_quotas.GPU") && bad.contains("body.pool_quotas.gpu"),
            "{bad}"
        );
        assert!(with(&[("gpu", Some(1)), ("gpu", None)]).is_err(), "a pool twice");
        let parsed: Vec<_> = ["gpu=3", "gpu=none"]
            .iter()
            .map(|raw| crate::input::parse_pool_quota(raw))
            .collect();
        assert_eq!(
            parsed,
            [Ok(("gpu".to_owned(), Some(3))), Ok(("gpu".to_owned(), None))]
        );
        assert!(crate::input::parse_pool_quota("gpu=2.5").is_err());
        assert!(crate::input::parse_pool_quota("gpu").is_err());
        Ok(())
    }

    #[test]
    fn an_update_needs_a_change_and_a_password_that_meets_the_rules() {
        let none = |_: &str| None;
        assert!(change(&update_args(&[], false, false), env_with("quiet-river-31")).is_err());
        assert!(
            change(&update_args(&[], false, true), none).is_err(),
            "no password set"
        );
        let weak = change(&update_args(&[], false, true), env_with("password"));
        assert!(weak.is_err_and(|e| e.0.contains("body.password")));
    }

    #[test]
    fn a_new_user_takes_its_password_from_the_environment() -> Result<()> {
        let args = CreateUserArgs {
            username: "carol".into(),
            scopes: vec!["jobs:write".into()],
        };
        let request = creation(&args, env_with("quiet-river-31"))?;
        assert_eq!(
            (request.username.as_str(), request.password.as_str()),
            ("carol", "quiet-river-31")
        );
        assert!(creation(&args, |_: &str| None).is_err());
        assert!(
            creation(&args, env_with("carol-carol")).is_err(),
            "holds the name"
        );
        Ok(())
    }
}
