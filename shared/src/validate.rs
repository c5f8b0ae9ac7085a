//! Input rules that the controller, the agents and the command-line client
//! enforce the same way: worker ids, and the durations of both daemons'
//! settings (read once, at start-up, into a `Duration`).

use std::time::Duration;

/// Longest worker id the contract allows.
pub const MAX_WORKER_ID_LEN: usize = 128;

/// The worker-id rule in words, for error messages.
pub const WORKER_ID_RULE: &str = "must be 1 to 128 characters of [A-Za-z0-9._:-], and not . or ..";

/// Whether `id` is a valid worker id: 1–128 chars of `[A-Za-z0-9._:-]`
/// (also a check constraint in the schema), and not `.` or `..`, which a
/// URL path would read as "this" or "parent" segments, so that such a
/// worker could never be addressed by `/api/supervisor/workers/{id}`.
pub fn is_valid_worker_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_WORKER_ID_LEN
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Parses a setting given in milliseconds (`--heartbeat-ms 2000`) into a
/// `Duration`, for clap's `value_parser`: the unit stays in the flag's name,
/// the code only ever sees a `Duration`.
pub fn millis(raw: &str) -> Result<Duration, String> {
    whole_number(raw).map(Duration::from_millis)
}

/// Like [`millis`], but zero is refused: for periods (a heartbeat every
/// 0 ms would spin).
pub fn positive_millis(raw: &str) -> Result<Duration, String> {
    match millis(raw)? {
        Duration::ZERO => Err("must be at least 1 ms".to_owned()),
        d => Ok(d),
    }
}

/// Parses a setting given in seconds (`--token-ttl-seconds 3600`) into a
/// `Duration`, for clap's `value_parser`.
pub fn seconds(raw: &str) -> Result<Duration, String> {
    whole_number(raw).map(Duration::from_secs)
}

fn whole_number(raw: &str) -> Result<u64, String> {
    raw.trim()
        .parse::<u64>()
        .map_err(|_| format!("{raw:?} is not a whole, non-negative number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_hostnames_and_rejects_others() {
        assert!(is_valid_worker_id("agent-1.example:7"));
        assert!(is_valid_worker_id("..."));
        assert!(!is_valid_worker_id(""));
        assert!(!is_valid_worker_id("."));
        assert!(!is_valid_worker_id(".."));
        assert!(!is_valid_worker_id("a b"));
        assert!(!is_valid_worker_id("a/b"));
        assert!(!is_valid_worker_id("é"));
        assert!(!is_valid_worker_id(&"a".repeat(129)));
        assert!(is_valid_worker_id(&"a".repeat(128)));
    }

    #[test]
    fn durations_keep_their_unit_and_refuse_non_numbers() {
        assert_eq!(millis("250"), Ok(Duration::from_millis(250)));
        assert_eq!(seconds("3600"), Ok(Duration::from_secs(3600)));
        assert_eq!(seconds("0"), Ok(Duration::ZERO));
        for bad in ["", "-1", "1.5", "10s", "ten"] {
            assert!(millis(bad).is_err(), "{bad}");
        }
        assert!(positive_millis("0").is_err());
        assert_eq!(positive_millis("1"), Ok(Duration::from_millis(1)));
    }

    proptest! {
        #[test]
        fn matches_the_contract_regex(id in "\\PC{0,140}") {
            let expected = !id.is_empty() && id.len() <= 128 && id != "." && id != ".."
                && id.chars().all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c));
            prop_assert_eq!(is_valid_worker_id(&id), expected);
        }
    }
}
