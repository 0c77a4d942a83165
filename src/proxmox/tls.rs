//! TLS to Proxmox VE: a CA file, or a pinned SHA-256 fingerprint of the node certificate.
//!
//! PVE nodes serve certificates signed by their own cluster CA, so most tools disable
//! verification. headroom never does: either the CA verifies the chain and name, or the leaf
//! must hash to the configured fingerprint. Both are checked inside the handshake, before a
//! single byte of the request (and so the API token) is sent.

use std::sync::Arc;

use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};

#[derive(Debug, thiserror::Error)]
pub enum PveTlsError {
    #[error("proxmox.caFile {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("proxmox.fingerprint: {0}")]
    Fingerprint(String),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// How the PVE certificate is checked.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Chain and name verified against these CA certificates (PEM file).
    CaFile(String),
    /// The leaf certificate's SHA-256, as `AB:CD:…` (PVE's `ssl_fingerprint`).
    Fingerprint(String),
    /// The system's CA bundle (a publicly trusted certificate, e.g. ACME).
    System,
}

/// Parses `AB:CD:…` (colons optional, any case) into 32 bytes.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], PveTlsError> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
    if hex.len() != 64 {
        return Err(PveTlsError::Fingerprint(format!(
            "expected 32 hex bytes, got {:?}",
            text
        )));
    }
    // Byte-wise: 64 bytes of text need not be 64 characters.
    let digit = |b: u8| {
        char::from(b)
            .to_digit(16)
            .ok_or_else(|| PveTlsError::Fingerprint(format!("not hex: {text:?}")))
    };
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Ok(out)
}

/// Accepts exactly the certificate whose SHA-256 is pinned; signatures are still verified.
#[derive(Debug)]
struct PinnedLeaf {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedLeaf {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if digest.as_ref() == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "PVE certificate does not match proxmox.fingerprint".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn roots_from(path: &str) -> Result<rustls::RootCertStore, PveTlsError> {
    let fail = |reason: String| PveTlsError::Ca {
        path: path.to_owned(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| fail(e.to_string()))? {
        roots
            .add(cert.map_err(|e| fail(e.to_string()))?)
            .map_err(|e| fail(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(fail("no certificate in file".into()));
    }
    Ok(roots)
}

/// A rustls client config for PVE (HTTP/1.1 only: pveproxy does not speak h2).
pub fn client_config(trust: &Trust) -> Result<rustls::ClientConfig, PveTlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match trust {
        Trust::CaFile(path) => builder
            .with_root_certificates(roots_from(path)?)
            .with_no_client_auth(),
        Trust::System => {
            let bundle = std::env::var("SSL_CERT_FILE")
                .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
            builder
                .with_root_certificates(roots_from(&bundle)?)
                .with_no_client_auth()
        }
        Trust::Fingerprint(text) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedLeaf {
                pin: parse_fingerprint(text)?,
                provider,
            }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let colons =
            "C4:A9:AD:C6:21:23:86:45:06:B0:B7:01:E8:B2:AB:B4:1F:52:C0:BB:F3:0E:50:40:82:E2:BF:8A:38:34:CC:24";
        let a = parse_fingerprint(colons).unwrap();
        assert_eq!(a[0], 0xC4);
        assert_eq!(a[31], 0x24);
        assert_eq!(
            parse_fingerprint(&colons.replace(':', "").to_lowercase()).unwrap(),
            a
        );
        assert!(parse_fingerprint("C4:A9").is_err());
        assert!(parse_fingerprint(&"ZZ".repeat(32)).is_err());
        // 64 bytes, but not 64 characters (found by the fuzz properties: it used to panic).
        assert!(parse_fingerprint(&format!("Ⱥ{}", "A".repeat(62))).is_err());
    }
}
