//! TLS trust for `--ca-cert`: the file may hold a private CA (chains are verified as usual,
//! on top of the system's roots) or the server's own self-signed certificate, which is then
//! pinned: that exact certificate is accepted, whatever its CA flag says. `openssl req -x509`
//! makes such certificates with `CA:TRUE`, which plain path validation rejects as
//! "CaUsedAsEndEntity".

use crate::abiquo::error::ClientError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

/// Verifies like the platform verifier with the file's certificates as extra roots, and
/// accepts an end-entity certificate byte-identical to one of them.
#[derive(Debug)]
struct PinningVerifier {
    pinned: Vec<CertificateDer<'static>>,
    inner: rustls_platform_verifier::Verifier,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    // The handshake signature proves the server holds the certificate's key: always checked.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The certificates of a PEM file, with errors that name the file.
pub(super) fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let pem = std::fs::read(path).map_err(|e| {
        ClientError::Config(format!(
            "cannot read CA certificate {}: {e}",
            path.display()
        ))
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ClientError::Config(format!(
                "{} is not a PEM certificate bundle: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(ClientError::Config(format!(
            "{} contains no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// A rustls configuration trusting the system's roots, the file's CAs, and the file's
/// certificates pinned as server certificates.
pub(super) fn pinned_config(path: &Path) -> Result<rustls::ClientConfig, ClientError> {
    let certs = read_certificates(path)?;
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let inner = rustls_platform_verifier::Verifier::new_with_extra_roots(
        certs.iter().cloned(),
        Arc::clone(&provider),
    )
    .map_err(|e| {
        ClientError::Config(format!(
            "cannot use the certificates of {}: {e}",
            path.display()
        ))
    })?;
    let verifier = PinningVerifier {
        pinned: certs,
        inner,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Config(format!("cannot set up TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
