//! Parsing and checking of what the user types: labels and worker ids.

use crate::error::UsageError;
use std::collections::BTreeMap;

/// Longest worker id the contract allows.
pub const MAX_WORKER_ID_CHARS: usize = 128;

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

/// The labels of a submission as a map; a key given twice is a usage error
/// rather than a silent choice of one of the values.
pub fn labels_map(pairs: &[(String, String)]) -> Result<BTreeMap<String, String>, UsageError> {
    let mut labels = BTreeMap::new();
    for (key, value) in pairs {
        if labels.insert(key.clone(), value.clone()).is_some() {
            return Err(UsageError(format!("label {key:?} is given more than once")));
        }
    }
    Ok(labels)
}

/// Checks a worker id against the contract: 1 to 128 characters of
/// `[A-Za-z0-9._:-]`, and not `.` or `..` (which would change the URL's path).
pub fn parse_worker_id(raw: &str) -> Result<String, String> {
    let count = raw.chars().count();
    if count == 0 || count > MAX_WORKER_ID_CHARS {
        return Err(format!(
            "a worker id has 1 to {MAX_WORKER_ID_CHARS} characters, got {count}"
        ));
    }
    if let Some(bad) = raw
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._:-".contains(*c)))
    {
        return Err(format!(
            "a worker id may not contain {bad:?} (allowed: A-Z a-z 0-9 . _ : -)"
        ));
    }
    if raw.chars().all(|c| c == '.') {
        return Err(format!("{raw:?} is not a worker id"));
    }
    Ok(raw.to_owned())
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
    fn worker_ids_follow_the_contract() {
        for ok in ["w1", "host-1.example:agent_2", "a", &"x".repeat(128)] {
            assert_eq!(parse_worker_id(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in ["", "a/b", "a b", "ü", "..", ".", &"x".repeat(129), "a?b"] {
            assert!(parse_worker_id(bad).is_err(), "{bad}");
        }
    }
}
