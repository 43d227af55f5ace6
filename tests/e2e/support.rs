//! The test rig: temporary folders, the simulated Envoy and cloud, a real mosquitto on a free
//! loopback port with a subscriber, the bridge as a daemon, and helpers that wait on events.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::sim::{self, Control, Server};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/envoy")
}

/// A temporary folder, removed at the end of the test.
pub struct Tmp(pub PathBuf);

impl Tmp {
    pub fn new(name: &str) -> Tmp {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("envoy2mqtt-test-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Tmp(dir)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn serial_of(fixture: &Path) -> String {
    let info = ["info", "endpoint_info.xml"]
        .iter()
        .find_map(|f| std::fs::read_to_string(fixture.join(f)).ok())
        .unwrap();
    info.split("<sn>")
        .nth(1)
        .unwrap()
        .split("</sn>")
        .next()
        .unwrap()
        .trim()
        .to_string()
}

/// A simulated Envoy serving `variant`, and a token it accepts.
pub struct Envoy {
    pub server: Server,
    pub token: String,
    pub _certs: Tmp,
}

pub fn envoy(variant: &str) -> Envoy {
    let fixture = fixtures().join(variant);
    let control = Control::new(&serial_of(&fixture));
    envoy_with(&fixture, control)
}

pub fn envoy_with(fixture: &Path, control: Control) -> Envoy {
    let certs = Tmp::new("certs");
    let server = sim::envoy(fixture, &certs.0, control);
    let token = server
        .control
        .issue_token(365 * 86_400, "owner@example.com");
    Envoy {
        server,
        token,
        _certs: certs,
    }
}

pub fn command(env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_envoy2mqtt"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.envs(env.iter().copied()).args(args);
    cmd
}

pub fn run(env: &[(&str, &str)], args: &[&str]) -> Output {
    command(env, args).stdin(Stdio::null()).output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Replaces what changes from run to run (times) with placeholders.
pub fn normalize(out: &str) -> String {
    out.lines()
        .map(|line| {
            let (topic, rest) = line.split_once(' ').unwrap_or((line, ""));
            let rest = match rest.find("\"timestamp\":\"") {
                Some(i) => format!("{}\"timestamp\":\"<time>\"{}", &rest[..i], &rest[i + 34..]),
                None => rest.to_string(),
            };
            // "date":"2026-01-15" of ledger values: 8 + 10 + 1 characters.
            let rest = match rest.find("\"date\":\"") {
                Some(i) => format!("{}\"date\":\"<date>\"{}", &rest[..i], &rest[i + 19..]),
                None => rest,
            };
            let rest = if topic.ends_with("/timestamp") || topic.ends_with("/timestamp_text") {
                let mark = if rest.starts_with("[retained]") {
                    "[retained] "
                } else {
                    ""
                };
                if rest.contains('{') {
                    let i = rest.find("\"value\":").unwrap() + 8;
                    let j = rest[i..].find(',').unwrap() + i;
                    format!("{}<time>{}", &rest[..i], &rest[j..])
                } else {
                    format!("{mark}<time>")
                }
            } else {
                rest
            };
            format!("{topic} {rest}\n")
        })
        .collect()
}

/// A running bridge whose output lines are collected.
pub struct Daemon {
    pub child: Child,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// SIGTERM, then its exit status, waited for at most 5 s (`None`: still running).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        (0..100).find_map(|_| {
            let done = self.child.try_wait().unwrap();
            if done.is_none() {
                std::thread::sleep(Duration::from_millis(50)); // polling for the exit, bounded
            }
            done
        })
    }

    pub fn start(env: &[(&str, &str)], args: &[&str]) -> Daemon {
        let mut child = command(env, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let collect = |pipe: Box<dyn std::io::Read + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let l = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    l.lock().unwrap().push(line);
                }
            });
            lines
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Daemon {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits (at most `limit`) until `done` holds; returns whether it did.
    pub fn wait_until(&self, limit: Duration, done: impl Fn(&Daemon) -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if done(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50)); // polling, bounded by `limit`
        }
        done(self)
    }

    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// How many data polls a `--dry-run` service has printed.
    pub fn data_polls(&self) -> usize {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("/data/timestamp "))
            .count()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fixture of an Envoy whose firmware serves production only as an HTML page.
