//! Settings and secrets: configuration errors exit 2 naming the setting, secrets never leave,
//! `--check`, `--diagnose` and `--dry-run` write nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use super::support::*;

/// Every file of a folder: name, mode, size, modification time and bytes.
fn folder_snapshot(dir: &Path) -> Vec<(String, u32, u64, std::time::SystemTime, Vec<u8>)> {
    let mut all: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                m.permissions().mode(),
                m.len(),
                m.modified().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    all.sort();
    all
}

#[test]
fn secrets_never_leave() {
    let (e, cloud, ca, _certs) = envoy_and_cloud("7.6.175_with_cts", false);
    let state = Tmp::new("state");
    let diag = Tmp::new("diag");
    let mut env = cloud_env(&e, &state, &cloud, ca.to_str().unwrap());
    env.push(("LOG_LEVEL", "trace".into()));
    env.push(("MQTT_PASSWORD", "mqtt-SECRET-5531".into()));
    env.push(("MQTT_USERNAME", "bridge".into()));
    env.push(("MQTT_HOST", "127.0.0.1".into()));
    let broker = Mosquitto::start("allow_anonymous true");
    env.push(("MQTT_PORT", broker.port()));
    let sub = Subscriber::start(&broker, &[]);
    let env = pairs(&env);
    let mut seen = String::new();
    for args in [
        &["--once", "--dry-run"][..],
        &["--once"],
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
    assert!(sub.wait_until(Duration::from_secs(3), |s| s.len() > 30));
    for m in sub.seen() {
        seen += &format!("{} {}\n", m.topic, m.payload);
    }
    assert!(
        seen.contains("measurementType") && seen.contains("/data/prod_eim_wNow"),
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
    #[rustfmt::skip]
    let cases: &[(&[(&str, &str)], &[&str], &str)] = &[
        (&[("MQTT_PORT", "eighty")], &["--once", "--dry-run"], "MQTT_PORT"),
        (&[("ENVOY_TLS_VERIFY", "strict")], &["--check"], "ENVOY_TLS_VERIFY"),
        (&[("ENPHASE_USERNAME", "me@example.com")], &["--once", "--dry-run"], "ENPHASE_PASSWORD"),
        (&[("RAW_DATA_INTERVAL_SECONDS", "often")], &["--dry-run"], "RAW_DATA_INTERVAL_SECONDS"),
        (&[("OFFPEAK_HOURS", "22h")], &["--once", "--dry-run"], "OFFPEAK_HOURS"),
        (&[], &["--envoy-token", "x"], "ENVOY_TOKEN"),
        (&[], &["--mqtt-qos", "5", "--once", "--dry-run"], "MQTT_QOS"),
        (&[], &["--config", "/nonexistent/envoy2mqtt.env", "--once"], "--config"),
        // Checked at start, before the Envoy or the broker is contacted.
        (&[("ENVOY_HOST", "127.0.0.1:9"), ("ENVOY_TOKEN", "pasted-the-wrong-thing")], &["--once", "--dry-run"], "ENVOY_TOKEN"),
        (&[("STATE_DIR", "var/lib/envoy2mqtt")], &["--once", "--dry-run"], "STATE_DIR"),
        (&[("MQTT_CA_CERT", "/etc/passwd")], &["--once"], "MQTT_CA_CERT"),
        (&[("MQTT_TOPIC_PREFIX", "mon envoy")], &["--dry-run"], "MQTT_TOPIC_PREFIX"),
        (&[("OFFPEAK_HOURS", "22:00-06:00,01:00-07:00")], &["--dry-run"], "OFFPEAK_HOURS"),
        // A link-local IPv6 address takes a zone, which must name an interface of this machine.
        (&[("ENVOY_HOST", "[fe80::1%nosuch0]")], &["--once", "--dry-run"], "ENVOY_HOST"),
        (&[("ENVOY_HOST", "[fe80::1]")], &["--once", "--dry-run"], "ENVOY_HOST"),
    ];
    let long_id = "c".repeat(65_536);
    let long_id = [("MQTT_CLIENT_ID", long_id.as_str())];
    let cases = cases.iter().copied().chain([(
        &long_id[..],
        &["--once", "--dry-run"][..],
        "MQTT_CLIENT_ID",
    )]);
    for (env, args, name) in cases {
        let out = run(env, args);
        assert_eq!(out.status.code(), Some(2), "{env:?} {args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(&format!("configuration: {name} ")), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.len() < 600, "no long value echoed: {err}");
    }
    // `--diagnose --config x` is a missing folder, not a folder named --config.
    let out = run(&[], &["--diagnose", "--config", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--diagnose needs a value, not the option --config"));
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

    // Files that are no settings file: a device that never ends, a FIFO, 1 MB.
    let fifo = file.path("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(file.path("big.env"), "# x\n".repeat(262_144)).unwrap();
    for (path, words) in [
        ("/dev/zero".into(), "is not a regular file"),
        (fifo, "is not a regular file"),
        (file.path("big.env"), "larger than 64 KiB"),
    ] {
        let out = run(
            &[],
            &["--config", path.to_str().unwrap(), "--once", "--dry-run"],
        );
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{path:?}: {err}");
        assert!(
            err.contains("configuration: --config ") && err.contains(words),
            "{err}"
        );
    }
    // Unknown options are said first, before anything else is read.
    for args in [&["--bogus"][..], &["--dryrun", "--once"][..]] {
        let out = run(&[], args);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            text(&out.stderr).contains("unknown option --"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn check_report_and_diagnose() {
    let e = envoy("7.6.175_with_cts_3phase");
    let state = Tmp::new("state");
    let broker = Mosquitto::start("allow_anonymous true");
    let env = bridge_env(&e, &broker, &state);
    let env = pairs(&env);
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
        &format!("broker: 127.0.0.1:{} accepted the connection", broker.port),
        "(ENVOY_TLS_VERIFY=warn)",
        "result: ok",
    ] {
        assert!(report.contains(want), "{want}:\n{report}");
    }
    assert!(!report.contains(&e.token));
    // --check writes nothing, and does not say it remembers the certificate.
    let said = text(&out.stderr);
    assert!(
        said.contains("(not remembered: --check and --dry-run write nothing)")
            && !said.contains("remembering the Envoy certificate"),
        "{said}"
    );
    assert!(!state.path("envoy-cert.sha256").exists());

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
    // The capture has the fixture's shape: the same meters, each with as many channels.
    let shape = |text: &str| -> Vec<(u64, usize)> {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let channels = m["channels"].as_array().map_or(0, Vec::len);
                (m["eid"].as_u64().unwrap(), channels)
            })
            .collect()
    };
    assert_eq!(shape(&readings), shape(&original));
    let log = std::fs::read_to_string(diag.path("ivp_meters_readings_log.json")).unwrap();
    assert!(log.contains("\"code\": 200"), "{log}");
    assert!(diag.path("info").exists() && diag.path("api_v1_production").exists());
}

#[test]
fn dry_run_and_check_write_nothing() {
    let e = envoy("7.6.175_with_cts");
    let broker = Mosquitto::start("allow_anonymous true");
    let state = Tmp::new("state");
    let dir = state.path("envoy2mqtt");
    let env = bridge_env(&e, &broker, &state);
    let env = with(env, &[("STATE_DIR", dir.to_str().unwrap())]);
    // A folder as the service leaves it; one file widened, which a writing run would tighten.
    let out = run(&pairs(&env), &["--once"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cert = dir.join("envoy-cert.sha256");
    assert!(cert.exists(), "{:?}", folder_snapshot(&dir));
    std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = folder_snapshot(&dir);
    for name in ["ledger.json", "discovery.json"] {
        assert!(before.iter().any(|f| f.0 == name), "{name}: {before:?}");
    }
    // Another Envoy certificate: a writing run would remember it.
    let other = envoy("7.6.175_with_cts");
    let env = with(env, &[("ENVOY_HOST", &other.server.url())]);
    let other_env = with(env.clone(), &[("ENVOY_TOKEN", &other.token)]);
    let check = |out: &Output, what: &str| {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{what}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert_eq!(folder_snapshot(&dir), before, "{what} changed STATE_DIR");
    };
    check(
        &run(&pairs(&other_env), &["--once", "--dry-run"]),
        "--once --dry-run",
    );
    check(&run(&pairs(&other_env), &["--check"]), "--check");
    let d = Daemon::start(
        &pairs(&with(other_env.clone(), &[("DATA_INTERVAL_SECONDS", "1")])),
        &["--dry-run"],
    );
    let polls = Daemon::data_polls;
    assert!(
        d.wait_until(Duration::from_secs(10), |d| polls(d) >= 2),
        "{}",
        d.stderr()
    );
    drop(d);
    assert_eq!(
        folder_snapshot(&dir),
        before,
        "the --dry-run service changed STATE_DIR"
    );

    // As another user, who cannot even read the folder: both still work.
    let root = text(&Command::new("id").arg("-u").output().unwrap().stdout).trim() == "0";
    if root {
        for args in [&["--once", "--dry-run"][..], &["--check"][..]] {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(env!("CARGO_BIN_EXE_envoy2mqtt"))
                .args(args)
                .env_clear()
                .envs(pairs(&other_env));
            let out = cmd.output().unwrap();
            check(&out, &format!("{args:?} as nobody"));
        }
    }
}

#[test]
fn service_keeps_secrets_out_of_logs_argv_and_messages_and_tightens_widened_files() {
    let (e, cloud, ca, _certs) = envoy_and_cloud("7.6.175_with_cts", false);
    let state = Tmp::new("state");
    let broker = Mosquitto::start("allow_anonymous true");
    let sub = Subscriber::start(&broker, &[]);
    let mut env = cloud_env(&e, &state, &cloud, ca.to_str().unwrap());
    env.extend(with(
        Vec::new(),
        &[
            ("LOG_LEVEL", "trace"),
            ("MQTT_HOST", "127.0.0.1"),
            ("MQTT_USERNAME", "bridge"),
            ("MQTT_PASSWORD", "mqtt-SECRET-7730"),
            ("RAW_DATA_INTERVAL_SECONDS", "1"),
        ],
    ));
    env.push(("MQTT_PORT", broker.port()));
    // A first run logs in to the cloud and leaves the token, the certificate and the ledger.
    let out = run(&pairs(&env), &["--once"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let files = ["token", "envoy-cert.sha256", "ledger.json"];
    for f in files {
        std::fs::set_permissions(state.path(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let d = Daemon::start(&pairs(&env), &[]);
    // A raw value is the service's own (the retained data may be the first run's): its
    // signal handlers are in place before the SIGHUP.
    let raw = "envoy/122238082763/raw/timestamp";
    assert!(sub.wait_until(Duration::from_secs(10), |s| {
        s.iter().any(|m| m.topic == raw)
    }));
    let pid = d.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(d.wait_until(Duration::from_secs(10), |d| {
        d.stderr().contains("configuration reloaded")
    }));
    let cmdline = text(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap());
    let log = d.stderr();
    drop(d);
    assert!(log.contains("configuration reloaded"), "{log}");
    for f in files {
        assert!(
            log.contains(&format!(
                "{f} was readable by other users (mode 644); set it back to 0600"
            )),
            "{f}: {log}"
        );
    }
    let token = std::fs::read_to_string(state.path("token")).unwrap();
    let mut seen = cmdline + &log + &text(&out.stderr);
    for m in sub.seen() {
        seen += &format!("{} {}\n", m.topic, m.payload);
    }
    for secret in ["pw-SECRET-8412", "mqtt-SECRET-7730", token.trim()] {
        assert!(!seen.contains(secret), "{secret} leaked");
    }
    for f in files {
        let mode = std::fs::metadata(state.path(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f} was not tightened");
    }
}

#[test]
fn a_key_given_twice_in_the_file_takes_the_last_and_warns() {
    // The shipped default names ENVOY_HOST; an owner adds theirs below it: theirs is used,
    // as systemd's EnvironmentFile does, with a warning.
    let e = envoy("7.6.175_with_cts");
    let file = Tmp::new("conf");
    let state = Tmp::new("state");
    let settings = format!(
        "ENVOY_HOST=127.0.0.1:9\nENVOY_TOKEN={}\nENVOY_HOST={}\nSTATE_DIR={}\n",
        e.token,
        e.server.url(),
        state.0.display()
    );
    std::fs::write(file.path("e.env"), settings).unwrap();
    let out = run(
        &[],
        &[
            "--config",
            file.path("e.env").to_str().unwrap(),
            "--once",
            "--dry-run",
        ],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(text(&out.stdout).contains("/data/prod_eim_wNow"));
    let said = "ENVOY_HOST is given twice (";
    assert_eq!(err.matches(said).count(), 1, "{err}");
    assert!(
        err.contains("line 1 and ") && err.contains("line 3): the last one is used"),
        "{err}"
    );
    // The shipped default sets nothing: every setting line is commented out.
    let default = include_str!("../../packaging/envoy2mqtt.default");
    let set: Vec<&str> = default
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert!(set.is_empty(), "{set:?}");
    assert!(default.contains("#ENVOY_HOST=envoy.local"));
}

#[test]
fn log_lines_carry_a_time_unless_the_journal_adds_its_own() {
    let e = envoy("7.6.175_with_cts");
    let state = Tmp::new("state");
    let base = [
        ("ENVOY_HOST", e.server.url()),
        ("ENVOY_TOKEN", e.token.clone()),
        ("STATE_DIR", state.0.to_str().unwrap().to_string()),
    ];
    let first_line = |more: &[(&'static str, &str)]| {
        let env = with(base.to_vec(), more);
        let out = run(&pairs(&env), &["--once", "--dry-run"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    // auto: a time (RFC 3339, UTC) first, then the level.
    let stamped = first_line(&[]);
    let (time, rest) = stamped.split_once(' ').unwrap();
    assert!(
        time.starts_with("20") && time.ends_with('Z') && time.contains('T'),
        "{stamped}"
    );
    assert!(rest.starts_with("[INFO]"), "{stamped}");
    // Under systemd the journal adds the time: none of ours.
    assert!(first_line(&[("JOURNAL_STREAM", "8:12345")]).starts_with("[INFO]"));
    assert!(first_line(&[("LOG_TIMESTAMPS", "false")]).starts_with("[INFO]"));
    let forced = first_line(&[("JOURNAL_STREAM", "8:1"), ("LOG_TIMESTAMPS", "true")]);
    assert!(forced.starts_with("20"), "{forced}");
}
