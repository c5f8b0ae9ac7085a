//! The agent's HTTP side: registering with the controller and asking it,
//! for every delivery, whether to run it (the claim). Both use the agent
//! token as a bearer token. Retrying is left to the callers, which know how
//! long they may wait.

use crate::config::Secret;
use orchestrator_shared::api::{
    ClaimBatchRequest, ClaimBatchResponse, ClaimRequest, ClaimResponse, RegisterRequest, Registration,
};
use orchestrator_shared::tls::{tls_failure, CaBundle, TlsFailure};
use std::time::Duration;

/// Longest time one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time to establish a connection to the controller.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an idle connection to the controller is kept for reuse: less
/// than the controller's header-read timeout, after which it closes it.
const IDLE_CONNECTION: Duration = Duration::from_secs(5);
/// Most characters of an error body kept for the log.
const MAX_ERROR_BODY: usize = 512;

/// Why a request to the controller did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The controller could not be reached, did not answer in time, or sent
    /// a body that is not what the contract says.
    #[error("controller request failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// The TLS handshake with the controller failed: its certificate is not
    /// trusted, or it does not speak TLS (retrying will not help until an
    /// operator fixes the CA file or the URL).
    #[error("the controller at {base}: {failure}{hint}", hint = tls_hint(failure))]
    Tls {
        /// The controller's base URL.
        base: String,
        /// What went wrong.
        failure: TlsFailure,
    },
    /// A request went out but its answer never came to this caller (a
    /// batch of claims abandoned, or answered with the wrong count).
    #[error("controller request failed: {0}")]
    Abandoned(&'static str),
    /// The controller answered with an error status.
    #[error("controller answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The start of the answer's body.
        body: String,
    },
}

impl ClientError {
    /// Whether the controller refused the agent's credentials (retrying
    /// will not help until an operator fixes the token).
    pub fn is_auth(&self) -> bool {
        matches!(self, ClientError::Status { status, .. }
            if *status == reqwest::StatusCode::UNAUTHORIZED || *status == reqwest::StatusCode::FORBIDDEN)
    }

    /// Whether the controller does not know the route (an older one).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Status { status, .. } if *status == reqwest::StatusCode::NOT_FOUND)
    }

    /// Whether the TLS handshake failed (an operator must fix the CA file
    /// or the URL).
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientError::Tls { .. })
    }
}

/// What to do about a TLS failure, after its description.
fn tls_hint(failure: &TlsFailure) -> &'static str {
    match failure {
        TlsFailure::Untrusted(_) => "; set --ca-file (AGENT_CA_FILE) to the CA that signed it",
        TlsFailure::NotTls => "; is the controller URL http:// rather than https://?",
    }
}

/// An HTTP client with the agent's timeouts that trusts the system's roots
/// (or `SSL_CERT_FILE`) and `ca`'s certificates.
fn http_client(ca: Option<&CaBundle>) -> Result<reqwest::Client, reqwest::Error> {
    let extra = ca.map(CaBundle::certificates).unwrap_or_default();
    let certificates = extra
        .iter()
        .map(|der| reqwest::Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()?;
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        // The controller closes a connection idle for its header-read
        // timeout (10 s by default); dropping ours sooner means a request
        // never goes out on a connection the server is closing.
        .pool_idle_timeout(IDLE_CONNECTION)
        .tls_certs_merge(certificates)
        .build()
}

/// A handle on the controller's agent API. Cheap to clone.
#[derive(Clone)]
pub struct ControllerClient {
    /// Pooled HTTP client with timeouts.
    http: reqwest::Client,
    /// Base URL without a trailing slash.
    base: String,
    /// The bearer token.
    token: Secret,
}

impl ControllerClient {
    /// A client for the controller at `base_url`, whose certificate (for
    /// `https://`) is signed by a CA of the system's roots or of `ca`.
    pub fn new(base_url: &str, token: Secret, ca: Option<&CaBundle>) -> Result<Self, ClientError> {
        let http = http_client(ca)?;
        Ok(ControllerClient {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// `POST /api/agents/register`; returns the controller's view of the
    /// worker, whose generation and status the agent starts from, and the
    /// agent's own broker login (if the controller gives agents one).
    pub async fn register(&self, body: &RegisterRequest) -> Result<Registration, ClientError> {
        self.post("/api/agents/register", body).await
    }

    /// `POST /api/agents/claim`: may this agent run this shard now?
    pub async fn claim(&self, body: &ClaimRequest) -> Result<ClaimResponse, ClientError> {
        self.post("/api/agents/claim", body).await
    }

    /// `POST /api/agents/claims`: several claims in one request, answered
    /// in order.
    pub async fn claim_batch(&self, body: &ClaimBatchRequest) -> Result<ClaimBatchResponse, ClientError> {
        self.post("/api/agents/claims", body).await
    }

    async fn post<B, R>(&self, path: &str, body: &B) -> Result<R, ClientError>
    where
        B: serde::Serialize + ?Sized,
        R: serde::de::DeserializeOwned,
    {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(self.token.expose())
            .json(body)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let body = text.chars().take(MAX_ERROR_BODY).collect();
            return Err(ClientError::Status { status, body });
        }
        Ok(response.json().await?)
    }
}

impl ControllerClient {
    /// A failed exchange as a [`ClientError`], naming a TLS failure.
    fn transport_error(&self, err: reqwest::Error) -> ClientError {
        match tls_failure(&err) {
            Some(failure) => ClientError::Tls {
                base: self.base.clone(),
                failure,
            },
            None => ClientError::Transport(err),
        }
    }
}

impl std::fmt::Debug for ControllerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}
