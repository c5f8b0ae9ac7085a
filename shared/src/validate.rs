//! Input rules that the controller, the agents and the command-line client
//! enforce the same way.

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

    proptest! {
        #[test]
        fn matches_the_contract_regex(id in "\\PC{0,140}") {
            let expected = !id.is_empty() && id.len() <= 128 && id != "." && id != ".."
                && id.chars().all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c));
            prop_assert_eq!(is_valid_worker_id(&id), expected);
        }
    }
}
