//! The configuration's unit tests: every setting read, every error naming its setting.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::parsers::interval;
use super::sources::Origin;
use super::*;
use crate::error::Result;

fn sources(env: &[(&str, &str)]) -> Sources {
    let mut s = Sources::default();
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    s.environment(|k| env.get(k).cloned());
    s
}

fn config(env: &[(&str, &str)]) -> Result<Config> {
    sources(env).validate()
}

#[test]
fn defaults() {
    let c = config(&[]).unwrap();
    assert_eq!(c.envoy.url, "https://envoy.local");
    assert_eq!(c.envoy.tls_verify, TlsVerify::Warn);
    assert_eq!((c.mqtt.host.as_str(), c.mqtt.port), ("localhost", 1883));
    assert_eq!(c.mqtt.prefix, "envoy");
    assert_eq!(
        (c.mqtt.qos, c.mqtt.retain, c.mqtt.format),
        (1, true, Format::Simple)
    );
    assert_eq!(c.raw_interval, Some(Duration::from_secs(1)));
    assert_eq!(c.data_interval, Duration::from_secs(60));
    assert_eq!(c.envoy.timeout, Duration::from_secs(10));
    assert!(c.ha_discovery);
    assert_eq!(c.ha_prefix, "homeassistant");
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/envoy2mqtt"));
    assert_eq!(c.log_level, log::LevelFilter::Info);
    assert_eq!(c.envoy.login_url, "https://enlighten.enphaseenergy.com");
    assert!(c.offpeak.is_empty() && c.tz.is_none() && c.envoy.serial.is_none());
}

#[test]
fn each_setting_is_read() {
    let c = config(&[
        ("ENVOY_HOST", "http://192.168.1.20/"),
        ("ENVOY_SERIAL", "122238082763"),
        ("ENVOY_TOKEN", "ey.x.y"),
        ("ENPHASE_USERNAME", "me@example.com"),
        ("ENPHASE_PASSWORD", "pw"),
        ("ENVOY_TLS_VERIFY", "pin"),
        ("ENVOY_CERT_SHA256", &format!("{}cd", "ab:".repeat(31))),
        ("MQTT_HOST", "broker"),
        ("MQTT_TLS", "yes"),
        ("MQTT_USERNAME", "u"),
        ("MQTT_PASSWORD", "p"),
        ("MQTT_CLIENT_ID", "cid"),
        ("MQTT_BASE_TOPIC", "solar"),
        ("MQTT_QOS", "2"),
        ("MQTT_RETAIN", "false"),
        ("MQTT_FORMAT", "json"),
        ("MQTT_TLS_INSECURE", "on"),
        ("RAW_DATA_INTERVAL_SECONDS", "0"),
        ("DATA_INTERVAL_SECONDS", "5m"),
        ("ENVOY_TIMEOUT_SECONDS", "2.5"),
        ("HA_DISCOVERY", "0"),
        ("HA_DISCOVERY_PREFIX", "ha"),
        ("OFFPEAK_HOURS", "22:00-06:00"),
        ("STATE_DIR", "/tmp/x"),
        ("TZ", "Europe/Paris"),
        ("LOG_LEVEL", "DEBUG"),
    ])
    .unwrap();
    assert_eq!(c.envoy.url, "http://192.168.1.20");
    assert_eq!(c.envoy.timeout, Duration::from_millis(2_500));
    assert_eq!(c.envoy.serial.as_deref(), Some("122238082763"));
    assert_eq!(c.envoy.token.as_ref().map(Secret::expose), Some("ey.x.y"));
    assert_eq!(c.envoy.username.as_deref(), Some("me@example.com"));
    assert_eq!(c.envoy.tls_verify, TlsVerify::Pin);
    let fp = c.envoy.cert_sha256.unwrap();
    assert_eq!((fp[0], fp[31]), (0xab, 0xcd));
    assert_eq!(
        (c.mqtt.host.as_str(), c.mqtt.port, c.mqtt.tls),
        ("broker", 8883, true)
    );
    assert_eq!(c.mqtt.password, Some(Secret::new("p")));
    assert_eq!(c.mqtt.client_id.as_deref(), Some("cid"));
    assert_eq!(c.mqtt.prefix, "solar");
    assert_eq!(
        (c.mqtt.qos, c.mqtt.retain, c.mqtt.format),
        (2, false, Format::Json)
    );
    assert!(c.mqtt.tls_insecure);
    assert_eq!(c.raw_interval, None);
    assert_eq!(c.data_interval, Duration::from_secs(300));
    assert!(!c.ha_discovery);
    assert_eq!(c.ha_prefix, "ha");
    assert_eq!(c.offpeak.len(), 1);
    assert_eq!(c.state_dir, PathBuf::from("/tmp/x"));
    assert_eq!(c.tz.as_deref(), Some("Europe/Paris"));
    assert_eq!(c.log_level, log::LevelFilter::Debug);
}

