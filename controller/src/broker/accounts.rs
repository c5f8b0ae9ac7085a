//! Broker accounts: one RabbitMQ user per agent, created and deleted by the
//! controller through the broker's management HTTP API.
//!
//! Why: with one shared broker login, whoever holds it can publish any event
//! for any worker, drain any queue or publish work. An agent's own user may
//! only consume the jobs queue and its own control queue and publish to the
//! events exchange, and RabbitMQ refuses a message whose `user_id` property
//! is not the publishing user, so the events consumer knows which agent sent
//! each event (`super::senders`).
//!
//! At every registration the agent's user gets a fresh random password (an
//! earlier incarnation's stops working), its permissions are set, its
//! control queue is declared and bound by the controller (an agent cannot
//! bind a queue to the control exchange under another worker's key), and
//! connections left from an earlier incarnation are closed. [`BrokerAccounts::revoke`]
//! deletes the user and closes its connections.

use super::management::{pcre_literal, ManagementApi};
use crate::config::BrokerAccountsConfig;
use orchestrator_shared::api::BrokerLogin;
use orchestrator_shared::broker::{broker_uri, CONTROL_QUEUE_EXPIRES_MS};
use orchestrator_shared::messages::{Topology, CONTROL_EXCHANGE};
use orchestrator_shared::Secret;
use serde_json::json;

pub use super::management::AccountError;

/// Random bytes in an agent's broker password (hex-encoded: 64 characters).
const PASSWORD_BYTES: usize = 32;
/// Bytes of salt in RabbitMQ's SHA-256 password hash (its own format).
const SALT_BYTES: usize = 4;

/// What a broker user may do, as RabbitMQ's three regular expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Resources it may declare or delete.
    pub configure: String,
    /// Exchanges it may publish to (and queues it may bind).
    pub write: String,
    /// Queues it may consume (and exchanges it may bind from).
    pub read: String,
}

/// The least an agent needs (RabbitMQ's access-control table):
/// `basic.publish` needs *write* on the exchange, `basic.consume` *read* on
/// the queue, `basic.qos` nothing; declaring or binding anything needs
/// *configure* or *write* on the queue, which it does not get. `^$` grants
/// nothing (an empty pattern would grant everything).
///
/// The events queue shares the events exchange's name, so the write
/// pattern matches it too; that only allows binding it, which also needs
/// *read* on the source exchange, and no exchange matches the read
/// pattern. *Read* on the jobs queue also allows `basic.get` and
/// `queue.purge`: an agent can take or drop work (as it can by consuming
/// and never running it), never run work of its own choosing.
///
/// Of the jobs queues, it may read only those of the `pools` it serves:
/// `<prefix>.jobs` (pool `default` without a selector) if it serves
/// `default`, and `<prefix>.jobs.<pool>` and `<prefix>.jobs.<pool>.<hash>`
/// for each of its pools, so an agent cannot take work of another pool
/// even by asking the broker for it. (Which selectors it satisfies is the
/// controller's answer of its queues, and the claim's check.)
pub fn agent_permissions(topology: &Topology, worker_id: &str, pools: &[String]) -> Permissions {
    let jobs = pcre_literal(&topology.jobs_queue());
    let mut read = vec![pcre_literal(&topology.control_queue(worker_id))];
    if pools
        .iter()
        .any(|p| orchestrator_shared::pools::is_default_pool(p))
    {
        read.push(jobs.clone());
    }
    let named: Vec<String> = pools.iter().map(|p| pcre_literal(p)).collect();
    if !named.is_empty() {
        read.push(format!("{jobs}\\.({})(\\.[0-9a-f]{{32}})?", named.join("|")));
    }
    Permissions {
        configure: "^$".to_owned(),
        write: format!("^{}$", pcre_literal(&topology.events_exchange())),
        read: format!("^({})$", read.join("|")),
    }
}

/// Creates, refreshes and deletes agents' broker users.
#[derive(Debug)]
pub struct BrokerAccounts {
    /// The management HTTP API, as the controller's broker admin.
    api: ManagementApi,
    /// The virtual host of the controller's AMQP URL (agents use the same).
    vhost: String,
    /// Broker names (users, queues, exchanges).
    topology: Topology,
}

impl BrokerAccounts {
    /// Accounts managed through `config`'s management URL, in the vhost of
    /// `amqp_url`, logged in as the configured management user (else the
    /// AMQP URL's user), trusting `ca` (the broker's private CA, the one
    /// of its AMQPS certificate) over `https://`. `None` when no
    /// management URL is configured.
    pub fn new(
        config: &BrokerAccountsConfig,
        amqp_url: &str,
        topology: Topology,
        ca: Option<&orchestrator_shared::tls::CaBundle>,
    ) -> Result<Option<BrokerAccounts>, AccountError> {
        let Some(url) = &config.broker_management_url else {
            return Ok(None);
        };
        let amqp = broker_uri(amqp_url).map_err(|_| AccountError::InvalidAmqpUrl)?;
        let user = config
            .broker_management_user
            .clone()
            .unwrap_or(amqp.authority.userinfo.username);
        let password = config
            .broker_management_password
            .clone()
            .unwrap_or_else(|| Secret::new(amqp.authority.userinfo.password));
        Ok(Some(BrokerAccounts {
            api: ManagementApi::new(url, user, password, ca)?,
            vhost: amqp.vhost,
            topology,
        }))
    }

