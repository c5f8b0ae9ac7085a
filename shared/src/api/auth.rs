//! `/api/auth/*`: logging in, the caller's identity, and managing users
//! (create, list, read, change, delete), with the rules an account meets.
//!
//! # Usernames
//! A new username is normalised with NFKC (compatibility forms such as
//! fullwidth letters or ligatures become their plain form) and must then be
//! 1 to 128 characters of ASCII letters, digits and `._@+-`: no spaces,
//! control characters, bidirectional overrides, or letters of other scripts
//! that look like Latin ones. A login maps the typed name the same way
//! ([`login_name`]), so a user logs in with the name as registered however
//! it is typed, and names stored before the rule keep working as stored.
//!
//! # Passwords
//! A new password is at least 8 characters, not only whitespace, neither
//! the username nor containing it, and not one of the few hundred most
//! common passwords (`shared/data/common-passwords.txt`, compiled in).

use super::error::{check_no_nul, FieldError};
use super::resources::PoolQuotaChanges;
use crate::Scope;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

/// Shortest password accepted for new users.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest password accepted, in characters (bounds the hashing work).
pub const MAX_PASSWORD_CHARS: usize = 1024;
/// Longest username, in characters.
pub const MAX_USERNAME: usize = 128;
/// Shortest username a password may not contain: a password may not hold
/// its user's name, but refusing every password that holds a one- or
/// two-letter name would refuse nearly all of them.
pub const MIN_NAME_IN_PASSWORD: usize = 3;
/// The username rule in words, for the 422 and the contract.
pub const USERNAME_RULE: &str =
    "must be 1 to 128 characters of A-Z, a-z, 0-9 and . _ @ + - (after NFKC normalisation)";

/// The most common passwords of at least [`MIN_PASSWORD_LEN`] characters,
/// one a line in lower case, `#` lines being comments; compiled in so the
/// rule needs neither a file nor a download at run time.
const COMMON_PASSWORDS: &str = include_str!("../../data/common-passwords.txt");

/// `raw` in Unicode normalisation form NFKC: the form every new username is
/// checked and stored in, so that compatibility variants of one name
/// (`ａｄｍｉｎ`, `admin`) are one name.
pub fn normalize_username(raw: &str) -> String {
    raw.nfkc().collect()
}

/// Whether `name` (already normalised) meets the username rule: 1 to
/// [`MAX_USERNAME`] characters of ASCII letters, digits and `._@+-`
/// (see [`USERNAME_RULE`]).
pub fn is_valid_username(name: &str) -> bool {
    (1..=MAX_USERNAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b))
}

/// The name a login looks up for what the user typed: its NFKC form when
/// that is a valid username (every user created under the rule is stored
/// so), else the text as typed, so that names stored before the rule
/// existed keep logging in exactly as stored.
pub fn login_name(typed: &str) -> String {
    let normalized = normalize_username(typed);
    if is_valid_username(&normalized) {
        normalized
    } else {
        typed.to_owned()
    }
}

/// Whether `password` is on the embedded list of common ones, compared
/// case-insensitively.
fn is_common_password(password: &str) -> bool {
    let lowered = password.to_lowercase();
    COMMON_PASSWORDS
        .lines()
        .filter(|line| !line.starts_with('#'))
        .any(|line| line == lowered)
}

/// Every strength rule `password` breaks for the user `username` (as it is
/// stored, i.e. normalised), in words; empty when it is acceptable. Shared
/// by the API's user creation and the controller's first admin.
pub fn password_problems(username: &str, password: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if password.chars().count() < MIN_PASSWORD_LEN || password.chars().count() > MAX_PASSWORD_CHARS {
        problems.push(format!(
            "must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_CHARS} characters"
        ));
    }
    if !password.is_empty() && password.chars().all(char::is_whitespace) {
        problems.push("must not be only whitespace".to_owned());
    }
    let name = username.to_lowercase();
    let lowered = password.to_lowercase();
    let holds_name =
        lowered == name || (name.chars().count() >= MIN_NAME_IN_PASSWORD && lowered.contains(&name));
    if !name.is_empty() && holds_name {
        problems.push("must not be or contain the username".to_owned());
    }
    if is_common_password(password) {
        problems.push("is one of the most common passwords".to_owned());
    }
    problems
}

