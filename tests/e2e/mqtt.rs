//! The MQTT session against a real mosquitto: `--once` delivery, the last will, passwords,
//! TLS and mutual TLS, plain/TLS mismatches, QoS.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::pki;
use super::support::*;

#[test]
fn once_publishes_what_dry_run_prints_retained_then_disconnects_cleanly() {
    let e = envoy("7.6.175_with_cts");
    let broker = Mosquitto::start("allow_anonymous true");
    for format in ["simple", "json"] {
        let state = Tmp::new("state");
        let env = with(bridge_env(&e, &broker, &state), &[("MQTT_FORMAT", format)]);
        let early = Subscriber::start(&broker, &[]);
        let out = run(&pairs(&env), &["--once"]);
        assert!(out.status.success(), "{format}: {}", text(&out.stderr));
        // Everything is delivered before the exit: a late subscriber sees it all, retained.
        let late = Subscriber::start(&broker, &[]);
        let golden = std::fs::read_to_string(format!(
            "{}/tests/golden/7.6.175_with_cts.{format}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let mut want: Vec<&str> = golden.lines().collect();
        // The golden lines: data, and each microinverter's.
        let golden_topic = |t: &str| t.contains("/data/") || t.contains("/inverter/");
        let data = |s: &[Seen]| s.iter().filter(|m| golden_topic(&m.topic)).count();
        assert!(late.wait_until(Duration::from_secs(5), |s| data(s) >= want.len()));
        let lines: String = late
            .seen()
            .iter()
            .filter(|m| golden_topic(&m.topic))
            .map(|m| {
                format!(
                    "{} {}{}\n",
                    m.topic,
                    if m.retained { "[retained] " } else { "" },
                    m.payload
                )
            })
            .collect();
        let normalized = normalize(&lines);
        let mut got: Vec<&str> = normalized.lines().collect();
        got.sort();
        want.sort();
        assert_eq!(
            got, want,
            "{format}: the broker holds exactly the golden messages"
        );

        // P/status and discovery are retained; no availability from cron; no raw topics.
        let status = late.last("envoy/status").expect("P/status");
        assert!(
            status.0 && status.1.starts_with(r#"{"status":"ok","last_sync":""#),
            "{status:?}"
        );
        assert!(
            late.last("envoy/122238082763/status").is_none(),
            "--once publishes no availability"
        );
        let config = late
            .last("homeassistant/sensor/envoy2mqtt_122238082763/prod_eim_kwhLifetime/config")
            .expect("discovery");
        assert!(
            config.0 && config.1.contains(r#""expire_after":900"#),
            "{config:?}"
        );
        assert!(early.seen().iter().all(|m| !m.topic.contains("/raw/")));
        assert!(
            early
                .seen()
                .iter()
                .filter(|m| m.topic.contains("/data/"))
                .all(|m| m.retained)
        );
        // Clean disconnect: mosquitto would have sent no last will anyway (none is set);
        // the process exits 0 only once every QoS 1 message was acknowledged.
        publish(&broker, "envoy/status", "", &["-r"]); // clear for the next format
        for m in late.seen() {
            publish(&broker, &m.topic, "", &["-r"]);
        }
    }
}

#[test]
fn kill_9_makes_the_broker_deliver_the_last_will() {
    let e = envoy("7.6.175_with_cts");
    let broker = Mosquitto::start("allow_anonymous true");
    let state = Tmp::new("state");
    let sub = Subscriber::start(&broker, &[]);
    let env = with(
        bridge_env(&e, &broker, &state),
        &[("RAW_DATA_INTERVAL_SECONDS", "0")],
    );
    let mut d = Daemon::start(&pairs(&env), &[]);
    assert!(sub.wait_until(
        Duration::from_secs(8),
        |_| sub.last("envoy/122238082763/status") == Some((true, "online".into()))
    ));
    d.child.kill().unwrap();
    let _ = d.child.wait();
    assert!(
        sub.wait_until(Duration::from_secs(5), |_| sub
            .last("envoy/122238082763/status")
            == Some((true, "offline".into()))),
        "the last will"
    );
}

#[test]
fn broker_restart_brings_back_availability_and_retained_state() {
    let e = envoy("7.6.175_with_cts");
    let mut broker = Mosquitto::start("allow_anonymous true");
    let state = Tmp::new("state");
    let env = with(
        bridge_env(&e, &broker, &state),
        &[("RAW_DATA_INTERVAL_SECONDS", "1")],
    );
    let d = Daemon::start(&pairs(&env), &[]);
    let sub = Subscriber::start(&broker, &[]);
    assert!(sub.wait_until(Duration::from_secs(8), |_| {
        sub.last("envoy/122238082763/data/prod_eim_wNow").is_some()
    }));
    drop(sub);
    broker.restart(); // no persistence: every retained message is gone
    let late = Subscriber::start(&broker, &[]);
    let retained_data = |s: &[Seen]| {
        s.iter()
            .filter(|m| m.retained && m.topic.contains("/data/"))
            .count()
    };
    assert!(
        late.wait_until(Duration::from_secs(15), |s| retained_data(s) >= 30),
        "{}",
        d.stderr()
    );
    assert_eq!(
        late.last("envoy/122238082763/status"),
        Some((true, "online".into()))
    );
    assert!(
        late.last("homeassistant/sensor/envoy2mqtt_122238082763/import_eim_kwhLifetime/config")
            .is_some()
    );
}

#[test]
fn password_authentication() {
    let e = envoy("7.6.175_with_cts");
    let broker = Mosquitto::with_password("bridge", "mqtt-SECRET-5531");
    let state = Tmp::new("state");
    let env = with(
        bridge_env(&e, &broker, &state),
        &[
            ("MQTT_USERNAME", "bridge"),
            ("MQTT_PASSWORD", "mqtt-SECRET-5531"),
        ],
    );
    let out = run(&pairs(&env), &["--once"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let env = with(
        bridge_env(&e, &broker, &state),
        &[("MQTT_USERNAME", "bridge"), ("MQTT_PASSWORD", "wrong-one")],
    );
    let out = run(&pairs(&env), &["--once"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("refused the login; check MQTT_USERNAME and MQTT_PASSWORD"),
        "{err}"
    );
    assert!(!err.contains("wrong-one") && !err.contains("mqtt-SECRET"));
    assert_eq!(
        err.trim().lines().count(),
        1 + err.matches("[INFO]").count(),
        "one line: {err}"
    );
}

#[test]
fn tls_and_plain_mismatches_are_named_for_the_envoy_and_the_broker() {
    // A plain HTTP server on loopback, as an old Envoy's port 80 is: it answers 400 to
    // anything, TLS handshakes included. Bounded: it serves at most 4 connections.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in plain.incoming().flatten().take(4) {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let e = envoy("7.6.175_with_cts");
    let state = Tmp::new("state");
    let envoy_error = |host: &str| {
        let out = run(
            &[
                ("ENVOY_HOST", host),
                ("ENVOY_TOKEN", &e.token),
                ("STATE_DIR", state.0.to_str().unwrap()),
            ],
            &["--once", "--dry-run"],
        );
        assert_eq!(out.status.code(), Some(1));
        text(&out.stderr)
    };
    let err = envoy_error(&format!("https://127.0.0.1:{plain_port}"));
    assert!(err.contains("answered without TLS"), "{err}");
    let err = envoy_error(&e.server.url().replace("https://", "http://"));
    assert!(
        err.contains("speaks TLS: write ENVOY_HOST=https://"),
        "{err}"
    );

    // The broker: TLS to a plain listener, plain to a TLS listener.
    let pki = Tmp::new("pki");
    let (ca, cert, key) = pki::ca_signed(&pki.0);
    let tls_broker = Mosquitto::start(&format!(
        "allow_anonymous true\ncertfile {}\nkeyfile {}",
        cert.display(),
        key.display()
    ));
    let plain_broker = Mosquitto::start("allow_anonymous true");
    let broker_error = |broker: &Mosquitto, more: &[(&'static str, &str)]| {
        let env = with(bridge_env(&e, broker, &state), more);
        let out = run(&pairs(&env), &["--once"]);
        assert_eq!(out.status.code(), Some(1));
        text(&out.stderr)
    };
    let err = broker_error(
        &plain_broker,
        &[("MQTT_TLS", "true"), ("MQTT_CA_CERT", ca.to_str().unwrap())],
    );
    assert!(err.contains("may not speak TLS"), "{err}");
    assert!(!err.contains("check MQTT_CA_CERT"), "{err}");
    let err = broker_error(&tls_broker, &[]);
    assert!(
        err.contains("if that port expects TLS, set MQTT_TLS=true"),
        "{err}"
    );
}

/// A CA that signed the broker's and a client's certificates, and another CA with a client.
struct Pki {
    _dirs: (Tmp, Tmp),
    ca: String,
    other_ca: String,
    broker: (String, String),
    client: (String, String),
    stranger: (String, String),
}

fn pki() -> Pki {
    let s = |p: PathBuf| p.to_str().unwrap().to_string();
    let (mine, other) = (Tmp::new("pki"), Tmp::new("otherpki"));
    let (ca, cert, key) = pki::ca_signed(&mine.0);
    let (other_ca, _, _) = pki::ca_signed(&other.0);
    let (client, client_key) = pki::client_signed(&mine.0, "bridge");
    let (stranger, stranger_key) = pki::client_signed(&other.0, "stranger");
    Pki {
        _dirs: (mine, other),
        ca: s(ca),
        other_ca: s(other_ca),
        broker: (s(cert), s(key)),
        client: (s(client), s(client_key)),
        stranger: (s(stranger), s(stranger_key)),
    }
}

/// A mosquitto listener in TLS with the certificates of `p`, asking for a client's if `mutual`.
fn tls_broker(p: &Pki, mutual: bool) -> Mosquitto {
    Mosquitto::start(&format!(
        "allow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {mutual}",
        p.ca, p.broker.0, p.broker.1
    ))
}

#[test]
fn broker_tls_trusts_the_ca_given_and_only_it() {
    let e = envoy("7.6.175_with_cts");
    let p = pki();
    let state = Tmp::new("state");
    let broker = tls_broker(&p, false);
    let base = with(bridge_env(&e, &broker, &state), &[("MQTT_TLS", "true")]);
    let good = with(base.clone(), &[("MQTT_CA_CERT", &p.ca)]);
    let out = run(&pairs(&good), &["--once"]);
    assert!(
        out.status.success(),
        "TLS with the CA: {}",
        text(&out.stderr)
    );
    let wrong = with(base.clone(), &[("MQTT_CA_CERT", &p.other_ca)]);
    let out = run(&pairs(&wrong), &["--once"]);
    assert_eq!(out.status.code(), Some(1), "a wrong CA is refused");
    assert!(
        text(&out.stderr).contains("check MQTT_CA_CERT"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&pairs(&base), &["--once"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the web roots do not trust a test CA"
    );
    let insecure = with(base.clone(), &[("MQTT_TLS_INSECURE", "true")]);
    let out = run(&pairs(&insecure), &["--once"]);
    assert!(
        out.status.success(),
        "MQTT_TLS_INSECURE: {}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("MQTT_TLS_INSECURE"), "warned");
}

#[test]
fn broker_mutual_tls_takes_the_client_certificate_of_its_ca_only() {
    let e = envoy("7.6.175_with_cts");
    let p = pki();
    let state = Tmp::new("state");
    let broker = tls_broker(&p, true);
    let base = with(
        bridge_env(&e, &broker, &state),
        &[("MQTT_TLS", "true"), ("MQTT_CA_CERT", &p.ca)],
    );
    let client = |(cert, key): &(String, String)| {
        with(
            base.clone(),
            &[("MQTT_CLIENT_CERT", cert), ("MQTT_CLIENT_KEY", key)],
        )
    };
    let out = run(&pairs(&client(&p.client)), &["--once"]);
    assert!(out.status.success(), "mutual TLS: {}", text(&out.stderr));
    assert_eq!(
        run(&pairs(&base), &["--once"]).status.code(),
        Some(1),
        "no client certificate"
    );
    assert_eq!(
        run(&pairs(&client(&p.stranger)), &["--once"]).status.code(),
        Some(1),
        "a certificate of another CA"
    );
}

#[test]
fn once_reports_an_envoy_failure_in_status_and_exits_1() {
    let e = envoy("7.6.175_with_cts");
    e.server.control.lock().faults.status = Some((503, u32::MAX));
    let broker = Mosquitto::start("allow_anonymous true");
    let state = Tmp::new("state");
    let out = run(&pairs(&bridge_env(&e, &broker, &state)), &["--once"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .trim()
            .lines()
            .last()
            .unwrap()
            .contains("HTTP 503")
    );
    let late = Subscriber::start(&broker, &[]);
    assert!(late.wait_until(Duration::from_secs(3), |_| {
        late.last("envoy/status").is_some()
    }));
    let (retained, status) = late.last("envoy/status").unwrap();
    assert!(
        retained && status.starts_with(r#"{"status":"error""#) && status.contains("HTTP 503"),
        "{status}"
    );
    // The broker unreachable: exit 1, one line.
    let env = with(
        bridge_env(&e, &broker, &state),
        &[("MQTT_PORT", &free_port().to_string())],
    );
    let out = run(&pairs(&env), &["--once"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("mqtt: cannot talk to broker 127.0.0.1:"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn qos_is_mqtt_qos_for_state_messages_even_when_not_retained() {
    let e = envoy("7.6.175_with_cts");
    let broker = Mosquitto::start("allow_anonymous true");
    let state = Tmp::new("state");
    // A QoS 1 subscriber sees each message at the lower of its QoS and the publisher's.
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port(), "-q", "1", "-v"])
        .args(["-t", "envoy/+/data/+", "-t", "probe/qos", "-F", "%q %t"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l = lines.clone();
    let out = sub.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    let seen = |what: &str| lines.lock().unwrap().iter().any(|x| x.ends_with(what));
    let start = Instant::now();
    while !seen(" probe/qos") && start.elapsed() < Duration::from_secs(5) {
        publish(&broker, "probe/qos", "x", &["-q", "1"]);
        std::thread::sleep(Duration::from_millis(100)); // pacing of the probe, bounded above
    }
    assert!(seen(" probe/qos"), "mosquitto_sub subscribed");
    let env = with(
        bridge_env(&e, &broker, &state),
        &[("MQTT_RETAIN", "false"), ("MQTT_QOS", "1")],
    );
    let out = run(&pairs(&env), &["--once"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let data = |l: &Vec<String>| l.iter().filter(|x| x.contains("/data/")).count();
    let start = Instant::now();
    while data(&lines.lock().unwrap()) < 20 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20)); // waiting on the subscriber's lines
    }
    let got = lines.lock().unwrap().clone();
    let _ = sub.kill();
    let _ = sub.wait();
    let data: Vec<&String> = got.iter().filter(|x| x.contains("/data/")).collect();
    assert!(data.len() >= 20, "{got:?}");
    assert!(
        data.iter().all(|x| x.starts_with("1 ")),
        "every data message at QoS 1: {data:?}"
    );
}

#[test]
fn an_oversized_retained_command_is_dropped_without_a_reconnect_loop() {
    // Anyone on the LAN can leave 300 KB retained under P/command/#.
    let e = envoy("7.6.175_with_cts");
    let broker = Mosquitto::start("allow_anonymous true");
    let files = Tmp::new("big");
    std::fs::write(files.path("big"), "x".repeat(300 * 1024)).unwrap();
    for (topic, qos) in [("envoy/command/x", "1"), ("envoy/command/y", "0")] {
        let ok = mosquitto_pub(&broker, topic)
            .args(["-r", "-q", qos, "-f"])
            .arg(files.path("big"))
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let sub = Subscriber::start(&broker, &[]);
    let state = Tmp::new("state");
    let env = with(
        bridge_env(&e, &broker, &state),
        &[
            ("RAW_DATA_INTERVAL_SECONDS", "0"),
            ("DATA_INTERVAL_SECONDS", "1"),
            ("HA_DISCOVERY", "false"),
        ],
    );
    let d = Daemon::start(&pairs(&env), &[]);
    let statuses = |s: &[Seen]| {
        s.iter()
            .filter(|m| m.topic == "envoy/status" && m.payload.contains("\"ok\""))
            .count()
    };
    assert!(
        sub.wait_until(Duration::from_secs(20), |s| statuses(s) >= 5),
        "{}",
        d.stderr()
    );
    // And the command topic still works after it.
    publish(&broker, "envoy/command/sync", "", &[]);
    assert!(
        d.wait_until(Duration::from_secs(10), |d| d
            .stderr()
            .contains("sync asked")),
        "{}",
        d.stderr()
    );
    let log = d.stderr();
    assert_eq!(
        log.matches("was dropped unread").count(),
        1,
        "told once: {log}"
    );
    assert!(log.contains("a message of 307"), "{log}");
    assert_eq!(
        log.matches("connected to broker").count(),
        1,
        "one connection: {log}"
    );
    assert!(
        !log.contains("MQTT_CLIENT_ID"),
        "no client-id diagnosis: {log}"
    );
}
