//! A simulated Envoy (and Enlighten + entrez cloud) over real HTTPS, for tests and demos.
//!
//! The Envoy serves a fixture folder by endpoint (`/ivp/meters/readings` is the file
//! `ivp_meters_readings`, with status and headers from `<file>_log.json`), with a
//! self-signed certificate made by `openssl` at start. Like a real Envoy on firmware 7+,
//! it wants a valid token (bearer) or the `sessionId` cookie that `/auth/check_jwt` gives.
//! Faults are injected through [`Control`]; TCP connections and requests are counted.
//! The cloud's certificate is signed by a test CA, which the bridge is told to trust.
#![allow(dead_code)] // Each user (tests, the demo binary) uses its own part of it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::pki::{ca_signed, self_signed};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How the simulated counters behave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Counters {
    /// As in the fixture, plus `rate` Wh per second since start.
    Advancing,
    /// 1 kWh below the fixture: a counter that went backwards.
    Backwards,
    /// Every energy counter at 0, as after a reset.
    Zero,
    /// CT jitter: every counter only goes up, but not in step: the export counters gain
    /// 8 Wh at every readings answer, production 16 Wh at every other one. Counters derived
    /// from two CTs (production - export) then step back every other answer.
    Jitter,
}

/// Faults and behaviour, changeable while the server runs.
#[derive(Debug)]
pub struct Faults {
    /// Answer 401 to this many authenticated requests (`u32::MAX`: always), check_jwt included.
    pub unauthorized: u32,
    /// Answer this status to this many requests.
    pub status: Option<(u16, u32)>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Close this many connections instead of answering.
    pub drop: u32,
    /// Answer this many requests with broken JSON.
    pub garbage: u32,
    pub counters: Counters,
    /// Wh added to the energy counters per second of run time.
    pub rate: f64,
    /// A session ends after this many requests, as real Envoys end theirs (0: never).
    pub session_requests: u32,
}

/// A wall clock shared with the bridge through libfaketime's timestamp file
/// (`FAKETIME_TIMESTAMP_FILE`, `FAKETIME_FMT=%s`): each readings request moves it `step`
/// seconds on (up to `until`), writes it, and serves the counters of that moment. The
/// bridge reads its clock after the answer, so both always agree on the time of a reading.
pub struct Clock {
    pub file: PathBuf,
    pub now: i64,
    pub step: i64,
    pub until: i64,
    /// Lifetime counters at a Unix second, Wh: production, grid import, grid export. Set
    /// on the first two readings (the production CT, then the net-consumption CT, as in
    /// `7.6.175_with_cts`).
    pub energy: fn(i64) -> [f64; 3],
}

impl Clock {
    /// Writes the time atomically: libfaketime reads the file at every clock call.
    pub fn write(&self) {
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, format!("{}\n", self.now)).unwrap();
        std::fs::rename(&tmp, &self.file).unwrap();
    }

    fn tick(&mut self, body: &str) -> String {
        self.now = (self.now + self.step).min(self.until);
        self.write();
        let [produced, imported, exported] = (self.energy)(self.now);
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(body) else {
            return body.to_string();
        };
        if let Some(list) = v.as_array_mut().filter(|l| l.len() >= 2) {
            // The Envoy's own clock is the simulated one: its readings say the time.
            for reading in list.iter_mut() {
                reading["timestamp"] = serde_json::json!(self.now);
            }
            list[0]["actEnergyDlvd"] = serde_json::json!(produced);
            list[1]["actEnergyDlvd"] = serde_json::json!(imported);
            list[1]["actEnergyRcvd"] = serde_json::json!(exported);
        }
        v.to_string()
    }
}

/// What the server saw and what it accepts.
#[derive(Debug, Default)]
pub struct Seen {
    pub connections: usize,
    /// `METHOD path` of every request, in order.
    pub requests: Vec<String>,
}

