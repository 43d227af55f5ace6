//! Certificates for the simulated Envoy and cloud, made with `openssl`: the Envoy's
//! self-signed one, a test CA with a server certificate it signs, and client certificates
//! for mutual TLS.
#![allow(dead_code)] // Each user (tests, the demo binary) uses its own part of it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl must be installed (make test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` with a new P-256 key and `args`.
fn new_key(args: &[&str]) {
    let mut all = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    all.extend_from_slice(args);
    openssl(&all);
}

/// A self-signed certificate like an Envoy's (`CN=envoy-<serial>`): (cert.pem, key.pem).
pub fn self_signed(dir: &Path, serial: &str) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (cert, key) = (dir.join("envoy.pem"), dir.join("envoy.key"));
    let subject = format!("/CN=envoy-{serial}");
    new_key(&[
        "-x509",
        "-days",
        "365",
        "-subj",
        &subject,
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    (cert, key)
}

/// Signs `csr` with the CA in `dir` (ca.pem, ca.key) for 30 days, with the extensions of
/// `ext`, into `out`.
fn sign(dir: &Path, csr: &str, ext: &str, out: &str) {
    let ca = |n: &str| dir.join(n).to_str().unwrap().to_string();
    openssl(&[
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        &ca("ca.pem"),
        "-CAkey",
        &ca("ca.key"),
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        ext,
        "-out",
        out,
    ]);
}

/// A test CA and a certificate it signs for 127.0.0.1 / localhost: (ca.pem, cert.pem, key.pem).
pub fn ca_signed(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    new_key(&[
        "-x509",
        "-days",
        "30",
        "-subj",
        "/CN=envoy2mqtt test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
    ]);
    new_key(&[
        "-subj",
        "/CN=localhost",
        "-keyout",
        &p("server.key"),
        "-out",
        &p("server.csr"),
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    sign(dir, &p("server.csr"), &p("server.ext"), &p("server.pem"));
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// A client certificate (X.509 v3, for client authentication) signed by the CA that
/// [`ca_signed`] made in `dir`: (cert.pem, key.pem).
pub fn client_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let (key, csr, cert, ext) = (
        p(&format!("{name}.key")),
        p(&format!("{name}.csr")),
        p(&format!("{name}.pem")),
        p(&format!("{name}.ext")),
    );
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    let subject = format!("/CN={name}");
    new_key(&["-subj", &subject, "-keyout", &key, "-out", &csr]);
    sign(dir, &csr, &ext, &cert);
    (PathBuf::from(cert), PathBuf::from(key))
}