/// Settings that must be refused: the environment, the setting named, words of the message.
#[allow(clippy::type_complexity)] // a table of cases
const REFUSED: &[(&[(&str, &str)], &str, &str)] = &[
    (&[("ENVOY_HOST", "ftp://x")], "ENVOY_HOST", "scheme"),
    (&[("ENVOY_HOST", "a b")], "ENVOY_HOST", "not a host"),
    (
        &[("ENVOY_HOST", "https://x/path")],
        "ENVOY_HOST",
        "not a host",
    ),
    (&[("ENVOY_SERIAL", "12-34")], "ENVOY_SERIAL", "not a serial"),
    (&[("ENPHASE_USERNAME", "u")], "ENPHASE_PASSWORD", "missing"),
    (&[("ENPHASE_PASSWORD", "p")], "ENPHASE_USERNAME", "missing"),
    (
        &[("ENVOY_TLS_VERIFY", "yes")],
        "ENVOY_TLS_VERIFY",
        "use warn",
    ),
    (
        &[("ENVOY_CERT_SHA256", "abc")],
        "ENVOY_CERT_SHA256",
        "64 hexadecimal",
    ),
    (
        &[("ENVOY_HOST", "192.168.1.20:abc")],
        "ENVOY_HOST",
        "port 'abc'",
    ),
    (
        &[("ENVOY_HOST", "192.168.1.20:99999")],
        "ENVOY_HOST",
        "port '99999'",
    ),
    (
        &[("ENVOY_HOST", "192.168.1.20:0")],
        "ENVOY_HOST",
        "1 to 65535",
    ),
    (&[("ENVOY_HOST", "::1")], "ENVOY_HOST", "[::1]"),
    (&[("ENVOY_HOST", "[::1")], "ENVOY_HOST", "in brackets"),
    (
        &[("ENVOY_HOST", "[fe80::1%nosuch0]")],
        "ENVOY_HOST",
        "the network interface 'nosuch0', which this machine does not have",
    ),
    (
        &[("ENVOY_HOST", "[fe80::1%..]")],
        "ENVOY_HOST",
        "which this machine does not have",
    ),
    (
        &[("ENVOY_TIMEOUT_SECONDS", "1")],
        "ENVOY_TIMEOUT_SECONDS",
        "out of range",
    ),
    (
        &[("ENVOY_TIMEOUT_SECONDS", "30")],
        "ENVOY_TIMEOUT_SECONDS",
        "'30' is out of range (2 to 10 s)",
    ),
    (
        &[("ENVOY_HOST", "[fe80::1]")],
        "ENVOY_HOST",
        "ENVOY_HOST=[fe80::1%eth0]",
    ),
    (
        &[("ENVOY_HOST", "[fe80::zz%lo]")],
        "ENVOY_HOST",
        "in brackets",
    ),
    (
        &[("ENVOY_HOST", "https://user:pass@10.0.0.2")],
        "ENVOY_HOST",
        "user name or password",
    ),
    (
        &[("ENVOY_HOST", "envoy!local")],
        "ENVOY_HOST",
        "not a host name",
    ),
    (&[("MQTT_HOST", "")], "", ""),
    (&[("MQTT_HOST", "mqtt://b")], "MQTT_HOST", "not a host"),
    (
        &[("MQTT_HOST", "broker.lan:1884")],
        "MQTT_HOST",
        "MQTT_HOST=broker.lan and MQTT_PORT=1884",
    ),
    (
        &[("MQTT_TOPIC_PREFIX", "#")],
        "MQTT_TOPIC_PREFIX",
        "wildcard",
    ),
    (
        &[("MQTT_TOPIC_PREFIX", "a/+/b")],
        "MQTT_TOPIC_PREFIX",
        "wildcard",
    ),
    (
        &[("MQTT_TOPIC_PREFIX", "a//b")],
        "MQTT_TOPIC_PREFIX",
        "empty topic level",
    ),
    (
        &[("MQTT_TOPIC_PREFIX", "/envoy")],
        "MQTT_TOPIC_PREFIX",
        "empty topic level",
    ),
    (
        &[("MQTT_TOPIC_PREFIX", "$SYS")],
        "MQTT_TOPIC_PREFIX",
        "cannot start",
    ),
    (
        &[("MQTT_TOPIC_PREFIX", "my envoy")],
        "MQTT_TOPIC_PREFIX",
        "' ' in it",
    ),
    (
        &[("MQTT_TOPIC_PREFIX", "énergie")],
        "MQTT_TOPIC_PREFIX",
        "'é' in it",
    ),
    (
        &[("OFFPEAK_HOURS", "22:00-06:00,05:00-07:00")],
        "OFFPEAK_HOURS",
        "overlaps 22:00-06:00",
    ),
    (&[("STATE_DIR", "state")], "STATE_DIR", "absolute path"),
    (
        &[("ENVOY_TOKEN", "not a token")],
        "ENVOY_TOKEN",
        "three base64url parts",
    ),
    (&[("ENVOY_TOKEN", "a.b")], "ENVOY_TOKEN", "is not a token"),
    (
        &[("MQTT_CA_CERT", "/etc/passwd")],
        "MQTT_CA_CERT",
        "no PEM CERTIFICATE",
    ),
    (
        &[
            ("MQTT_CLIENT_KEY", "/etc/passwd"),
            ("MQTT_CLIENT_CERT", "/etc/passwd"),
        ],
        "MQTT_CLIENT_CERT",
        "no PEM",
    ),
    (
        &[("HA_DISCOVERY_PREFIX", "home/#")],
        "HA_DISCOVERY_PREFIX",
        "wildcard",
    ),
    (
        &[
            ("DATA_INTERVAL_SECONDS", "1"),
            ("RAW_DATA_INTERVAL_SECONDS", "5"),
        ],
        "DATA_INTERVAL_SECONDS",
        "shorter than RAW_DATA_INTERVAL_SECONDS",
    ),
    (&[("MQTT_PORT", "0")], "MQTT_PORT", "1 to 65535"),
    (&[("MQTT_PORT", "70000")], "MQTT_PORT", "1 to 65535"),
    (&[("MQTT_QOS", "3")], "MQTT_QOS", "0, 1"),
    (&[("MQTT_RETAIN", "maybe")], "MQTT_RETAIN", "true or false"),
    (&[("MQTT_FORMAT", "xml")], "MQTT_FORMAT", "simple"),
    (&[("MQTT_TLS", "2")], "MQTT_TLS", "true or false"),
    (
        &[("MQTT_TLS_INSECURE", "x")],
        "MQTT_TLS_INSECURE",
        "true or false",
    ),
    (
        &[("MQTT_TOPIC_PREFIX", "a/#")],
        "MQTT_TOPIC_PREFIX",
        "wildcard",
    ),
    (
        &[("MQTT_BASE_TOPIC", "/a")],
        "MQTT_TOPIC_PREFIX",
        "empty topic level",
    ),
    (
        &[("MQTT_CA_CERT", "/nonexistent/ca.pem")],
        "MQTT_CA_CERT",
        "readable PEM",
    ),
    (
        &[
            ("MQTT_CLIENT_CERT", "/nonexistent/c.pem"),
            ("MQTT_CLIENT_KEY", "/nonexistent/k.pem"),
        ],
        "MQTT_CLIENT_CERT",
        "readable",
    ),
    (
        &[("MQTT_CLIENT_CERT", "Cargo.toml")],
        "MQTT_CLIENT_KEY",
        "both",
    ),
    (
        &[("MQTT_CLIENT_KEY", "Cargo.toml")],
        "MQTT_CLIENT_CERT",
        "both",
    ),
    (
        &[("RAW_DATA_INTERVAL_SECONDS", "fast")],
        "RAW_DATA_INTERVAL_SECONDS",
        "0 disables",
    ),
    (
        &[("RAW_DATA_INTERVAL_SECONDS", "10ms")],
        "RAW_DATA_INTERVAL_SECONDS",
        "out of range",
    ),
    (
        &[("DATA_INTERVAL_SECONDS", "0")],
        "DATA_INTERVAL_SECONDS",
        "out of range",
    ),
    (
        &[("DATA_INTERVAL_SECONDS", "-5")],
        "DATA_INTERVAL_SECONDS",
        "out of range",
    ),
    (&[("HA_DISCOVERY", "nope")], "HA_DISCOVERY", "true or false"),
    (
        &[("HA_DISCOVERY_PREFIX", "ha/")],
        "HA_DISCOVERY_PREFIX",
        "empty topic level",
    ),
    (
        &[("OFFPEAK_HOURS", "22h-6h")],
        "OFFPEAK_HOURS",
        "HH:MM-HH:MM",
    ),
    (&[("LOG_LEVEL", "loud")], "LOG_LEVEL", "info (default)"),
    (
        &[("ENPHASE_LOGIN_URL", "http://x")],
        "ENPHASE_LOGIN_URL",
        "https://",
    ),
    (
        &[("ENPHASE_TOKEN_URL", "x")],
        "ENPHASE_TOKEN_URL",
        "https://",
    ),
    (
        &[("ENPHASE_CA_CERT", "/nonexistent")],
        "ENPHASE_CA_CERT",
        "readable",
    ),
];