pub const NO_JSON: &str = "3.8.10_html_only";

/// `--once --dry-run` against `variant`: (exit code, stdout, stderr).
pub fn dry_run(variant: &str) -> (Option<i32>, String, String) {
    dry_run_of(&fixtures().join(variant))
}

/// `--once --dry-run` against the capture in `fixture` (a folder): (exit code, stdout, stderr).
pub fn dry_run_of(fixture: &Path) -> (Option<i32>, String, String) {
    let e = envoy_with(fixture, Control::new(&serial_of(fixture)));
    let state = Tmp::new("state");
    let out = run(
        &[
            ("ENVOY_HOST", &e.server.url()),
            ("ENVOY_TOKEN", &e.token),
            ("STATE_DIR", state.0.to_str().unwrap()),
            ("HA_DISCOVERY", "false"),
        ],
        &["--once", "--dry-run"],
    );
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

pub fn cloud_env<'a>(
    e: &'a Envoy,
    state: &'a Tmp,
    cloud: &'a Server,
    ca: &'a str,
) -> Vec<(&'static str, String)> {
    vec![
        ("ENVOY_HOST", e.server.url()),
        ("STATE_DIR", state.0.to_str().unwrap().to_string()),
        ("ENPHASE_USERNAME", "owner@example.com".into()),
        ("ENPHASE_PASSWORD", "pw-SECRET-8412".into()),
        ("ENPHASE_LOGIN_URL", cloud.url()),
        ("ENPHASE_TOKEN_URL", cloud.url()),
        ("ENPHASE_CA_CERT", ca.to_string()),
    ]
}

pub fn pairs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, s)| (*k, s.as_str())).collect()
}

/// An Envoy and a cloud sharing one token registry, with the account `owner@example.com`.
pub fn envoy_and_cloud(variant: &str, mfa: bool) -> (Envoy, Server, PathBuf, Tmp) {
    let fixture = fixtures().join(variant);
    let control = Control::new(&serial_of(&fixture));
    control
        .lock()
        .accounts
        .insert("owner@example.com".into(), ("pw-SECRET-8412".into(), mfa));
    let e = envoy_with(&fixture, control.clone());
    let certs = Tmp::new("cloudcerts");
    let (cloud, ca) = sim::cloud(&certs.0, control);
    (e, cloud, ca, certs)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The name of the user running the tests.
pub fn user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    text(&out.stdout).trim().to_string()
}

/// Waits (bounded) until a broker logs that it is running, which it does once its port is
/// bound; false if it exited first (its port was taken).
fn running(child: &mut Child, log: &Path, port: u16) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if std::fs::read_to_string(log).is_ok_and(|l| l.contains(" running")) {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20)); // polling the log, bounded above
    }
    panic!("mosquitto did not start on {port}");
}

/// A mosquitto broker.
pub struct Mosquitto {
    pub child: Child,
    pub port: u16,
    pub conf: PathBuf,
    pub _dir: Tmp,
}

impl Mosquitto {
    /// `extra`: lines added to the listener's configuration (TLS, passwords...).
    pub fn start(extra: &str) -> Mosquitto {
        Self::start_in(Tmp::new("mosquitto"), extra)
    }

    /// A broker that lets only `user` in, with `password`.
    pub fn with_password(user: &str, password: &str) -> Mosquitto {
        let dir = Tmp::new("mosquitto");
        let passwd = dir.path("passwd");
        let ok = Command::new("mosquitto_passwd")
            .args(["-b", "-c", passwd.to_str().unwrap(), user, password])
            .status()
            .unwrap();
        assert!(ok.success());
        Self::start_in(dir, "allow_anonymous false\npassword_file {dir}/passwd")
    }

