//! Where Postgres is and how the controller reaches it: [`PgTarget`] holds
//! the parsed URL and, when a CA file is configured, requires TLS on every
//! connection (the pool's, the migrations', the reaper's leader lock) and
//! checks Postgres's certificate against that CA and the URL's host, as
//! libpq's `sslmode=verify-full` does.

use super::DbError;
use crate::tls::postgres_client_config;
use orchestrator_shared::tls::CaBundle;
use std::future::Future;
use std::path::Path;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

/// A Postgres server to connect to, and how.
#[derive(Clone)]
pub struct PgTarget {
    /// The parsed connection string (`sslmode` forced to `require` with TLS).
    config: tokio_postgres::Config,
    /// TLS checked against the configured CA; `None`: plain, as the URL's
    /// `sslmode` allows (tokio-postgres without TLS support).
    tls: Option<MakeRustlsConnect>,
}

impl PgTarget {
    /// Parses `url`; with `ca_file`, every connection requires TLS and a
    /// certificate signed by that file's CA for the URL's host.
    pub fn new(url: &str, ca_file: Option<&Path>) -> Result<Self, DbError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(DbError::InvalidUrl)?;
        quick_keepalives(&mut config);
        let tls = match ca_file {
            None => None,
            Some(path) => {
                let ca = CaBundle::read(path).map_err(crate::tls::TlsError::from)?;
                config.ssl_mode(SslMode::Require);
                Some(MakeRustlsConnect::new(postgres_client_config(&ca)?))
            }
        };
        Ok(PgTarget { config, tls })
    }

    /// The pool's connection manager, with this target's TLS.
    pub(super) fn manager(&self, config: deadpool_postgres::ManagerConfig) -> deadpool_postgres::Manager {
        match &self.tls {
            Some(tls) => deadpool_postgres::Manager::from_config(self.config.clone(), tls.clone(), config),
            None => deadpool_postgres::Manager::from_config(self.config.clone(), NoTls, config),
        }
    }

    /// One dedicated connection, its driver running on a task of its own
    /// (abort it, or drop the client and await it, to close).
    pub async fn connect(&self) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
        match &self.tls {
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                Ok((client, tokio::spawn(drive(connection))))
            }
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                Ok((client, tokio::spawn(drive(connection))))
            }
        }
    }
}

/// The operating system's keepalive idle time, tokio-postgres's default.
const SYSTEM_KEEPALIVE_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// Keepalives that find a silent Postgres (a host gone, a network cut) in
/// about 16 s (10 s idle, then 3 probes 2 s apart) rather than two hours,
/// so the pool drops such a connection and makes a new one; a URL that
/// sets `keepalives_idle` keeps its own.
fn quick_keepalives(config: &mut tokio_postgres::Config) {
    if config.get_keepalives_idle() == SYSTEM_KEEPALIVE_IDLE {
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3);
    }
}

/// Runs a dedicated connection until it ends; an error is logged.
async fn drive(connection: impl Future<Output = Result<(), tokio_postgres::Error>>) {
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "a dedicated Postgres connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> tokio_postgres::Config {
        let mut config: tokio_postgres::Config = url.parse().unwrap();
        quick_keepalives(&mut config);
        config
    }

    #[test]
    fn a_silent_postgres_is_found_in_seconds_unless_the_url_says_otherwise() {
        let quick = parsed("postgres://u@db/x");
        assert_eq!(quick.get_keepalives_idle(), Duration::from_secs(10));
        assert_eq!(quick.get_keepalives_interval(), Some(Duration::from_secs(2)));
        assert_eq!(quick.get_keepalives_retries(), Some(3));
        let own = parsed("postgres://u@db/x?keepalives_idle=30");
        assert_eq!(own.get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(own.get_keepalives_interval(), None);
    }
}