#[test]
fn each_error_names_the_setting() {
    let long = "x".repeat(70_000);
    let too_long: &[(&str, &str)] = &[("MQTT_TOPIC_PREFIX", &long)];
    let cases = REFUSED
        .iter()
        .copied()
        .chain([(too_long, "MQTT_TOPIC_PREFIX", "70000 bytes")]);
    for (env, name, words) in cases {
        match config(env) {
            Ok(_) if name.is_empty() => {}
            Ok(_) => panic!("{env:?} was accepted"),
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{e}");
                let msg = e.to_string();
                assert!(msg.starts_with(&format!("configuration: {name} ")), "{msg}");
                assert!(msg.contains(words), "{msg} lacks {words}");
                assert!(!msg.contains('\n'), "{msg}");
            }
        }
    }
}

#[test]
fn hosts_that_work() {
    for (value, want) in [
        ("192.168.1.20", "https://192.168.1.20"),
        ("envoy.local", "https://envoy.local"),
        ("https://envoy.lan:8443/", "https://envoy.lan:8443"),
        ("http://10.0.0.2", "http://10.0.0.2"),
        ("[fd00::20]", "https://[fd00::20]"),
        ("https://[::1]:4443", "https://[::1]:4443"),
    ] {
        let c = config(&[("ENVOY_HOST", value)]).unwrap();
        assert_eq!((c.envoy.url.as_str(), c.envoy.scope), (want, None));
    }
    // A zone is the interface's index (`lo` is 1 on Linux), or a number as given; a URL may
    // write its `%` as `%25` (RFC 6874). The URL itself carries no zone.
    for (value, want, scope) in [
        ("[fe80::1%lo]", "https://[fe80::1]", 1),
        ("[fe80::1%lo]:8443", "https://[fe80::1]:8443", 1),
        ("https://[fe80::1%25lo]", "https://[fe80::1]", 1),
        ("http://[fe80::a:b%lo]/", "http://[fe80::a:b]", 1),
        ("[fe80::1%7]", "https://[fe80::1]", 7),
        ("[fd00::20%lo]", "https://[fd00::20]", 1),
    ] {
        let c = config(&[("ENVOY_HOST", value)]).unwrap();
        assert_eq!(
            (c.envoy.url.as_str(), c.envoy.scope),
            (want, Some(scope)),
            "{value}"
        );
    }
    for (value, want) in [
        ("::1", "::1"),
        ("[fd00::1]", "fd00::1"),
        ("broker.lan", "broker.lan"),
    ] {
        assert_eq!(config(&[("MQTT_HOST", value)]).unwrap().mqtt.host, want);
    }
    assert_eq!(
        config(&[("MQTT_TOPIC_PREFIX", "home/solar")])
            .unwrap()
            .mqtt
            .prefix,
        "home/solar"
    );
    // The password of a URL never appears in the message.
    let e = config(&[("ENVOY_HOST", "https://me:hunter2@10.0.0.2")]).unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[test]
fn file_and_environment_alike() {
    // A byte-order mark does not swallow the first setting; values are trimmed in both.
    let mut s = Sources::default();
    s.file("f", "\u{feff}ENVOY_HOST=10.0.0.7 \nMQTT_PORT= 1884\n")
        .unwrap();
    s.environment(|k| (k == "MQTT_HOST").then(|| " broker.lan ".to_string()));
    let c = s.validate().unwrap();
    assert_eq!(c.envoy.url, "https://10.0.0.7");
    assert_eq!((c.mqtt.host.as_str(), c.mqtt.port), ("broker.lan", 1884));
}

#[test]
fn precedence_is_flag_env_file_default() {
    let mut s = Sources::default();
    s.flag("mqtt-host", "from-flag".into()).unwrap();
    s.environment(|k| match k {
        "MQTT_HOST" | "MQTT_PORT" => Some("1884".into()),
        _ => None,
    });
    s.file(
        "f.env",
        "# comment\nMQTT_HOST=from-file\nMQTT_PORT=1999\nexport MQTT_USERNAME=\"bob\"\nMQTT_TOPIC_PREFIX='solar'\nOTHER_THING=1\n",
    )
    .unwrap();
    let c = s.validate().unwrap();
    assert_eq!(c.mqtt.host, "from-flag");
    assert_eq!(c.mqtt.port, 1884);
    assert_eq!(c.mqtt.username.as_deref(), Some("bob"));
    assert_eq!(c.mqtt.prefix, "solar");
    assert_eq!(s.origin("MQTT_HOST"), Origin::Flag);
    assert_eq!(s.origin("MQTT_PORT"), Origin::Env);
    assert_eq!(s.origin("MQTT_USERNAME"), Origin::File("f.env".into(), 4));
    assert_eq!(s.origin("LOG_LEVEL"), Origin::Default);
}

#[test]
fn a_key_given_twice_takes_the_last_as_systemd_does_and_warns() {
    let mut s = Sources::default();
    s.file(
        "f",
        "ENVOY_HOST=envoy.local\nMQTT_HOST=a\nENVOY_HOST=10.0.0.9\n",
    )
    .unwrap();
    let c = s.validate().unwrap();
    assert_eq!(c.envoy.url, "https://10.0.0.9");
    assert_eq!(s.origin("ENVOY_HOST"), Origin::File("f".into(), 3));
    assert_eq!(
        c.warnings,
        [
            "ENVOY_HOST is given twice (f line 1 and f line 3): the last one is used, as systemd does"
        ]
    );
    // The environment still wins over the file, without a warning.
    let mut s = Sources::default();
    s.environment(|k| (k == "ENVOY_HOST").then(|| "10.0.0.1".to_string()));
    s.file("f", "ENVOY_HOST=envoy.local\n").unwrap();
    let c = s.validate().unwrap();
    assert_eq!(
        (c.envoy.url.as_str(), c.warnings.len()),
        ("https://10.0.0.1", 0)
    );
}

#[test]
fn client_ids_long_for_old_brokers_warn_and_past_mqtts_limit_are_refused() {
    let id = "envoy2mqtt_122238082763_garage";
    let c = config(&[("MQTT_CLIENT_ID", id)]).unwrap();
    assert_eq!(c.mqtt.client_id.as_deref(), Some(id));
    assert!(
        c.warnings[0].starts_with("MQTT_CLIENT_ID is 30 bytes long"),
        "{:?}",
        c.warnings
    );
    assert!(
        config(&[("MQTT_CLIENT_ID", "envoy2mqtt")])
            .unwrap()
            .warnings
            .is_empty()
    );
    let e = config(&[("MQTT_CLIENT_ID", &"x".repeat(65_536))]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string().contains("MQTT_CLIENT_ID is 65536 bytes long"),
        "{e}"
    );
    assert!(e.to_string().len() < 400, "the value is not echoed");
    assert!(config(&[("MQTT_CLIENT_ID", &"x".repeat(65_535))]).is_ok());
}

#[test]
fn values_shown_in_messages_are_cut_at_80_characters() {
    let long = format!("{}x", "é".repeat(100));
    let e = config(&[("MQTT_FORMAT", &long)]).unwrap_err().to_string();
    assert!(e.contains(&format!("'{}…'", "é".repeat(80))), "{e}");
    let e = config(&[("STATE_DIR", &"d".repeat(500))])
        .unwrap_err()
        .to_string();
    assert!(e.len() < 300, "{e}");
}

#[test]
fn file_errors() {
    let cases = [
        (
            "MQTT_HOTS=x\n",
            "MQTT_HOTS in f line 1",
            "did you mean MQTT_HOST?",
        ),
        (
            "ENVOY_WHATEVER_ELSE=x\n",
            "ENVOY_WHATEVER_ELSE",
            "remove it",
        ),
        ("just words\n", "--config f line 1", "NAME=value"),
        (
            "mqtt_host=x\n",
            "mqtt_host in f line 1 is in lower case",
            "write it MQTT_HOST",
        ),
        (
            "mqtt_hots=x\n",
            "mqtt_hots in f line 1",
            "did you mean MQTT_HOST?",
        ),
        (
            "=broker\n",
            "f line 1: no setting name before '='",
            "NAME=value",
        ),
        (
            "MQTT_PASSWORD=\"secret\n",
            "MQTT_PASSWORD in f line 1: the value opens a quote (\") it does not close",
            "end the value with \"",
        ),
        ("MQTT_HOST='\n", "opens a quote (')", "remove the quote"),
    ];
    for (text, problem, fix) in cases {
        let e = Sources::default().file("f", text).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(problem) && msg.contains(fix), "{msg}");
        assert_eq!(e.exit_code(), 2);
    }
}

