//! The MQTT 3.1.1 session: rumqttc's packet codec over our own blocking socket
//! ([`super::link`]), driven from the program's one thread (rumqttc's own client runs a tokio
//! runtime: 4 extra wake-ups a second and more, docs/design.md). The loop waits in one read
//! until its next deadline or a packet; a tick's messages go out in one write; a clean
//! session, and after every (re)connect the subscriptions, the availability and the retained
//! messages are sent again, so the broker's retained state is whole even after it lost it;
//! reconnects back off; `close` waits for the acknowledgements, so nothing is lost at exit.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::{
    ConnAck, Connect, ConnectReturnCode, LastWill, Packet, PubAck, PubComp, PubRec, PubRel, QoS,
    Subscribe, SubscribeFilter, Unsubscribe,
};

use super::link::{self, Input, Link, explain, refused};
use super::message::Message;
use super::oversize::{self, Dropper, Head, MAX_INCOMING};
use super::packet::{self, MAX_PACKET};
use crate::error::{Error, Result};
use crate::settings::MqttConfig;
use crate::signal::SIGNAL_CHECK;

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
/// A session shorter than this, closed by the broker, counts as thrown out.
const STABLE: Duration = Duration::from_secs(10);

/// A connection to the broker, and what must survive a reconnect.
pub struct Session {
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    hello: Connect,
    link: Option<Link>,
    input: BytesMut,
    output: BytesMut,
    server: String,
    qos: QoS,
    next_id: u16,
    /// QoS 1/2 publishes written and not yet acknowledged.
    unacked: usize,
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
    /// When the PINGREQ that has no answer yet was written.
    ping_sent: Option<Instant>,
    /// When the broker last accepted the connection.
    connected_at: Instant,
    /// Sessions in a row that the broker closed right after accepting them.
    short_sessions: u32,
    /// Connections the broker accepted (the first one included).
    pub connects: u32,
    /// What is left to drop of an oversized incoming packet.
    dropper: Dropper,
    /// Retained messages under this prefix are not kept for a reconnect: their owner sends
    /// them again (discovery configs, a quarter of a megabyte with 30 microinverters).
    not_kept: Option<String>,
}

impl Session {
    /// Prepares the session; nothing is sent before [`Session::connect`] or [`Session::wait`].
    /// `will`: the last will (the service's `offline`); `on_connect`: sent after every connect.
    pub fn new(
        cfg: &MqttConfig,
        client_id: &str,
        will: Option<&Message>,
        on_connect: Vec<Message>,
    ) -> Result<Session> {
        let mut hello = Connect::new(client_id);
        hello.keep_alive = KEEP_ALIVE.as_secs() as u16;
        hello.clean_session = true;
        if let Some(user) = &cfg.username {
            hello.set_login(user, cfg.password.as_ref().map_or("", |p| p.expose()));
        }
        hello.last_will =
            will.map(|w| LastWill::new(&w.topic, w.payload.clone(), QoS::AtLeastOnce, w.retain));
        Ok(Session {
            host: cfg.host.clone(),
            port: cfg.port,
            tls: if cfg.tls {
                Some(link::config(cfg)?)
            } else {
                None
            },
            hello,
            link: None,
            input: BytesMut::with_capacity(4096),
            output: BytesMut::with_capacity(4096),
            server: format!("broker {}:{}", cfg.host, cfg.port),
            qos: match cfg.qos {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            },
            next_id: 0,
            unacked: 0,
            retained: BTreeMap::new(),
            published: 0,
            on_connect,
            subscriptions: Vec::new(),
            incoming: Vec::new(),
            failures: 0,
            retry_at: None,
            last_error: String::new(),
            last_out: Instant::now(),
            ping_sent: None,
            connected_at: Instant::now(),
            short_sessions: 0,
            connects: 0,
            dropper: Dropper::default(),
            not_kept: None,
        })
    }

    /// Whether the broker accepted the connection and it is up.
    pub fn is_connected(&self) -> bool {
        self.link.is_some()
    }

    fn packet_id(&mut self) -> u16 {
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        self.next_id
    }

    /// Adds `packet` to what goes out at the next [`Session::send`].
    fn encode(&mut self, packet: Packet) {
        if let Err(e) = packet.write(&mut self.output, MAX_PACKET) {
            log::warn!("{}: a packet was not sent ({e})", self.server);
        }
    }

    /// Writes what was encoded, in one write.
    fn send(&mut self) {
        if self.output.is_empty() {
            return;
        }
        let Some(link) = &mut self.link else {
            self.output.clear();
            return;
        };
        let written = link.write(&self.output);
        self.output.clear();
        self.last_out = Instant::now();
        if let Err(e) = written {
            let err = explain(&self.server, self.tls.is_some(), false, &e);
            self.back_off(err);
        }
    }

