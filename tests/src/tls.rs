//! Throw-away TLS material for tests: a private CA made with rcgen and a
//! server certificate it signs, written as PEM files to a directory of
//! their own (removed on drop), and clients that trust that CA.

use crate::{check_image, data_volume, image_from_env, MQ_DATA_DIR, PG_DATA_DIR, TEST_LABEL};
use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};
use std::time::Duration;
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::CopyTargetOptions;
use testcontainers::{ContainerAsync, ContainerRequest, GenericImage, Image, ImageExt};

/// Where the project's Postgres and RabbitMQ images look for a server
/// certificate and key (`cert.pem`, `key.pem`) to turn TLS on.
pub const IMAGE_TLS_DIR: &str = "/etc/orchestrator/tls";
/// Where the project's Postgres image looks for client rules that replace
/// its own.
pub const IMAGE_PG_HBA: &str = "/etc/orchestrator/pg_hba.conf";
/// Client rules that accept TLS connections only (trust, as in the test
/// image; the point is the transport).
pub const HOSTSSL_ONLY: &str = "local all all trust\n\
hostssl all all 0.0.0.0/0 trust\n\
hostssl all all ::/0 trust\n";
/// How long a TLS container may take to become ready.
const STARTUP: Duration = Duration::from_secs(90);

/// A private CA and one server certificate it signed, on disk.
pub struct TestTls {
    dir: PathBuf,
    /// The CA's certificate, PEM.
    pub ca_pem: String,
    /// The server certificate, PEM.
    pub cert_pem: String,
    /// The server certificate's private key, PEM.
    pub key_pem: String,
}

impl TestTls {
    /// A new CA and a server certificate for `hosts` (DNS names or IP
    /// addresses), in a fresh directory.
    pub fn new(hosts: &[&str]) -> anyhow::Result<TestTls> {
        let ca_key = KeyPair::generate().context("CA key")?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
        // A name of its own: a verifier tells CAs apart by name first.
        let name = format!("orchestrator test CA {}", uuid::Uuid::new_v4().simple());
        ca.distinguished_name.push(DnType::CommonName, name);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).context("self-signing the CA")?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().context("server key")?;
        let names: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        let mut server = CertificateParams::new(names).context("server parameters")?;
        server
            .distinguished_name
            .push(DnType::CommonName, hosts.first().copied().unwrap_or("localhost"));
        let cert = server
            .signed_by(&key, &issuer)
            .context("signing the server certificate")?;
        let dir = std::env::temp_dir().join(format!("orch-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tls = TestTls {
            dir,
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        for (path, text) in [
            (tls.ca_file(), &tls.ca_pem),
            (tls.cert_file(), &tls.cert_pem),
            (tls.key_file(), &tls.key_pem),
        ] {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(tls)
    }

    /// The directory holding `ca.pem`, `cert.pem` and `key.pem`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA's certificate file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server certificate's file.
    pub fn cert_file(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// The server key's file.
    pub fn key_file(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// `request` with this certificate and key copied where the project's
    /// Postgres and RabbitMQ images find them (the key with mode 600, as a
    /// host keeps it: the images install it for their service user).
    pub fn install<I: Image>(&self, request: impl Into<ContainerRequest<I>>) -> ContainerRequest<I> {
        let file =
            |name: &str, mode| CopyTargetOptions::new(format!("{IMAGE_TLS_DIR}/{name}")).with_mode(mode);
        request
            .into()
            .with_copy_to(file("cert.pem", 0o644), self.cert_pem.clone().into_bytes())
            .with_copy_to(file("key.pem", 0o600), self.key_pem.clone().into_bytes())
    }

    /// An HTTP client that trusts this CA (and the system's roots).
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).context("the test CA")?;
        Ok(reqwest::Client::builder().tls_certs_merge([ca]).build()?)
    }
}

impl Drop for TestTls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Postgres container of the project's image serving TLS with `tls`'s
/// certificate and accepting only TLS connections ([`HOSTSSL_ONLY`]).
pub async fn start_tls_postgres(tls: &TestTls) -> anyhow::Result<ContainerAsync<GenericImage>> {
    let (name, tag) = image_from_env("ORCH_POSTGRES_IMAGE", crate::DEFAULT_POSTGRES_IMAGE);
    check_image(&name, &tag)?;
    let image = GenericImage::new(name, tag)
        .with_exposed_port(5432.tcp())
        .with_wait_for(WaitFor::message_on_stderr(
            "database system is ready to accept connections",
        ));
    let request = tls
        .install(image)
        .with_copy_to(IMAGE_PG_HBA, HOSTSSL_ONLY.as_bytes().to_vec())
        .with_label(TEST_LABEL, "1")
        .with_mount(data_volume(PG_DATA_DIR))
        .with_startup_timeout(STARTUP);
    request.start().await.context("starting Postgres with TLS")
}

/// A RabbitMQ container of the project's image with its AMQPS listener
/// (5671) on `tls`'s certificate.
pub async fn start_tls_rabbitmq(tls: &TestTls) -> anyhow::Result<ContainerAsync<GenericImage>> {
    let (name, tag) = image_from_env("ORCH_RABBITMQ_IMAGE", crate::DEFAULT_RABBITMQ_IMAGE);
    check_image(&name, &tag)?;
    let image = GenericImage::new(name, tag)
        .with_exposed_port(5671.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Server startup complete"));
    let request = tls
        .install(image)
        .with_label(TEST_LABEL, "1")
        .with_mount(data_volume(MQ_DATA_DIR))
        .with_startup_timeout(STARTUP);
    request.start().await.context("starting RabbitMQ with TLS")
}
