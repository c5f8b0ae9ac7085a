//! API scopes and the single rule for whether a held scope grants a required
//! one: `admin` implies everything, and `X:write` implies `X:read` (existing
//! clients read their jobs with only `jobs:write`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A scope string that names no known scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope: {0:?}")]
pub struct ScopeParseError(pub String);

/// One permission a token can carry; spelled as in the API contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Read jobs, their events and output.
    #[serde(rename = "jobs:read")]
    JobsRead,
    /// Submit and cancel jobs.
    #[serde(rename = "jobs:write")]
    JobsWrite,
    /// Read workers and fleet metrics.
    #[serde(rename = "supervisor:read")]
    SupervisorRead,
    /// Pause, resume and terminate workers.
    #[serde(rename = "supervisor:write")]
    SupervisorWrite,
    /// Read quotas and usage.
    #[serde(rename = "resources:read")]
    ResourcesRead,
    /// Allocate and release workers.
    #[serde(rename = "resources:write")]
    ResourcesWrite,
    /// Everything, including creating users.
    #[serde(rename = "admin")]
    Admin,
    /// What a worker agent's token carries: register, claim shards.
    #[serde(rename = "agent")]
    Agent,
}

impl Scope {
    /// Every scope, for validation messages and tests.
    pub const ALL: &'static [Scope] = &[
        Scope::JobsRead,
        Scope::JobsWrite,
        Scope::SupervisorRead,
        Scope::SupervisorWrite,
        Scope::ResourcesRead,
        Scope::ResourcesWrite,
        Scope::Admin,
        Scope::Agent,
    ];

    /// The wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::JobsRead => "jobs:read",
            Scope::JobsWrite => "jobs:write",
            Scope::SupervisorRead => "supervisor:read",
            Scope::SupervisorWrite => "supervisor:write",
            Scope::ResourcesRead => "resources:read",
            Scope::ResourcesWrite => "resources:write",
            Scope::Admin => "admin",
            Scope::Agent => "agent",
        }
    }

    /// Whether holding `self` is enough for a route that requires `required`.
    pub fn grants(self, required: Scope) -> bool {
        self == required
            || self == Scope::Admin
            || matches!(
                (self, required),
                (Scope::JobsWrite, Scope::JobsRead)
                    | (Scope::SupervisorWrite, Scope::SupervisorRead)
                    | (Scope::ResourcesWrite, Scope::ResourcesRead)
            )
    }
}

/// Whether any of the held scope strings grants `required`. Unknown strings
/// grant nothing (a token minted by a newer controller stays safe).
pub fn has_scope<S: AsRef<str>>(held: &[S], required: Scope) -> bool {
    held.iter()
        .filter_map(|s| s.as_ref().parse::<Scope>().ok())
        .any(|s| s.grants(required))
}

/// The scopes a token may use now: every scope of the API that both the
/// token's scopes and the user's current scopes grant. A cut of the user's
/// scopes thus takes effect on tokens issued before it, and scopes added
/// after a token was issued are not conferred on it (a new login gets them).
pub fn effective<S: AsRef<str>, H: AsRef<str>>(token: &[S], held: &[H]) -> Vec<String> {
    Scope::ALL
        .iter()
        .filter(|scope| has_scope(token, **scope) && has_scope(held, **scope))
        .map(|scope| scope.as_str().to_owned())
        .collect()
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = ScopeParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .iter()
            .copied()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| ScopeParseError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn admin_implies_every_scope() {
        for s in Scope::ALL {
            assert!(Scope::Admin.grants(*s));
        }
    }

    #[test]
    fn write_implies_read_of_the_same_area_only() {
        assert!(Scope::JobsWrite.grants(Scope::JobsRead));
        assert!(!Scope::JobsRead.grants(Scope::JobsWrite));
        assert!(!Scope::JobsWrite.grants(Scope::SupervisorRead));
        assert!(!Scope::SupervisorWrite.grants(Scope::Admin));
        assert!(Scope::ResourcesWrite.grants(Scope::ResourcesRead));
    }

    #[test]
    fn has_scope_ignores_unknown_strings() {
        assert!(has_scope(&["bogus", "jobs:write"], Scope::JobsRead));
        assert!(!has_scope(&["bogus", "jobs:*"], Scope::JobsRead));
        assert!(!has_scope::<&str>(&[], Scope::JobsRead));
    }

    #[test]
    fn parse_round_trips_and_rejects_unknown() {
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>().unwrap(), *s);
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""));
        }
        assert_eq!(
            "root".parse::<Scope>().unwrap_err().to_string(),
            "unknown scope: \"root\""
        );
    }

    #[test]
    fn effective_scopes_are_what_both_the_token_and_the_user_grant() {
        assert_eq!(effective(&["jobs:write"], &["jobs:read"]), ["jobs:read"]);
        assert_eq!(
            effective(&["admin"], &["jobs:write"]),
            ["jobs:read", "jobs:write"]
        );
        assert_eq!(effective(&["jobs:read"], &["admin"]), ["jobs:read"]);
        assert!(effective(&["jobs:write"], &["supervisor:write"]).is_empty());
        assert!(effective::<&str, &str>(&["jobs:write"], &[]).is_empty());
        assert!(effective(&["bogus"], &["bogus"]).is_empty());
    }

    fn scope_sets() -> impl Strategy<Value = Vec<&'static str>> {
        proptest::sample::subsequence(Scope::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(), 0..=4)
    }

    proptest! {
        /// A request may use a scope exactly when the token and the user's
        /// current scopes both grant it: a cut applies, an addition is not
        /// conferred, and nothing else changes.
        #[test]
        fn effective_scopes_grant_exactly_what_both_grant(token in scope_sets(), held in scope_sets()) {
            let now = effective(&token, &held);
            for required in Scope::ALL {
                prop_assert_eq!(
                    has_scope(&now, *required),
                    has_scope(&token, *required) && has_scope(&held, *required)
                );
            }
            // A user who kept (or gained) every scope of the token keeps
            // exactly the token's rights.
            if token.iter().all(|s| held.contains(s)) {
                for required in Scope::ALL {
                    prop_assert_eq!(has_scope(&now, *required), has_scope(&token, *required));
                }
            }
        }

        /// Only admin grants admin, and no non-admin scope grants another
        /// area's scope.
        #[test]
        fn grants_never_cross_areas(a in proptest::sample::select(Scope::ALL.to_vec()),
                                    b in proptest::sample::select(Scope::ALL.to_vec())) {
            if a != Scope::Admin && a.grants(b) {
                prop_assert_eq!(a.as_str().split(':').next(), b.as_str().split(':').next());
                prop_assert!(b != Scope::Admin);
            }
        }
    }
}