/// `POST /api/auth/login` body.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginRequest {
    /// Login name. Read through [`login_name`], so the rate limiter and the
    /// lookup see the name as it is stored, however it was typed.
    #[serde(deserialize_with = "typed_login_name")]
    #[cfg_attr(feature = "openapi", schema(max_length = 128, pattern = "^[^\\u0000]*$"))]
    pub username: String,
    /// Password.
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub password: String,
}

/// Deserialises a login name as [`login_name`] maps it.
fn typed_login_name<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    String::deserialize(de).map(|typed| login_name(&typed))
}

impl LoginRequest {
    /// Every rule of the contract this login breaks, checked before the
    /// rate limiter and the database see it: a name no longer than any
    /// stored one and without NUL (Postgres refuses it: a 500 before), and
    /// a password within the hashing bound. Wrong credentials within these
    /// bounds stay the plain 401.
    pub fn problems(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.username.chars().count() > MAX_USERNAME {
            errors.push(FieldError::body(
                "username",
                format!("must be at most {MAX_USERNAME} characters"),
            ));
        }
        check_no_nul(&mut errors, "username", [self.username.as_str()]);
        if self.password.chars().count() > MAX_PASSWORD_CHARS {
            errors.push(FieldError::body(
                "password",
                format!("must be at most {MAX_PASSWORD_CHARS} characters"),
            ));
        }
        errors
    }
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A fresh access token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    /// The JWT to send as `Authorization: Bearer …`.
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// Scopes it grants.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// The caller, as `GET /api/auth/me` shows it (and a new user, as
/// `POST /api/auth/users` answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Me {
    /// User id (the token's `sub`).
    pub user_id: Uuid,
    /// Login name.
    pub username: String,
    /// Scopes of the user.
    pub scopes: Vec<String>,
}

/// `POST /api/auth/users` body.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateUserRequest {
    /// Login name, unique; stored NFKC-normalised, and then 1–128
    /// characters of ASCII letters, digits and `._@+-`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._@+-]{1,128}$"))]
    pub username: String,
    /// Password: at least 8 characters, not only whitespace, not the
    /// username nor containing it, not a common password.
    #[cfg_attr(feature = "openapi", schema(min_length = 8, max_length = 1024))]
    pub password: String,
    /// Scopes to grant (see the contract's list).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = super::schema::scopes))]
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for CreateUserRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUserRequest")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl CreateUserRequest {
    /// The name to store: the requested one, NFKC-normalised (what
    /// [`CreateUserRequest::problems`] checks and a login finds).
    pub fn normalized_username(&self) -> String {
        normalize_username(&self.username)
    }

    /// Every rule of the contract this request breaks.
    pub fn problems(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let username = self.normalized_username();
        if !is_valid_username(&username) {
            errors.push(FieldError::body("username", USERNAME_RULE));
        }
        for problem in password_problems(&username, &self.password) {
            errors.push(FieldError::body("password", problem));
        }
        scope_problems(&mut errors, &self.scopes);
        errors
    }
}

/// Every problem of `scopes`: each must be a scope of the contract.
fn scope_problems(errors: &mut Vec<FieldError>, scopes: &[String]) {
    for scope in scopes {
        if scope.parse::<Scope>().is_err() {
            errors.push(FieldError::body("scopes", format!("unknown scope: {scope}")));
        }
    }
}

/// `scopes` without repeats, in the order first given.
pub fn distinct_scopes(scopes: &[String]) -> Vec<String> {
    let mut seen = Vec::with_capacity(scopes.len());
    for scope in scopes {
        if !seen.contains(scope) {
            seen.push(scope.clone());
        }
    }
    seen
}

