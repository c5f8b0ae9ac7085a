//! Worker pools and label selectors: which agents may run which jobs, and
//! the broker routing that follows from it.
//!
//! An agent serves one or more named pools and advertises labels; a job
//! names one pool and may require labels (its *selector*). A job runs only
//! on an agent of its pool whose labels contain every pair of its selector.
//!
//! Routing is done by the broker: jobs of one (pool, selector) pair, a
//! [`JobClass`], travel on one routing key of the work exchange into one
//! queue of their own, and an agent consumes only the queues of classes it
//! matches. The class of pool `default` with no selector keeps the original
//! routing key (`job`) and queue (`<prefix>.jobs`), so agents and
//! controllers that predate pools go on exchanging work as before.
//!
//! Everything here is pure: the controller, the agent and the CLI share
//! one rule for names, one for matching and one for naming queues.

use crate::api::error::FieldError;
use crate::api::Labels;
use sha2::{Digest, Sha256};

/// The pool of a job that names none, and of an agent started without
/// `--pool`.
pub const DEFAULT_POOL: &str = "default";
/// Longest pool name, in characters (a queue name carries it).
pub const MAX_POOL_NAME: usize = 63;
/// Most pools one agent serves.
pub const MAX_POOLS: usize = 16;
/// Most pairs in one selector.
pub const MAX_SELECTOR: usize = 16;
/// Longest selector key or value, in characters.
pub const MAX_SELECTOR_TEXT: usize = 63;
/// The pool-name rule, in words (the 422's message).
pub const POOL_RULE: &str =
    "must be 1 to 63 characters: lowercase letters, digits, '-' and '_', starting with a letter or digit";
/// The selector rule, in words (the 422's message).
pub const SELECTOR_RULE: &str = "at most 16 pairs; keys 1 to 63 characters of letters, digits, '-', '_', '.' and '/', starting with a letter or digit; values up to 63 characters of letters, digits, '-', '_' and '.'";
/// Routing-key prefix of every job class but the default one, which keeps
/// the original key itself.
const CLASS_KEY_PREFIX: &str = "job.";
/// Hex digits of the selector's SHA-256 kept in a class's name: 128 bits,
/// so two selectors never share a queue by accident (nor by a crafted
/// collision, which would let one user's jobs reach agents that cannot
/// run them).
const SELECTOR_HASH_HEX: usize = 32;

/// [`DEFAULT_POOL`], owned: the serde default of a job's `pool`.
pub fn default_pool() -> String {
    DEFAULT_POOL.to_owned()
}

/// Whether `pool` is the default one: a submission's stored form leaves it
/// out then, so its idempotency hash is the one from before pools.
pub fn is_default_pool(pool: &str) -> bool {
    pool == DEFAULT_POOL
}

/// [`is_default_pool`] in the form serde's `skip_serializing_if` calls.
#[allow(clippy::ptr_arg)]
pub fn is_default_pool_ref(pool: &String) -> bool {
    is_default_pool(pool)
}

/// The problems of a submission's `pool` and `selector` (the 422's
/// entries at `["body", "pool"]` and `["body", "selector"]`).
pub fn placement_problems(pool: Option<&str>, selector: &Labels) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if pool.is_some_and(|p| !is_valid_pool(p)) {
        errors.push(FieldError::body("pool", POOL_RULE));
    }
    if !is_valid_selector(selector) {
        errors.push(FieldError::body("selector", SELECTOR_RULE));
    }
    errors
}

/// The problems of the pools an agent registers with (`["body", "pools"]`).
pub fn pools_problems(pools: &[String]) -> Vec<FieldError> {
    if pools.len() > MAX_POOLS || !pools.iter().all(|p| is_valid_pool(p)) {
        vec![FieldError::body(
            "pools",
            format!("at most {MAX_POOLS} pools, each a name that {POOL_RULE}"),
        )]
    } else {
        Vec::new()
    }
}

