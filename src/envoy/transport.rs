//! The transport under ureq for the Envoy: rustls with the fingerprint [`Verifier`]
//! (ureq's own `TlsConfig` has no hook for a custom verifier), and a resolver that looks
//! the Envoy up once rather than on a new thread before every request.
//!
//! A raw tick is one request on a kept-alive connection, so the ceremony around it is what
//! costs (measured with strace, `docs/performance.md`): ureq's default resolver spawned a
//! thread per request when a timeout is set (17 syscalls, even for an IP address), probed
//! the pooled connection twice per request (6 syscalls) and set the socket's timeouts to
//! the remaining budget before every request (3 syscalls). Here: addresses are cached,
//! a connection used within [`FRESH`] is reused without a probe, and time budgets are
//! rounded up to whole seconds so the socket's timeouts change only when the budget does.
//!
//! Built on `ureq::unversioned`, which is why ureq is pinned to an exact version.

use std::fmt;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddrV6};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::time::Duration as Budget;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
    TransportAdapter,
};

use crate::error::Error;
use crate::tls::{self, Verifier};

/// Wraps the TCP transport in TLS for `https://` URLs.
pub struct EnvoyTls {
    config: Arc<ClientConfig>,
}

impl EnvoyTls {
    pub fn new(verifier: Arc<Verifier>) -> EnvoyTls {
        let config = tls::with_verifier(verifier).with_no_client_auth();
        EnvoyTls {
            config: Arc::new(config),
        }
    }
}

impl fmt::Debug for EnvoyTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnvoyTls")
    }
}

impl<In: Transport> Connector<In> for EnvoyTls {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details.uri.host().unwrap_or("envoy");
        // The certificate is checked by fingerprint, never by name: any valid name will do.
        let name = ServerName::try_from(host.to_string())
            .or_else(|_| ServerName::try_from("envoy"))
            .map_err(|_| ureq::Error::Tls("invalid server name"))?;
        let mut conn = ClientConnection::new(self.config.clone(), name)?;
        let coarse: Box<dyn Transport> = Box::new(Coarse(transport.boxed()));
        let mut sock = TransportAdapter::new(coarse, details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(TlsTransport {
            buffers,
            stream: StreamOwned { conn, sock },
            last_io: Instant::now(),
        })))
    }
}

/// A connection used this recently is reused without probing it first: the Envoy keeps an
/// idle connection far longer, and at 1 Hz the connection is never idle longer than this.
const FRESH: Duration = Duration::from_secs(2);

/// How long a looked-up address is kept (an IP address is never looked up): an Envoy that
/// DHCP moved is found again within this.
const ADDRESS_LIFE: Duration = Duration::from_secs(300);

/// A time budget rounded up to whole seconds above one second, so that the socket's
/// timeout, set only when it changes, stays the same from one request to the next. A
/// request may then take up to a second more than its budget.
fn coarse(mut t: NextTimeout) -> NextTimeout {
    if let Budget::Exact(d) = t.after {
        if d > Duration::from_secs(1) {
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            t.after = Budget::Exact(Duration::from_secs(secs));
        }
    }
    t
}

/// The TCP transport under TLS, its time budgets made [`coarse`] (the TLS layer asks for
/// the remaining budget, which changes by microseconds from one request to the next).
#[derive(Debug)]
struct Coarse(Box<dyn Transport>);

impl Transport for Coarse {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.0.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.0.transmit_output(amount, coarse(timeout))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.0.await_input(coarse(timeout))
    }

    fn is_open(&mut self) -> bool {
        self.0.is_open()
    }

    fn is_tls(&self) -> bool {
        self.0.is_tls()
    }
}

/// A TLS stream as a ureq transport.
pub struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
    last_io: Instant,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsTransport")
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        self.last_io = Instant::now();
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        self.last_io = Instant::now();
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        // A connection closed by the Envoy since is found by the request that follows: it
        // fails and the next poll opens a new one.
        self.last_io.elapsed() < FRESH || self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

/// Looks the Envoy up every five minutes at most, through ureq's resolver (on a thread, within
/// the time budget); an IP address is never looked up, and an IPv6 address gets the zone
/// `ENVOY_HOST` gave it (`[fe80::1%eth0]`), as an interface index.
#[derive(Debug, Default)]
pub struct EnvoyResolver {
    scope: Option<u32>,
    lookup: DefaultResolver,
    cached: Mutex<Option<(String, ResolvedSocketAddrs, Instant)>>,
}

impl Resolver for EnvoyResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().unwrap_or_default();
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("http") => 80,
            _ => 443,
        });
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            let mut addrs = self.empty();
            addrs.push(match (ip, self.scope) {
                (IpAddr::V6(v6), Some(scope)) => SocketAddrV6::new(v6, port, 0, scope).into(),
                _ => (ip, port).into(),
            });
            return Ok(addrs);
        }
        let key = format!("{host}:{port}");
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, addrs, at)) = cached.as_ref() {
            if *k == key && at.elapsed() < ADDRESS_LIFE {
                return Ok(addrs.clone());
            }
        }
        let addrs = self.lookup.resolve(uri, config, timeout)?;
        *cached = Some((key, addrs.clone(), Instant::now()));
        Ok(addrs)
    }
}

