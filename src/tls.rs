//! TLS for both edges, in one place: one rustls builder (ring, TLS 1.2 and 1.3), and the
//! [`Verifier`] that checks a certificate by its SHA-256 fingerprint rather than by a CA
//! (the Envoy's is self-signed; `MQTT_TLS_INSECURE` uses it to accept any broker).
//!
//! The handshake signature is always verified, so whoever answers really holds the key of
//! the certificate that was fingerprinted.

use std::sync::{Arc, Mutex};

use rustls::client::WantsClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ConfigBuilder, DigitallySignedStruct, SignatureScheme, WantsVerifier};

use crate::settings::TlsVerify;

/// The crypto provider of every connection: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The one rustls builder: `provider`, TLS 1.2 and 1.3, a verifier still to choose.
pub fn builder(provider: Arc<CryptoProvider>) -> ConfigBuilder<ClientConfig, WantsVerifier> {
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
}

/// [`builder`] with a [`Verifier`] in place of CA roots.
pub fn with_verifier(verifier: Arc<Verifier>) -> ConfigBuilder<ClientConfig, WantsClientCert> {
    builder(verifier.provider.clone())
        .dangerous()
        .with_custom_certificate_verifier(verifier)
}

/// SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// Verifies a certificate by fingerprint (`pin` refuses any but the pinned one; `warn` and
/// `none` accept any) and records the fingerprint it saw.
#[derive(Debug)]
pub struct Verifier {
    mode: TlsVerify,
    pinned: Option<[u8; 32]>,
    seen: Mutex<Option<[u8; 32]>>,
    provider: Arc<CryptoProvider>,
}

impl Verifier {
    /// `pinned`: the fingerprint `pin` mode accepts (configured or remembered).
    pub fn new(
        mode: TlsVerify,
        pinned: Option<[u8; 32]>,
        provider: Arc<CryptoProvider>,
    ) -> Verifier {
        Verifier {
            mode,
            pinned,
            seen: Mutex::new(None),
            provider,
        }
    }

    /// The fingerprint of the last certificate presented.
    pub fn seen(&self) -> Option<[u8; 32]> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn pinned(&self) -> Option<[u8; 32]> {
        self.pinned
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(fp);
        match (self.mode, self.pinned) {
            (TlsVerify::Pin, Some(pinned)) if pinned != fp => Err(rustls::Error::General(
                "the certificate is not the pinned one".into(),
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
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
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn verify(v: &Verifier, der: &[u8]) -> bool {
        let name = ServerName::try_from("envoy").unwrap();
        let cert = CertificateDer::from(der.to_vec());
        v.verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
            .is_ok()
    }

    #[test]
    fn each_mode_accepts_what_it_should_and_records_what_it_saw() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (old, new) = (b"old certificate".as_slice(), b"new certificate".as_slice());
        let pin = Some(fingerprint(old));
        let cases = [
            (TlsVerify::Pin, pin, old, true),
            (TlsVerify::Pin, pin, new, false),
            // Nothing pinned yet: the first certificate is taken (and then remembered).
            (TlsVerify::Pin, None, new, true),
            (TlsVerify::Warn, pin, new, true),
            (TlsVerify::None, pin, new, true),
        ];
        for (mode, pinned, der, ok) in cases {
            let v = Verifier::new(mode, pinned, provider.clone());
            assert_eq!(verify(&v, der), ok, "{mode:?} {pinned:?}");
            assert_eq!(v.seen(), Some(fingerprint(der)), "{mode:?}");
        }
    }
}