    fn encode_subscribe(&mut self, topics: &[String]) {
        if topics.is_empty() {
            return;
        }
        let filters = topics
            .iter()
            .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
        let mut packet = Subscribe::new_many(filters);
        packet.pkid = self.packet_id();
        self.encode(Packet::Subscribe(packet));
    }

    fn encode_publish(&mut self, m: &Message) {
        // Raw values are stale in a second: they never wait for an acknowledgement.
        let qos = if m.live { QoS::AtMostOnce } else { self.qos };
        let id = match qos {
            QoS::AtMostOnce => None,
            _ => Some(self.packet_id()),
        };
        if let Err(e) = packet::publish(&mut self.output, m, qos, id) {
            log::warn!("{}: {} was not sent ({e})", self.server, m.topic);
            return;
        }
        if id.is_some() {
            self.unacked += 1;
        }
    }

    /// Topics to subscribe to, now and after every reconnect.
    pub fn subscribe(&mut self, topics: Vec<String>) {
        if self.is_connected() {
            self.encode_subscribe(&topics);
            self.send();
        }
        self.subscriptions = topics;
    }

    /// Retained messages under `prefix` are not kept for the re-send after a reconnect.
    pub fn not_kept(&mut self, prefix: String) {
        self.not_kept = Some(prefix);
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
        if !self.is_connected() {
            if let Err(e) = self.connect() {
                self.back_off(e.to_string());
                return None;
            }
        }
        let all: Vec<String> = topics.iter().cloned().chain([probe.to_string()]).collect();
        self.encode_subscribe(&all);
        let payload = format!("restore {}", std::process::id());
        let m = Message {
            topic: probe.to_string(),
            payload: payload.clone(),
            retain: false,
            live: false,
        };
        let id = self.packet_id();
        if packet::publish(&mut self.output, &m, QoS::AtLeastOnce, Some(id)).is_ok() {
            self.unacked += 1;
        }
        self.send();
        let is_probe = |(t, p): &(String, Vec<u8>)| t == probe && *p == payload.as_bytes();
        let mut got: Vec<(String, Vec<u8>)> = Vec::new();
        while self.is_connected() && Instant::now() < deadline && !got.iter().any(is_probe) {
            self.read(deadline);
            got.append(&mut self.incoming);
        }
        let mut packet = Unsubscribe::new(probe);
        packet.topics = all;
        packet.pkid = self.packet_id();
        self.encode(Packet::Unsubscribe(packet));
        self.send();
        let complete = got.iter().any(is_probe);
        got.retain(|(t, _)| t != probe);
        complete.then_some(got)
    }

