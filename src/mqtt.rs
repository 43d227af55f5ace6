//! The MQTT session on rumqttc's sync client, driven from the program's one thread.
//!
//! What rumqttc 0.25 does not do for us, done here: publishes never block (`try_publish`,
//! the connection drained while the queue is full); the connect has its own time budget;
//! reconnects back off; a clean session is used and, after every (re)connect, the
//! subscriptions, the availability and every retained message are sent again, so the
//! broker's retained state is whole even after it lost it; `close` waits for the QoS
//! acknowledgements before the DISCONNECT, so nothing is lost at exit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    Client, ConnectReturnCode, Connection, ConnectionError, Event, Incoming, LastWill, MqttOptions,
    NetworkOptions, Outgoing, PingReq, QoS, RecvTimeoutError, Request, TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::certificate::Verifier;
use crate::config::{MqttConfig, TlsVerify};
use crate::error::{Error, Result};
use crate::message::Message;

/// How long one connection attempt may take.
const CONNECT_BUDGET: Duration = Duration::from_secs(10);
/// The longest pause between reconnection attempts.
const MAX_RETRY: Duration = Duration::from_secs(60);
/// The keep-alive: the broker drops a client it has heard nothing from in 1.5 times this.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Between the requests of a long poll, a ping goes out after this long without a packet,
/// so that a silence seen by the broker stays under 1.5 × [`KEEP_ALIVE`] = 45 s even with
/// the longest stall of the loop (30 s: see `envoy`'s time budgets) after it.
const QUIET: Duration = Duration::from_secs(10);

/// A connection to the broker.
pub struct Session {
    client: Client,
    connection: Connection,
    server: String,
    qos: QoS,
    connected: bool,
    /// Publishes handed to rumqttc and not yet written.
    queued: usize,
    /// QoS 1/2 publishes written and not yet acknowledged.
    inflight: usize,
    /// The last retained message of each topic, with when it was published (a counter), so
    /// that after a reconnect they go out in the order they were published: discovery
    /// configs before the values they describe.
    retained: BTreeMap<String, (u64, Message)>,
    published: u64,
    on_connect: Vec<Message>,
    subscriptions: Vec<String>,
    incoming: Vec<(String, Vec<u8>)>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
    /// When the last packet was written.
    last_out: Instant,
    /// When the broker last accepted the connection.
    connected_at: Instant,
    /// Sessions in a row that the broker closed right after accepting them.
    short_sessions: u32,
    /// Connections the broker accepted (the first one included).
    pub connects: u32,
    client_id: String,
    /// `MQTT_TLS`, for the error messages.
    tls: bool,
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
fn tls(cfg: &MqttConfig) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3");
    let builder = if cfg.tls_insecure {
        log::warn!("MQTT_TLS_INSECURE is set: the broker's certificate is not verified");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier::new(
                TlsVerify::None,
                None,
                provider,
            )))
    } else {
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

/// A broker error in words, with what to check. `tls`: `MQTT_TLS`; `connecting`: before the
/// broker accepted the connection (a TLS / plain mismatch shows there).
fn explain(server: &str, tls: bool, connecting: bool, e: &ConnectionError) -> Error {
    let text = e.to_string();
    let closed = [
        "reset by peer",
        "EOF",
        "eof",
        "closed",
        "corrupt",
        "InvalidContentType",
    ]
    .iter()
    .any(|w| text.contains(w));
    if connecting && closed {
        return Error::Broker(if tls {
            format!(
                "{server} closed the connection during the TLS handshake: that port may not speak TLS; check MQTT_PORT (TLS is usually 8883) or set MQTT_TLS=false"
            )
        } else {
            format!(
                "{server} closed the connection before answering: if that port expects TLS, set MQTT_TLS=true (and MQTT_CA_CERT); else check that the broker accepts this client"
            )
        });
    }
    Error::Broker(match e {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
        ) => {
            format!("{server} refused the login; check MQTT_USERNAME and MQTT_PASSWORD")
        }
        ConnectionError::ConnectionRefused(code) => {
            format!("{server} refused the connection ({code:?}); check MQTT_CLIENT_ID")
        }
        ConnectionError::Tls(e) => format!(
            "TLS with {server} failed ({e}); check MQTT_CA_CERT (the CA that signed the broker's certificate), and MQTT_CLIENT_CERT and MQTT_CLIENT_KEY for mutual TLS"
        ),
        ConnectionError::Io(e) => format!(
            "cannot talk to {server} ({e}); check MQTT_HOST, MQTT_PORT and MQTT_TLS, and that the broker runs"
        ),
        ConnectionError::NetworkTimeout => {
            format!("{server} did not answer in time; check MQTT_HOST and MQTT_PORT")
        }
        other => format!("{server}: {other}"),
    })
}

