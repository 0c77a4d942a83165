//! TLS for the webhook and extender listener: rustls, TLS 1.2+, ALPN h2 and http/1.1, and a
//! certificate that is re-read when its files change, without dropping connections.
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
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
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

    /// Re-reads the files; swaps the certificate when they changed and parse. Returns whether
    /// it swapped. A half-written or mismatched pair keeps the old certificate and is reported.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (c, k) = (read(&self.cert)?, read(&self.key)?);
        let d = digest(&c, &k);
        if self.current.read().unwrap_or_else(|e| e.into_inner()).0 == d {
            return Ok(false);
        }
        let certified = certified_key(&self.cert, &c, &self.key, &k)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (d, Arc::new(certified));
        Ok(true)
    }

    /// Polls the files every `every` until `stop` fires.
    pub async fn watch(self: Arc<Self>, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            match self.reload() {
                Ok(true) => tracing::info!(cert = %self.cert.display(), "serving certificate reloaded"),
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "certificate not reloaded; keeping the current one"),
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).1.clone())
    }
}

/// The server config: ring provider, TLS 1.2 and 1.3, ALPN h2 then http/1.1.
pub fn server_config(cert: Arc<ReloadingCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
