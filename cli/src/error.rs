//! The errors that decide the exit status, and that status.
//!
//! Exit status 2 means "the request was wrong" (bad arguments, or an HTTP 4xx
//! answer: not authenticated, missing scope, unknown id, conflict, invalid
//! body); 1 means anything else went wrong (HTTP 5xx, network, local I/O, a
//! waited-for job that did not complete).

use crate::render;
use orchestrator_shared::api::FieldError;
use orchestrator_shared::tls::TlsFailure;
use serde_json::Value;
use std::fmt;

/// Exit status for failures that are not the user's request's fault.
pub const EXIT_FAILURE: u8 = 1;

/// Exit status for usage errors and HTTP 4xx answers.
pub const EXIT_USAGE: u8 = 2;

/// An error answer from the controller: its status and its `detail`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// The body's `detail`: a string, or for 422 a list of `{loc, msg, type}`.
    pub detail: Value,
    /// The `Retry-After` header (429, 503), in seconds, when the server sent one.
    pub retry_after: Option<String>,
}

impl ApiError {
    /// Whether the request itself was at fault (4xx), as opposed to the server.
    pub fn is_client_error(&self) -> bool {
        (400..500).contains(&self.status)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match render::detail_lines(&self.detail).as_slice() {
            [] => write!(f, "HTTP {}", self.status)?,
            [one] => write!(f, "{one} (HTTP {})", self.status)?,
            many => {
                write!(f, "request rejected (HTTP {}):", self.status)?;
                for line in many {
                    write!(f, "\n  {line}")?;
                }
            }
        }
        if let Some(seconds) = &self.retry_after {
            write!(f, "; retry after {seconds} s")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// A mistake in what the user asked for, found before any request was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

impl UsageError {
    /// Refuses a request that breaks the contract's rules (`problems`, as the
    /// shared type's `problems()` finds them) before it is sent, listing each
    /// as `loc: msg`, as the server's 422 would.
    pub fn check(problems: &[FieldError]) -> Result<(), UsageError> {
        if problems.is_empty() {
            return Ok(());
        }
        let mut text = String::from("invalid request (not sent):");
        for problem in problems {
            text.push_str("\n  ");
            text.push_str(&render::problem_line(&problem.location(), &problem.msg));
        }
        Err(UsageError(text))
    }
}

/// The TLS handshake with the controller failed: its certificate is not
/// trusted, or it does not speak TLS. Said in one line with what to do;
/// retrying will not change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsRefused {
    /// The controller's origin (`https://host:port`).
    pub origin: String,
    /// What went wrong.
    pub failure: TlsFailure,
}

impl fmt::Display for TlsRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            TlsFailure::Untrusted(why) => write!(
                f,
                "the certificate of the controller at {} is not trusted ({why}); pass --ca-file \
                 FILE (or set ORCH_CA_FILE) naming the CA that signed it",
                self.origin
            ),
            TlsFailure::NotTls => write!(
                f,
                "the controller at {} does not speak TLS; use its http:// URL if it serves plain HTTP",
                self.origin
            ),
        }
    }
}

impl std::error::Error for TlsRefused {}

/// A successful answer that does not have the contract's shape: the
/// controller and this client disagree on the contract, which no retry fixes.
#[derive(Debug)]
pub struct UnexpectedAnswer {
    /// The contract type the answer was read as (`Job`, `WorkerList`, ...).
    pub expected: &'static str,
    /// Why it could not be read.
    pub source: serde_json::Error,
}

impl fmt::Display for UnexpectedAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the controller's answer was not understood (expected a {})",
            self.expected
        )
    }
}

impl std::error::Error for UnexpectedAnswer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The exit status for `err`: [`EXIT_USAGE`] when it is (or was caused by) a
/// [`UsageError`] or a 4xx [`ApiError`], else [`EXIT_FAILURE`].
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(api) = cause.downcast_ref::<ApiError>() {
            return if api.is_client_error() {
                EXIT_USAGE
            } else {
                EXIT_FAILURE
            };
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return EXIT_USAGE;
        }
    }
    EXIT_FAILURE
}

/// What to suggest after `err`: for a 401, how to get a (new) token.
pub fn hint(err: &anyhow::Error) -> Option<&'static str> {
    let api = err.chain().find_map(|cause| cause.downcast_ref::<ApiError>())?;
    (api.status == 401)
        .then_some("hint: run `orchestrator login --username <name>`, or pass --token / ORCH_TOKEN")
}

