//! End-to-end tests: the real `envoy2mqtt` binary against the simulated Envoy (real HTTPS,
//! real fixture answers) and, where a test needs it, the simulated Enphase cloud.
//! Everything listens on 127.0.0.1; every wait is bounded.

#[path = "../examples/envoy_sim/sim.rs"]
mod sim;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sim::{Control, Server};

fn fixtures() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/envoy");
    assert!(
        dir.is_dir(),
        "the shared fixtures are expected at {}",
        dir.display()
    );
    dir
}

/// A temporary folder, removed at the end of the test.
struct Tmp(PathBuf);

impl Tmp {
    fn new(name: &str) -> Tmp {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("envoy2mqtt-test-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Tmp(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn serial_of(fixture: &Path) -> String {
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
struct Envoy {
    server: Server,
    token: String,
    _certs: Tmp,
}

fn envoy(variant: &str) -> Envoy {
    let fixture = fixtures().join(variant);
    let control = Control::new(&serial_of(&fixture));
    envoy_with(&fixture, control)
}

fn envoy_with(fixture: &Path, control: Control) -> Envoy {
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

fn command(env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_envoy2mqtt"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.envs(env.iter().copied()).args(args);
    cmd
}

fn run(env: &[(&str, &str)], args: &[&str]) -> Output {
    command(env, args).stdin(Stdio::null()).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Replaces what changes from run to run (times) with placeholders.
fn normalize(out: &str) -> String {
    out.lines()
        .map(|line| {
            let (topic, rest) = line.split_once(' ').unwrap_or((line, ""));
            let rest = match rest.find("\"timestamp\":\"") {
                Some(i) => format!("{}\"timestamp\":\"<time>\"{}", &rest[..i], &rest[i + 34..]),
                None => rest.to_string(),
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
struct Daemon {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(env: &[(&str, &str)], args: &[&str]) -> Daemon {
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
    fn wait_until(&self, limit: Duration, done: impl Fn(&Daemon) -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if done(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        done(self)
    }

    fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn golden_messages_for_every_fixture() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut variants: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    variants.sort();
    assert!(variants.len() >= 12, "{variants:?}");
    for variant in &variants {
        let e = envoy(variant);
        let state = Tmp::new("state");
        for format in ["simple", "json"] {
            let out = run(
                &[
                    ("ENVOY_HOST", &e.server.url()),
                    ("ENVOY_TOKEN", &e.token),
                    ("STATE_DIR", state.0.to_str().unwrap()),
                    ("MQTT_FORMAT", format),
                ],
                &["--once", "--dry-run"],
            );
            assert!(
                out.status.success(),
                "{variant} {format}: {}",
                text(&out.stderr)
            );
            let got = normalize(&text(&out.stdout));
            let file = golden.join(format!("{variant}.{format}"));
            if update {
                std::fs::create_dir_all(&golden).unwrap();
                std::fs::write(&file, &got).unwrap();
            }
            let want = std::fs::read_to_string(&file).unwrap_or_else(|_| {
                panic!(
                    "{} is missing: run with UPDATE_GOLDEN=1 and check it",
                    file.display()
                )
            });
            assert_eq!(got, want, "{variant} {format}");
        }
    }
}

#[test]
fn fields_match_the_fixture_numbers() {
    // Checked by hand against 7.6.175_with_cts/ivp_meters_readings: production CT 488.925 W,
    // net CT -36.162 W, import (actEnergyDlvd) 3738205.282 Wh, export (actEnergyRcvd) 1776768.769 Wh.
    let e = envoy("7.6.175_with_cts");
    let state = Tmp::new("state");
    let out = run(
        &[
            ("ENVOY_HOST", &e.server.url()),
            ("ENVOY_TOKEN", &e.token),
            ("STATE_DIR", state.0.to_str().unwrap()),
        ],
        &["--once", "--dry-run"],
    );
    let out = text(&out.stdout);
    let p = "envoy/122238082763/data/";
    for (field, value) in [
        ("prod_eim_wNow", "488.925"),
        ("conso_net_eim_wNow", "-36.162"),
        ("grid_eim_wNow", "36.162"),
        ("eco_eim_wNow", "452.763"),
        ("conso_all_eim_wNow", "452.763"),
        ("import_eim_whLifetime", "3738205.282"),
        ("grid_eim_whLifetime", "1776768.769"),
        ("conso_net_eim_whLifetime", "1961436.513"),
        ("conso_all_eim_whLifetime", "5145230.398"),
        ("eco_eim_whLifetime", "1407025.116"),
        ("prod_eim_wattHoursToday", "4374"),
    ] {
        assert!(
            out.contains(&format!("{p}{field} [retained] {value}\n")),
            "{field} {value}:\n{out}"
        );
    }
    assert!(!out.contains("/raw/"), "--once publishes no raw topics");
}

fn cloud_env<'a>(
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

fn pairs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, s)| (*k, s.as_str())).collect()
}

/// An Envoy and a cloud sharing one token registry, with the account `owner@example.com`.
fn envoy_and_cloud(variant: &str, mfa: bool) -> (Envoy, Server, PathBuf, Tmp) {
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

#[test]
fn token_lifecycle() {
    let (e, cloud, ca, _certs) = envoy_and_cloud("7.6.175_with_cts", false);
    let ca = ca.to_str().unwrap();
    let c = &e.server.control;

    // No token yet: one login and one token request, the token cached with mode 0600.
    let state = Tmp::new("state");
    let env = cloud_env(&e, &state, &cloud, ca);
    let out = run(&pairs(&env), &["--once", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!((c.count("POST /login"), c.count("POST /tokens")), (1, 1));
    let cached = std::fs::read_to_string(state.path("token")).unwrap();
    assert_eq!(
        std::fs::metadata(state.path("token"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // A cached valid token: zero cloud requests.
    let out = run(&pairs(&env), &["--once", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!((c.count("POST /login"), c.count("POST /tokens")), (1, 1));

    // A cached token 20 days from its end is renewed.
    let near = c.issue_token(20 * 86_400, "owner@example.com");
    std::fs::write(state.path("token"), &near).unwrap();
    std::fs::remove_file(state.path("cloud-login")).unwrap();
    let out = run(&pairs(&env), &["--once", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!((c.count("POST /login"), c.count("POST /tokens")), (2, 2));
    let renewed = std::fs::read_to_string(state.path("token")).unwrap();
    assert!(renewed != near && renewed != cached);
}

#[test]
fn unauthorized_storm_logs_in_once_per_backoff_period() {
    let (e, cloud, ca, _certs) = envoy_and_cloud("7.6.175_with_cts", false);
    let c = e.server.control.clone();
    let state = Tmp::new("state");
    let env = cloud_env(&e, &state, &cloud, ca.to_str().unwrap());
    // A valid cached token, then the Envoy refuses everything for the whole run.
    std::fs::write(
        state.path("token"),
        c.issue_token(365 * 86_400, "owner@example.com"),
    )
    .unwrap();
    c.lock().faults.unauthorized = u32::MAX;
    let mut env = pairs(&env);
    env.extend([
        ("RAW_DATA_INTERVAL_SECONDS", "200ms"),
        ("DATA_INTERVAL_SECONDS", "1s"),
    ]);
    let d = Daemon::start(&env, &["--dry-run"]);
    // Back-off is 1, 2, 4 s: within 8 s the bridge tries at least 3 times.
    assert!(
        d.wait_until(Duration::from_secs(8), |_| c.count("GET /auth/check_jwt")
            >= 4)
    );
    assert_eq!(
        c.count("POST /login"),
        1,
        "one cloud login in the backoff period"
    );
    assert!(
        d.stderr().contains("the next login is allowed at"),
        "{}",
        d.stderr()
    );

    // The fault ends: the bridge recovers within a poll or two of its back-off.
    c.lock().faults.unauthorized = 0;
    assert!(d.wait_until(Duration::from_secs(20), |d| {
        d.stdout().iter().any(|l| l.contains("/data/prod_eim_wNow"))
    }));
    assert_eq!(c.count("POST /login"), 1);
}

#[test]
fn mfa_account_points_to_envoy_token() {
    let (e, cloud, ca, _certs) = envoy_and_cloud("7.6.175_with_cts", true);
    let state = Tmp::new("state");
    let env = cloud_env(&e, &state, &cloud, ca.to_str().unwrap());
    let out = run(&pairs(&env), &["--once", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("second factor (MFA)") && err.contains("set it as ENVOY_TOKEN"),
        "{err}"
    );
    assert!(!state.path("token").exists());
}

#[test]
fn cloud_with_an_untrusted_certificate_is_refused() {
    let (e, cloud, _ca, _certs) = envoy_and_cloud("7.6.175_with_cts", false);
    let state = Tmp::new("state");
    // The CA of another run: the cloud's certificate does not chain to it.
    let other = Tmp::new("otherca");
    let (other_ca, _, _) = sim::ca_signed(&other.0);
    let env = cloud_env(&e, &state, &cloud, other_ca.to_str().unwrap());
    let out = run(&pairs(&env), &["--once", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("the Enlighten login failed"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(e.server.control.count("POST /login"), 0);
}

#[test]
fn hundred_polls_use_one_connection() {
    let e = envoy("7.6.175_with_cts");
    let state = Tmp::new("state");
    let c = e.server.control.clone();
    let d = Daemon::start(
        &[
            ("ENVOY_HOST", &e.server.url()),
            ("ENVOY_TOKEN", &e.token),
            ("STATE_DIR", state.0.to_str().unwrap()),
            ("RAW_DATA_INTERVAL_SECONDS", "100ms"),
            ("DATA_INTERVAL_SECONDS", "1h"),
        ],
        &["--dry-run"],
    );
    assert!(
        d.wait_until(Duration::from_secs(30), |_| c
            .count("GET /ivp/meters/readings")
            >= 100),
        "{}",
        d.stderr()
    );
    assert_eq!(
        c.lock().seen.connections,
        1,
        "{:?}",
        c.lock().seen.requests.len()
    );
    assert_eq!(
        c.count("GET /auth/check_jwt"),
        1,
        "the session cookie is reused"
    );
    let raw = d
        .stdout()
        .iter()
        .filter(|l| l.contains("/raw/prod_eim_wNow 488.925"))
        .count();
    assert!(raw >= 99, "{raw} raw messages");
}

#[test]
fn certificate_change_warns_or_is_refused() {
    let fixture = fixtures().join("7.6.175_with_cts");
    let serial = serial_of(&fixture);
    let first = envoy_with(&fixture, Control::new(&serial));
    let second = envoy_with(&fixture, Control::new(&serial)); // a new key and certificate
    let state = Tmp::new("state");
    let st = state.0.to_str().unwrap();
    let once = |e: &Envoy, mode: &str| {
        run(
            &[
                ("ENVOY_HOST", &e.server.url()),
                ("ENVOY_TOKEN", &e.token),
                ("STATE_DIR", st),
                ("ENVOY_TLS_VERIFY", mode),
            ],
            &["--once", "--dry-run"],
        )
    };
    let fp = || {
        std::fs::read_to_string(state.path("envoy-cert.sha256"))
            .unwrap()
            .trim()
            .to_string()
    };

    assert!(once(&first, "warn").status.success());
    let fp_first = fp();
    let out = once(&second, "warn");
    assert!(out.status.success(), "warn accepts a changed certificate");
    assert!(
        text(&out.stderr).contains("THE ENVOY CERTIFICATE CHANGED"),
        "{}",
        text(&out.stderr)
    );
    let fp_second = fp();
    assert_ne!(fp_first, fp_second);

    // pin: the remembered certificate is the second one; the first is refused, with the fix.
    let out = once(&first, "pin");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("ENVOY_CERT_SHA256={fp_first}")),
        "{err}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("/data/"),
        "no data from a refused Envoy"
    );
    assert!(once(&second, "pin").status.success());

    // none: anything, silently, nothing remembered.
    let out = once(&first, "none");
    assert!(out.status.success() && !text(&out.stderr).contains("CHANGED"));
    assert_eq!(fp(), fp_second);
}

#[test]
fn secrets_never_leave() {
    let (e, cloud, ca, _certs) = envoy_and_cloud("7.6.175_with_cts", false);
    let state = Tmp::new("state");
    let diag = Tmp::new("diag");
    let mut env = cloud_env(&e, &state, &cloud, ca.to_str().unwrap());
    env.push(("LOG_LEVEL", "trace".into()));
    env.push(("MQTT_PASSWORD", "mqtt-SECRET-5531".into()));
    let env = pairs(&env);
    let mut seen = String::new();
    for args in [
        &["--once", "--dry-run"][..],
        &["--check"],
        &["--diagnose", diag.0.to_str().unwrap()],
    ] {
        let out = run(&env, args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        seen += &text(&out.stdout);
        seen += &text(&out.stderr);
    }
    let token = std::fs::read_to_string(state.path("token")).unwrap();
    let sessions: Vec<String> = e.server.control.lock().sessions.iter().cloned().collect();
    assert!(!sessions.is_empty());
    for dir in [&state.0, &diag.0] {
        for f in std::fs::read_dir(dir).unwrap().flatten() {
            if f.file_name() != "token" {
                seen += &std::fs::read_to_string(f.path()).unwrap_or_default();
            }
            let mode = f.metadata().unwrap().permissions().mode() & 0o777;
            if dir == &state.0 {
                assert_eq!(mode, 0o600, "{}", f.path().display());
            }
        }
    }
    assert!(
        seen.contains("ivp_meters") || seen.contains("production"),
        "the search saw the output"
    );
    for secret in ["pw-SECRET-8412", "mqtt-SECRET-5531", token.trim()]
        .into_iter()
        .chain(sessions.iter().map(String::as_str))
    {
        assert!(!seen.contains(secret), "{secret} leaked");
    }
    // The token's signature part alone must not leak either.
    assert!(!seen.contains(token.trim().rsplit('.').next().unwrap()));
}

#[test]
#[allow(clippy::type_complexity)] // a table of cases
fn configuration_errors_exit_2_naming_the_setting() {
    let cases: &[(&[(&str, &str)], &[&str], &str)] = &[
        (
            &[("MQTT_PORT", "eighty")],
            &["--once", "--dry-run"],
            "MQTT_PORT",
        ),
        (
            &[("ENVOY_TLS_VERIFY", "strict")],
            &["--check"],
            "ENVOY_TLS_VERIFY",
        ),
        (
            &[("ENPHASE_USERNAME", "me@example.com")],
            &["--once", "--dry-run"],
            "ENPHASE_PASSWORD",
        ),
        (
            &[("RAW_DATA_INTERVAL_SECONDS", "often")],
            &["--dry-run"],
            "RAW_DATA_INTERVAL_SECONDS",
        ),
        (
            &[("OFFPEAK_HOURS", "22h")],
            &["--once", "--dry-run"],
            "OFFPEAK_HOURS",
        ),
        (&[], &["--envoy-token", "x"], "ENVOY_TOKEN"),
        (&[], &["--mqtt-qos", "5", "--once", "--dry-run"], "MQTT_QOS"),
        (
            &[],
            &["--config", "/nonexistent/envoy2mqtt.env", "--once"],
            "--config",
        ),
    ];
    for (env, args, name) in cases {
        let out = run(env, args);
        assert_eq!(out.status.code(), Some(2), "{env:?} {args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(&format!("configuration: {name} ")), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let file = Tmp::new("conf");
    std::fs::write(file.path("e.env"), "MQTT_HOTS=broker\n").unwrap();
    let out = run(
        &[],
        &[
            "--config",
            file.path("e.env").to_str().unwrap(),
            "--once",
            "--dry-run",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("did you mean MQTT_HOST?"));
}

#[test]
fn bad_answers_are_skipped_and_the_bridge_recovers() {
    let e = envoy("7.6.175_with_cts");
    let c = e.server.control.clone();
    let state = Tmp::new("state");
    let env = [
        ("ENVOY_HOST", e.server.url()),
        ("ENVOY_TOKEN", e.token.clone()),
        ("STATE_DIR", state.0.to_str().unwrap().into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // --once: a broken answer is a one-line reason and exit 1, nothing published.
    for fault in ["garbage", "503"] {
        match fault {
            "garbage" => c.lock().faults.garbage = 1,
            _ => c.lock().faults.status = Some((503, 1)),
        }
        let out = run(&env, &["--once", "--dry-run"]);
        assert_eq!(out.status.code(), Some(1), "{fault}");
        assert!(out.stdout.is_empty(), "{fault}");
        let err = text(&out.stderr);
        let last = err.trim().lines().last().unwrap();
        assert!(last.starts_with("envoy2mqtt: envoy:"), "{fault}: {err}");
    }

    // The service: garbage, a 503 and a dropped connection are skipped, the data keeps coming.
    let mut env = env.clone();
    env.extend([
        ("RAW_DATA_INTERVAL_SECONDS", "100ms"),
        ("DATA_INTERVAL_SECONDS", "1h"),
    ]);
    {
        let mut s = c.lock();
        s.faults.garbage = 2;
        s.faults.status = Some((503, 2));
        s.faults.drop = 1;
    }
    let d = Daemon::start(&env, &["--dry-run"]);
    assert!(d.wait_until(Duration::from_secs(20), |d| {
        d.stdout()
            .iter()
            .filter(|l| l.contains("/raw/prod_eim_wNow"))
            .count()
            >= 3
    }));
    assert!(
        d.stderr().contains("is not the JSON expected") || d.stderr().contains("HTTP 503"),
        "{}",
        d.stderr()
    );
    assert!(
        d.stdout()
            .iter()
            .all(|l| !l.contains("NaN") && !l.contains("nul"))
    );
}

#[test]
fn check_report_and_diagnose() {
    let e = envoy("7.6.175_with_cts_3phase");
    let state = Tmp::new("state");
    let env = [
        ("ENVOY_HOST", e.server.url()),
        ("ENVOY_TOKEN", e.token.clone()),
        ("STATE_DIR", state.0.to_str().unwrap().into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = run(&env, &["--check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    for want in [
        "serial:    122238082763",
        "firmware:  D7.6.175 (Envoy S Metered",
        "token: from ENVOY_TOKEN; owner owner@example.com; expires ",
        "production         eid 704643328: enabled, 3 phases",
        "net-consumption    eid 704643584: enabled, 3 phases",
        "ENVOY_TOKEN                (set)  (environment)",
        "result: ok",
    ] {
        assert!(report.contains(want), "{want}:\n{report}");
    }
    assert!(!report.contains(&e.token));

    let bad = run(
        &[
            ("ENVOY_HOST", "https://127.0.0.1:1"),
            ("STATE_DIR", state.0.to_str().unwrap()),
        ],
        &["--check"],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad.stdout).contains("result: FAILED"));

    let diag = Tmp::new("diag");
    let out = run(&env, &["--diagnose", diag.0.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let readings = std::fs::read_to_string(diag.path("ivp_meters_readings")).unwrap();
    let original =
        std::fs::read_to_string(fixtures().join("7.6.175_with_cts_3phase/ivp_meters_readings"))
            .unwrap();
    assert!(readings.contains("704643328") && readings.len() > original.len() / 3);
    let log = std::fs::read_to_string(diag.path("ivp_meters_readings_log.json")).unwrap();
    assert!(log.contains("\"code\": 200"), "{log}");
    assert!(diag.path("info").exists() && diag.path("api_v1_production").exists());
}
