//! The byte stream to the broker: a blocking TCP socket, in TLS (rustls) when `MQTT_TLS`
//! is set. rustls is driven by hand rather than through `StreamOwned`, whose reads retry
//! after `EINTR`: here a signal ends a wait at once, so the loop can sleep in one read
//! until its next deadline and still stop promptly on SIGTERM (`SO_RCVTIMEO` makes
//! Linux return `EINTR` from `recv` even with `SA_RESTART`, see signal(7)).
//!
//! One read buffer lives as long as the connection; the socket's read timeout is set only
//! when it changes.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::ConnectReturnCode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection};

use crate::error::{Error, Result};
use crate::settings::{MqttConfig, TlsVerify};
use crate::tls::{self, Verifier};

/// How much one read takes from the socket at most.
const READ_SIZE: usize = 4096;

/// What a read found.
#[derive(Debug, PartialEq)]
pub enum Input {
    /// This many bytes were appended.
    Bytes(usize),
    /// Nothing within the wait (or a TLS record is still incomplete).
    Nothing,
    /// A signal arrived during the wait.
    Interrupted,
    /// The broker closed the connection.
    Closed,
}

fn pem_error(name: &str, path: &std::path::Path, e: impl std::fmt::Display) -> Error {
    Error::config(
        name,
        format!("{} is not a usable PEM file ({e})", path.display()),
        "give a PEM file",
    )
}