impl Session {
    /// Prepares the session; nothing is sent before [`Session::connect`] or [`Session::pump`].
    /// `will`: the last will (the service's `offline`); `on_connect`: sent after every connect.
    pub fn new(
        cfg: &MqttConfig,
        client_id: &str,
        will: Option<&Message>,
        on_connect: Vec<Message>,
    ) -> Result<Session> {
        let mut options = MqttOptions::new(client_id, &cfg.host, cfg.port);
        options
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            // Discovery payloads are larger than the 10 KiB default.
            .set_max_packet_size(256 * 1024, 256 * 1024);
        if let Some(user) = &cfg.username {
            options.set_credentials(user, cfg.password.as_ref().map_or("", |p| p.expose()));
        }
        if let Some(w) = will {
            options.set_last_will(LastWill::new(
                &w.topic,
                w.payload.clone(),
                QoS::AtLeastOnce,
                w.retain,
            ));
        }
        if cfg.tls {
            options.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls(cfg)?)));
        }
        let (client, mut connection) = Client::new(options, 512);
        let mut network = NetworkOptions::new();
        // Without it our own small packets wait for Nagle (42 ms measured).
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(CONNECT_BUDGET.as_secs());
        connection.eventloop.set_network_options(network);
        Ok(Session {
            client,
            connection,
            server: format!("broker {}:{}", cfg.host, cfg.port),
            qos: match cfg.qos {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            },
            connected: false,
            queued: 0,
            inflight: 0,
            retained: BTreeMap::new(),
            published: 0,
            on_connect,
            subscriptions: Vec::new(),
            incoming: Vec::new(),
            failures: 0,
            retry_at: None,
            last_error: String::new(),
            last_out: Instant::now(),
            connected_at: Instant::now(),
            short_sessions: 0,
            connects: 0,
            client_id: client_id.to_string(),
            tls: cfg.tls,
        })
    }

    /// Topics to subscribe to, now and after every reconnect.
    pub fn subscribe(&mut self, topics: Vec<String>) {
        if self.connected {
            for t in &topics {
                let _ = self.client.try_subscribe(t.clone(), QoS::AtLeastOnce);
            }
        }
        self.subscriptions = topics;
    }

    /// The retained messages of `topics`: subscribes to them and to `probe` (QoS 1), then
    /// publishes to `probe` at QoS 1. The broker handles a connection's packets in order and
    /// queues QoS 1 deliveries in order, so the probe comes back after every retained
    /// message (a QoS 0 probe could overtake them: mosquitto sends only 20 QoS 1 messages
    /// at a time). `None` when the broker cannot be reached or the probe does not come back
    /// within `wait`: the broker's state is then unknown, which is not the same as empty.
    pub fn retained(
        &mut self,
        topics: &[String],
        probe: &str,
        wait: Duration,
    ) -> Option<Vec<(String, Vec<u8>)>> {
        let deadline = Instant::now() + wait;
        if !self.connected {
            if let Err(e) = self.connect() {
                self.back_off(e.to_string());
                return None;
            }
        }
        let all: Vec<String> = topics.iter().cloned().chain([probe.to_string()]).collect();
        for t in &all {
            let _ = self.client.try_subscribe(t.clone(), QoS::AtLeastOnce);
        }
        let payload = format!("restore {}", std::process::id());
        let _ = self
            .client
            .try_publish(probe, QoS::AtLeastOnce, false, payload.clone());
        let mut got: Vec<(String, Vec<u8>)> = Vec::new();
        let is_probe = |(t, p): &(String, Vec<u8>)| t == probe && *p == payload.as_bytes();
        while self.connected && Instant::now() < deadline && !got.iter().any(is_probe) {
            got.extend(self.pump(deadline));
        }
        for t in all {
            let _ = self.client.try_unsubscribe(t);
        }
        let complete = got.iter().any(is_probe);
        got.retain(|(t, _)| t != probe);
        complete.then_some(got)
    }

    /// Whether the broker accepted the connection and it is up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Connects, waiting at most the connect budget for the broker's answer.
    pub fn connect(&mut self) -> Result<()> {
        let deadline = Instant::now() + CONNECT_BUDGET;
        while !self.connected {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Broker(format!(
                    "{} did not accept the connection within {:?}",
                    self.server, CONNECT_BUDGET
                )));
            }
            match self.connection.recv_timeout(left) {
                Ok(Ok(event)) => self.handle(event),
                Ok(Err(e)) => return Err(explain(&self.server, self.tls, true, &e)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::Broker(format!("{}: connection closed", self.server)));
                }
            }
        }
        Ok(())
    }

    fn send(&mut self, m: &Message) {
        let qos = if m.live { QoS::AtMostOnce } else { self.qos };
        for _ in 0..100 {
            match self.client.try_publish(
                m.topic.clone(),
                qos,
                m.retain,
                m.payload.clone().into_bytes(),
            ) {
                Ok(()) => {
                    self.queued += 1;
                    return;
                }
                // The queue is full: let the connection write some of it out.
                Err(_) if self.connected => self.poll_once(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        log::warn!(
            "{}: dropped {} (the outgoing queue stays full)",
            self.server,
            m.topic
        );
    }

    fn handle(&mut self, event: Event) {
        if matches!(event, Event::Outgoing(_)) {
            self.last_out = Instant::now();
        }
        match event {
            Event::Incoming(Incoming::ConnAck(ack)) if ack.code == ConnectReturnCode::Success => {
                if self.failures > 0 {
                    log::info!(
                        "{} is back; publishing the retained state again",
                        self.server
                    );
                }
                log::info!("connected to {}", self.server);
                self.connected = true;
                self.connected_at = Instant::now();
                self.connects += 1;
                self.queued = 0;
                self.inflight = 0;
                for t in self.subscriptions.clone() {
                    let _ = self.client.try_subscribe(t, QoS::AtLeastOnce);
                }
                let mut retained: Vec<&(u64, Message)> = self.retained.values().collect();
                retained.sort_by_key(|(n, _)| *n);
                let again: Vec<Message> = self
                    .on_connect
                    .iter()
                    .chain(retained.into_iter().map(|(_, m)| m))
                    .cloned()
                    .collect();
                for m in &again {
                    self.send(m);
                }
            }
            Event::Incoming(Incoming::PubAck(_) | Incoming::PubComp(_)) => {
                self.inflight = self.inflight.saturating_sub(1)
            }
            Event::Incoming(Incoming::Publish(p)) => {
                self.incoming.push((p.topic, p.payload.to_vec()))
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                self.queued = self.queued.saturating_sub(1);
                if pkid != 0 {
                    self.inflight += 1;
                }
            }
            _ => {}
        }
    }

    /// After a failed or lost connection: the next attempt waits 1, 2, 4... up to 60 s.
    /// Each different error is logged once.
    /// A session shorter than this, closed by the broker, counts as thrown out.
    const STABLE: Duration = Duration::from_secs(10);

    /// After a failed or lost connection: the next attempt waits 1, 2, 4... up to 60 s; the
    /// back-off starts again only after a session that lasted. Every retry is logged with
    /// when the next one comes; a new error as a warning.
    fn back_off(&mut self, err: String) {
        if self.connected {
            if self.connected_at.elapsed() >= Self::STABLE {
                self.failures = 0;
                self.short_sessions = 0;
                self.last_error.clear();
            } else {
                self.short_sessions += 1;
            }
        }
        let err = if self.short_sessions >= 3 {
            format!(
                "{} closed the connection right after accepting it, {} times in a row: another client uses MQTT_CLIENT_ID={}; give each client its own id",
                self.server, self.short_sessions, self.client_id
            )
        } else {
            err
        };
        self.connected = false;
        self.queued = 0;
        self.inflight = 0;
        self.failures += 1;
        let pause = (Duration::from_secs(1) * 2u32.saturating_pow(self.failures.min(10) - 1))
            .min(MAX_RETRY);
        self.retry_at = Some(Instant::now() + pause);
        let when = humantime::format_duration(pause);
        if err != self.last_error {
            log::warn!("{err}; retrying in {when}");
            self.last_error = err;
        } else {
            log::info!(
                "{}: attempt {} failed the same way; retrying in {when}",
                self.server,
                self.failures
            );
        }
    }

    fn poll_once(&mut self, wait: Duration) {
        match self.connection.recv_timeout(wait) {
            Ok(Ok(event)) => self.handle(event),
            Ok(Err(e)) => {
                let connecting = !self.connected;
                self.back_off(explain(&self.server, self.tls, connecting, &e).to_string())
            }
            Err(_) => {}
        }
    }

    /// Keeps the connection going until `until`, reconnecting with back-off; returns the
    /// messages that arrived (it returns as soon as one does).
    pub fn pump(&mut self, until: Instant) -> Vec<(String, Vec<u8>)> {
        loop {
            let now = Instant::now();
            if now >= until || !self.incoming.is_empty() {
                break;
            }
            if !self.connected {
                match self.retry_at {
                    Some(at) if at > now => std::thread::sleep(at.min(until) - now),
                    _ => {
                        if let Err(e) = self.connect() {
                            self.back_off(e.to_string());
                        }
                    }
                }
                continue;
            }
            self.poll_once(until - now);
        }
        std::mem::take(&mut self.incoming)
    }

    /// Publishes `messages` (retained ones are also remembered, to be sent again after a
    /// reconnect; an empty retained payload forgets the topic). While disconnected only
    /// the remembering happens.
    pub fn publish(&mut self, messages: &[Message]) {
        for m in messages {
            if m.retain {
                if m.payload.is_empty() {
                    self.retained.remove(&m.topic);
                } else {
                    self.published += 1;
                    self.retained
                        .insert(m.topic.clone(), (self.published, m.clone()));
                }
            }
            if self.connected {
                self.send(m);
            }
        }
    }

    /// Waits until everything queued is written and acknowledged, at most `budget`.
    pub fn flush(&mut self, budget: Duration) -> bool {
        let deadline = Instant::now() + budget;
        while self.connected && self.queued + self.inflight > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let awaited = self.inflight;
            self.poll_once(left.min(Duration::from_millis(200)));
            if self.queued == 0 && 0 < self.inflight && self.inflight < awaited {
                self.ping();
            }
        }
        self.connected
    }

    /// Queues a PINGREQ unless one is outstanding or something else waits to go out
    /// (rumqttc has no call for it: its event loop's public queue takes it). Used to keep
    /// the session alive during long polls, and, with everything written and
    /// acknowledgements still awaited, so that the broker gets our TCP ACK now: mosquitto
    /// leaves Nagle's algorithm on by default and holds the next PUBACKs until the previous
    /// one is ACKed, which our kernel, having nothing to send, would delay by 40 ms
    /// (measured: `--once` 51 ms without, 12 with).
    fn ping(&mut self) {
        let eventloop = &mut self.connection.eventloop;
        if !eventloop.state.await_pingresp && eventloop.pending.is_empty() {
            eventloop.pending.push_back(Request::PingReq(PingReq));
        }
    }

    /// Between the requests of a long poll: writes what is queued, handles what has come
    /// (commands are kept for the loop), and pings when nothing went out for 10 s, so the
    /// broker never takes a busy bridge for a dead one. Never waits for the network.
    pub fn tend(&mut self) {
        if !self.connected {
            return;
        }
        if self.last_out.elapsed() >= QUIET {
            self.ping();
        }
        // Bounded: at most this many ready events now; the rest at the next call.
        for _ in 0..64 {
            match self.connection.recv_timeout(Duration::from_millis(1)) {
                Ok(Ok(event)) => self.handle(event),
                Ok(Err(e)) => {
                    self.back_off(explain(&self.server, self.tls, false, &e).to_string());
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// Publishes `last` (the service's `offline`), waits for the acknowledgements, and
    /// disconnects cleanly so that the last will does not fire.
    pub fn close(&mut self, last: &[Message]) -> Result<()> {
        self.publish(last);
        let flushed = self.flush(Duration::from_secs(10));
        if !self.connected {
            return Err(Error::Broker(format!(
                "{} is not connected: the last messages were not delivered",
                self.server
            )));
        }
        let _ = self.client.try_disconnect();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.connection.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(Event::Outgoing(Outgoing::Disconnect)))
                | Ok(Err(_))
                | Err(RecvTimeoutError::Disconnected) => break,
                Ok(Ok(event)) => self.handle(event),
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        self.connected = false;
        if flushed {
            Ok(())
        } else {
            Err(Error::Broker(format!(
                "{} did not acknowledge every message within 10 s",
                self.server
            )))
        }
    }
}
