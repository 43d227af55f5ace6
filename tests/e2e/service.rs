//! The running service: raw and data topics, tick timing, commands (sync, reload, Home
//! Assistant's birth), reloads, a closed standard output.

use std::process::Command;
use std::time::{Duration, Instant};

use super::support::*;

#[test]
fn service_publishes_raw_unretained_data_retained_and_availability() {
    let e = envoy("7.6.175_with_cts_3phase");
    let broker = Mosquitto::start("allow_anonymous true");
    let state = Tmp::new("state");
    let sub = Subscriber::start(&broker, &[]);
    let env = with(
        bridge_env(&e, &broker, &state),
        &[
            ("RAW_DATA_INTERVAL_SECONDS", "1"),
            ("DATA_INTERVAL_SECONDS", "60"),
        ],
    );
    let mut d = Daemon::start(&pairs(&env), &[]);
    let raw = |s: &[Seen]| {
        s.iter()
            .filter(|m| m.topic == "envoy/122238082763/raw/prod_eim_wNow")
            .count()
    };
    assert!(
        sub.wait_until(Duration::from_secs(8), |s| raw(s) >= 3),
        "{}",
        d.stderr()
    );
    let seen = sub.seen();
    assert_eq!(
        sub.last("envoy/122238082763/status"),
        Some((true, "online".into()))
    );
    for m in &seen {
        // Only raw values and the ledger's restore probe are not retained.
        let retained = !m.topic.contains("/raw/") && !m.topic.ends_with("/ledger/probe");
        assert_eq!(m.retained, retained, "{m:?}");
    }
    for field in [
        "prod_eim_wNow",
        "conso_net_eim_wNow",
        "conso_all_eim_wNow",
        "timestamp",
    ] {
        assert!(
            seen.iter()
                .any(|m| m.topic == format!("envoy/122238082763/raw/{field}")),
            "raw {field}"
        );
    }
    // Only L1 of the three-phase meter is wired (L2, L3 read 6 and 11 V): L1 only.
    assert!(seen.iter().any(
        |m| m.topic == "envoy/122238082763/data/prod_eim_voltage_l1" && m.payload == "235.236"
    ));
    assert!(!seen.iter().any(|m| m.topic.ends_with("_l3")));
    let config = sub
        .last("homeassistant/sensor/envoy2mqtt_122238082763/prod_eim_wNow/config")
        .unwrap()
        .1;
    assert!(
        config.contains(
            r#""availability":[{"topic":"envoy/122238082763/status"},{"topic":"envoy/122238082763/envoy"}],"availability_mode":"all""#
        ),
        "{config}"
    );

    // SIGTERM: offline, retained, and exit 0.
    let status = d.terminate();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?} {}",
        d.stderr()
    );
    assert!(sub.wait_until(
        Duration::from_secs(3),
        |_| sub.last("envoy/122238082763/status") == Some((true, "offline".into()))
    ));
}

#[test]
fn sigterm_ends_the_wait_at_once_with_raw_polling_off() {
    let mut r = rig(
        "7.6.175_with_cts",
        &[
            ("RAW_DATA_INTERVAL_SECONDS", "0"),
            ("DATA_INTERVAL_SECONDS", "1h"),
        ],
    );
    let data = |s: &[Seen]| {
        s.iter()
            .any(|m| m.topic == "envoy/122238082763/data/timestamp")
    };
    assert!(
        r.sub.wait_until(Duration::from_secs(10), data),
        "{}",
        r.d.stderr()
    );
    // Nothing is due for an hour, and no ping for 30 s: only the signal can end the wait.
    let sent = Instant::now();
    let exited = r.d.terminate();
    assert!(exited.is_some_and(|s| s.success()), "{}", r.d.stderr());
    println!("SIGTERM to exit, raw polling off: {:?}", sent.elapsed());
    let offline = Some((true, "offline".to_string()));
    assert!(r.sub.wait_until(
        Duration::from_secs(3),
        |_| r.sub.last("envoy/122238082763/status") == offline
    ));
}