/// The rustls configuration for the broker: `MQTT_CA_CERT` or the bundled web roots,
/// an optional client certificate, or no verification when `MQTT_TLS_INSECURE`.
pub fn config(cfg: &MqttConfig) -> Result<Arc<rustls::ClientConfig>> {
    let provider = tls::provider();
    let builder = if cfg.tls_insecure {
        log::warn!("MQTT_TLS_INSECURE is set: the broker's certificate is not verified");
        tls::with_verifier(Arc::new(Verifier::new(TlsVerify::None, None, provider)))
    } else {
        let builder = tls::builder(provider);
        let mut roots = rustls::RootCertStore::empty();
        match &cfg.ca_cert {
            Some(path) => {
                for cert in CertificateDer::pem_file_iter(path)
                    .map_err(|e| pem_error("MQTT_CA_CERT", path, e))?
                {
                    let cert = cert.map_err(|e| pem_error("MQTT_CA_CERT", path, e))?;
                    roots
                        .add(cert)
                        .map_err(|e| pem_error("MQTT_CA_CERT", path, e))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots)
    };
    let config = match (&cfg.client_cert, &cfg.client_key) {
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| pem_error("MQTT_CLIENT_CERT", cert, e))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| pem_error("MQTT_CLIENT_KEY", key, e))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                Error::config(
                    "MQTT_CLIENT_KEY",
                    format!("does not fit MQTT_CLIENT_CERT ({e})"),
                    "give the key of that certificate",
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// An open connection to the broker.
pub struct Link {
    tcp: TcpStream,
    tls: Option<ClientConnection>,
    /// The socket's read timeout as last set.
    timeout: Option<Duration>,
    buffer: Box<[u8; READ_SIZE]>,
}

/// Connects to `host:port` within `budget` (each address the name resolves to in turn),
/// then does the TLS handshake with `tls` if given.
pub fn open(
    host: &str,
    port: u16,
    tls: Option<&Arc<ClientConfig>>,
    budget: Duration,
) -> io::Result<Link> {
    let deadline = Instant::now() + budget;
    let mut last = io::Error::new(ErrorKind::NotFound, "the name resolves to no address");
    let mut tcp = None;
    for addr in (host, port).to_socket_addrs()? {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let tcp = tcp.ok_or(last)?;
    // Our packets are small and one write holds a whole tick: Nagle would only delay them.
    tcp.set_nodelay(true)?;
    tcp.set_write_timeout(Some(budget))?;
    let mut link = Link {
        tcp,
        tls: None,
        timeout: None,
        buffer: Box::new([0; READ_SIZE]),
    };
    if let Some(config) = tls {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))?;
        let mut conn = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
        link.set_timeout(deadline.saturating_duration_since(Instant::now()))?;
        while conn.is_handshaking() {
            match conn.complete_io(&mut link.tcp) {
                Ok((0, 0)) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        link.tls = Some(conn);
    }
    Ok(link)
}

impl Link {
    fn set_timeout(&mut self, wait: Duration) -> io::Result<()> {
        // A zero timeout means "block for ever" to the socket.
        let wait = Some(wait.max(Duration::from_millis(1)));
        if self.timeout != wait {
            self.tcp.set_read_timeout(wait)?;
            self.timeout = wait;
        }
        Ok(())
    }

    /// Writes `bytes` whole (in TLS, as records written together).
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.tls {
            None => self.tcp.write_all(bytes),
            Some(conn) => {
                conn.writer().write_all(bytes)?;
                while conn.wants_write() {
                    conn.write_tls(&mut self.tcp)?;
                }
                Ok(())
            }
        }
    }

    /// Waits at most `wait` for bytes from the broker and appends them to `into`.
    pub fn read(&mut self, into: &mut BytesMut, wait: Duration) -> io::Result<Input> {
        if let Some(conn) = &mut self.tls {
            // Plaintext left over from a record already decrypted.
            if let Some(got) = plaintext(conn, &mut self.buffer[..], into)? {
                return Ok(got);
            }
        }
        self.set_timeout(wait)?;
        let got = match &mut self.tls {
            None => self.tcp.read(&mut self.buffer[..]),
            Some(conn) => conn.read_tls(&mut self.tcp),
        };
        let n = match got {
            Ok(0) => return Ok(Input::Closed),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(Input::Nothing);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(Input::Interrupted),
            Err(e) => return Err(e),
        };
        match &mut self.tls {
            None => {
                into.extend_from_slice(&self.buffer[..n]);
                Ok(Input::Bytes(n))
            }
            Some(conn) => {
                conn.process_new_packets()
                    .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
                while conn.wants_write() {
                    conn.write_tls(&mut self.tcp)?;
                }
                Ok(plaintext(conn, &mut self.buffer[..], into)?.unwrap_or(Input::Nothing))
            }
        }
    }

    /// Ends the connection: TLS close_notify, then the TCP shutdown.
    pub fn shut(mut self) {
        if let Some(conn) = &mut self.tls {
            conn.send_close_notify();
            while conn.wants_write() {
                if conn.write_tls(&mut self.tcp).is_err() {
                    break;
                }
            }
        }
        let _ = self.tcp.shutdown(Shutdown::Both);
    }
}

/// Moves decrypted bytes into `into`: `None` when there are none yet.
fn plaintext(
    conn: &mut ClientConnection,
    buffer: &mut [u8],
    into: &mut BytesMut,
) -> io::Result<Option<Input>> {
    let mut total = 0;
    loop {
        match conn.reader().read(buffer) {
            Ok(0) if total == 0 => return Ok(Some(Input::Closed)),
            Ok(0) => break,
            Ok(n) => {
                into.extend_from_slice(&buffer[..n]);
                total += n;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(Some(Input::Closed)),
            Err(e) => return Err(e),
        }
    }
    Ok((total > 0).then_some(Input::Bytes(total)))
}

/// Why a connection could not be opened or was lost, in words, with what to check.
/// `connecting`: before the broker accepted the connection, where a TLS / plain mismatch
/// shows as a connection closed without an answer.
pub fn explain(server: &str, tls: bool, connecting: bool, e: &io::Error) -> String {
    let tls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let closed = matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    ) || matches!(
        tls_error,
        Some(rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. })
    );
    if connecting && closed {
        return if tls {
            format!(
                "{server} closed the connection during the TLS handshake: that port may not speak TLS; check MQTT_PORT (TLS is usually 8883) or set MQTT_TLS=false"
            )
        } else {
            format!(
                "{server} closed the connection before answering: if that port expects TLS, set MQTT_TLS=true (and MQTT_CA_CERT); else check that the broker accepts this client"
            )
        };
    }
    match (tls_error, e.kind()) {
        (Some(t), _) => format!(
            "TLS with {server} failed ({t}); check MQTT_CA_CERT (the CA that signed the broker's certificate), and MQTT_CLIENT_CERT and MQTT_CLIENT_KEY for mutual TLS"
        ),
        (None, io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            format!("{server} did not answer in time; check MQTT_HOST and MQTT_PORT")
        }
        _ => format!(
            "cannot talk to {server} ({e}); check MQTT_HOST, MQTT_PORT and MQTT_TLS, and that the broker runs"
        ),
    }
}

/// A refused CONNECT in words.
pub fn refused(server: &str, code: ConnectReturnCode) -> String {
    match code {
        ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized => {
            format!("{server} refused the login; check MQTT_USERNAME and MQTT_PASSWORD")
        }
        code => format!("{server} refused the connection ({code:?}); check MQTT_CLIENT_ID"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_read_returns_bytes_nothing_or_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut link = open("127.0.0.1", port, None, Duration::from_secs(5)).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        let mut input = BytesMut::new();
        let wait = Duration::from_millis(20);
        assert_eq!(link.read(&mut input, wait).unwrap(), Input::Nothing);
        peer.write_all(b"abc").unwrap();
        // Bounded: the bytes are on loopback already; a read may see them in pieces.
        for _ in 0..100 {
            if input.len() == 3 {
                break;
            }
            link.read(&mut input, Duration::from_secs(1)).unwrap();
        }
        assert_eq!(&input[..], b"abc");
        link.write(b"xyz").unwrap();
        let mut got = [0; 3];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"xyz");
        drop(peer);
        assert_eq!(
            link.read(&mut input, Duration::from_secs(5)).unwrap(),
            Input::Closed
        );
    }

    #[test]
    fn a_port_nobody_listens_on_is_an_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(open("127.0.0.1", port, None, Duration::from_secs(5)).is_err());
    }

    #[test]
    fn errors_name_what_to_check() {
        let server = "broker h:1";
        let tls_error = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let cases: [(io::Error, bool, bool, &str); 6] = [
            (
                io::ErrorKind::UnexpectedEof.into(),
                true,
                true,
                "may not speak TLS",
            ),
            (
                io::ErrorKind::ConnectionReset.into(),
                false,
                true,
                "set MQTT_TLS=true",
            ),
            (
                io::ErrorKind::ConnectionRefused.into(),
                false,
                true,
                "that the broker runs",
            ),
            (
                io::ErrorKind::TimedOut.into(),
                false,
                true,
                "did not answer in time",
            ),
            (tls_error, true, true, "check MQTT_CA_CERT"),
            (
                io::ErrorKind::ConnectionReset.into(),
                false,
                false,
                "cannot talk to",
            ),
        ];
        for (e, tls, connecting, want) in cases {
            let got = explain(server, tls, connecting, &e);
            assert!(got.contains(want), "{e:?}: {got}");
        }
        assert!(refused(server, ConnectReturnCode::BadUserNamePassword).contains("MQTT_PASSWORD"));
        assert!(refused(server, ConnectReturnCode::BadClientId).contains("MQTT_CLIENT_ID"));
    }
}
