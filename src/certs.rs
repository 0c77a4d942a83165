//! `headroom certs`: a CA, a serving certificate for the webhook Service, and client
//! certificates for the callers (the API server, kube-scheduler), with rcgen.

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
    #[error("the system's random number generator failed")]
    Random,
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
    pub clients: Vec<ClientPair>,
}

/// A client certificate and its key.
#[derive(Debug, Clone)]
pub struct ClientPair {
    pub name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The file stem for a client name: `system:kube-scheduler` becomes `system-kube-scheduler`
/// (a Secret key allows only letters, digits, `-`, `_` and `.`).
pub fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
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

/// Random bytes from the system's CSPRNG (ring).
pub fn random<const N: usize>() -> Result<[u8; N], CertsError> {
    let mut bytes = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| CertsError::Random)?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` for `names` into `dir` (created if missing), and
/// for each of `clients` a client certificate with that common name, `<stem>.crt` and
/// `<stem>.key`, issued by the same CA (so `tls.clientCAFile` can be `ca.crt`).
///
/// Each CA gets a subject of its own (a random suffix) and a random serial: during a rotation
/// a bundle holds the old CA and the new one, and a verifier that picks an issuer by subject
/// must not pick the wrong one. The leaf names its issuer's key (Authority Key Identifier),
/// which is what OpenSSL, rustls and Go match on. The key is written 0600, atomically.
pub fn write(dir: &Path, names: Vec<String>, clients: &[String]) -> Result<Written, CertsError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    let id: [u8; 8] = random()?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("headroom webhook CA {}", hex(&id)));
    ca_params.serial_number = Some(rcgen::SerialNumber::from_slice(&random::<16>()?));
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
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&random::<16>()?));
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    let mut pairs = Vec::with_capacity(clients.len());
    for name in clients {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name.clone());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&random::<16>()?));
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let stem = file_stem(name);
        pairs.push(ClientPair {
            name: name.clone(),
            cert: write_file(dir, &format!("{stem}.crt"), &cert.pem(), 0o644)?,
            key: write_file(dir, &format!("{stem}.key"), &key.serialize_pem(), 0o600)?,
        });
    }

    let ca_pem = ca_cert.pem();
    Ok(Written {
        ca: write_file(dir, "ca.crt", &ca_pem, 0o644)?,
        cert: write_file(dir, "tls.crt", &cert.pem(), 0o644)?,
        key: write_file(dir, "tls.key", &key.serialize_pem(), 0o600)?,
        ca_bundle: base64::engine::general_purpose::STANDARD.encode(ca_pem),
        clients: pairs,
    })
}

/// Writes `text` to `dir/name` with `mode`: into a temporary file created with that mode, then
/// renamed over the target, so a reader (the server's reload) never sees half a key and the key
/// is never readable by others, not even for a moment.
fn write_file(dir: &Path, name: &str, text: &str, mode: u32) -> Result<PathBuf, CertsError> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = std::fs::create_dir_all(dir).and_then(|()| {
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    });
    written.map_err(|source| CertsError::Write {
        path: path.display().to_string(),
        source,
    })?;
    Ok(path)
}

/// A directory only this user can read, with a random name, under the system's temp dir.
pub fn private_temp_dir() -> Result<PathBuf, CertsError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!("headroom-{}", hex(&random::<8>()?)));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|source| CertsError::Write {
            path: dir.display().to_string(),
            source,
        })?;
    Ok(dir)
}