/// A user as the users routes show it to admins (never its password or
/// hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserAccount {
    /// User id (the `sub` of its tokens).
    pub user_id: Uuid,
    /// Login name.
    pub username: String,
    /// Scopes of the user.
    pub scopes: Vec<String>,
    /// Whether the user is refused: no login, every token refused.
    pub disabled: bool,
    /// When the account was made.
    pub created_at: DateTime<Utc>,
    /// The user's per-pool quotas: pool name to the most workers of that
    /// pool it may hold allocated (`{}`: no pool is limited beyond its
    /// overall quota), so an admin reads what `pool_quotas` set.
    #[serde(default)]
    pub pool_quotas: std::collections::BTreeMap<String, i64>,
}

/// `GET /api/auth/users`: every user that is not deleted, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserList {
    /// The users.
    pub users: Vec<UserAccount>,
    /// How many.
    pub total: usize,
}

/// `PATCH /api/auth/users/{user_id}` body: what to change; a field left
/// out (or `null`) stays as it is, so `{}` changes nothing. Read from a
/// JSON object only (see its `Deserialize`).
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateUserRequest {
    /// The user's scopes from now on (replacing the old ones). Tokens
    /// issued before lose a cut scope within the revocation bound; an
    /// added one needs a new login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = super::schema::optional_scopes))]
    pub scopes: Option<Vec<String>>,
    /// `true` disables the user (no login; its tokens refused for good),
    /// `false` enables it again (new logins only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// A new password, under the rules of a new user's; takes back every
    /// token of the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 8, max_length = 1024))]
    pub password: Option<String>,
    /// Per-pool quotas to set (admins only, as every change here): `{"gpu":
    /// 2}` lets the user hold at most 2 workers of pool `gpu` allocated,
    /// `{"gpu": null}` lifts that limit; pools not named keep theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<std::collections::BTreeMap<String, Option<i64>>>)
    )]
    pub pool_quotas: Option<PoolQuotaChanges>,
}

/// The fields of [`UpdateUserRequest`] as serde derives their reading.
#[derive(Deserialize)]
struct UpdateUserFields {
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    pool_quotas: Option<PoolQuotaChanges>,
}

/// Reads an [`UpdateUserRequest`] from a map only.
struct UpdateUserVisitor;

impl<'de> serde::de::Visitor<'de> for UpdateUserVisitor {
    type Value = UpdateUserRequest;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<UpdateUserRequest, A::Error> {
        let fields = UpdateUserFields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(UpdateUserRequest {
            scopes: fields.scopes,
            disabled: fields.disabled,
            password: fields.password,
            pool_quotas: fields.pool_quotas,
        })
    }
}

/// Only a JSON object is a change: serde's derive would also read a struct
/// from an array (`[null, null]`, which the schema refuses, would change
/// nothing and answer 200).
impl<'de> Deserialize<'de> for UpdateUserRequest {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_map(UpdateUserVisitor)
    }
}

impl std::fmt::Debug for UpdateUserRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateUserRequest")
            .field("scopes", &self.scopes)
            .field("disabled", &self.disabled)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("pool_quotas", &self.pool_quotas)
            .finish()
    }
}

impl UpdateUserRequest {
    /// Every rule this request breaks that does not depend on the user:
    /// unknown scopes, and a password's length, blankness or commonness.
    /// (Whether the password holds the username is
    /// [`UpdateUserRequest::password_problems_for`], once the user is known.)
    pub fn problems(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(scopes) = &self.scopes {
            scope_problems(&mut errors, scopes);
        }
        if let Some(password) = &self.password {
            for problem in password_problems("", password) {
                errors.push(FieldError::body("password", problem));
            }
        }
        if let Some(changes) = &self.pool_quotas {
            errors.extend(changes.problems());
        }
        errors
    }

