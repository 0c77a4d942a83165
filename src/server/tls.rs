//! TLS for the webhook and extender listener: rustls, TLS 1.2+, ALPN h2 and http/1.1, a
//! certificate that is re-read when its files change, without dropping connections, and the
//! optional client-certificate check that lets only the API server and the scheduler call.
//!
//! Each handshake asks the resolver for the current key, so a swap takes effect on the next
//! connection while open ones keep theirs. Change detection re-reads the *paths* and compares
//! content, which also catches a Kubernetes Secret volume swapping its `..data` symlink (the
//! inode behind the path changes; inotify on the file itself would miss it).

use std::{
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject},
    server::{
        ClientHello, ResolvesServerCert, WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    sign::CertifiedKey,
};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{path}: {reason}")]
    ClientCa { path: String, reason: String },
}

/// Something read from files that can change under a running server.
pub trait Reload: Send + Sync + 'static {
    /// Re-reads the files; swaps when they changed and parse. Returns whether it swapped. A
    /// half-written or broken file keeps what is in use and is reported.
    fn reload(&self) -> Result<bool, TlsError>;
    /// The file, for the log.
    fn source(&self) -> &Path;
}

/// Polls `what` every `every` until `stop` fires.
pub async fn watch(
    what: Vec<Arc<dyn Reload>>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        for item in &what {
            match item.reload() {
                Ok(true) => tracing::info!(file = %item.source().display(), "reloaded"),
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "not reloaded; keeping the one in use"),
            }
        }
    }
}

/// Serves the certificate currently on disk.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(u64, Arc<CertifiedKey>)>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn digest(a: &[u8], b: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    a.hash(&mut h);
    b.hash(&mut h);
    h.finish()
}

fn certified_key(
    cert_path: &Path,
    cert: &[u8],
    key_path: &Path,
    key: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let pem = |path: &Path, reason: String| TlsError::Pem {
        path: path.display().to_string(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| pem(cert_path, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(pem(cert_path, "no certificate in file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| pem(key_path, format!("not a PEM private key: {e}")))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| pem(key_path, format!("unsupported private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| pem(key_path, format!("does not match the certificate: {e}")))?;
    Ok(certified)
}

impl ReloadingCert {
    /// Loads the pair once; fails when either file is missing or they do not match.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Arc<Self>, TlsError> {
        let (c, k) = (read(&cert)?, read(&key)?);
        let certified = certified_key(&cert, &c, &key, &k)?;
        Ok(Arc::new(Self {
            current: RwLock::new((digest(&c, &k), Arc::new(certified))),
            cert,
            key,
        }))
    }
}

impl Reload for ReloadingCert {
    fn reload(&self) -> Result<bool, TlsError> {
        let (c, k) = (read(&self.cert)?, read(&self.key)?);
        let d = digest(&c, &k);
        if self.current.read().unwrap_or_else(|e| e.into_inner()).0 == d {
            return Ok(false);
        }
        let certified = certified_key(&self.cert, &c, &self.key, &k)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (d, Arc::new(certified));
        Ok(true)
    }

    fn source(&self) -> &Path {
        &self.cert
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).1.clone())
    }
}

/// Who may call the listener: clients whose certificate chains to the CA in `ca_file` and
/// names one of `allowed` (CN or a DNS SAN). Anyone else fails the handshake: no certificate,
/// an untrusted one, or a name not on the list (alert `access_denied`).
///
/// The API server's and the scheduler's client certificates are often issued by the cluster
/// CA, which also issued every kubelet's: trusting the CA alone would let any node call, so
/// the names are required.
#[derive(Debug)]
pub struct ClientTrust {
    ca_file: PathBuf,
    allowed: Vec<String>,
    provider: Arc<CryptoProvider>,
    current: RwLock<(u64, Arc<dyn ClientCertVerifier>)>,
}

fn client_verifier(
    path: &Path,
    pem: &[u8],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let fail = |reason: String| TlsError::ClientCa {
        path: path.display().to_string(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| fail(format!("not a PEM certificate bundle: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| fail(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(fail("no certificate in file".into()));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| fail(format!("cannot verify clients with it: {e}")))
}

impl ClientTrust {
    /// Loads the CA bundle once; fails when it is missing, empty or not PEM certificates.
    pub fn load(ca_file: PathBuf, allowed: Vec<String>) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pem = read(&ca_file)?;
        let verifier = client_verifier(&ca_file, &pem, &provider)?;
        Ok(Arc::new(Self {
            current: RwLock::new((digest(&pem, &[]), verifier)),
            ca_file,
            allowed,
            provider,
        }))
    }

    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    /// The certificate's names that the list allows, or why it is refused.
    fn allows(&self, end_entity: &CertificateDer<'_>) -> Result<(), String> {
        let names = certificate_names(end_entity)?;
        if names.iter().any(|n| self.allowed.contains(n)) {
            Ok(())
        } else {
            Err(format!(
                "client certificate names {names:?}; none is in tls.allowedClientNames {:?}",
                self.allowed
            ))
        }
    }
}

/// The subject's common names and the DNS subject alternative names of a certificate.
pub fn certificate_names(der: &[u8]) -> Result<Vec<String>, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("unreadable certificate: {e}"))?;
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        names.extend(san.value.general_names.iter().filter_map(|n| match n {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            _ => None,
        }));
    }
    Ok(names)
}

impl Reload for ClientTrust {
    fn reload(&self) -> Result<bool, TlsError> {
        let pem = read(&self.ca_file)?;
        let d = digest(&pem, &[]);
        if self.current.read().unwrap_or_else(|e| e.into_inner()).0 == d {
            return Ok(false);
        }
        let verifier = client_verifier(&self.ca_file, &pem, &self.provider)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (d, verifier);
        Ok(true)
    }

    fn source(&self) -> &Path {
        &self.ca_file
    }
}

impl ClientCertVerifier for ClientTrust {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: the CA can be swapped under us, and with an empty list a client sends the
        // certificate it has (RFC 8446 4.2.4; Go and OpenSSL both do).
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .verifier()
            .verify_client_cert(end_entity, intermediates, now)?;
        self.allows(end_entity).map_err(|reason| {
            tracing::warn!(%reason, "client refused");
            rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}

/// The server config: ring provider, TLS 1.2 and 1.3, ALPN h2 then http/1.1, and client
/// certificates required when `clients` is set.
pub fn server_config(
    cert: Arc<ReloadingCert>,
    clients: Option<Arc<ClientTrust>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let mut config = match clients {
        Some(trust) => builder.with_client_cert_verifier(trust),
        None => builder.with_no_client_auth(),
    }
    .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