#[test]
fn thirty_seconds_of_raw_ticks_without_drift() {
    let e = envoy("7.6.175_with_cts");
    let broker = Mosquitto::start("allow_anonymous true");
    let state = Tmp::new("state");
    let sub = Subscriber::start(&broker, &[]);
    let env = with(
        bridge_env(&e, &broker, &state),
        &[
            ("RAW_DATA_INTERVAL_SECONDS", "1"),
            ("HA_DISCOVERY", "false"),
        ],
    );
    let _d = Daemon::start(&pairs(&env), &[]);
    let ticks = |s: &[Seen]| -> Vec<Instant> {
        s.iter()
            .filter(|m| m.topic == "envoy/122238082763/raw/timestamp")
            .map(|m| m.at)
            .collect()
    };
    // 31 ticks: 30 s of them (bounded at 40 s: a missed or late tick shows as drift below).
    assert!(sub.wait_until(Duration::from_secs(40), |s| ticks(s).len() >= 31));
    let seen = sub.seen();
    let ticks = ticks(&seen);
    let (first, last) = (ticks[0], ticks[30]);
    // Each raw value comes once per tick: as many in the 30 s as there were ticks.
    for field in ["prod_eim_wNow", "conso_net_eim_wNow", "conso_all_eim_wNow"] {
        let n = seen
            .iter()
            .filter(|m| m.topic == format!("envoy/122238082763/raw/{field}"))
            .filter(|m| m.at >= first && m.at <= last)
            .count();
        println!("raw {field}: {n} messages in 30 s");
        assert!((30..=32).contains(&n), "{field}: {n}");
    }
    // No drift: the n-th tick arrives n seconds after the first, within 200 ms.
    let worst = ticks[..31]
        .iter()
        .enumerate()
        .map(|(n, t)| (t.duration_since(first).as_secs_f64() - n as f64).abs())
        .fold(0.0, f64::max);
    println!("worst tick offset over 31 ticks: {:.1} ms", worst * 1000.0);
    assert!(worst < 0.2, "drift {worst} s");
}

#[test]
fn sync_command_polls_now_and_is_rate_limited() {
    let e = envoy("7.6.175_with_cts");
    let c = e.server.control.clone();
    let broker = Mosquitto::start("allow_anonymous true");
    let state = Tmp::new("state");
    let sub = Subscriber::start(&broker, &[]);
    let env = with(
        bridge_env(&e, &broker, &state),
        &[
            ("RAW_DATA_INTERVAL_SECONDS", "0"),
            ("DATA_INTERVAL_SECONDS", "1h"),
        ],
    );
    let d = Daemon::start(&pairs(&env), &[]);
    // Data polls: `/api/v1/production` alone (not the microinverters' list under it).
    let polls = || c.count("GET /api/v1/production") - c.count("GET /api/v1/production/");
    assert!(d.wait_until(Duration::from_secs(8), |_| polls() == 1));
    let first = |s: &[Seen]| s.iter().any(|m| m.topic.ends_with("/data/prod_eim_wNow"));
    assert!(sub.wait_until(Duration::from_secs(5), first));
    let before = sub.seen().len();
    let asked = Instant::now();
    publish(&broker, "envoy/command/sync", "", &[]);
    assert!(sub.wait_until(Duration::from_secs(2), |s| {
        s[before..]
            .iter()
            .any(|m| m.topic.ends_with("/data/prod_eim_wNow"))
    }));
    println!("sync answered in {} ms", asked.elapsed().as_millis());
    assert_eq!(polls(), 2);

    // 100 commands in a second: one more poll, at the end of the 10 s period, and no other.
    for i in 0..100 {
        publish(&broker, "envoy/command/sync", &i.to_string(), &[]);
    }
    assert!(d.wait_until(Duration::from_secs(15), |_| polls() >= 3));
    let third = asked.elapsed();
    assert!(
        third >= Duration::from_secs(9),
        "the third poll came after {third:?}"
    );
    assert_eq!(polls(), 3, "one poll for 100 commands");
    publish(&broker, "envoy/command/nonsense", "boom", &[]);
    assert!(
        d.wait_until(Duration::from_secs(5), |d| d.stderr().contains(
            "ignored unknown command or message: envoy/command/nonsense"
        )),
        "{}",
        d.stderr()
    );
}

#[test]
fn reload_applies_a_changed_configuration_file() {
    let e = envoy("7.6.175_with_cts");
    let broker = Mosquitto::start("allow_anonymous true");
    let state = Tmp::new("state");
    let file = state.path("envoy2mqtt.env");
    std::fs::write(
        &file,
        "MQTT_TOPIC_PREFIX=before\nRAW_DATA_INTERVAL_SECONDS=0\n",
    )
    .unwrap();
    let sub = Subscriber::start(&broker, &[]);
    let env = bridge_env(&e, &broker, &state);
    let mut d = Daemon::start(&pairs(&env), &["--config", file.to_str().unwrap()]);
    assert!(sub.wait_until(Duration::from_secs(8), |_| {
        sub.last("before/122238082763/data/prod_eim_wNow").is_some()
    }));
    std::fs::write(
        &file,
        "MQTT_TOPIC_PREFIX=after\nRAW_DATA_INTERVAL_SECONDS=0\n",
    )
    .unwrap();
    publish(&broker, "before/command/reload", "", &[]);
    assert!(
        sub.wait_until(Duration::from_secs(8), |_| sub
            .last("after/122238082763/data/prod_eim_wNow")
            .is_some()),
        "{}",
        d.stderr()
    );
    assert_eq!(
        sub.last("before/122238082763/status"),
        Some((true, "offline".into()))
    );
    assert_eq!(
        sub.last("after/122238082763/status"),
        Some((true, "online".into()))
    );

    // SIGHUP does the same; a broken file is refused and the running configuration stays.
    std::fs::write(&file, "MQTT_TOPIC_PREFIX=#bad\n").unwrap();
    let pid = d.child.id().to_string();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    // At most one reload per 10 s: this one runs at the end of the first one's period.
    assert!(
        d.wait_until(Duration::from_secs(15), |d| d
            .stderr()
            .contains("reload refused")),
        "{}",
        d.stderr()
    );
    assert!(d.child.try_wait().unwrap().is_none(), "still running");
}