/// Shared state of the simulated Envoy and cloud.
pub struct State {
    pub faults: Faults,
    pub clock: Option<Clock>,
    pub seen: Seen,
    /// Tokens the Envoy accepts (the cloud adds the ones it issues).
    pub tokens: HashSet<String>,
    pub sessions: HashSet<String>,
    /// Requests made with each session, for `Faults::session_requests`.
    pub session_uses: HashMap<String, u32>,
    /// Cloud accounts: e-mail → (password, needs MFA).
    pub accounts: BTreeMap<String, (String, bool)>,
    cloud_sessions: HashSet<String>,
    /// Lifetime of the tokens the cloud issues, in seconds.
    pub token_lifetime: i64,
    started: Instant,
    serial: String,
}

/// A handle on the shared state.
#[derive(Clone)]
pub struct Control(Arc<Mutex<State>>);

impl Control {
    pub fn new(serial: &str) -> Control {
        Control(Arc::new(Mutex::new(State {
            faults: Faults {
                unauthorized: 0,
                session_requests: 0,
                status: None,
                delay: Duration::ZERO,
                drop: 0,
                garbage: 0,
                counters: Counters::Advancing,
                rate: 0.0,
            },
            clock: None,
            seen: Seen::default(),
            tokens: HashSet::new(),
            sessions: HashSet::new(),
            session_uses: HashMap::new(),
            accounts: BTreeMap::new(),
            cloud_sessions: HashSet::new(),
            token_lifetime: 365 * 86_400,
            started: Instant::now(),
            serial: serial.to_string(),
        })))
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests whose line starts with `prefix` (`GET /ivp/meters/readings`).
    pub fn count(&self, prefix: &str) -> usize {
        self.lock()
            .seen
            .requests
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }

    /// A new token, accepted by the Envoy, expiring `lifetime` seconds from now.
    pub fn issue_token(&self, lifetime: i64, username: &str) -> String {
        let mut s = self.lock();
        let token = make_jwt(&s.serial, username, now() + lifetime);
        s.tokens.insert(token.clone());
        token
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn base64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A JWT shaped like the ones entrez issues (the signature is not real).
pub fn make_jwt(serial: &str, username: &str, exp: i64) -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let header = r#"{"kid":"sim","typ":"JWT","alg":"ES256"}"#;
    let payload = format!(
        r#"{{"aud":"{serial}","iss":"Entrez","enphaseUser":"owner","exp":{exp},"iat":{},"jti":"sim-{n}","username":"{username}"}}"#,
        now()
    );
    format!(
        "{}.{}.c2lnbmF0dXJl{n}",
        base64url(header.as_bytes()),
        base64url(payload.as_bytes())
    )
}

/// A running server.
pub struct Server {
    pub port: u16,
    pub control: Control,
}

impl Server {
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn response(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
    Response {
        status,
        headers: vec![("Content-Type".into(), content_type.into())],
        body: body.into(),
    }
}

fn read_request(r: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into(),
    })
}

type Handler = dyn Fn(&Request, &Control) -> Option<Response> + Send + Sync;

fn serve(cert: &Path, key: &Path, control: Control, handler: Arc<Handler>) -> Server {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ctl = control.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            ctl.lock().seen.connections += 1;
            let (config, ctl, handler) = (config.clone(), ctl.clone(), handler.clone());
            std::thread::spawn(move || connection(stream, config, ctl, handler));
        }
    });
    Server { port, control }
}

fn connection(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    ctl: Control,
    handler: Arc<Handler>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    // Like a real server: no 40 ms Nagle and delayed-ACK stall between responses.
    let _ = stream.set_nodelay(true);
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = BufReader::new(rustls::StreamOwned::new(conn, stream));
    while let Some(req) = read_request(&mut tls) {
        ctl.lock()
            .seen
            .requests
            .push(format!("{} {}", req.method, req.path));
        let delay = ctl.lock().faults.delay;
        std::thread::sleep(delay);
        let Some(resp) = handler(&req, &ctl) else {
            let _ = tls.get_mut().sock.shutdown(std::net::Shutdown::Both);
            return;
        };
        let mut out = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: keep-alive\r\n",
            resp.status,
            resp.body.len()
        );
        for (k, v) in &resp.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        // One write: header and body in one TLS record.
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&resp.body);
        let w = tls.get_mut();
        if w.write_all(&bytes).and_then(|()| w.flush()).is_err() {
            return;
        }
    }
}

/// Takes one unit of a counted fault.
fn take(count: &mut u32) -> bool {
    match *count {
        0 => false,
        u32::MAX => true,
        _ => {
            *count -= 1;
            true
        }
    }
}