    /// Connects, waiting at most the connect budget for the broker's answer; then sends
    /// the subscriptions, the `on_connect` messages and every retained message again.
    pub fn connect(&mut self) -> Result<()> {
        let deadline = Instant::now() + CONNECT_BUDGET;
        let tls = self.tls.is_some();
        let mut link = link::open(&self.host, self.port, self.tls.as_ref(), CONNECT_BUDGET)
            .map_err(|e| Error::Broker(explain(&self.server, tls, true, &e)))?;
        let hello = Packet::Connect(self.hello.clone());
        self.output.clear();
        self.input.clear();
        self.encode(hello);
        let written = link.write(&self.output);
        self.output.clear();
        written.map_err(|e| Error::Broker(explain(&self.server, tls, true, &e)))?;
        let ack = loop {
            match Packet::read(&mut self.input, MAX_PACKET) {
                Ok(Packet::ConnAck(ack)) => break ack,
                Ok(_) | Err(CodecError::InsufficientBytes(_)) => {}
                Err(e) => {
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, e);
                    return Err(Error::Broker(explain(&self.server, tls, true, &e)));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Broker(format!(
                    "{} did not accept the connection within {CONNECT_BUDGET:?}",
                    self.server
                )));
            }
            let e = match link.read(&mut self.input, left) {
                Ok(Input::Closed) => io::ErrorKind::UnexpectedEof.into(),
                Ok(_) => continue,
                Err(e) => e,
            };
            return Err(Error::Broker(explain(&self.server, tls, true, &e)));
        };
        self.accepted(link, ack)
    }

    /// After the CONNACK: the session is up (or refused).
    fn accepted(&mut self, link: Link, ack: ConnAck) -> Result<()> {
        if ack.code != ConnectReturnCode::Success {
            link.shut();
            return Err(Error::Broker(refused(&self.server, ack.code)));
        }
        if self.failures > 0 {
            log::info!(
                "{} is back; publishing the retained state again",
                self.server
            );
        }
        log::info!("connected to {}", self.server);
        self.link = Some(link);
        self.connected_at = Instant::now();
        self.connects += 1;
        self.unacked = 0;
        self.ping_sent = None;
        self.encode_subscribe(&self.subscriptions.clone());
        let mut retained: Vec<&(u64, Message)> = self.retained.values().collect();
        retained.sort_by_key(|(n, _)| *n);
        let again: Vec<Message> = self
            .on_connect
            .iter()
            .chain(retained.into_iter().map(|(_, m)| m))
            .cloned()
            .collect();
        for m in &again {
            self.encode_publish(m);
        }
        self.send();
        Ok(())
    }

    /// After a failed or lost connection: the next attempt waits 1, 2, 4... up to 60 s; the
    /// back-off starts again only after a session that lasted. Every retry is logged with
    /// when the next one comes; a new error as a warning.
    fn back_off(&mut self, err: String) {
        self.back_off_after(err, true);
    }

    /// [`Session::back_off`]; `by_broker`: the broker ended the connection (a short session
    /// it ended counts toward the client-id diagnosis; one we ended does not).
    fn back_off_after(&mut self, err: String, by_broker: bool) {
        self.dropper.reset();
        if let Some(link) = self.link.take() {
            link.shut();
            if self.connected_at.elapsed() >= STABLE {
                self.failures = 0;
                self.short_sessions = 0;
                self.last_error.clear();
            } else if by_broker {
                self.short_sessions += 1;
            }
        }
        let err = if self.short_sessions >= 3 {
            format!(
                "{} closed the connection right after accepting it, {} times in a row: another client uses MQTT_CLIENT_ID={}; give each client its own id",
                self.server, self.short_sessions, self.hello.client_id
            )
        } else {
            err
        };
        self.unacked = 0;
        self.output.clear();
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

    /// Handles one packet from the broker.
    fn handle(&mut self, packet: Packet) {
        match packet {
            Packet::PubAck(_) | Packet::PubComp(_) => self.unacked = self.unacked.saturating_sub(1),
            Packet::PubRec(PubRec { pkid }) => self.encode(Packet::PubRel(PubRel::new(pkid))),
            Packet::PingResp => self.ping_sent = None,
            Packet::Publish(p) => {
                match p.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => self.encode(Packet::PubAck(PubAck::new(p.pkid))),
                    QoS::ExactlyOnce => self.encode(Packet::PubRec(PubRec::new(p.pkid))),
                }
                self.incoming.push((p.topic, p.payload.to_vec()));
            }
            Packet::PubRel(PubRel { pkid }) => self.encode(Packet::PubComp(PubComp::new(pkid))),
            _ => {}
        }
    }

    /// Reads once, waiting at most until `until` (or the keep-alive's next need), and
    /// handles what came. Returns after a signal too.
    fn read(&mut self, until: Instant) {
        let now = Instant::now();
        if self.ping_sent.is_none() && now >= self.last_out + KEEP_ALIVE {
            self.ping();
        }
        let ping_due = match self.ping_sent {
            Some(sent) => sent + KEEP_ALIVE,
            None => self.last_out + KEEP_ALIVE,
        };
        // An unanswered ping is judged only after reading what is there: during a long
        // poll nothing is read, and the answer may be waiting in the socket.
        let overdue = self.ping_sent.is_some() && now >= ping_due;
        let Some(link) = &mut self.link else { return };
        let wait = if overdue {
            Duration::ZERO
        } else {
            until.min(ping_due).saturating_duration_since(now)
        };
        match link.read(&mut self.input, wait) {
            Ok(Input::Bytes(_)) => self.parse(),
            Ok(Input::Nothing) if overdue => {
                let err = format!(
                    "{} did not answer a ping within {KEEP_ALIVE:?}",
                    self.server
                );
                self.back_off(err);
            }
            Ok(Input::Nothing | Input::Interrupted) => {}
            Ok(Input::Closed) => self.back_off(format!("{} closed the connection", self.server)),
            Err(e) => {
                let err = explain(&self.server, self.tls.is_some(), false, &e);
                self.back_off(err);
            }
        }
    }

    /// Handles every whole packet in the input, then sends the acknowledgements. A
    /// PUBLISH over [`MAX_INCOMING`] is acknowledged and dropped as it comes.
    fn parse(&mut self) {
        loop {
            if self.dropper.drain(&mut self.input) {
                break;
            }
            match oversize::head(&self.input, MAX_INCOMING) {
                Head::Fits => {}
                Head::More => break,
                Head::Publish {
                    total,
                    topic,
                    qos,
                    pkid,
                } => {
                    // Acknowledged, so that the broker does not send it again.
                    match qos {
                        1 => self.encode(Packet::PubAck(PubAck::new(pkid))),
                        2 => self.encode(Packet::PubRec(PubRec::new(pkid))),
                        _ => {}
                    }
                    self.dropper.start(total, &topic);
                    continue;
                }
                Head::Other { total } => {
                    let err = format!(
                        "{} sent a packet of {total} bytes, more than any it should send",
                        self.server
                    );
                    return self.back_off_after(err, false);
                }
            }
            match Packet::read(&mut self.input, MAX_PACKET) {
                Ok(packet) => self.handle(packet),
                Err(CodecError::InsufficientBytes(_)) => break,
                Err(e) => {
                    let err = format!("{} sent a packet that cannot be read ({e})", self.server);
                    return self.back_off_after(err, false);
                }
            }
        }
        self.send();
    }

    /// Sends a PINGREQ; the first unanswered one is remembered for the keep-alive check.
    fn ping(&mut self) {
        if self.is_connected() {
            self.encode(Packet::PingReq);
            self.send();
            self.ping_sent.get_or_insert_with(Instant::now);
        }
    }

    /// Keeps the connection going until `until` (one blocking read when nothing happens),
    /// reconnecting with back-off; returns the messages that arrived, as soon as one does.
    /// Returns early on a signal, and at least once a second while disconnected, so the
    /// loop sees signals.
    pub fn wait(&mut self, until: Instant) -> Vec<(String, Vec<u8>)> {
        let now = Instant::now();
        if self.is_connected() {
            if now < until && self.incoming.is_empty() {
                self.read(until);
            }
        } else {
            match self.retry_at {
                Some(at) if at > now => std::thread::sleep((at.min(until) - now).min(SIGNAL_CHECK)),
                _ => {
                    if let Err(e) = self.connect() {
                        self.back_off(e.to_string());
                    }
                }
            }
        }
        std::mem::take(&mut self.incoming)
    }

    /// Publishes `messages` in one write (retained ones are also remembered, to be sent
    /// again after a reconnect; an empty retained payload forgets the topic). While
    /// disconnected only the remembering happens.
    pub fn publish(&mut self, messages: &[Message]) {
        for m in messages {
            let kept = !self
                .not_kept
                .as_ref()
                .is_some_and(|p| m.topic.starts_with(p));
            if m.retain {
                if m.payload.is_empty() || !kept {
                    self.retained.remove(&m.topic);
                } else {
                    self.published += 1;
                    self.retained
                        .insert(m.topic.clone(), (self.published, m.clone()));
                }
            }
            if self.is_connected() {
                self.encode_publish(m);
            }
        }
        self.send();
    }

    /// Waits until everything written is acknowledged, at most `budget`.
    pub fn flush(&mut self, budget: Duration) -> bool {
        let deadline = Instant::now() + budget;
        while self.is_connected() && self.unacked > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            let awaited = self.unacked;
            self.read(deadline);
            // Some acknowledgements came, not all: a PINGREQ carries our TCP ACK now.
            // mosquitto leaves Nagle's algorithm on and holds the next PUBACKs until the
            // previous one is ACKed, which our kernel, having nothing to send, would delay
            // by 40 ms (measured: `--once` 51 ms without, 12 with).
            if 0 < self.unacked && self.unacked < awaited {
                self.ping();
            }
        }
        self.is_connected()
    }

    /// Between the requests of a long poll: pings when nothing went out for 10 s, so the
    /// broker never takes a busy bridge for a dead one. Never waits for the network; what
    /// the broker sends meanwhile is read at the next [`Session::wait`].
    pub fn tend(&mut self) {
        if self.last_out.elapsed() >= QUIET {
            self.ping();
        }
    }

    /// Publishes `last` (the service's `offline`), waits for the acknowledgements, and
    /// disconnects cleanly so that the last will does not fire.
    pub fn close(&mut self, last: &[Message]) -> Result<()> {
        self.publish(last);
        let flushed = self.flush(Duration::from_secs(10));
        if !self.is_connected() {
            return Err(Error::Broker(format!(
                "{} is not connected: the last messages were not delivered",
                self.server
            )));
        }
        self.encode(Packet::Disconnect);
        self.send();
        if let Some(link) = self.link.take() {
            link.shut();
        }
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