#[test]
fn a_reload_that_changes_the_payload_format_keeps_everything_online() {
    let e = envoy("7.6.175_with_cts");
    let broker = Mosquitto::start("allow_anonymous true");
    let state = Tmp::new("state");
    let file = state.path("envoy2mqtt.env");
    std::fs::write(&file, "RAW_DATA_INTERVAL_SECONDS=0\nMQTT_FORMAT=simple\n").unwrap();
    let sub = Subscriber::start(&broker, &[]);
    let env = bridge_env(&e, &broker, &state);
    let d = Daemon::start(&pairs(&env), &["--config", file.to_str().unwrap()]);
    let power = "envoy/122238082763/data/prod_eim_wNow";
    let config = "homeassistant/sensor/envoy2mqtt_122238082763/prod_eim_wNow/config";
    assert!(
        sub.wait_until(Duration::from_secs(8), |_| sub.last(power).is_some()
            && sub.last(config).is_some()),
        "{}",
        d.stderr()
    );
    let before = sub.seen().len();
    std::fs::write(&file, "RAW_DATA_INTERVAL_SECONDS=0\nMQTT_FORMAT=json\n").unwrap();
    publish(&broker, "envoy/command/reload", "", &[]);
    let json = |s: &[Seen]| {
        s[before..]
            .iter()
            .any(|m| m.topic == power && m.payload.starts_with("{\"value\":"))
    };
    assert!(
        sub.wait_until(Duration::from_secs(8), json),
        "{}",
        d.stderr()
    );
    let seen = sub.seen();
    let offline: Vec<&Seen> = seen[before..]
        .iter()
        .filter(|m| {
            m.payload == "offline" || (m.topic.ends_with("/envoy") && m.payload != "online")
        })
        .collect();
    assert!(offline.is_empty(), "a flap: {offline:?}");
    // The discovery again, with the JSON value template.
    let (_, payload) = sub.last(config).unwrap();
    assert!(payload.contains("value_json"), "{payload}");
    assert!(d.stderr().contains("configuration reloaded"));
}

#[test]
fn reloads_are_rate_limited_and_apply_the_log_level() {
    let e = envoy("7.6.175_with_cts");
    let c = e.server.control.clone();
    let broker = Mosquitto::start("allow_anonymous true");
    let state = Tmp::new("state");
    let file = state.path("envoy2mqtt.env");
    std::fs::write(&file, "RAW_DATA_INTERVAL_SECONDS=0\nLOG_LEVEL=info\n").unwrap();
    let sub = Subscriber::start(&broker, &[]);
    let env = bridge_env(&e, &broker, &state);
    let d = Daemon::start(&pairs(&env), &["--config", file.to_str().unwrap()]);
    assert!(sub.wait_until(Duration::from_secs(8), |_| {
        sub.last("envoy/122238082763/data/prod_eim_wNow").is_some()
    }));
    let polls = || c.count("GET /ivp/meters/readings");
    let before = polls();
    // LOG_LEVEL=debug in the file, then 100 reload commands within a second.
    std::fs::write(&file, "RAW_DATA_INTERVAL_SECONDS=0\nLOG_LEVEL=debug\n").unwrap();
    let pub_100 = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "for i in $(seq 100); do echo; done | mosquitto_pub -h 127.0.0.1 -p {} -t envoy/command/reload -l",
            broker.port()
        ))
        .status()
        .unwrap();
    assert!(pub_100.success());
    let reloaded = |d: &Daemon| d.stderr().matches("configuration reloaded").count();
    assert!(
        d.wait_until(Duration::from_secs(5), |d| reloaded(d) >= 1),
        "{}",
        d.stderr()
    );
    // The one pending after the first runs at the end of the 10 s period.
    assert!(
        d.wait_until(Duration::from_secs(15), |d| reloaded(d) >= 2),
        "{}",
        d.stderr()
    );
    assert_eq!(reloaded(&d), 2, "two reloads for 100 asks within 10 s");
    assert_eq!(
        polls(),
        before,
        "nothing changed for the Envoy: no extra poll"
    );
    assert!(
        d.stderr().contains("[DEBUG]"),
        "LOG_LEVEL=debug applied: {}",
        d.stderr()
    );
}