/// A failed request in words, with what to check.
pub fn transport_error(url: &str, path: &str, e: ureq::Error) -> Error {
    let closed =
        matches!(&e, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof);
    if closed {
        // rustls's own text for this points at its manual: say what it means instead.
        return Error::Envoy(format!(
            "GET {url}{path} failed: the Envoy closed the connection without answering; it may be busy or restarting (it restarts around 23:00 every night), retrying later"
        ));
    }
    let text = e.to_string();
    let https = url.starts_with("https://");
    let hint = match &e {
        _ if https && (text.contains("InvalidContentType") || text.contains("corrupt message")) => {
            "the server at ENVOY_HOST answered without TLS: an Envoy before firmware 7 wants http://, otherwise check the address and port"
        }
        _ if !https
            && (text.contains("http parse fail") || text.contains("invalid HTTP version")) =>
        {
            "the server at ENVOY_HOST speaks TLS: write ENVOY_HOST=https://..."
        }
        ureq::Error::Timeout(_) => {
            "the Envoy did not answer in time: it may be busy (it restarts around 23:00 every night), or nothing at ENVOY_HOST speaks HTTPS"
        }
        ureq::Error::HostNotFound => {
            "the name in ENVOY_HOST does not resolve: give the Envoy's IP address (a static build has no mDNS for .local names)"
        }
        ureq::Error::ConnectionFailed | ureq::Error::Io(_) => {
            "check that the Envoy is on and ENVOY_HOST is right"
        }
        _ => "check ENVOY_HOST",
    };
    Error::Envoy(format!("GET {url}{path} failed: {text}; {hint}"))
}

/// The HTTP agent for the Envoy: one kept-alive connection, no redirects, short time
/// budgets, and TLS through [`EnvoyTls`] (the certificate checked by fingerprint).
/// `timeout` bounds one request, from the name lookup to the last byte of the answer
/// (`ENVOY_TIMEOUT_SECONDS`, at most 10 s): with the cloud's requests of
/// [`super::auth::cloud`]'s budget in between, the loop never goes more than 15 s between
/// two tends of the broker session, half its keep-alive (see `mqtt::session::KEEP_ALIVE`).
pub fn agent(verifier: Arc<Verifier>, scope: Option<u32>, timeout: Duration) -> ureq::Agent {
    use ureq::unversioned::transport::{Connector, TcpConnector};
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_idle_connections(1)
        .max_idle_connections_per_host(1)
        .max_idle_age(Duration::from_secs(120))
        .timeout_global(Some(timeout))
        .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
        .user_agent(concat!("envoy2mqtt/", env!("CARGO_PKG_VERSION")))
        .build();
    let connector = ().chain(TcpConnector::default()).chain(EnvoyTls::new(verifier));
    let resolver = EnvoyResolver {
        scope,
        ..EnvoyResolver::default()
    };
    ureq::Agent::with_parts(config, connector, resolver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_whole_seconds_above_one() {
        let cases = [
            (Duration::from_millis(9_998), Duration::from_secs(10)),
            (Duration::from_secs(10), Duration::from_secs(10)),
            (Duration::from_millis(1_001), Duration::from_secs(2)),
            (Duration::from_millis(700), Duration::from_millis(700)),
        ];
        for (given, want) in cases {
            let t = NextTimeout {
                after: Budget::Exact(given),
                ..NextTimeout::default()
            };
            assert_eq!(*coarse(t).after, want, "{given:?}");
        }
    }

    #[test]
    fn an_ip_address_is_never_looked_up() {
        let r = EnvoyResolver::default();
        let config = Config::default();
        for (url, want) in [
            ("https://192.168.1.20/info", "192.168.1.20:443"),
            ("http://10.0.0.2:8080/info", "10.0.0.2:8080"),
            ("https://[fd00::20]/info", "[fd00::20]:443"),
        ] {
            let uri: Uri = url.parse().unwrap();
            let addrs = r.resolve(&uri, &config, NextTimeout::default()).unwrap();
            assert_eq!(addrs.len(), 1);
            assert_eq!(addrs[0].to_string(), want);
        }
        assert!(r.cached.lock().unwrap().is_none(), "nothing looked up");
    }

    #[test]
    fn an_ipv6_address_gets_its_zone() {
        let r = EnvoyResolver {
            scope: Some(3),
            ..EnvoyResolver::default()
        };
        let config = Config::default();
        for (url, want) in [
            ("https://[fe80::1]/info", "[fe80::1%3]:443"),
            ("https://[fe80::1]:8443/info", "[fe80::1%3]:8443"),
            // An IPv4 address has no zone.
            ("https://192.168.1.20/info", "192.168.1.20:443"),
        ] {
            let uri: Uri = url.parse().unwrap();
            let addrs = r.resolve(&uri, &config, NextTimeout::default()).unwrap();
            assert_eq!(addrs.len(), 1);
            assert_eq!(addrs[0].to_string(), want);
        }
    }
}
