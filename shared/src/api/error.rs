//! Error bodies. Every error is `{"detail": "..."}` except a 422, whose
//! detail lists each problem with its location; the fixed texts that
//! clients match on are constants here.

use serde::{Deserialize, Serialize};

/// The 401 detail for every kind of bad token.
pub const INVALID_CREDENTIALS: &str = "Invalid authentication credentials";
/// The 401 detail when no token was sent.
pub const NOT_AUTHENTICATED: &str = "Not authenticated";
/// The 401 detail of a failed login, the same for an unknown user and a
/// wrong password.
pub const BAD_LOGIN: &str = "Incorrect username or password";

/// One entry of a 422 body: where, what, and what kind of problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// Path to the offending value, e.g. `["body", "required_workers"]`.
    pub loc: Vec<String>,
    /// Human-readable message.
    pub msg: String,
    /// Machine-readable kind (`missing`, `type_error`, `value_error`, `json_invalid`).
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldError {
    /// A problem at `loc` of kind `value_error` (a range or format rule).
    fn value_error(loc: Vec<String>, msg: impl Into<String>) -> Self {
        FieldError {
            loc,
            msg: msg.into(),
            kind: "value_error".to_owned(),
        }
    }

    /// A range or format violation of the body field `field`.
    pub fn body(field: &str, msg: impl Into<String>) -> Self {
        Self::value_error(vec!["body".to_owned(), field.to_owned()], msg)
    }

    /// A violation in the query string.
    pub fn query(field: &str, msg: impl Into<String>) -> Self {
        Self::value_error(vec!["query".to_owned(), field.to_owned()], msg)
    }

    /// A violation in the path.
    pub fn path(field: &str, msg: impl Into<String>) -> Self {
        Self::value_error(vec!["path".to_owned(), field.to_owned()], msg)
    }

    /// A violation in a request header (`Last-Event-ID`).
    pub fn header(name: &str, msg: impl Into<String>) -> Self {
        Self::value_error(vec!["header".to_owned(), name.to_owned()], msg)
    }

    /// The location joined with dots (`body.jobs.3.priority`), for people.
    pub fn location(&self) -> String {
        self.loc.join(".")
    }
}

/// Body of every error response with a text detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub detail: String,
}

/// Body of a 422 response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidationBody {
    /// Every problem found.
    pub detail: Vec<FieldError>,
}

/// The NUL rule in words. Postgres refuses U+0000 in `text` and `jsonb`
/// values, so a NUL that reached it was a 500; every text field a request
/// stores is held to this rule instead, through [`check_no_nul`].
pub const NO_NUL: &str = "must not contain the NUL character (U+0000)";

/// Appends one `value_error` on body field `field` if any of `texts` holds
/// a NUL character (see [`NO_NUL`]): the one check of that rule, for plain
/// strings, label keys and values, and command arguments alike.
pub(crate) fn check_no_nul<'a>(
    errors: &mut Vec<FieldError>,
    field: &str,
    texts: impl IntoIterator<Item = &'a str>,
) {
    if texts.into_iter().any(|t| t.contains('\0')) {
        errors.push(FieldError::body(field, NO_NUL));
    }
}

/// Appends a `value_error` on body field `field` unless `lo <= value <= hi`.
pub(crate) fn check_range(errors: &mut Vec<FieldError>, field: &str, value: i64, lo: i64, hi: i64) {
    if !(lo..=hi).contains(&value) {
        errors.push(FieldError::body(field, format!("must be between {lo} and {hi}")));
    }
}

/// The `value_error` on body field `field`, a list of `len` entries,
/// unless it holds 1 to `max` of them (`must hold 1 to 500 claims`: `verb`
/// then `noun`): the one bound check of the batch requests' lists.
pub(crate) fn count_problem(
    field: &str,
    len: usize,
    max: usize,
    verb: &str,
    noun: &str,
) -> Option<FieldError> {
    (len == 0 || len > max).then(|| FieldError::body(field, format!("must {verb} 1 to {max} {noun}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_nul_anywhere_in_any_text_is_one_problem_at_the_field(
            texts in proptest::collection::vec("\\PC{0,8}", 0..4),
            at in 0usize..4,
            nul in any::<bool>(),
        ) {
            let mut texts = texts;
            if nul {
                texts.insert(at.min(texts.len()), "x\0y".to_owned());
            }
            let mut errors = Vec::new();
            check_no_nul(&mut errors, "f", texts.iter().map(String::as_str));
            // `\PC` draws no control character, so only the inserted text holds a NUL.
            prop_assert_eq!(errors.len(), usize::from(nul));
            prop_assert!(errors.iter().all(|e| e.location() == "body.f" && e.msg == NO_NUL));
        }
    }

    #[test]
    fn a_list_must_hold_1_to_its_bound() {
        let problem = |len| count_problem("claims", len, 500, "hold", "claims");
        assert_eq!((problem(1), problem(500)), (None, None));
        for len in [0, 501] {
            let e = problem(len).unwrap();
            assert_eq!(
                (e.location(), e.msg.as_str()),
                ("body.claims".to_owned(), "must hold 1 to 500 claims")
            );
        }
    }

    #[test]
    fn field_errors_serialise_their_kind_as_type() {
        let e = FieldError::query("limit", "must be between 1 and 500");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"loc": ["query", "limit"], "msg": "must be between 1 and 500", "type": "value_error"})
        );
        assert_eq!(e.location(), "query.limit");
    }
}