    /// On a free port: the port is released before mosquitto binds it, so another test may
    /// take it in between; mosquitto then exits ("Address already in use") and is started
    /// again on another port (5 tries).
    pub fn start_in(dir: Tmp, extra: &str) -> Mosquitto {
        let conf = dir.path("mosquitto.conf");
        let log = dir.path("mosquitto.log");
        let extra = extra.replace("{dir}", dir.0.to_str().unwrap());
        for _ in 0..5 {
            let port = free_port();
            std::fs::write(
                &conf,
                // As root, mosquitto would switch to its own user, which cannot read the test's files.
                format!("user {}\nper_listener_settings false\npersistence false\nlog_dest file {}\nlistener {port} 127.0.0.1\n{extra}\n", user(), log.display()),
            )
            .unwrap();
            let _ = std::fs::remove_file(&log);
            let mut child = Self::spawn(&conf);
            if running(&mut child, &log, port) {
                return Mosquitto {
                    child,
                    port,
                    conf,
                    _dir: dir,
                };
            }
        }
        panic!("mosquitto found no free port in 5 tries");
    }

    pub fn spawn(conf: &Path) -> Child {
        let bin = if Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto"
        } else {
            "mosquitto"
        };
        Command::new(bin)
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops with SIGTERM, so that a broker with persistence saves its retained messages.
    pub fn stop_saving(&mut self) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(ok.success());
        let _ = self.child.wait();
    }

    /// Starts again on the same port, after [`Mosquitto::stop_saving`] or a stop.
    pub fn start_again(&mut self) {
        let log = self._dir.path("mosquitto.log");
        let _ = std::fs::remove_file(&log);
        self.child = Self::spawn(&self.conf);
        assert!(
            running(&mut self.child, &log, self.port),
            "mosquitto could not bind {} again",
            self.port
        );
    }

    /// Stops and starts again on the same port: retained messages are gone (no persistence).
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    pub fn port(&self) -> String {
        self.port.to_string()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One message a subscriber saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub retained: bool,
    pub topic: String,
    pub payload: String,
}

