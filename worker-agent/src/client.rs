//! The agent's HTTP side: registering with the controller and asking it,
//! for every delivery, whether to run it (the claim). Both use the agent
//! token as a bearer token. Retrying is left to the callers, which know how
//! long they may wait.

use crate::config::Secret;
use orchestrator_shared::api::{ClaimRequest, ClaimResponse, RegisterRequest, Registration};
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
    /// A client for the controller at `base_url`.
    pub fn new(base_url: &str, token: Secret) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // The controller closes a connection idle for its header-read
            // timeout (10 s by default); dropping ours sooner means a request
            // never goes out on a connection the server is closing.
            .pool_idle_timeout(IDLE_CONNECTION)
            .build()?;
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
            .await?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let body = text.chars().take(MAX_ERROR_BODY).collect();
            return Err(ClientError::Status { status, body });
        }
        Ok(response.json().await?)
    }
}

impl std::fmt::Debug for ControllerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}
