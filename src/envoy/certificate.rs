//! The Envoy's certificate : self-signed, `CN=envoy-<serial>`, renewed about
//! once a year, so it cannot be checked against a CA. Instead its SHA-256 fingerprint is
//! remembered in `STATE_DIR`: `warn` accepts a new one and says so loudly, `pin` refuses any
//! but the configured or remembered one, `none` accepts anything silently.
//! The check itself is [`crate::tls::Verifier`].

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::settings::TlsVerify;
use crate::settings::parsers::{hex, parse_fingerprint};
use crate::state_file;

/// The file, in `STATE_DIR`, that remembers the fingerprint.
pub const FILE: &str = "envoy-cert.sha256";

/// The remembered fingerprint, if any.
pub fn remembered(state_dir: &Path) -> Option<[u8; 32]> {
    state_file::read(&state_dir.join(FILE))
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
        None if state_file::is_read_only() => log::info!(
            "the Envoy certificate is SHA-256 {} (not remembered: --check and --dry-run write nothing)",
            hex(&seen)
        ),
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
    state_file::write(
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

    use crate::tls::fingerprint;

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
