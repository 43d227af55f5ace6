//! Where the ledger lives between runs: kill -9 at random moments, a lost state file, a wiped
//! or late broker, the original envoy2mqtt's retained references.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::ledger::*;
use super::support::*;

/// The state file as JSON (version 2); every day value in it must be ≥ 0 (the net counter aside).
pub fn check_state_file(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("corrupt state file ({e}): {text}"));
    assert_eq!(v["version"], 2, "{text}");
    let days = [
        &v["today"]["energy"],
        &v["yesterday"]["energy"],
        &v["month"],
        &v["year"],
    ];
    for list in days.iter().filter_map(|d| d.as_array()) {
        // Eight flows, the net one (index 5) the only one that may be below 0.
        assert_eq!(list.len(), 8, "{text}");
        for (n, wh) in list.iter().enumerate().filter(|(n, _)| *n != 5) {
            assert!(
                wh.as_f64().unwrap() >= 0.0,
                "negative day value {n}: {text}"
            );
        }
    }
    Some(v)
}

#[test]
fn kill_9_at_random_moments_never_corrupts_or_double_counts() {
    let (start, step, until) = (MIDNIGHT_25 - 10_620, 600, MIDNIGHT_26 + 3600);
    let c = clocked(
        start,
        step,
        until,
        &[
            ("RAW_DATA_INTERVAL_SECONDS", "0"),
            ("DATA_INTERVAL_SECONDS", "100ms"),
            ("HA_DISCOVERY", "false"),
            ("MQTT_FORMAT", "json"),
            ("TZ", "Europe/Paris"),
        ],
    );
    let file = c.state.path("ledger.json");
    // A fixed pseudo-random sequence (LCG): the same moments at every run of the test.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut files = 0;
    for _ in 0..100 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let pause = Duration::from_millis(20 + (seed >> 33) % 300);
        let d = Daemon::start(&pairs(&c.env), &[]);
        std::thread::sleep(pause); // the fault: a kill at a pseudo-random moment
        drop(d); // SIGKILL
        files += usize::from(check_state_file(&file).is_some());
    }
    println!("100 kills; the state file was readable after {files} of them");
    // Written atomically (a temporary file renamed): never half a file.
    assert_eq!(files, 100, "the state file was unreadable after some kills");
    // Then run to the end of the clock and a few polls more.
    let d = Daemon::start(&pairs(&c.env), &[]);
    run_to_the_end(&d, &c.e, until);
    check_state_file(&file).expect("a state file");
    let got = retained_values(&c.broker);
    check_ledger(&got, start + step, until, 1.0);
}

#[test]
fn ledger_survives_a_lost_state_file_and_a_wiped_broker() {
    // 2026-10-24 23:30 CEST, every 5 minutes: midnight after the 6th run.
    let (start, step) = (MIDNIGHT_25 - 1800, 300);
    let Clocked {
        e,
        mut broker,
        state,
        mut env,
        _dir,
    } = clocked(
        start,
        step,
        MIDNIGHT_26,
        &[
            ("HA_DISCOVERY", "false"),
            ("MQTT_FORMAT", "json"),
            ("TZ", "Europe/Paris"),
        ],
    );
    let file = state.path("ledger.json");
    let first = start + step;
    let expect = |got: &BTreeMap<String, serde_json::Value>, what: &str| {
        let now = clock_now(&e);
        let yesterday = energy(first, MIDNIGHT_25)[1];
        let today = energy(MIDNIGHT_25, now)[1];
        let y = got["data/conso_all_eim_yesterday"]["value"]
            .as_f64()
            .unwrap();
        let t = got["data/conso_all_eim_today"]["value"].as_f64().unwrap();
        let m = got["consumption/month"]["value"].as_f64().unwrap() * 1000.0;
        println!(
            "{what}: yesterday {y} Wh (expected {yesterday}), today {t} Wh (expected {today})"
        );
        assert!(
            (y - yesterday).abs() <= 1.0,
            "{what}: yesterday {y}, want {yesterday}"
        );
        assert!((t - today).abs() <= 1.0, "{what}: today {t}, want {today}");
        assert!((m - yesterday - today).abs() <= 1.0, "{what}: month {m}");
        assert_eq!(got["data/prod_eim_today"]["date"], "2026-10-25", "{what}");
    };
    // House consumption, into the morning.
    once_runs(&env, 12 * 10);
    expect(&retained_values(&broker), "before");

    std::fs::remove_file(&file).unwrap();
    once_runs(&env, 1);
    expect(
        &retained_values(&broker),
        "state file deleted, restored from the broker",
    );
    check_state_file(&file).expect("written again");

    broker.restart();
    env.retain(|(k, _)| *k != "MQTT_PORT");
    env.push(("MQTT_PORT", broker.port()));
    once_runs(&env, 1);
    expect(
        &retained_values(&broker),
        "broker wiped, restored from the state file",
    );
}

