//! TLS of the controller's links. The API port speaks HTTPS with a
//! certificate and key from PEM files ([`Transport`]), answers a plain-HTTP
//! request on it with a clear 400 instead of a handshake error, and bounds
//! each handshake in time; Postgres connections can require TLS checked
//! against a private CA ([`postgres_client_config`]). One crypto provider,
//! aws-lc-rs, the one lapin and reqwest already build.

use crate::config::TlsConfig;
use orchestrator_shared::tls::{CaBundle, CaFileError};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The first byte of every TLS connection: a handshake record. Anything
/// else on the HTTPS port is a client speaking plain HTTP (or garbage).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The answer to a plain-HTTP request on the HTTPS port: the contract's
/// error shape, then the connection closes.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: application/json\r\n\
content-length: 49\r\n\
connection: close\r\n\
\r\n\
{\"detail\":\"this port speaks HTTPS; use https://\"}";

/// How long, and how much, of a refused plain-HTTP request is read and
/// dropped after the answer, so closing does not reset the connection
/// before the client has read the answer.
const PLAIN_HTTP_DRAIN: (Duration, usize) = (Duration::from_secs(1), 64 * 1024);

/// Why TLS could not be set up. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Neither a certificate nor `--insecure-http` was given.
    #[error(
        "no TLS certificate: pass --tls-cert-file and --tls-key-file (ORCH_TLS_CERT_FILE, \
         ORCH_TLS_KEY_FILE) to serve HTTPS, or --insecure-http (ORCH_INSECURE_HTTP=true) to \
         serve plain HTTP"
    )]
    NotConfigured,
    /// A PEM file could not be read or parsed.
    #[error("cannot read {what} from {path}: {source}")]
    Pem {
        /// What was being read ("the TLS certificate", "the TLS key").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    /// A CA file could not be used.
    #[error(transparent)]
    CaFile(#[from] CaFileError),
    /// rustls refused the material (a key that does not match the
    /// certificate, an unsupported key type).
    #[error("TLS set-up refused: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider of every TLS configuration here: aws-lc-rs, named
/// explicitly so that another provider enabled elsewhere in a build can
/// never make rustls guess.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// How the API port speaks.
#[derive(Clone)]
pub enum Transport {
    /// HTTPS with the configured certificate.
    Https(TlsAcceptor),
    /// Plain HTTP, chosen explicitly with `--insecure-http`.
    InsecureHttp,
}

impl Transport {
    /// The transport `config` asks for: HTTPS from the certificate and key
    /// files, plain HTTP only by explicit choice, and an error when neither
    /// was asked for.
    pub fn from_config(config: &TlsConfig) -> Result<Self, TlsError> {
        match (&config.tls_cert_file, &config.tls_key_file, config.insecure_http) {
            (Some(cert), Some(key), _) => {
                let server = server_config(cert, key)?;
                Ok(Transport::Https(TlsAcceptor::from(Arc::new(server))))
            }
            (_, _, true) => Ok(Transport::InsecureHttp),
            _ => Err(TlsError::NotConfigured),
        }
    }

    /// `https` or `http`, for logs.
    pub fn scheme(&self) -> &'static str {
        match self {
            Transport::Https(_) => "https",
            Transport::InsecureHttp => "http",
        }
    }
}

/// A server configuration from a PEM certificate chain (leaf first) and
/// its private key; HTTP/1.1 only, as the server speaks nothing else.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    fn pem(what: &'static str, path: &Path) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsError {
        let path = path.to_owned();
        move |source| TlsError::Pem { what, path, source }
    }
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(pem("the TLS certificate", cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem("the TLS certificate", cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem("the TLS key", key))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client configuration that trusts exactly the CAs of `ca` (libpq's
/// `sslrootcert`): the certificate Postgres presents must be signed by one
/// of them and name the host of the database URL.
pub fn postgres_client_config(ca: &CaBundle) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in ca.certificates() {
        roots.add(certificate.clone())?;
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Makes a new connection on the HTTPS port a TLS stream, within `limit`:
/// peeks at its first byte, answers a plain-HTTP request with a 400 that
/// says to use `https://`, and runs the handshake. `None` when the
/// connection ended, spoke plain HTTP, failed the handshake or took longer
/// than `limit` (a slow client holds nothing for long).
pub async fn accept(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    limit: Duration,
) -> Option<TlsStream<TcpStream>> {
    let handshake = async {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(1) if first[0] == TLS_HANDSHAKE_RECORD => {}
            Ok(1) => return Err(Some(stream)),
            _ => return Err(None),
        }
        acceptor.accept(stream).await.map_err(|e| {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        })
    };
    match tokio::time::timeout(limit, handshake).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(Some(plain))) => {
            refuse_plain_http(plain).await;
            None
        }
        Ok(Err(None)) => None,
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// Answers a plain-HTTP request with [`PLAIN_HTTP_ANSWER`], then reads and
/// drops what the client still sends (bounded) before closing.
async fn refuse_plain_http(mut stream: TcpStream) {
    metrics::counter!("http_plain_requests_refused_total").increment(1);
    if stream.write_all(PLAIN_HTTP_ANSWER).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let (patience, most) = PLAIN_HTTP_DRAIN;
    let mut sink = [0u8; 4096];
    let mut read = 0;
    let drain = async {
        while read < most {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(patience, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_http_answer_is_a_complete_response() {
        let text = std::str::from_utf8(PLAIN_HTTP_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["detail"], "this port speaks HTTPS; use https://");
    }

    #[test]
    fn neither_a_certificate_nor_insecure_http_is_refused() {
        let config = TlsConfig {
            tls_cert_file: None,
            tls_key_file: None,
            insecure_http: false,
        };
        let err = Transport::from_config(&config).err().map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(
            err.contains("--tls-cert-file") && err.contains("--insecure-http"),
            "{err}"
        );
        let insecure = TlsConfig {
            insecure_http: true,
            ..config
        };
        assert_eq!(
            Transport::from_config(&insecure).ok().map(|t| t.scheme()),
            Some("http")
        );
    }
}
