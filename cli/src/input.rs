//! Parsing and checking of what the user types: labels, placement, pool
//! quotas, times and worker ids.

use crate::args::PlacementArgs;
use crate::error::UsageError;
use chrono::{DateTime, FixedOffset};
use orchestrator_shared::api::Labels;
use orchestrator_shared::validate::{is_valid_worker_id, WORKER_ID_RULE};

/// Parses one `--label key=value` (the value may be empty and may contain `=`).
pub fn parse_label(raw: &str) -> Result<(String, String), String> {
    let (key, value) = raw
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, got {raw:?}"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("label {raw:?} has an empty key"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// The pool and selector of `--pool` and `--selector` (`submit` and
/// `schedules create` alike); a selector key given twice is a usage error.
pub fn placement(args: &PlacementArgs) -> Result<(Option<String>, Labels), UsageError> {
    Ok((args.pool.clone(), labels_map(&args.selector)?))
}

/// A `--pool-quota` value: `pool=N` (a limit) or `pool=none` (lifted).
/// The pool name and the range are checked with the request's other rules.
pub fn parse_pool_quota(raw: &str) -> Result<(String, Option<i64>), String> {
    let (pool, limit) = raw
        .split_once('=')
        .ok_or_else(|| format!("expected pool=N or pool=none, got {raw:?}"))?;
    let limit = match limit.trim() {
        "none" => None,
        n => Some(
            n.parse::<i64>()
                .map_err(|_| format!("{n:?} is neither a whole number nor `none`"))?,
        ),
    };
    Ok((pool.trim().to_owned(), limit))
}

/// The labels of a submission as a map; a key given twice is a usage error
/// rather than a silent choice of one of the values.
pub fn labels_map(pairs: &[(String, String)]) -> Result<Labels, UsageError> {
    let mut labels = Labels::new();
    for (key, value) in pairs {
        if labels.insert(key.clone(), value.clone()).is_some() {
            return Err(UsageError(format!("label {key:?} is given more than once")));
        }
    }
    Ok(labels)
}

/// Parses a `--since` or `--until` time as the server reads it: RFC 3339,
/// its `T` and `Z` in either case, any offset; the server refuses any other
/// text with a 422, so the client refuses it before sending.
pub fn parse_time(raw: &str) -> Result<DateTime<FixedOffset>, String> {
    DateTime::parse_from_rfc3339(&raw.trim().to_ascii_uppercase())
        .map_err(|_| format!("expected an RFC 3339 time such as 2025-03-01T09:30:00Z, got {raw:?}"))
}

/// Checks a worker id with the contract's rule, the one the server
/// enforces, so that an id the server would refuse (or that would change the
/// URL's path, like `..`) is refused before any request.
pub fn parse_worker_id(raw: &str) -> Result<String, String> {
    if is_valid_worker_id(raw) {
        Ok(raw.to_owned())
    } else {
        Err(format!("a worker id {WORKER_ID_RULE}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_splits_at_the_first_equals_sign() {
        assert_eq!(parse_label("team=ml"), Ok(("team".into(), "ml".into())));
        assert_eq!(parse_label("expr=a=b"), Ok(("expr".into(), "a=b".into())));
        assert_eq!(parse_label("flag="), Ok(("flag".into(), String::new())));
        assert_eq!(parse_label(" k =v"), Ok(("k".into(), "v".into())));
    }

    #[test]
    fn label_without_equals_or_key_is_rejected() {
        assert!(parse_label("team").is_err());
        assert!(parse_label("=ml").is_err());
        assert!(parse_label("").is_err());
    }

    #[test]
    fn labels_map_rejects_duplicate_keys() {
        let pairs = vec![("a".to_owned(), "1".to_owned()), ("b".to_owned(), "2".to_owned())];
        let map = labels_map(&pairs).unwrap_or_default();
        assert_eq!(map.len(), 2);
        let duplicate = vec![("a".to_owned(), "1".to_owned()), ("a".to_owned(), "2".to_owned())];
        assert!(labels_map(&duplicate).is_err());
    }

    #[test]
    fn times_are_rfc_3339_as_the_server_reads_them() {
        let utc = parse_time("2025-03-01T09:30:00Z").map(|t| t.to_rfc3339());
        assert_eq!(utc.as_deref(), Ok("2025-03-01T09:30:00+00:00"));
        assert_eq!(
            parse_time("2025-03-01t09:30:00.5z"),
            parse_time("2025-03-01T09:30:00.5Z")
        );
        let offset = parse_time("2025-03-01T11:30:00+02:00").map(|t| t.to_utc());
        assert_eq!(offset, parse_time("2025-03-01T09:30:00Z").map(|t| t.to_utc()));
        for bad in ["2025-03-01", "yesterday", "2025-03-01T09:30:00", "1740821400", ""] {
            let err = parse_time(bad).err().unwrap_or_default();
            assert!(err.contains("RFC 3339"), "{bad}: {err}");
        }
    }

    #[test]
    fn worker_ids_follow_the_contract() {
        for ok in ["w1", "host-1.example:agent_2", "a", &"x".repeat(128)] {
            assert_eq!(parse_worker_id(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in ["", "a/b", "a b", "ü", "..", ".", &"x".repeat(129), "a?b"] {
            assert!(parse_worker_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dot_segments_are_refused_with_the_shared_rule() {
        let rule = format!("a worker id {WORKER_ID_RULE}");
        for dots in [".", ".."] {
            assert_eq!(parse_worker_id(dots), Err(rule.clone()), "{dots}");
        }
        assert!(rule.contains("not . or .."), "{rule}");
        assert_eq!(
            parse_worker_id("..."),
            Ok("...".to_owned()),
            "the server accepts it, so the client does too"
        );
    }

    #[test]
    fn worker_ids_are_checked_exactly_as_the_server_does() {
        let long = "w".repeat(129);
        let samples = [
            "w1",
            "",
            ".",
            "..",
            "...",
            ".a",
            "a..b",
            "é",
            "a/b",
            "x:y-z_1",
            long.as_str(),
        ];
        for id in samples {
            assert_eq!(parse_worker_id(id).is_ok(), is_valid_worker_id(id), "{id}");
        }
    }
}
