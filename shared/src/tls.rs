//! TLS material read the same way by the controller, the agent and the
//! client: a private CA's certificates from a PEM file, and what a failed
//! TLS exchange was, in words a user can act on. Behind the `tls` feature,
//! the only part of this crate that reads a file.

use rustls::CertificateError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::error::Error;
use std::path::{Path, PathBuf};

/// The certificates of a PEM file of CAs to trust besides the system's
/// roots: as text (lapin takes PEM) and as DER (rustls and reqwest).
#[derive(Clone, Debug)]
pub struct CaBundle {
    /// Where it was read from, for messages.
    path: PathBuf,
    /// The file's text.
    pem: String,
    /// Every certificate in it, in order.
    certificates: Vec<CertificateDer<'static>>,
}

/// Why a CA file cannot be used. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// The file could not be read.
    #[error("cannot read the CA file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not PEM text, or a PEM section is broken.
    #[error("the CA file {path} is not valid PEM: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the parser found.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The file holds no `CERTIFICATE` section (a key or an empty file).
    #[error("the CA file {path} holds no certificate")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

impl CaBundle {
    /// Reads `path`, which must hold at least one PEM certificate.
    pub fn read(path: &Path) -> Result<Self, CaFileError> {
        let pem = std::fs::read_to_string(path).map_err(|source| CaFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| CaFileError::Pem {
                path: path.to_owned(),
                source,
            })?;
        if certificates.is_empty() {
            return Err(CaFileError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(CaBundle {
            path: path.to_owned(),
            pem,
            certificates,
        })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's PEM text.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Its certificates, as DER.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certificates
    }
}

/// What went wrong in a TLS exchange, as found in an error's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// The server's certificate was refused; the reason in words.
    Untrusted(String),
    /// The peer does not speak TLS (a plain-HTTP server behind an
    /// `https://` URL, for instance).
    NotTls,
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsFailure::Untrusted(why) => write!(f, "its certificate is not trusted: {why}"),
            TlsFailure::NotTls => f.write_str("it does not speak TLS"),
        }
    }
}

/// The TLS failure behind `err`, if any: walks the chain of sources, and
/// into I/O errors, which carry rustls's error without exposing it as a
/// source.
pub fn tls_failure(err: &(dyn Error + 'static)) -> Option<TlsFailure> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(failure) = as_rustls(e).and_then(classify) {
            return Some(failure);
        }
        next = e.source();
    }
    None
}

/// `e` as rustls's error, directly or inside I/O errors (hyper's client
/// wraps rustls's I/O error in one of its own).
fn as_rustls<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(direct) = e.downcast_ref::<rustls::Error>() {
        return Some(direct);
    }
    let mut inner: &(dyn Error + Send + Sync + 'static) = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    loop {
        if let Some(found) = inner.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        inner = inner.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}

fn classify(e: &rustls::Error) -> Option<TlsFailure> {
    match e {
        rustls::Error::InvalidCertificate(why) => Some(TlsFailure::Untrusted(certificate_reason(why))),
        rustls::Error::InvalidMessage(_) => Some(TlsFailure::NotTls),
        _ => None,
    }
}

fn certificate_reason(why: &CertificateError) -> String {
    match why {
        CertificateError::UnknownIssuer => "it is signed by a CA this client does not trust".to_owned(),
        CertificateError::NotValidForName => "it does not name this host".to_owned(),
        CertificateError::Expired => "it has expired".to_owned(),
        CertificateError::NotValidYet => "it is not valid yet".to_owned(),
        CertificateError::BadSignature => "its signature does not verify".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_a_certificate_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not pem at all\n").unwrap();
        let err = CaBundle::read(&empty).unwrap_err();
        assert!(matches!(err, CaFileError::Empty { .. }), "{err}");
        assert!(err.to_string().contains("empty.pem"), "{err}");
        let missing = CaBundle::read(&dir.join("missing.pem")).unwrap_err();
        assert!(matches!(missing, CaFileError::Read { .. }), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn certificate_errors_are_found_inside_io_errors() {
        let rustls = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls);
        let wrapped = std::io::Error::other(io);
        let found = tls_failure(&wrapped);
        assert_eq!(
            found,
            Some(TlsFailure::Untrusted(
                "it is signed by a CA this client does not trust".into()
            ))
        );
        let plain = std::io::Error::other("connection refused");
        assert_eq!(tls_failure(&plain), None);
        let not_tls = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        assert_eq!(tls_failure(&not_tls), Some(TlsFailure::NotTls));
    }
}