/// The fixture file for an endpoint path, in either naming of the shared fixtures.
fn fixture_file(dir: &Path, path: &str) -> Option<PathBuf> {
    let name = path.trim_start_matches('/').replace(['/', '?', '='], "_");
    let wolsink = match name.as_str() {
        "info" => "endpoint_info.xml",
        "ivp_meters" => "endpoint_meters.json",
        "ivp_meters_readings" => "endpoint_meters_readings.json",
        "api_v1_production" => "endpoint_production_v1.json",
        "api_v1_production_inverters" => "endpoint_production_inverters.json",
        "production.json_details_1" => "endpoint_production_json.json",
        "ivp_meters_reports_consumption" => "endpoint_consumption_report.json",
        _ => "",
    };
    [dir.join(&name), dir.join(wolsink)]
        .into_iter()
        .find(|p| p.is_file())
}

fn adjust_counters(body: &str, counters: Counters, add: f64, served: usize) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(body) else {
        return body.to_string();
    };
    for (i, meter) in v.as_array_mut().into_iter().flatten().enumerate() {
        for key in ["actEnergyDlvd", "actEnergyRcvd"] {
            if let Some(x) = meter.get(key).and_then(|x| x.as_f64()) {
                let new = match (counters, key) {
                    (Counters::Advancing, _) => x + add,
                    (Counters::Jitter, "actEnergyRcvd") => x + 8.0 * served as f64,
                    (Counters::Jitter, _) if i == 0 => x + 16.0 * (served / 2) as f64,
                    (Counters::Jitter, _) => x,
                    (Counters::Backwards, _) => (x - 1000.0).max(0.0),
                    (Counters::Zero, _) => 0.0,
                };
                meter[key] = serde_json::json!(new);
            }
        }
    }
    v.to_string()
}

/// The answer of a token-protected Envoy when `req` is not let through: a session for a
/// valid token at `/auth/check_jwt`, else 401 without a valid token or session cookie
/// (and when the fault says so). `None`: authorized.
fn authorize(req: &Request, s: &mut State) -> Option<Response> {
    let bearer = req
        .header("Authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::to_string);
    let cookie = req
        .header("Cookie")
        .and_then(|c| {
            c.split(';')
                .find_map(|p| p.trim().strip_prefix("sessionId="))
        })
        .map(str::to_string);
    let token_ok = bearer.as_ref().is_some_and(|t| s.tokens.contains(t));
    let mut session_ok = cookie.as_ref().is_some_and(|c| s.sessions.contains(c));
    if let (true, Some(c), limit @ 1..) = (session_ok, &cookie, s.faults.session_requests) {
        let uses = s.session_uses.entry(c.clone()).or_default();
        *uses += 1;
        if *uses > limit {
            // Ended: the cookie is no longer known, as after an Envoy's session timeout.
            s.sessions.remove(c);
            session_ok = false;
        }
    }
    if req.path == "/auth/check_jwt" {
        if !token_ok || take(&mut s.faults.unauthorized) {
            return Some(response(401, "text/html", "<h2>Invalid token.</h2>"));
        }
        // Never an id given before (sessions that ended are gone from the set).
        let id = format!("sim{}{}", s.sessions.len() + s.session_uses.len(), now());
        s.sessions.insert(id.clone());
        let mut r = response(200, "text/html", "<!DOCTYPE html><h2>Valid token.</h2>");
        r.headers.push((
            "Set-Cookie".into(),
            format!("sessionId={id}; path=/; HttpOnly"),
        ));
        return Some(r);
    }
    if !(token_ok || session_ok) || take(&mut s.faults.unauthorized) {
        return Some(response(
            401,
            "application/json",
            r#"{"status":401,"error":"","info":"Unauthorized"}"#,
        ));
    }
    None
}

/// Starts a simulated Envoy serving `fixture`, its certificate made in `cert_dir`.
pub fn envoy(fixture: &Path, cert_dir: &Path, control: Control) -> Server {
    let info =
        std::fs::read_to_string(fixture_file(fixture, "/info").expect("fixture has info")).unwrap();
    let needs_token = info.contains("<web-tokens>true</web-tokens>");
    let (cert, key) = self_signed(cert_dir, &control.lock().serial);
    let fixture = fixture.to_path_buf();
    let handler = move |req: &Request, ctl: &Control| -> Option<Response> {
        let mut s = ctl.lock();
        if take(&mut s.faults.drop) {
            return None;
        }
        if req.path == "/info" {
            return Some(response(200, "text/xml", info.clone()));
        }
        if needs_token {
            if let Some(answer) = authorize(req, &mut s) {
                return Some(answer);
            }
        }
        if let Some((code, count)) = s.faults.status.as_mut() {
            let code = *code;
            if take(count) {
                return Some(response(code, "text/html", format!("<html>{code}</html>")));
            }
        }
        if take(&mut s.faults.garbage) {
            return Some(response(
                200,
                "application/json",
                r#"[{"eid": 7046, "activePower": nul"#,
            ));
        }
        let Some(file) = fixture_file(&fixture, &req.path) else {
            return Some(response(404, "text/html", "<html>404 Not Found</html>"));
        };
        let mut body = std::fs::read_to_string(&file).unwrap();
        let log =
            std::fs::read_to_string(format!("{}_log.json", file.display())).unwrap_or_default();
        let log: serde_json::Value = serde_json::from_str(&log).unwrap_or_default();
        let status = log["code"].as_u64().unwrap_or(200) as u16;
        if req.path == "/ivp/meters/readings" {
            let add = s.started.elapsed().as_secs_f64() * s.faults.rate;
            let served = s
                .seen
                .requests
                .iter()
                .filter(|r| r.ends_with(" /ivp/meters/readings"))
                .count();
            body = adjust_counters(&body, s.faults.counters, add, served);
            if let Some(clock) = s.clock.as_mut() {
                body = clock.tick(&body);
            }
        }
        let content_type = if body.trim_start().starts_with('<') {
            "text/html"
        } else {
            "application/json"
        };
        Some(response(status, content_type, body))
    };
    serve(&cert, &key, control, Arc::new(handler))
}

fn form_field(body: &str, name: &str) -> Option<String> {
    body.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (decode(k) == name).then(|| decode(v))
    })
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into()
}