/// `mosquitto_sub -t '#'` with MQTT 5 retain-as-published, so the retained flag is the
/// publisher's even on live messages.
pub struct Subscriber {
    pub child: Child,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Subscriber {
    /// `extra`: options for both mosquitto_sub and mosquitto_pub (a login).
    pub fn start(broker: &Mosquitto, extra: &[&str]) -> Subscriber {
        let mut child = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &broker.port(),
                "-V",
                "mqttv5",
                "--retain-as-published",
            ])
            .args(["-t", "#", "-F", "%r %t %p"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut parts = line.splitn(3, ' ');
                let retained = parts.next() == Some("1");
                let topic = parts.next().unwrap_or_default().to_string();
                let payload = parts.next().unwrap_or_default().to_string();
                s.lock().unwrap().push(Seen {
                    at: Instant::now(),
                    retained,
                    topic,
                    payload,
                });
            }
        });
        // The subscription is in place once a probe message comes back.
        let probe = format!("probe/{}", free_port());
        let sub = Subscriber { child, seen };
        let ok = sub.wait_until(Duration::from_secs(5), |s| {
            publish(broker, &probe, "x", extra);
            s.iter().any(|m| m.topic == probe)
        });
        assert!(ok, "mosquitto_sub did not subscribe");
        sub
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| !m.topic.starts_with("probe/"))
            .cloned()
            .collect()
    }

    pub fn wait_until(&self, limit: Duration, done: impl Fn(&[Seen]) -> bool) -> bool {
        let start = Instant::now();
        loop {
            // A copy: `done` may look at the subscriber again.
            let seen = self.seen.lock().unwrap().clone();
            if done(&seen) {
                return true;
            }
            if start.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50)); // polling, bounded by `limit`
        }
    }

    /// The last payload and retained flag seen on `topic`.
    pub fn last(&self, topic: &str) -> Option<(bool, String)> {
        self.seen()
            .iter()
            .rev()
            .find(|m| m.topic == topic)
            .map(|m| (m.retained, m.payload.clone()))
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mosquitto_pub` to `broker` on `topic`, its payload options still to add.
pub fn mosquitto_pub(broker: &Mosquitto, topic: &str) -> Command {
    let mut c = Command::new("mosquitto_pub");
    c.args(["-h", "127.0.0.1", "-p", &broker.port(), "-t", topic]);
    c
}

pub fn publish(broker: &Mosquitto, topic: &str, payload: &str, extra: &[&str]) {
    let ok = mosquitto_pub(broker, topic)
        .args(["-m", payload])
        .args(extra)
        .status()
        .unwrap();
    assert!(ok.success());
}

/// A copy of `variant` with `file` replaced (`None`: removed, so the Envoy answers 404).
pub fn variant_with(variant: &str, file: &str, body: Option<&str>) -> Tmp {
    let dir = Tmp::new("fixture");
    for entry in std::fs::read_dir(fixtures().join(variant)).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        std::fs::copy(&path, dir.0.join(name)).unwrap();
    }
    match body {
        Some(b) => std::fs::write(dir.0.join(file), b).unwrap(),
        None => std::fs::remove_file(dir.0.join(file)).unwrap(),
    }
    dir
}

/// The text of a capture's `file`.
pub fn fixture_file(variant: &str, file: &str) -> String {
    std::fs::read_to_string(fixtures().join(variant).join(file)).unwrap()
}

/// The environment of a `--dry-run` service against `e`: the raw and data periods given,
/// no discovery.
pub fn dry_run_env(e: &Envoy, state: &Tmp, raw: &str, data: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ENVOY_HOST", e.server.url()),
        ("ENVOY_TOKEN", e.token.clone()),
        ("STATE_DIR", state.0.to_str().unwrap().into()),
        ("RAW_DATA_INTERVAL_SECONDS", raw.into()),
        ("DATA_INTERVAL_SECONDS", data.into()),
        ("HA_DISCOVERY", "false".into()),
    ]
}

/// The bridge's environment for an Envoy and a broker.
pub fn bridge_env(e: &Envoy, broker: &Mosquitto, state: &Tmp) -> Vec<(&'static str, String)> {
    vec![
        ("ENVOY_HOST", e.server.url()),
        ("ENVOY_TOKEN", e.token.clone()),
        ("STATE_DIR", state.0.to_str().unwrap().to_string()),
        ("MQTT_HOST", "127.0.0.1".into()),
        ("MQTT_PORT", broker.port()),
    ]
}

pub fn with(
    mut env: Vec<(&'static str, String)>,
    more: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    env.extend(more.iter().map(|(k, v)| (*k, v.to_string())));
    env
}

/// `--once` at `n` successive clock steps.
pub fn once_runs(env: &[(&'static str, String)], n: usize) {
    for i in 0..n {
        let out = run(&pairs(env), &["--once"]);
        assert!(out.status.success(), "run {i}: {}", text(&out.stderr));
    }
}

/// The service against a simulated `variant`, with a real broker and a subscriber that is
/// in place before the service starts.
pub struct Rig {
    pub d: Daemon,
    pub sub: Subscriber,
    pub c: Control,
    pub _broker: Mosquitto,
    pub _state: Tmp,
    pub _e: Envoy,
}

pub fn rig(variant: &str, settings: &[(&'static str, &str)]) -> Rig {
    let e = envoy(variant);
    let c = e.server.control.clone();
    let broker = Mosquitto::start("allow_anonymous true");
    let sub = Subscriber::start(&broker, &[]);
    let state = Tmp::new("state");
    let env = with(bridge_env(&e, &broker, &state), settings);
    let d = Daemon::start(&pairs(&env), &[]);
    Rig {
        d,
        sub,
        c,
        _broker: broker,
        _state: state,
        _e: e,
    }
}
