//! The Envoy's certificate : self-signed, `CN=envoy-<serial>`, renewed about
//! once a year, so it cannot be checked against a CA. Instead its SHA-256 fingerprint is
//! remembered in `STATE_DIR`: `warn` accepts a new one and says so loudly, `pin` refuses any
//! but the configured or remembered one, `none` accepts anything silently.
//!
//! The handshake signature is always verified, so whoever answers really holds the key of
//! the certificate that was fingerprinted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::TlsVerify;
use crate::error::{Error, Result};
use crate::state;
use crate::value::{hex, parse_fingerprint};

/// The file, in `STATE_DIR`, that remembers the fingerprint.
pub const FILE: &str = "envoy-cert.sha256";

/// SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// Verifies the Envoy's certificate by fingerprint and records what it saw.
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

    /// The fingerprint of the last certificate the Envoy presented.
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
                "the Envoy certificate is not the pinned one".into(),
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

/// The remembered fingerprint, if any.
pub fn remembered(state_dir: &Path) -> Option<[u8; 32]> {
    state::read(&state_dir.join(FILE))
        .ok()
        .flatten()
        .and_then(|t| parse_fingerprint(t.trim()))
}

/// After a successful request: remembers a first or changed fingerprint (warning loudly
/// about a change) and returns whether it changed.
pub fn remember(state_dir: &Path, mode: TlsVerify, seen: [u8; 32]) -> Result<bool> {
    if mode == TlsVerify::None {
        return Ok(false);
    }
    let old = remembered(state_dir);
    if old == Some(seen) {
        return Ok(false);
    }
    match old {
        None => log::info!("remembering the Envoy certificate, SHA-256 {}", hex(&seen)),
        Some(old) => log::warn!(
            "THE ENVOY CERTIFICATE CHANGED: SHA-256 was {}, is now {}. Envoys renew their \
             self-signed certificate about once a year; if nothing was renewed or replaced, \
             something else may be answering at ENVOY_HOST. Accepted and remembered \
             (ENVOY_TLS_VERIFY=pin refuses changes).",
            hex(&old),
            hex(&seen)
        ),
    }
    state::write(
        &state_dir.join(FILE),
        format!("{}\n", hex(&seen)).as_bytes(),
    )?;
    Ok(old.is_some())
}

/// The error for a refused certificate in `pin` mode, with the way to accept it.
pub fn refused(state_dir: &Path, pinned: [u8; 32], seen: Option<[u8; 32]>) -> Error {
    let file: PathBuf = state_dir.join(FILE);
    match seen {
        Some(seen) => Error::Certificate(format!(
            "the Envoy presented a certificate with SHA-256 {} but {} is pinned; if the Envoy \
             renewed its certificate, accept the new one by setting ENVOY_CERT_SHA256={} \
             (or deleting {} when the pin was remembered)",
            hex(&seen),
            hex(&pinned),
            hex(&seen),
            file.display()
        )),
        None => Error::Certificate(format!(
            "the TLS handshake with the Envoy failed before its certificate could be checked against the pin {}",
            hex(&pinned)
        )),
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

    #[test]
    fn a_changed_certificate_is_remembered_and_the_refusal_says_how_to_accept_it() {
        let dir = std::env::temp_dir().join(format!("envoy2mqtt-cert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (fingerprint(b"a"), fingerprint(b"b"));
        assert!(
            !remember(&dir, TlsVerify::None, a).unwrap(),
            "none remembers nothing"
        );
        assert_eq!(remembered(&dir), None);
        assert!(
            !remember(&dir, TlsVerify::Warn, a).unwrap(),
            "a first one is no change"
        );
        assert_eq!(remembered(&dir), Some(a));
        assert!(!remember(&dir, TlsVerify::Warn, a).unwrap());
        assert!(remember(&dir, TlsVerify::Warn, b).unwrap(), "a change");
        assert_eq!(remembered(&dir), Some(b));
        let e = refused(&dir, a, Some(b)).to_string();
        assert!(e.contains(&format!("ENVOY_CERT_SHA256={}", hex(&b))), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