#[test]
fn original_envoy2mqtt_references_are_imported_on_first_start() {
    let dir = Tmp::new("clock");
    // 2026-10-25 10:00 CET: ten hours into the day.
    let now = MIDNIGHT_25 + 11 * 3600;
    let e = clocked_envoy(&dir, now - 60, 60, now);
    let broker = Mosquitto::start("allow_anonymous true");
    let state = Tmp::new("state");
    let midnight = curve(MIDNIGHT_25);
    // As the Python envoy2mqtt left them: bare numbers, retained.
    for (topic, value) in [
        ("prod_eim_whLifetime_00h", midnight[0]),
        ("prod_eim_yesterday", 12_345.0),
        ("import_eim_whLifetime_00h", midnight[1]),
        // Above the counter: not today's, refused.
        ("grid_eim_whLifetime_00h", midnight[2] + 50_000.0),
    ] {
        publish(
            &broker,
            &format!("envoy/122238082763/data/{topic}"),
            &value.to_string(),
            &["-r"],
        );
    }
    let mut env = with(
        bridge_env(&e, &broker, &state),
        &[("HA_DISCOVERY", "false"), ("TZ", "Europe/Paris")],
    );
    env.extend(faketime(&dir.path("now")));
    let out = run(&pairs(&env), &["--once"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sub = Subscriber::start(&broker, &[]);
    let topic = "envoy/122238082763/data/grid_eim_today";
    assert!(sub.wait_until(Duration::from_secs(5), |s| {
        s.iter().any(|m| m.topic == topic)
    }));
    let value = |t: &str| {
        sub.last(&format!("envoy/122238082763/data/{t}"))
            .unwrap()
            .1
            .parse::<f64>()
            .unwrap()
    };
    let today = energy(MIDNIGHT_25, now);
    assert!((value("prod_eim_today") - today[0]).abs() <= 1.0);
    assert!((value("import_eim_today") - today[2]).abs() <= 1.0);
    assert_eq!(value("prod_eim_yesterday"), 12_345.0);
    assert_eq!(
        value("grid_eim_today"),
        0.0,
        "a reference above the counter is refused"
    );
    assert!(
        text(&out.stderr).contains("taken from the retained _00h topics of prod_eim, import_eim")
    );
}

#[test]
fn original_references_are_found_among_many_retained_topics_of_a_default_broker() {
    // A default mosquitto sends 20 QoS 1 messages at a time: a probe that overtook them
    // ended the restore before the _00h topics came. 64 retained data topics at QoS 1, as
    // the original envoy2mqtt leaves them, with its _00h references among them.
    let e = envoy("7.6.175_with_cts");
    let broker = Mosquitto::start("allow_anonymous true");
    let base = "envoy/122238082763/data";
    let mut topics: Vec<(String, String)> = (0..60)
        .map(|i| (format!("{base}/field_{i:02}"), format!("{i}.5")))
        .collect();
    // The fixture's counters: production 3183793.885, import 3738205.282 Wh.
    topics.insert(
        10,
        (
            format!("{base}/prod_eim_whLifetime_00h"),
            "3180793.885".into(),
        ),
    );
    topics.insert(
        40,
        (
            format!("{base}/import_eim_whLifetime_00h"),
            "3737205.282".into(),
        ),
    );
    topics.push((format!("{base}/zz_last"), "1".into()));
    topics.push((format!("{base}/prod_eim_yesterday"), "20500".into()));
    for (topic, value) in &topics {
        publish(&broker, topic, value, &["-r", "-q", "1"]);
    }
    let sub = Subscriber::start(&broker, &[]);
    let state = Tmp::new("state");
    let env = with(
        bridge_env(&e, &broker, &state),
        &[
            ("HA_DISCOVERY", "false"),
            ("RAW_DATA_INTERVAL_SECONDS", "0"),
        ],
    );
    let d = Daemon::start(&pairs(&env), &[]);
    let today = |s: &[Seen], name: &str| {
        s.iter()
            .rev()
            .find(|m| m.topic == format!("{base}/{name}"))
            .and_then(|m| m.payload.parse::<f64>().ok())
    };
    let ok = sub.wait_until(Duration::from_secs(10), |s| {
        today(s, "prod_eim_today").is_some() && today(s, "import_eim_today").is_some()
    });
    assert!(ok, "{}", d.stderr());
    let seen = sub.seen();
    assert_eq!(
        today(&seen, "prod_eim_today"),
        Some(3000.0),
        "{}",
        d.stderr()
    );
    assert_eq!(today(&seen, "import_eim_today"), Some(1000.0));
    assert_eq!(today(&seen, "prod_eim_yesterday"), Some(20500.0));
    let log = d.stderr();
    assert!(
        log.contains("taken from the retained _00h topics of prod_eim, import_eim"),
        "{log}"
    );
    assert!(
        !log.contains("ignored"),
        "no line per retained message: {log}"
    );
}

/// Leaves on `broker` the retained ledger of a `--once` run against `e`, with 250 kWh this
/// month and 3,000 kWh this year of production, and nothing else retained; `all`: with the
/// rest of the run's retained set (data, discovery, status) left on the broker too, but the
/// month and year topics.
fn retain_a_ledger(e: &Envoy, broker: &Mosquitto, all: bool) {
    let first = Tmp::new("state");
    let env = with(
        bridge_env(e, broker, &first),
        &[("HA_DISCOVERY", if all { "true" } else { "false" })],
    );
    let out = run(&pairs(&env), &["--once"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sub = Subscriber::start(broker, &[]);
    let ledger_topic = "envoy/122238082763/ledger";
    assert!(sub.wait_until(Duration::from_secs(5), |s| {
        s.iter().any(|m| m.topic == ledger_topic)
    }));
    let mut ledger: serde_json::Value =
        serde_json::from_str(&sub.last(ledger_topic).unwrap().1).unwrap();
    ledger["month"][0] = 250_000.0.into();
    ledger["year"][0] = 3_000_000.0.into();
    publish(
        broker,
        ledger_topic,
        &ledger.to_string(),
        &["-r", "-q", "1"],
    );
    // Only the ledger stays, or (`all`) the month and year topics go: every month or year
    // value seen later is the bridge's.
    for m in sub.seen() {
        let totals = m.topic.ends_with("/month") || m.topic.ends_with("/year");
        if m.topic != ledger_topic && (!all || totals) {
            publish(broker, &m.topic, "", &["-r"]);
        }
    }
}

#[test]
fn a_late_broker_never_costs_the_retained_month_and_year() {
    late_broker(false);
}

#[test]
fn a_late_broker_with_the_full_retained_set_and_raw_ticks_keeps_the_month_and_year() {
    late_broker(true);
}

/// The bridge starts with no state file while the broker, which holds the ledger, is down;
/// `full`: the broker holds every retained topic of an earlier run (discovery, data,
/// status) and the bridge has raw ticks every second.
fn late_broker(full: bool) {
    // A power cut restarts router and broker together: no state file (tmpfs), and the
    // broker, which keeps the only copy of the ledger, comes up after the bridge.
    let e = envoy("7.6.175_with_cts");
    let c = e.server.control.clone();
    c.lock().faults.rate = 36.0; // 36 Wh per second of run time, on every counter
    let mut broker =
        Mosquitto::start("allow_anonymous true\npersistence true\npersistence_location {dir}/");
    // A ledger on the broker, as an earlier run left it, with 250 kWh this month and
    // 3,000 kWh this year of production.
    retain_a_ledger(&e, &broker, full);
    broker.stop_saving();

    // The bridge starts with no state file while the broker is down, and polls.
    let state = Tmp::new("state");
    let env = with(
        bridge_env(&e, &broker, &state),
        &[
            ("HA_DISCOVERY", if full { "true" } else { "false" }),
            ("RAW_DATA_INTERVAL_SECONDS", if full { "1" } else { "0" }),
            ("DATA_INTERVAL_SECONDS", if full { "2" } else { "1" }),
        ],
    );
    let d = Daemon::start(&pairs(&env), &[]);
    let polls = || c.count("GET /ivp/meters/readings");
    let start = polls();
    assert!(
        d.wait_until(Duration::from_secs(20), |_| polls() >= start + 3),
        "{}",
        d.stderr()
    );
    assert!(d.stderr().contains("cannot be read yet"), "{}", d.stderr());
    broker.start_again();
    let sub = Subscriber::start(&broker, &[]);
    let month = "envoy/122238082763/production/month";
    let value = |s: &[Seen], t: &str| {
        s.iter()
            .rev()
            .find(|m| m.topic == t)
            .and_then(|m| m.payload.parse::<f64>().ok())
    };
    let months = |s: &[Seen]| s.iter().filter(|m| m.topic == month).count();
    assert!(
        sub.wait_until(Duration::from_secs(30), |s| months(s) >= 2),
        "{}",
        d.stderr()
    );
    let seen = sub.seen();
    let months: Vec<f64> = seen
        .iter()
        .filter(|m| m.topic == month)
        .filter_map(|m| m.payload.parse().ok())
        .collect();
    assert!(
        months.iter().all(|m| *m >= 250.0),
        "month intact: {months:?}\n{}",
        d.stderr()
    );
    let year = value(&seen, "envoy/122238082763/production/year").unwrap();
    assert!(year >= 3000.0, "year intact: {year}");
    // Today goes on from the earlier run's reference: the energy made while the broker
    // was down is in it (36 Wh/s for several seconds).
    let today = value(&seen, "envoy/122238082763/data/prod_eim_today").unwrap();
    assert!(today > 36.0, "today continues: {today}");
}

#[test]
fn a_forged_retained_ledger_is_refused_and_the_local_one_kept() {
    let e = envoy("7.6.175_with_cts");
    let broker = Mosquitto::start("allow_anonymous true");
    let state = Tmp::new("state");
    let env = with(
        bridge_env(&e, &broker, &state),
        &[
            ("HA_DISCOVERY", "false"),
            ("RAW_DATA_INTERVAL_SECONDS", "0"),
        ],
    );
    // A first run leaves a state file and its retained ledger.
    let out = run(&pairs(&env), &["--once"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.path("ledger.json")).unwrap()).unwrap();
    let topic = "envoy/122238082763/ledger";
    let forge = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut forged = file.clone();
        edit(&mut forged);
        publish(&broker, topic, &forged.to_string(), &["-r", "-q", "1"]);
    };
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    #[allow(clippy::type_complexity)]
    let cases: [(&str, Box<dyn Fn(&mut serde_json::Value)>, &str); 3] = [
        (
            "a month of 9e9 Wh stamped now",
            Box::new(|l| {
                l["month"][1] = 9e9.into();
                l["at_ms"] = (now_ms() + 1000).into();
            }),
            "conso_all_eim this month is 9000000000 Wh",
        ),
        (
            "a time in the future",
            Box::new(|l| l["at_ms"] = (now_ms() + 86_400_000).into()),
            "in the future",
        ),
        (
            "more this year than the counters ever counted",
            Box::new(|l| {
                l["year"][0] = 100_000_000.0.into();
                l["at_ms"] = (now_ms() + 1000).into();
            }),
            "has only ever counted",
        ),
    ];
    for (what, edit, said) in cases {
        forge(&*edit);
        let sub = Subscriber::start(&broker, &[]);
        let d = Daemon::start(&pairs(&env), &[]);
        let month = "envoy/122238082763/consumption/month";
        let fresh = |s: &[Seen]| s.iter().filter(|m| m.topic == month).count() >= 2;
        assert!(
            sub.wait_until(Duration::from_secs(15), fresh),
            "{what}: {}",
            d.stderr()
        );
        let log = d.stderr();
        assert!(
            log.contains("is refused") && log.contains(said),
            "{what}: {log}"
        );
        // The retained value first, then the bridge's: small, from the state file.
        let last: f64 = sub.last(month).unwrap().1.parse().unwrap();
        assert!(last < 1000.0, "{what}: month {last} kWh");
        let kept: serde_json::Value = serde_json::from_str(&sub.last(topic).unwrap().1).unwrap();
        assert!(kept["year"][0].as_f64().unwrap() < 1e6, "{what}: {kept}");
        drop(d);
    }
}

#[test]
fn a_state_dir_that_cannot_be_written_stops_nothing_and_is_written_when_it_can() {
    // The state file's temporary file is a folder: every write of the ledger fails, as on a
    // read-only or full STATE_DIR, even for root.
    let e = envoy("7.6.175_with_cts");
    let broker = Mosquitto::start("allow_anonymous true");
    let state = Tmp::new("state");
    std::fs::create_dir_all(state.path("ledger.tmp")).unwrap();
    let sub = Subscriber::start(&broker, &[]);
    let env = with(
        bridge_env(&e, &broker, &state),
        &[
            ("HA_DISCOVERY", "false"),
            ("RAW_DATA_INTERVAL_SECONDS", "0"),
            ("DATA_INTERVAL_SECONDS", "1"),
        ],
    );
    let mut d = Daemon::start(&pairs(&env), &[]);
    let oks = |s: &[Seen]| {
        s.iter()
            .filter(|m| m.topic == "envoy/status" && m.payload.contains("\"status\":\"ok\""))
            .count()
    };
    assert!(
        sub.wait_until(Duration::from_secs(15), |s| oks(s) >= 4),
        "{}",
        d.stderr()
    );
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "still running: {}",
        d.stderr()
    );
    let said = "the ledger goes on and the file is written as soon as it can be";
    assert_eq!(
        d.stderr().matches(said).count(),
        1,
        "said once: {}",
        d.stderr()
    );
    let (_, status) = sub.last("envoy/status").unwrap();
    assert!(status.contains(said), "in P/status errors: {status}");
    assert!(!state.path("ledger.json").exists());
    assert!(sub.last("envoy/122238082763/production/daily").is_some());
    // Writable again: written at the next poll, whole.
    std::fs::remove_dir(state.path("ledger.tmp")).unwrap();
    assert!(
        d.wait_until(Duration::from_secs(10), |d| d
            .stderr()
            .contains("is written again")),
        "{}",
        d.stderr()
    );
    assert!(check_state_file(&state.path("ledger.json")).is_some());
    let ok_again = |s: &[Seen]| {
        s.iter()
            .rev()
            .find(|m| m.topic == "envoy/status")
            .is_some_and(|m| m.payload.contains("\"errors\":[]"))
    };
    assert!(sub.wait_until(Duration::from_secs(10), ok_again));
}