/// Starts the simulated Enlighten login and entrez token service; returns it and the CA
/// file the bridge must trust (`ENPHASE_CA_CERT`).
pub fn cloud(cert_dir: &Path, control: Control) -> (Server, PathBuf) {
    let (ca, cert, key) = ca_signed(cert_dir);
    let handler = |req: &Request, ctl: &Control| -> Option<Response> {
        let mut s = ctl.lock();
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/login/login.json") => {
                let email = form_field(&req.body, "user[email]").unwrap_or_default();
                let password = form_field(&req.body, "user[password]").unwrap_or_default();
                match s.accounts.get(&email).cloned() {
                    Some((pw, mfa)) if pw == password => {
                        if mfa {
                            return Some(response(
                                200,
                                "application/json",
                                r#"{"message":"success","isBlocked":false,"requires_mfa":true}"#,
                            ));
                        }
                        let id = format!("cloud{}", s.cloud_sessions.len());
                        s.cloud_sessions.insert(id.clone());
                        Some(response(
                            200,
                            "application/json",
                            format!(r#"{{"message":"success","session_id":"{id}"}}"#),
                        ))
                    }
                    _ => Some(response(
                        401,
                        "application/json",
                        r#"{"message":"Login failed"}"#,
                    )),
                }
            }
            ("POST", "/tokens") => {
                let v: serde_json::Value = serde_json::from_str(&req.body).unwrap_or_default();
                let session = v["session_id"].as_str().unwrap_or_default();
                if !s.cloud_sessions.contains(session) {
                    return Some(response(401, "text/plain", "bad session"));
                }
                let serial = v["serial_num"].as_str().unwrap_or_default().to_string();
                let user = v["username"].as_str().unwrap_or_default().to_string();
                let token = make_jwt(&serial, &user, now() + s.token_lifetime);
                s.tokens.insert(token.clone());
                Some(response(200, "text/plain", token))
            }
            _ => Some(response(404, "text/plain", "not found")),
        }
    };
    (serve(&cert, &key, control, Arc::new(handler)), ca)
}
