//! The JWT: its life cycle with the simulated cloud, renewal while running, 401 storms, the
//! Envoy's certificate and the one kept-alive connection.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use super::pki;
use super::sim::{self, Control};
use super::support::*;

#[test]
fn token_lifecycle() {
    let (e, cloud, ca, _certs) = envoy_and_cloud("7.6.175_with_cts", false);
    let ca = ca.to_str().unwrap();
    let c = &e.server.control;

    // No token yet: one login and one token request, the token cached with mode 0600
    // (by a real run: --dry-run writes nothing).
    let broker = Mosquitto::start("allow_anonymous true");
    let state = Tmp::new("state");
    let env = with(
        cloud_env(&e, &state, &cloud, ca),
        &[("MQTT_HOST", "127.0.0.1"), ("MQTT_PORT", &broker.port())],
    );
    let out = run(&pairs(&env), &["--once"]);
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
    let out = run(&pairs(&env), &["--once"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!((c.count("POST /login"), c.count("POST /tokens")), (1, 1));

    // A cached token 20 days from its end is renewed.
    let near = c.issue_token(20 * 86_400, "owner@example.com");
    std::fs::write(state.path("token"), &near).unwrap();
    std::fs::remove_file(state.path("cloud-login")).unwrap();
    let out = run(&pairs(&env), &["--once"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!((c.count("POST /login"), c.count("POST /tokens")), (2, 2));
    let renewed = std::fs::read_to_string(state.path("token")).unwrap();
    assert!(renewed != near && renewed != cached);
}

#[test]
fn a_running_service_renews_a_token_20_days_from_its_end_at_the_next_data_poll() {
    let (e, cloud, ca, _certs) = envoy_and_cloud("7.6.175_with_cts", false);
    let c = e.server.control.clone();
    let state = Tmp::new("state");
    // The cached token ends in 20 days; Enlighten was asked 598 s ago, so the service
    // starts with the old token (the cloud's rate limit) and must renew it while running.
    let near = c.issue_token(20 * 86_400, "owner@example.com");
    std::fs::write(state.path("token"), &near).unwrap();
    std::fs::set_permissions(state.path("token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::write(state.path("cloud-login"), format!("{}\n", now - 598)).unwrap();
    let env = with(
        cloud_env(&e, &state, &cloud, ca.to_str().unwrap()),
        &[
            ("RAW_DATA_INTERVAL_SECONDS", "0"),
            ("DATA_INTERVAL_SECONDS", "1"),
            ("HA_DISCOVERY", "false"),
        ],
    );
    let d = Daemon::start(&pairs(&env), &["--dry-run"]);
    let polls = Daemon::data_polls;
    assert!(
        d.wait_until(Duration::from_secs(10), |d| polls(d) >= 1),
        "{}",
        d.stderr()
    );
    assert_eq!(
        c.count("POST /tokens"),
        0,
        "rate-limited at start: {}",
        d.stderr()
    );
    let renewed = d.wait_until(Duration::from_secs(20), |_| c.count("POST /tokens") == 1);
    assert!(renewed, "{}", d.stderr());
    // The new token is used: a check_jwt with it, and data goes on.
    let after = polls(&d);
    assert!(
        d.wait_until(Duration::from_secs(10), |d| polls(d) >= after + 2),
        "{}",
        d.stderr()
    );
    assert_eq!(c.count("GET /auth/check_jwt"), 2, "one session per token");
    assert_eq!(c.count("POST /login"), 1);
    let log = d.stderr();
    assert!(log.contains("renewing it now"), "{log}");
    assert!(!log.contains("401"), "no 401 seen: {log}");
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
    // The next data poll (raw ticks never ask the cloud) meets the rate limit.
    assert!(
        d.wait_until(Duration::from_secs(20), |d| d
            .stderr()
            .contains("the next login is allowed at")),
        "{}",
        d.stderr()
    );
    assert_eq!(c.count("POST /login"), 1);

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
    // The account's e-mail address is in no message and no log line.
    let status = text(&out.stdout);
    assert!(status.contains(r#""status":"error""#), "{status}");
    assert!(!status.contains("owner@example.com"), "{status}");
    assert!(!err.contains("owner@example.com"), "{err}");
}

#[test]
fn cloud_with_an_untrusted_certificate_is_refused() {
    let (e, cloud, _ca, _certs) = envoy_and_cloud("7.6.175_with_cts", false);
    let state = Tmp::new("state");
    // The CA of another run: the cloud's certificate does not chain to it.
    let other = Tmp::new("otherca");
    let (other_ca, _, _) = pki::ca_signed(&other.0);
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
    // Real runs remember certificates (--dry-run only reads the remembered one).
    let broker = Mosquitto::start("allow_anonymous true");
    let port = broker.port();
    let run_with = |e: &Envoy, mode: &str, args: &[&str]| {
        run(
            &[
                ("ENVOY_HOST", &e.server.url()),
                ("ENVOY_TOKEN", &e.token),
                ("STATE_DIR", st),
                ("ENVOY_TLS_VERIFY", mode),
                ("MQTT_HOST", "127.0.0.1"),
                ("MQTT_PORT", &port),
                ("HA_DISCOVERY", "false"),
            ],
            args,
        )
    };
    let once = |e: &Envoy, mode: &str| run_with(e, mode, &["--once"]);
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
    let out = run_with(&first, "pin", &["--once", "--dry-run"]);
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
fn token_expiry_past_year_9999_is_no_panic() {
    let e = envoy("7.6.175_with_cts");
    let broker = Mosquitto::start("allow_anonymous true");
    for exp in [253_402_300_800_i64, 1_000_000_000_000_000] {
        let token = sim::make_jwt("122238082763", "owner@example.com", exp);
        e.server.control.lock().tokens.insert(token.clone());
        let state = Tmp::new("state");
        let env = with(
            bridge_env(&e, &broker, &state),
            &[("ENVOY_TOKEN", &token), ("DATA_INTERVAL_SECONDS", "1")],
        );
        let check = run(&pairs(&env), &["--check"]);
        let report = text(&check.stdout);
        assert_eq!(
            check.status.code(),
            Some(0),
            "{exp}: {report}{}",
            text(&check.stderr)
        );
        assert!(report.contains("expires 9999-12-31"), "{report}");
        let once = run(&pairs(&env), &["--once"]);
        assert_eq!(once.status.code(), Some(0), "{exp}: {}", text(&once.stderr));
        let sub = Subscriber::start(&broker, &[]);
        let d = Daemon::start(&pairs(&env), &[]);
        // Two data polls of the service, each with its P/status.
        let ok = sub.wait_until(Duration::from_secs(10), |s| {
            s.iter()
                .filter(|m| m.topic == "envoy/status" && m.payload.contains("9999-12-31T23:59:59Z"))
                .count()
                >= 2
        });
        assert!(ok, "{exp}: {}", d.stderr());
    }
}

#[test]
fn a_refused_pasted_token_says_how_to_get_a_new_one() {
    // A well-formed token the Envoy does not accept (revoked, or made for another serial),
    // pasted as ENVOY_TOKEN with no Enlighten account: no new one can be fetched.
    let e = envoy("7.6.175_with_cts");
    let token = sim::make_jwt("122238082763", "owner@example.com", 4_102_444_800);
    let state = Tmp::new("state");
    let out = run(
        &[
            ("ENVOY_HOST", &e.server.url()),
            ("ENVOY_TOKEN", &token),
            ("STATE_DIR", state.0.to_str().unwrap()),
        ],
        &["--once", "--dry-run"],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the Envoy refuses ENVOY_TOKEN (valid until 2100-01-01")
            && err.contains("no new one can be fetched")
            && err.contains(
                "create a token for serial 122238082763 at https://entrez.enphaseenergy.com"
            ),
        "{err}"
    );
    assert!(
        !err.contains("asking"),
        "promises a new token it cannot get: {err}"
    );
    assert!(!err.contains(&token[40..]), "the token is never logged");
    assert_eq!(e.server.control.count("GET /auth/check_jwt"), 1);
}

#[test]
fn an_envoy_session_that_ends_is_opened_again_without_a_failed_poll() {
    // Real Envoys end a session after a while: every 5 requests here. The bridge opens a
    // new one with the token it has: no failed poll, no error status, no new token.
    let Rig { d, sub, c, .. } = &rig(
        "7.6.175_with_cts",
        &[
            ("RAW_DATA_INTERVAL_SECONDS", "0.25"),
            ("DATA_INTERVAL_SECONDS", "1"),
            ("HA_DISCOVERY", "false"),
        ],
    );
    c.lock().faults.session_requests = 5;
    let checks = || c.count("GET /auth/check_jwt");
    let before = checks();
    assert!(
        d.wait_until(Duration::from_secs(20), |_| checks() >= before + 4),
        "sessions ended and opened again: {}",
        d.stderr()
    );
    let statuses = |seen: &[Seen]| -> Vec<String> {
        seen.iter()
            .filter(|m| m.topic == "envoy/status")
            .map(|m| m.payload.clone())
            .collect()
    };
    assert!(
        sub.wait_until(Duration::from_secs(10), |s| statuses(s).len() >= 3),
        "{}",
        d.stderr()
    );
    let statuses = statuses(&sub.seen());
    assert!(
        statuses.iter().all(|s| s.contains("\"status\":\"ok\"")),
        "no failed poll: {statuses:?}"
    );
    assert_eq!(c.count("POST /tokens"), 0, "no new token");
    let log = d.stderr();
    assert!(
        !log.contains("WARN] envoy:") && !log.contains("next poll in"),
        "{log}"
    );
    assert!(log.contains("opening a new session"), "{log}");
}
