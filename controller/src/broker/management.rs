//! A thin client of RabbitMQ's management HTTP API: the few calls that
//! broker accounts need (users, permissions, a queue and its binding,
//! closing a user's connections), as the controller's broker admin.
//!
//! Not the `rabbitmq_http_client` crate: it targets RabbitMQ 3.13 and 4.x
//! (our broker is 3.10), needs a newer Rust than this workspace, and brings
//! its own HTTP and crypto stacks for five calls.

use orchestrator_shared::tls::CaBundle;
use orchestrator_shared::Secret;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, StatusCode};
use std::time::Duration;

/// Longest one management call may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait to connect to the management listener.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// What stays unescaped in a path segment: RFC 3986's unreserved
/// characters. Everything else (`/` in the default vhost's name, `:` in
/// worker ids) is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Why a broker account could not be set up or removed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The management API did not answer (down, unreachable, too slow).
    #[error("the broker's management API could not be reached: {0}")]
    Unreachable(reqwest::Error),
    /// The management API refused a call.
    #[error("the broker's management API answered {status} to {method} {path}")]
    Status {
        /// The call's method.
        method: Method,
        /// The call's path (names only, never a secret).
        path: String,
        /// The answer's status.
        status: StatusCode,
    },
    /// The exchange the control queue binds to does not exist yet: no
    /// controller has declared the topology on this broker.
    #[error("the broker's topology is not declared yet (no exchange {0})")]
    TopologyMissing(String),
    /// The controller's AMQP URL does not parse.
    #[error("the AMQP URL does not parse")]
    InvalidAmqpUrl,
    /// The management URL is not an `http://` or `https://` URL.
    #[error("the broker management URL must start with http:// or https://")]
    InvalidManagementUrl,
    /// The HTTP client could not be built.
    #[error("building the management API client: {0}")]
    Client(reqwest::Error),
    /// The system's random number generator failed.
    #[error("the system's random number generator failed")]
    NoRandomness,
}

impl AccountError {
    /// `other` if this is a 404 answer, else this error unchanged.
    pub(super) fn missing_as(self, other: AccountError) -> AccountError {
        match self {
            AccountError::Status {
                status: StatusCode::NOT_FOUND,
                ..
            } => other,
            e => e,
        }
    }
}

/// Calls to close a user's connections before its 5xx answer is final.
const CLOSE_ATTEMPTS: u32 = 4;
/// Pause between those calls.
const CLOSE_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// The management API of one broker, called as one user.
pub(super) struct ManagementApi {
    /// Pooled HTTP client with timeouts.
    http: reqwest::Client,
    /// `http://host:15672/api`, without a trailing slash.
    base: String,
    /// The broker user the controller manages accounts as.
    user: String,
    /// Its password.
    password: Secret,
}

impl std::fmt::Debug for ManagementApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagementApi")
            .field("base", &self.base)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl ManagementApi {
    /// A client of the management API at `url` (`https://rabbitmq:15671`,
    /// or `http://` inside a private network), trusting the system's roots
    /// and `ca`, the private CA of the broker's certificate, if given.
    pub(super) fn new(
        url: &str,
        user: String,
        password: Secret,
        ca: Option<&CaBundle>,
    ) -> Result<ManagementApi, AccountError> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(AccountError::InvalidManagementUrl);
        }
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(ca) = ca {
            let certificates =
                reqwest::Certificate::from_pem_bundle(ca.pem().as_bytes()).map_err(AccountError::Client)?;
            builder = builder.tls_certs_merge(certificates);
        }
        let http = builder.build().map_err(AccountError::Client)?;
        Ok(ManagementApi {
            http,
            base: format!("{}/api", url.trim_end_matches('/')),
            user,
            password,
        })
    }

    /// `PUT` of a JSON body; any 2xx is success (201 created, 204 updated).
    pub(super) async fn put(&self, path: &[&str], body: &serde_json::Value) -> Result<(), AccountError> {
        self.call(Method::PUT, path, Some(body), false).await
    }

    /// `POST` of a JSON body; any 2xx is success.
    pub(super) async fn post(&self, path: &[&str], body: &serde_json::Value) -> Result<(), AccountError> {
        self.call(Method::POST, path, Some(body), false).await
    }

    /// `DELETE`; what is already gone (404) is success too.
    pub(super) async fn delete(&self, path: &[&str]) -> Result<(), AccountError> {
        self.call(Method::DELETE, path, None, true).await
    }

    /// Closes every connection `username` has open on the broker. The
    /// broker answers 500 when one of them closes while it closes them (as
    /// deleting the user just made it do), so a 5xx is tried again: the
    /// next call finds only what is still open.
    pub(super) async fn close_connections(&self, username: &str) -> Result<(), AccountError> {
        let path = ["connections", "username", username];
        let mut attempt = 1;
        loop {
            match self.delete(&path).await {
                Err(AccountError::Status { status, .. })
                    if status.is_server_error() && attempt < CLOSE_ATTEMPTS =>
                {
                    tracing::debug!(%status, attempt, "closing a user's connections raced their closing; again");
                    tokio::time::sleep(CLOSE_RETRY_PAUSE).await;
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &[&str],
        body: Option<&serde_json::Value>,
        gone_is_done: bool,
    ) -> Result<(), AccountError> {
        let path = encoded_path(path);
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(self.password.expose()));
        if let Some(body) = body {
            request = request.json(body);
        }
        let status = request
            .send()
            .await
            .map_err(|e| AccountError::Unreachable(e.without_url()))?
            .status();
        if status.is_success() || (gone_is_done && status == StatusCode::NOT_FOUND) {
            return Ok(());
        }
        Err(AccountError::Status { method, path, status })
    }
}

/// `/seg/seg/...`, each segment percent-encoded.
fn encoded_path(segments: &[&str]) -> String {
    segments
        .iter()
        .map(|s| format!("/{}", utf8_percent_encode(s, SEGMENT)))
        .collect()
}

/// `name` as a regular expression (Erlang's `re`, i.e. PCRE) matching
/// exactly that text: every ASCII character that is not a letter or a digit
/// is escaped (a backslash before such a character always means the
/// character itself; before a letter or digit it could mean something else).
pub(super) fn pcre_literal(name: &str) -> String {
    let mut out = String::with_capacity(name.len() * 2);
    for c in name.chars() {
        if c.is_ascii() && !c.is_ascii_alphanumeric() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(
            encoded_path(&["permissions", "/", "p.agent.w:1"]),
            "/permissions/%2F/p.agent.w%3A1"
        );
    }

    #[test]
    fn names_become_literal_patterns() {
        assert_eq!(pcre_literal("a.b-c:d_e"), r"a\.b\-c\:d\_e");
        assert_eq!(pcre_literal("x(y)*+?[]{}|^$\\"), r"x\(y\)\*\+\?\[\]\{\}\|\^\$\\");
        assert_eq!(pcre_literal("plain09"), "plain09");
    }

    #[test]
    fn only_http_urls_are_accepted() {
        let api = |url: &str| ManagementApi::new(url, "admin".into(), Secret::new("s3cr3t-value"), None);
        assert!(matches!(
            api("rabbitmq:15672"),
            Err(AccountError::InvalidManagementUrl)
        ));
        let ok = api("http://rabbitmq:15672/").unwrap();
        assert_eq!(ok.base, "http://rabbitmq:15672/api");
        assert!(!format!("{ok:?}").contains("s3cr3t-value"));
    }
}