    /// The new password's problems for the user `username`: every rule of
    /// a new user's password.
    pub fn password_problems_for(&self, username: &str) -> Vec<FieldError> {
        self.password.as_deref().map_or_else(Vec::new, |password| {
            password_problems(username, password)
                .into_iter()
                .map(|problem| FieldError::body("password", problem))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn debug_output_never_shows_a_password_or_token() {
        let login = LoginRequest {
            username: "alice".into(),
            password: "hunter22".into(),
        };
        assert!(!format!("{login:?}").contains("hunter22"));
        let token = TokenResponse {
            access_token: "eyJsecret".into(),
            token_type: "bearer".into(),
            expires_in: 1,
            scopes: vec![],
        };
        assert!(!format!("{token:?}").contains("eyJsecret"));
    }

    #[test]
    fn new_user_rules_name_each_field() {
        let req = CreateUserRequest {
            username: "a b".into(),
            password: "short".into(),
            scopes: vec!["root".into()],
        };
        let locs: Vec<String> = req.problems().iter().map(FieldError::location).collect();
        assert_eq!(locs, ["body.username", "body.password", "body.scopes"]);
    }

    #[test]
    fn usernames_are_normalised_then_held_to_the_character_set() {
        assert_eq!(
            normalize_username("\u{FF41}\u{FF44}\u{FF4D}\u{FF49}\u{FF4E}"),
            "admin"
        );
        assert_eq!(normalize_username("\u{FB01}le"), "file");
        for ok in [
            "admin",
            "Bob_99",
            "ops+ci@example.org",
            "a.b-c",
            "7",
            &"n".repeat(128),
        ] {
            assert!(is_valid_username(ok), "{ok}");
        }
        let refused = [
            "",
            "a b",
            "tab\tname",
            "bell\u{7}",
            "evil\u{202E}nimda",
            "\u{0430}dmin",
            "zero\u{200B}width",
            "slash/name",
            "o'hara",
            "caf\u{E9}",
            "a\0b",
            &"n".repeat(129),
        ];
        for bad in refused {
            assert!(!is_valid_username(&normalize_username(bad)), "{bad:?}");
        }
    }

    #[test]
    fn a_login_finds_the_stored_name_however_it_is_typed_and_legacy_names_as_stored() {
        assert_eq!(login_name("\u{FF42}\u{FF4F}\u{FF42}"), "bob");
        assert_eq!(login_name("bob"), "bob");
        // Decomposed é: not a name the rule allows, so looked up as typed.
        assert_eq!(login_name("jose\u{301}"), "jose\u{301}");
        assert_eq!(login_name("a b"), "a b");
        let read: LoginRequest =
            serde_json::from_value(serde_json::json!({"username": "\u{FF42}ob", "password": "x"})).unwrap();
        assert_eq!(read.username, "bob");
    }

    #[test]
    fn login_problems_bound_the_name_and_password_and_refuse_nul() {
        let login = |username: &str, password: &str| LoginRequest {
            username: username.into(),
            password: password.into(),
        };
        assert_eq!(login("", "").problems(), [], "wrong credentials stay a 401");
        assert_eq!(login(&"n".repeat(128), &"p".repeat(1024)).problems(), []);
        let locs =
            |r: LoginRequest| -> Vec<String> { r.problems().iter().map(FieldError::location).collect() };
        assert_eq!(locs(login(&"n".repeat(129), "pw")), ["body.username"]);
        assert_eq!(locs(login("a\0b", "pw")), ["body.username"]);
        assert_eq!(locs(login("alice", &"p".repeat(1025))), ["body.password"]);
    }

    #[test]
    fn weak_passwords_break_the_rule_they_break() {
        let problems = |name: &str, password: &str| password_problems(name, password);
        assert_eq!(
            problems("mallory", "correct-horse-battery-9"),
            Vec::<String>::new()
        );
        assert_eq!(problems("mallory", "short"), ["must be 8 to 1024 characters"]);
        assert_eq!(problems("mallory", "        "), ["must not be only whitespace"]);
        assert_eq!(
            problems("mallory", "12345678"),
            ["is one of the most common passwords"]
        );
        assert_eq!(
            problems("mallory", "PassWord1"),
            ["is one of the most common passwords"]
        );
        assert_eq!(
            problems("mallory1", "MALLORY1"),
            ["must not be or contain the username"]
        );
        assert_eq!(
            problems("mallory", "i-am-Mallory!"),
            ["must not be or contain the username"]
        );
        // A name too short to forbid inside a password is still not the password.
        assert_eq!(problems("al", "always-alert-9"), Vec::<String>::new());
        assert_eq!(
            problems("longpassword", "longpassword"),
            ["must not be or contain the username"]
        );
        assert_eq!(problems("x", &"p".repeat(1025)).len(), 1);
    }

    #[test]
    fn the_common_password_list_is_lower_case_unique_and_long_enough_to_matter() {
        let entries: Vec<&str> = COMMON_PASSWORDS.lines().filter(|l| !l.starts_with('#')).collect();
        assert!((300..=2000).contains(&entries.len()), "{} entries", entries.len());
        let unique: std::collections::HashSet<&str> = entries.iter().copied().collect();
        assert_eq!(unique.len(), entries.len(), "duplicates in the list");
        for entry in entries {
            assert_eq!(entry, entry.to_lowercase(), "lower case");
            assert!(
                entry.chars().count() >= MIN_PASSWORD_LEN,
                "{entry:?} is refused by length already"
            );
            assert!(!entry.chars().any(char::is_whitespace), "{entry:?}");
            assert!(is_common_password(&entry.to_uppercase()), "{entry:?}");
        }
    }

    #[test]
    fn an_update_checks_scopes_and_the_password_but_not_what_it_leaves_out() {
        use serde_json::json;
        assert_eq!(UpdateUserRequest::default().problems(), []);
        let update = UpdateUserRequest {
            scopes: Some(vec!["jobs:read".into(), "root".into()]),
            disabled: Some(true),
            password: Some("password".into()),
            pool_quotas: serde_json::from_value(json!({"gpu": -1})).ok(),
        };
        let locs: Vec<String> = update.problems().iter().map(FieldError::location).collect();
        assert_eq!(locs, ["body.scopes", "body.password", "body.pool_quotas.gpu"]);
        let holds_name = UpdateUserRequest {
            password: Some("mallory-rules-9".into()),
            ..UpdateUserRequest::default()
        };
        assert_eq!(holds_name.problems(), [], "the name is not known yet");
        assert_eq!(holds_name.password_problems_for("mallory").len(), 1);
        assert!(!format!("{holds_name:?}").contains("mallory-rules-9"));
        let read: UpdateUserRequest =
            serde_json::from_value(json!({"scopes": null, "disabled": false})).unwrap();
        assert_eq!(
            (read.scopes, read.disabled, read.password),
            (None, Some(false), None)
        );
        for not_an_object in [json!([null, null]), json!([]), json!(null), json!("x")] {
            assert!(
                serde_json::from_value::<UpdateUserRequest>(not_an_object.clone()).is_err(),
                "{not_an_object}"
            );
        }
    }

    #[test]
    fn distinct_scopes_keep_the_first_of_each() {
        let given: Vec<String> = ["b", "a", "b", "c", "a"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(distinct_scopes(&given), ["b", "a", "c"]);
    }

    proptest! {
        #[test]
        fn normalisation_is_idempotent_and_a_valid_name_is_plain_ascii(raw in "\\PC{0,20}") {
            let once = normalize_username(&raw);
            prop_assert_eq!(normalize_username(&once), once.clone());
            let expected = !once.is_empty() && once.chars().count() <= MAX_USERNAME
                && once.chars().all(|c| c.is_ascii_alphanumeric() || "._@+-".contains(c));
            prop_assert_eq!(is_valid_username(&once), expected);
            let looked_up = login_name(&raw);
            prop_assert!(looked_up == raw || (looked_up == once && expected));
        }

        #[test]
        fn a_password_holding_the_name_is_refused_whatever_its_case(
            name in "[a-z]{3,12}", before in "[0-9!-]{0,6}", after in "[0-9!-]{0,6}",
        ) {
            let password = format!("{before}{}{after}", name.to_uppercase());
            let problems = password_problems(&name, &password);
            prop_assert!(problems.iter().any(|p| p == "must not be or contain the username"));
        }
    }
}