/// Whether `err` may go away by itself (network trouble, a 5xx answer), as
/// opposed to a 4xx answer or an answer not understood, which will be the
/// same on every retry.
pub fn is_transient(err: &anyhow::Error) -> bool {
    if err
        .chain()
        .any(|cause| cause.is::<UnexpectedAnswer>() || cause.is::<TlsRefused>())
    {
        return false;
    }
    err.chain()
        .find_map(|cause| cause.downcast_ref::<ApiError>())
        .is_none_or(|api| !api.is_client_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;
    use serde_json::json;

    fn api(status: u16, detail: Value) -> ApiError {
        ApiError {
            status,
            detail,
            retry_after: None,
        }
    }

    #[test]
    fn client_errors_exit_2_and_server_errors_exit_1() {
        for status in [400, 401, 403, 404, 409, 413, 422, 429] {
            assert_eq!(exit_code(&api(status, json!("x")).into()), EXIT_USAGE, "{status}");
        }
        for status in [500, 502, 503] {
            assert_eq!(
                exit_code(&api(status, json!("x")).into()),
                EXIT_FAILURE,
                "{status}"
            );
        }
    }

    #[test]
    fn exit_code_looks_through_context() {
        let err = anyhow::Error::from(api(404, json!("Job x not found"))).context("showing job x");
        assert_eq!(exit_code(&err), EXIT_USAGE);
        let err = Err::<(), _>(UsageError("bad label".into())).context("submit");
        assert_eq!(exit_code(&err.unwrap_err()), EXIT_USAGE);
    }

    #[test]
    fn other_errors_exit_1() {
        assert_eq!(exit_code(&anyhow::anyhow!("connection refused")), EXIT_FAILURE);
    }

    #[test]
    fn transient_means_not_a_client_error() {
        assert!(is_transient(&anyhow::anyhow!("connection refused")));
        assert!(is_transient(&api(503, json!("broker down")).into()));
        assert!(!is_transient(&api(404, json!("gone")).into()));
    }

    #[test]
    fn display_shows_detail_and_status() {
        assert_eq!(
            api(409, json!("Invalid job transition: completed -> cancelled")).to_string(),
            "Invalid job transition: completed -> cancelled (HTTP 409)"
        );
        assert_eq!(api(500, json!(null)).to_string(), "HTTP 500");
    }

    #[test]
    fn display_lists_each_validation_problem() {
        let detail = json!([
            {"loc": ["body", "required_workers"], "msg": "must be between 1 and 64"},
            {"loc": ["body", "priority"], "msg": "must be between 0 and 9"}
        ]);
        assert_eq!(
            api(422, detail).to_string(),
            "request rejected (HTTP 422):\n  body.required_workers: must be between 1 and 64\n  body.priority: must be between 0 and 9"
        );
    }

    #[test]
    fn display_adds_retry_after() {
        let mut limited = api(429, json!("Too many login attempts"));
        limited.retry_after = Some("30".into());
        assert_eq!(
            limited.to_string(),
            "Too many login attempts (HTTP 429); retry after 30 s"
        );
        assert_eq!(
            api(401, json!("Not authenticated")).to_string(),
            "Not authenticated (HTTP 401)"
        );
    }

    #[test]
    fn contract_problems_are_a_usage_error_listing_each() {
        assert_eq!(UsageError::check(&[]), Ok(()));
        let problems = [
            FieldError::body("priority", "must be between 0 and 9"),
            FieldError::body("labels", "at most 64 labels"),
        ];
        let err = UsageError::check(&problems).err();
        assert_eq!(
            err.map(|e| e.0).as_deref(),
            Some("invalid request (not sent):\n  body.priority: must be between 0 and 9\n  body.labels: at most 64 labels")
        );
        let err = anyhow::Error::from(UsageError::check(&problems).unwrap_err());
        assert_eq!(exit_code(&err), EXIT_USAGE);
    }

    #[test]
    fn an_answer_not_understood_is_a_lasting_failure() {
        let source = serde_json::from_value::<u8>(json!("x")).unwrap_err();
        let err = anyhow::Error::from(UnexpectedAnswer {
            expected: "Job",
            source,
        })
        .context("showing job x");
        assert_eq!(exit_code(&err), EXIT_FAILURE);
        assert!(!is_transient(&err));
        let text = format!("{err:#}");
        let expected =
            "showing job x: the controller's answer was not understood (expected a Job): invalid type";
        assert!(text.starts_with(expected), "{text}");
    }

    #[test]
    fn a_refused_certificate_is_one_line_naming_the_fix_and_lasting() {
        let err = anyhow::Error::from(TlsRefused {
            origin: "https://ctl:8443".into(),
            failure: TlsFailure::Untrusted("it is signed by a CA this client does not trust".into()),
        });
        let text = format!("{err:#}");
        assert!(!text.contains('\n'), "{text}");
        assert!(
            text.contains("https://ctl:8443") && text.contains("--ca-file"),
            "{text}"
        );
        assert!(!is_transient(&err));
        assert_eq!(exit_code(&err), EXIT_FAILURE);
    }

    #[test]
    fn only_401_gets_the_login_hint() {
        let unauthenticated =
            anyhow::Error::from(api(401, json!("Not authenticated"))).context("listing jobs");
        assert!(hint(&unauthenticated).is_some_and(|h| h.contains("orchestrator login")));
        assert_eq!(
            hint(&api(403, json!("Missing required scope: jobs:write")).into()),
            None
        );
        assert_eq!(hint(&anyhow::anyhow!("refused")), None);
    }
}