#[test]
fn a_closed_standard_output_ends_a_dry_run_quietly() {
    let e = envoy("7.6.175_with_cts");
    let state = Tmp::new("state");
    // The service prints a poll every 100 ms: the write after `head` has gone meets a
    // closed pipe. `pipefail` gives the bridge's own exit code; `timeout` bounds the run.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; timeout 20 '{}' --dry-run | head -1",
            env!("CARGO_BIN_EXE_envoy2mqtt")
        ))
        .env("ENVOY_HOST", e.server.url())
        .env("ENVOY_TOKEN", &e.token)
        .env("STATE_DIR", state.0.to_str().unwrap())
        .env("DATA_INTERVAL_SECONDS", "100ms")
        .env("RAW_DATA_INTERVAL_SECONDS", "0")
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout).lines().count(), 1);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("standard output"),
        "{}",
        text(&out.stderr)
    );
    // And the issue's own words: `--once --dry-run | head -1`.
    let once = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' --once --dry-run | head -1",
            env!("CARGO_BIN_EXE_envoy2mqtt")
        ))
        .env("ENVOY_HOST", e.server.url())
        .env("ENVOY_TOKEN", &e.token)
        .env("STATE_DIR", state.0.to_str().unwrap())
        .output()
        .unwrap();
    assert_eq!(once.status.code(), Some(0), "{}", text(&once.stderr));
}

/// `lines` messages of `payload` on `topic`, in one mosquitto_pub (`-l`: a message a line).
fn flood(broker: &Mosquitto, topic: &str, payload: &str, lines: usize) {
    use std::io::Write;
    let mut child = mosquitto_pub(broker, topic)
        .args(["-l", "-q", "1"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let text = format!("{payload}\n").repeat(lines);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn home_assistant_births_resend_discovery_once_and_floods_are_counted() {
    let Rig {
        d,
        sub,
        _broker: broker,
        ..
    } = &rig("7.6.175_with_cts", &[("RAW_DATA_INTERVAL_SECONDS", "0")]);
    let topic = "homeassistant/sensor/envoy2mqtt_122238082763/prod_eim_wNow/config";
    let count = |s: &[Seen]| s.iter().filter(|m| m.topic == topic).count();
    assert!(sub.wait_until(Duration::from_secs(8), |s| count(s) == 1));
    publish(broker, "homeassistant/status", "online", &[]);
    assert!(
        sub.wait_until(Duration::from_secs(7), |s| count(s) == 2),
        "discovery again within 1-5 s"
    );
    // Floods: the log says the first of each, the discovery goes out once more.
    flood(broker, "envoy/command/bogus", "x", 2_000);
    flood(broker, "homeassistant/status", "online", 1_000);
    // A command after the floods: when it is seen, they all were.
    publish(broker, "envoy/command/sync", "", &[]);
    assert!(
        d.wait_until(Duration::from_secs(20), |d| d
            .stderr()
            .contains("sync asked")),
        "{}",
        d.stderr()
    );
    let log = d.stderr();
    assert_eq!(log.matches("ignored unknown command").count(), 1, "{log}");
    assert_eq!(log.matches("Home Assistant is online").count(), 1, "{log}");
    // The discovery goes out once more, not a thousand times, and not postponed for ever.
    assert!(
        sub.wait_until(Duration::from_secs(8), |s| count(s) == 3),
        "{log}"
    );
    assert_eq!(count(&sub.seen()), 3);
}

#[test]
fn every_status_names_the_next_data_poll_after_the_last() {
    let Rig { d, sub, .. } = &rig(
        "7.6.175_with_cts",
        &[
            ("RAW_DATA_INTERVAL_SECONDS", "0.25"),
            ("DATA_INTERVAL_SECONDS", "1"),
            ("HA_DISCOVERY", "false"),
        ],
    );
    let statuses = |s: &[Seen]| -> Vec<serde_json::Value> {
        s.iter()
            .filter(|m| m.topic == "envoy/status")
            .filter_map(|m| serde_json::from_str(&m.payload).ok())
            .collect()
    };
    assert!(
        sub.wait_until(Duration::from_secs(20), |s| statuses(s).len() >= 12),
        "{}",
        d.stderr()
    );
    let all = statuses(&sub.seen());
    assert!(all.len() >= 12);
    for s in &all {
        let (last, next) = (
            s["last_sync"].as_str().unwrap(),
            s["next_sync"].as_str().unwrap(),
        );
        // RFC 3339 UTC of one form: the text order is the time order.
        assert!(
            next > last,
            "next_sync {next} is not after last_sync {last}: {s}"
        );
    }
}
