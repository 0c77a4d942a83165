//! `headroom certs`: a CA and a serving certificate for the webhook Service (rcgen).

use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: cannot write: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The files written, and the CA as a base64 caBundle.
#[derive(Debug, Clone)]
pub struct Written {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca_bundle: String,
}

/// The DNS names the API server may use to reach the Service.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` for `names` into `dir` (created if missing).
pub fn write(dir: &Path, names: Vec<String>) -> Result<Written, CertsError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "headroom webhook CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let common_name = names.first().cloned().unwrap_or_else(|| "headroom".into());
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    let write = |name: &str, text: &str| -> Result<PathBuf, CertsError> {
        let path = dir.join(name);
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|source| CertsError::Write {
                path: path.display().to_string(),
                source,
            })?;
        Ok(path)
    };
    let ca_pem = ca_cert.pem();
    Ok(Written {
        ca: write("ca.crt", &ca_pem)?,
        cert: write("tls.crt", &cert.pem())?,
        key: write("tls.key", &key.serialize_pem())?,
        ca_bundle: base64::engine::general_purpose::STANDARD.encode(ca_pem),
    })
}