#[test]
fn secrets_are_refused_as_flags_and_hidden() {
    for flag in ["envoy-token", "enphase-password", "mqtt-password"] {
        let e = Sources::default().flag(flag, "hunter2".into()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(!e.to_string().contains("hunter2"));
        assert!(e.to_string().contains("environment"), "{e}");
    }
    let e = Sources::default().flag("no-such", "x".into()).unwrap_err();
    assert!(e.to_string().contains("unknown option --no-such"));
    let token = "eyJhbGciOiJFUzI1NiJ9.eyJzZWNyZXQiOjF9.c2lnbmF0dXJl";
    let c = config(&[("MQTT_PASSWORD", "hunter2"), ("ENVOY_TOKEN", token)]).unwrap();
    let shown = format!("{c:?} {:?}", c.describe());
    assert!(
        !shown.contains("hunter2") && !shown.contains("eyJzZWNyZXQiOjF9"),
        "{shown}"
    );
}

#[test]
fn intervals() {
    let cases = [
        ("1", Some(1000)),
        ("0.5", Some(500)),
        ("90s", Some(90_000)),
        ("5m", Some(300_000)),
        ("250ms", Some(250)),
        ("0", None),
    ];
    for (text, want) in cases {
        let got = interval("X", text, Duration::from_millis(100), Some("X")).unwrap();
        assert_eq!(got.map(|d| d.as_millis() as u64), want, "{text}");
    }
    for (text, words) in [
        ("1e9", "out of range"),
        ("-5", "out of range"),
        ("2d", "out of range"),
        ("50ms", "out of range"),
        ("often", "not a duration"),
        ("NaN", "not a duration"),
    ] {
        let e = interval("X", text, Duration::from_millis(100), Some("X")).unwrap_err();
        assert!(e.to_string().contains(words), "{text}: {e}");
    }
    let e = config(&[("TZ", "Europe/Pariss")]).unwrap_err().to_string();
    assert!(
        e.contains("neither a POSIX TZ string") && !e.contains("integer"),
        "{e}"
    );
}