/// Whether `name` is a valid pool name (see [`POOL_RULE`]). No dots: a
/// pool's name is one segment of its queues' names.
pub fn is_valid_pool(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    first_ok
        && name.len() <= MAX_POOL_NAME
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Whether `selector` is syntactically valid (see [`SELECTOR_RULE`]).
/// Narrower than labels in general, so that a selector prints unambiguously
/// as `k=v,k=v` and every pair can be matched against an agent's labels.
pub fn is_valid_selector(selector: &Labels) -> bool {
    let key_ok = |k: &str| {
        k.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && k.len() <= MAX_SELECTOR_TEXT
            && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    };
    let value_ok = |v: &str| {
        v.len() <= MAX_SELECTOR_TEXT && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    selector.len() <= MAX_SELECTOR && selector.iter().all(|(k, v)| key_ok(k) && value_ok(v))
}

/// Whether an agent with `labels` satisfies `selector`: it carries every
/// pair, with the same value (extra labels do not matter).
pub fn selector_matches(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `selector` as people read it: `zone=eu-1,os=linux` (sorted by key).
pub fn selector_text(selector: &Labels) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The jobs that share one broker queue: a pool and a selector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobClass<'a> {
    /// The pool the jobs name.
    pub pool: &'a str,
    /// The labels they require.
    pub selector: &'a Labels,
}

impl JobClass<'_> {
    /// Whether this is the original class (pool `default`, no selector),
    /// routed and queued as before pools existed.
    pub fn is_default(&self) -> bool {
        self.pool == DEFAULT_POOL && self.selector.is_empty()
    }

    /// The class's routing key on the work exchange: `job` for the default
    /// class, `job.<pool>` for a pool without a selector, and
    /// `job.<pool>.<first 32 hex digits of the selector's SHA-256>`
    /// otherwise (a selector may be longer than a name may be).
    pub fn routing_key(&self) -> String {
        if self.is_default() {
            return crate::messages::WORK_ROUTING_KEY.to_owned();
        }
        if self.selector.is_empty() {
            return format!("{CLASS_KEY_PREFIX}{}", self.pool);
        }
        let canonical: String = self.selector.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let digest = Sha256::digest(canonical.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{CLASS_KEY_PREFIX}{}.{}", self.pool, &hex[..SELECTOR_HASH_HEX])
    }

    /// Why a job of this class waits when no live agent matches it, for
    /// the job's `waiting_for`: `no live agent in pool gpu with zone=eu-1`.
    pub fn no_agent_reason(&self) -> String {
        if self.selector.is_empty() {
            format!("no live agent in pool {}", self.pool)
        } else {
            format!(
                "no live agent in pool {} with {}",
                self.pool,
                selector_text(self.selector)
            )
        }
    }
}

/// The queue suffix a work routing key stands for: `""` for the default
/// key (`<prefix>.jobs`), `.<rest>` for `job.<rest>` (`<prefix>.jobs.<rest>`),
/// `None` for a key that names no class.
pub fn class_queue_suffix(routing_key: &str) -> Option<String> {
    if routing_key == crate::messages::WORK_ROUTING_KEY {
        return Some(String::new());
    }
    let rest = routing_key.strip_prefix(CLASS_KEY_PREFIX)?;
    let mut parts = rest.split('.');
    let pool = parts.next()?;
    let hash = parts.next();
    let hash_ok =
        hash.is_none_or(|h| h.len() == SELECTOR_HASH_HEX && h.chars().all(|c| c.is_ascii_hexdigit()));
    (is_valid_pool(pool) && hash_ok && parts.next().is_none()).then(|| format!(".{rest}"))
}

/// The pools an agent serves, as given: [`DEFAULT_POOL`] when none is,
/// duplicates dropped, order kept.
pub fn agent_pools(given: &[String]) -> Vec<String> {
    let mut pools: Vec<String> = Vec::with_capacity(given.len().max(1));
    for p in given {
        if !pools.contains(p) {
            pools.push(p.clone());
        }
    }
    if pools.is_empty() {
        pools.push(DEFAULT_POOL.to_owned());
    }
    pools
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn pool_names_are_one_lowercase_segment() {
        for ok in ["default", "gpu", "a", "eu-1_big", "0", &"p".repeat(63)] {
            assert!(is_valid_pool(ok), "{ok}");
        }
        for bad in ["", "GPU", "-x", "_x", "a.b", "a b", "gpü", &"p".repeat(64)] {
            assert!(!is_valid_pool(bad), "{bad}");
        }
    }

    #[test]
    fn selectors_are_checked_pair_by_pair() {
        assert!(is_valid_selector(&Labels::new()));
        assert!(is_valid_selector(&labels(&[
            ("zone", "eu-1"),
            ("k8s.io/arch", "x86_64"),
            ("gpu", "")
        ])));
        for bad in [
            labels(&[("", "v")]),
            labels(&[("-k", "v")]),
            labels(&[("k", "a,b")]),
            labels(&[("k", "a=b")]),
            labels(&[("k=", "v")]),
            labels(&[("k", &"v".repeat(64))]),
            labels(&[(&"k".repeat(64), "v")]),
        ] {
            assert!(!is_valid_selector(&bad), "{bad:?}");
        }
        let many: Labels = (0..17).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert!(!is_valid_selector(&many));
    }

    #[test]
    fn an_agent_matches_when_it_carries_every_pair() {
        let agent = labels(&[("zone", "a"), ("os", "linux")]);
        assert!(selector_matches(&Labels::new(), &agent));
        assert!(selector_matches(&labels(&[("zone", "a")]), &agent));
        assert!(selector_matches(&agent, &agent));
        assert!(!selector_matches(&labels(&[("zone", "b")]), &agent));
        assert!(!selector_matches(&labels(&[("zone", "a"), ("gpu", "")]), &agent));
        assert!(!selector_matches(&labels(&[("zone", "a")]), &Labels::new()));
    }

    #[test]
    fn the_default_class_keeps_the_original_routing_key_and_queue() {
        let none = Labels::new();
        let class = JobClass {
            pool: DEFAULT_POOL,
            selector: &none,
        };
        assert!(class.is_default());
        assert_eq!(class.routing_key(), "job");
        assert_eq!(class_queue_suffix("job").as_deref(), Some(""));
        let gpu = JobClass {
            pool: "gpu",
            selector: &none,
        };
        assert_eq!(gpu.routing_key(), "job.gpu");
        assert_eq!(class_queue_suffix("job.gpu").as_deref(), Some(".gpu"));
    }

    #[test]
    fn a_selector_names_its_class_by_hash_whatever_its_order() {
        let a = labels(&[("zone", "a"), ("os", "linux")]);
        let key = JobClass {
            pool: "gpu",
            selector: &a,
        }
        .routing_key();
        assert!(key.starts_with("job.gpu."), "{key}");
        assert_eq!(key.len(), "job.gpu.".len() + 32);
        assert_eq!(class_queue_suffix(&key), Some(key["job".len()..].to_owned()));
        let zone_b = labels(&[("zone", "b"), ("os", "linux")]);
        assert_ne!(
            JobClass {
                pool: "gpu",
                selector: &zone_b
            }
            .routing_key(),
            key
        );
        assert_ne!(
            JobClass {
                pool: "cpu",
                selector: &a
            }
            .routing_key(),
            key
        );
        // A pair boundary cannot be moved to make two selectors one.
        let x = labels(&[("a", "b"), ("c", "d")]);
        let y = labels(&[("a", "bc"), ("", "d")]);
        assert_ne!(
            JobClass {
                pool: "p",
                selector: &x
            }
            .routing_key(),
            JobClass {
                pool: "p",
                selector: &y
            }
            .routing_key()
        );
    }

    #[test]
    fn keys_that_name_no_class_have_no_queue() {
        for bad in [
            "",
            "jobs",
            "job.",
            "job.GPU",
            "job.gpu.xyz",
            "job.gpu.abc.def",
            "control",
        ] {
            assert_eq!(class_queue_suffix(bad), None, "{bad}");
        }
    }

    #[test]
    fn waiting_reasons_name_the_pool_and_the_selector() {
        let none = Labels::new();
        let zone = labels(&[("zone", "eu-1")]);
        assert_eq!(
            JobClass {
                pool: "gpu",
                selector: &zone
            }
            .no_agent_reason(),
            "no live agent in pool gpu with zone=eu-1"
        );
        assert_eq!(
            JobClass {
                pool: "gpu",
                selector: &none
            }
            .no_agent_reason(),
            "no live agent in pool gpu"
        );
    }

    #[test]
    fn an_agent_without_pools_serves_the_default_one() {
        assert_eq!(agent_pools(&[]), ["default"]);
        let given = ["gpu".to_owned(), "default".to_owned(), "gpu".to_owned()];
        assert_eq!(agent_pools(&given), ["gpu", "default"]);
    }

    proptest! {
        #[test]
        fn every_valid_class_has_a_queue_its_key_names(
            pool in "[a-z0-9][a-z0-9_-]{0,62}",
            pairs in proptest::collection::btree_map("[a-z][a-z0-9./_-]{0,20}", "[a-z0-9._-]{0,20}", 0..5),
        ) {
            prop_assert!(is_valid_pool(&pool));
            prop_assert!(is_valid_selector(&pairs));
            let key = JobClass { pool: &pool, selector: &pairs }.routing_key();
            prop_assert!(key.len() <= 255);
            prop_assert!(class_queue_suffix(&key).is_some());
            prop_assert!(selector_matches(&pairs, &pairs));
        }
    }
}