    /// Gives `worker_id`'s agent a broker user with a new password, the
    /// agent's permissions and its bound control queue, and closes any
    /// connection of an earlier incarnation; returns the login.
    pub async fn provision(&self, worker_id: &str, pools: &[String]) -> Result<BrokerLogin, AccountError> {
        let username = self.topology.agent_user(worker_id);
        let password = random_password()?;
        self.api
            .put(
                &["users", &username],
                &json!({
                    "password_hash": rabbit_sha256_hash(&password)?,
                    "hashing_algorithm": "rabbit_password_hashing_sha256",
                    "tags": "",
                }),
            )
            .await?;
        let p = agent_permissions(&self.topology, worker_id, pools);
        let permissions = json!({"configure": p.configure, "write": p.write, "read": p.read});
        self.api
            .put(&["permissions", &self.vhost, &username], &permissions)
            .await?;
        self.declare_control_queue(worker_id).await?;
        self.api.close_connections(&username).await?;
        Ok(BrokerLogin { username, password })
    }

    /// Declares `worker_id`'s durable control queue and binds it to the
    /// control exchange under the worker id (both idempotent).
    async fn declare_control_queue(&self, worker_id: &str) -> Result<(), AccountError> {
        let queue = self.topology.control_queue(worker_id);
        let declare = json!({
            "durable": true,
            "auto_delete": false,
            "arguments": {"x-expires": CONTROL_QUEUE_EXPIRES_MS},
        });
        self.api.put(&["queues", &self.vhost, &queue], &declare).await?;
        let exchange = self.topology.exchange(CONTROL_EXCHANGE);
        let bind = json!({"routing_key": worker_id, "arguments": {}});
        self.api
            .post(&["bindings", &self.vhost, "e", &exchange, "q", &queue], &bind)
            .await
            .map_err(|e| e.missing_as(AccountError::TopologyMissing(exchange)))
    }

    /// Ends `worker_id`'s broker access: deletes its user (so no new login
    /// succeeds) and then closes every connection it has open. Revoking an
    /// agent that has no user is not an error.
    pub async fn revoke(&self, worker_id: &str) -> Result<(), AccountError> {
        let username = self.topology.agent_user(worker_id);
        self.api.delete(&["users", &username]).await?;
        self.api.close_connections(&username).await?;
        tracing::info!(%worker_id, "broker access of the agent revoked");
        Ok(())
    }
}

/// A new random password: [`PASSWORD_BYTES`] from the system's generator,
/// hex-encoded.
fn random_password() -> Result<String, AccountError> {
    let mut bytes = [0u8; PASSWORD_BYTES];
    getrandom::fill(&mut bytes).map_err(|_| AccountError::NoRandomness)?;
    Ok(hex::encode(bytes))
}

/// `password` hashed the way RabbitMQ stores it
/// (`rabbit_password_hashing_sha256`): base64 of a random 4-byte salt
/// followed by SHA-256 of salt and password. The broker is sent the hash,
/// so the password itself never leaves the controller except in the
/// registration answer.
fn rabbit_sha256_hash(password: &str) -> Result<String, AccountError> {
    let mut salt = [0u8; SALT_BYTES];
    getrandom::fill(&mut salt).map_err(|_| AccountError::NoRandomness)?;
    Ok(salted_hash(&salt, password))
}

/// The hash of `password` with `salt` (see [`rabbit_sha256_hash`]).
fn salted_hash(salt: &[u8], password: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(salt)
        .chain_update(password.as_bytes())
        .finalize();
    let mut out = salt.to_vec();
    out.extend_from_slice(&digest);
    base64::engine::general_purpose::STANDARD.encode(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_may_consume_their_queues_and_publish_events_only() {
        let pools = ["default".to_owned()];
        let p = agent_permissions(&Topology::new("orch-1"), "w:1.a", &pools);
        assert_eq!(p.configure, "^$");
        assert_eq!(p.write, r"^orch\-1\.events$");
        assert_eq!(
            p.read,
            r"^(orch\-1\.control\.w\:1\.a|orch\-1\.jobs|orch\-1\.jobs\.(default)(\.[0-9a-f]{32})?)$"
        );
        let gpu = agent_permissions(&Topology::new("o"), "w", &["gpu".to_owned(), "big_1".to_owned()]);
        assert_eq!(
            gpu.read,
            r"^(o\.control\.w|o\.jobs\.(gpu|big\_1)(\.[0-9a-f]{32})?)$"
        );
    }

    #[test]
    fn the_hash_is_rabbitmqs_salted_sha256() {
        // base64(salt + sha256(salt + password)), computed with Python's
        // hashlib; `rabbitmqctl authenticate_user` accepts such a hash.
        let hash = salted_hash(&[0xde, 0xad, 0xbe, 0xef], "secretpw");
        assert_eq!(hash, "3q2+7/ioO1I0l8/puDqRnm/wMEtBwEU4i6qYVFTBkoRa/2N+");
    }

    #[test]
    fn passwords_are_long_and_fresh() {
        let (a, b) = (random_password().unwrap(), random_password().unwrap());
        assert_eq!(a.len(), 2 * PASSWORD_BYTES);
        assert_ne!(a, b);
    }
}
