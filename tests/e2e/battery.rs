//! The batteries: what the service publishes for a battery system, in Home Assistant too,
//! and what a battery endpoint the Envoy does not have, or answers badly, leaves published.
//! The expected values are pyenphase's reading of the same captures (`make pyenphase`).

use std::time::Duration;

use super::sim::Control;
use super::support::*;

const BATTERY: &str = "8.2.127_with_3cts_and_battery_split";

#[test]
fn the_service_publishes_the_batteries_and_their_device() {
    let r = rig(BATTERY, &[]);
    let topic = |name: &str| format!("envoy/123456789012/{name}");
    // pyenphase on this capture: encharge_aggregate soc 21, available 5250, capacity
    // 25000, configured reserve 20, backup reserve 5000; storage CT -2580 W; enpower
    // mains_oper_state closed; tariff storage_settings self-consumption, no charge from grid.
    let want = [
        ("data/grid_status", "on-grid"),
        ("data/storage_mode", "self-consumption"),
        ("data/charge_from_grid", "0"),
        ("data/battery_soc", "21"),
        ("data/battery_available_wh", "5250"),
        ("data/battery_capacity_wh", "25000"),
        ("data/battery_reserve_soc", "20"),
        ("data/battery_reserve_wh", "5000"),
    ];
    let all_there = |seen: &[Seen]| {
        want.iter()
            .all(|(t, _)| seen.iter().any(|m| m.topic == topic(t)))
            && seen.iter().any(|m| m.topic == topic("raw/battery_wNow"))
    };
    assert!(
        r.sub.wait_until(Duration::from_secs(30), all_there),
        "{}",
        r.d.stderr()
    );
    for (t, value) in want {
        assert_eq!(
            r.sub.last(&topic(t)),
            Some((true, value.to_string())),
            "{t}"
        );
    }
    let (retained, raw) = r.sub.last(&topic("raw/battery_wNow")).unwrap();
    let watts: f64 = raw.parse().unwrap();
    assert!(!retained && (-2600.0..-2500.0).contains(&watts), "{raw}");
    let config = "homeassistant/sensor/envoy2mqtt_123456789012/battery_soc/config";
    assert!(r.sub.wait_until(Duration::from_secs(10), |s| {
        s.iter().any(|m| m.topic == config)
    }));
    let (retained, payload) = r.sub.last(config).unwrap();
    let c: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert!(retained);
    assert_eq!(
        (&c["device_class"], &c["unit_of_measurement"], &c["name"]),
        (
            &serde_json::json!("battery"),
            &serde_json::json!("%"),
            &serde_json::json!("State of charge")
        )
    );
    assert_eq!(c["device"]["name"], "Battery");
    assert_eq!(c["device"]["via_device"], "envoy2mqtt_123456789012");
    assert_eq!(
        r.sub.last(&topic("envoy")),
        Some((true, "online".to_string()))
    );
    let logged = r.d.stderr();
    assert_eq!(
        logged
            .matches("ensemble: 5 IQ Batteries, 0 AC Batteries, an IQ System Controller")
            .count(),
        1,
        "{logged}"
    );
}

#[test]
fn a_battery_endpoint_missing_or_garbled_leaves_the_rest_published() {
    let cases = [
        (
            None,
            "/ivp/ensemble/secctrl answered HTTP 404: this Envoy does not serve it",
        ),
        (
            Some(r#"{"agg_soc": 21, "Max_ene"#),
            "/ivp/ensemble/secctrl is not the JSON expected",
        ),
        (
            Some("<html>busy</html>"),
            "/ivp/ensemble/secctrl answered HTTP 200: this Envoy does not serve it",
        ),
    ];
    for (body, said) in cases {
        let fixture = variant_with(BATTERY, "ivp_ensemble_secctrl", body);
        let (code, out, err) = dry_run_of(&fixture.0);
        assert_eq!(code, Some(0), "{said}: {err}");
        assert_eq!(err.matches(said).count(), 1, "{said}: {err}");
        assert!(!out.contains("/data/battery_soc"), "{said}: {out}");
        // The storage CT's battery power and the meters are still there.
        for topic in [
            "/data/battery_wNow ",
            "/data/prod_eim_wNow ",
            "/data/import_eim_whLifetime ",
        ] {
            assert!(out.contains(topic), "{said}: {topic} missing: {out}");
        }
        assert!(out.contains(r#""status":"ok""#), "{said}: {out}");
    }
    // No batteries in the inventory: no secctrl request, no battery field.
    let inventory = r#"[{"type":"ENPOWER","devices":[{"serial_num":"1"}]}]"#;
    let fixture = variant_with(BATTERY, "ivp_ensemble_inventory", Some(inventory));
    let e = envoy_with(&fixture.0, Control::new("123456789012"));
    let state = Tmp::new("state");
    let out = run(
        &[
            ("ENVOY_HOST", &e.server.url()),
            ("ENVOY_TOKEN", &e.token),
            ("STATE_DIR", state.0.to_str().unwrap()),
        ],
        &["--once", "--dry-run"],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success() && !stdout.contains("/data/battery_soc"));
    assert!(
        stdout.contains("/data/battery_wNow "),
        "the storage CT: {stdout}"
    );
    assert_eq!(e.server.control.count("GET /ivp/ensemble/secctrl"), 0);
    assert_eq!(e.server.control.count("GET /ivp/ensemble/inventory"), 1);
}

#[test]
fn each_endpoint_comes_at_its_own_period_one_request_at_a_time() {
    // Short periods so that a few data polls pass quickly; the proportions are the
    // defaults' (every endpoint at the data period but the readings, the inventory's ACB
    // count hourly, the microinverters every INVERTER_INTERVAL_SECONDS).
    let e = envoy(BATTERY);
    let state = Tmp::new("state");
    let env = [
        ("ENVOY_HOST", e.server.url()),
        ("ENVOY_TOKEN", e.token.clone()),
        ("STATE_DIR", state.0.to_str().unwrap().to_string()),
        ("DATA_INTERVAL_SECONDS", "2".into()),
        ("RAW_DATA_INTERVAL_SECONDS", "1".into()),
        ("INVERTER_INTERVAL_SECONDS", "60".into()),
    ];
    let mut d = Daemon::start(&pairs(&env), &["--dry-run"]);
    assert!(
        d.wait_until(Duration::from_secs(30), |d| d.data_polls() >= 6),
        "{}",
        d.stderr()
    );
    d.terminate();
    let polls = d.data_polls();
    let c = &e.server.control;
    let count = |path: &str| c.count(&format!("GET {path}"));
    let about_one_a_poll = |path: &str| {
        let n = count(path);
        assert!(
            (polls - 1..=polls + 1).contains(&n),
            "{path}: {n} requests for {polls} data polls"
        );
    };
    for path in [
        "/ivp/ensemble/secctrl",
        "/ivp/ensemble/power",
        "/admin/lib/tariff",
        "/ivp/ensemble/generator",
        "/ivp/ensemble/dry_contacts",
        // The IQ System Controller tells the grid status: the inventory at the data period.
        "/ivp/ensemble/inventory",
    ] {
        about_one_a_poll(path);
    }
    // The AC Batteries hourly, the microinverters once a minute, the meter list hourly.
    assert_eq!(count("/production.json"), 1);
    assert_eq!(count("/api/v1/production/inverters"), 1);
    let meters = count("/ivp/meters") - count("/ivp/meters/readings");
    assert!((1..=2).contains(&meters), "{meters} meter lists");
    // One readings request per raw tick: about two a data poll, never more.
    let readings = count("/ivp/meters/readings");
    assert!(
        (2 * polls - 3..=2 * polls + 2).contains(&readings),
        "{readings} readings for {polls} data polls"
    );
}

/// A broker, a subscriber in place, a state folder, and the bridge's settings for `e` with a
/// data poll every 2 s and raw polling off.
fn every_two_seconds(e: &Envoy) -> (Mosquitto, Subscriber, Tmp, Vec<(&'static str, String)>) {
    let broker = Mosquitto::start("allow_anonymous true");
    let sub = Subscriber::start(&broker, &[]);
    let state = Tmp::new("state");
    let env = with(
        bridge_env(e, &broker, &state),
        &[
            ("DATA_INTERVAL_SECONDS", "2"),
            ("RAW_DATA_INTERVAL_SECONDS", "0"),
        ],
    );
    (broker, sub, state, env)
}

#[test]
fn a_battery_that_leaves_the_system_is_cleared_from_the_broker() {
    let power =
        std::fs::read_to_string(fixtures().join(BATTERY).join("ivp_ensemble_power")).unwrap();
    // A copy the simulated Envoy reads at each request, so the test can change it.
    let fixture = variant_with(BATTERY, "ivp_ensemble_power", Some(&power));
    let e = envoy_with(&fixture.0, Control::new("123456789012"));
    let (_broker, sub, _state, env) = every_two_seconds(&e);
    let d = Daemon::start(&pairs(&env), &[]);
    let soc = "envoy/123456789012/battery/12345678901006/soc";
    assert!(
        sub.wait_until(Duration::from_secs(10), |s| s
            .iter()
            .any(|m| m.topic == soc && m.payload == "21")),
        "{}",
        d.stderr()
    );
    // The Envoy no longer lists that battery.
    let mut answer: serde_json::Value = serde_json::from_str(&power).unwrap();
    answer["devices:"]
        .as_array_mut()
        .unwrap()
        .retain(|u| u["serial_num"] != "12345678901006");
    std::fs::write(fixture.0.join("ivp_ensemble_power"), answer.to_string()).unwrap();
    assert!(
        sub.wait_until(Duration::from_secs(10), |s| s
            .iter()
            .any(|m| m.topic == soc && m.payload.is_empty() && m.retained)),
        "{}",
        d.stderr()
    );
    assert!(
        d.stderr()
            .contains("battery/12345678901006 left the system")
    );
    // The others are still there.
    let other = "envoy/123456789012/battery/12345678901005/soc";
    assert_eq!(sub.last(other), Some((true, "21".to_string())));
}

/// The values of `topic` the subscriber saw, in order.
fn numbers(sub: &Subscriber, topic: &str) -> Vec<f64> {
    sub.seen()
        .iter()
        .filter(|m| m.topic == topic)
        .filter_map(|m| m.payload.parse().ok())
        .collect()
}

#[test]
fn ac_batteries_and_battery_energy_counted_without_a_storage_ct_across_a_restart() {
    // 8.2.4382_ACB: one IQ Battery (105 W) and three ACB (260 W), no storage CT: the
    // batteries' power is the sum, 365 W discharging, and their energy is integrated.
    let e = envoy("8.2.4382_ACB");
    let (_broker, sub, _state, env) = every_two_seconds(&e);
    let topic = |name: &str| format!("envoy/123456789012/{name}");
    let out = topic("data/battery_discharged_whLifetime");
    let counted = |n: usize| {
        move |s: &[Seen]| {
            s.iter()
                .filter(|m| m.topic == topic("data/battery_discharged_whLifetime"))
                .count()
                >= n
        }
    };
    let mut d = Daemon::start(&pairs(&env), &[]);
    assert!(
        sub.wait_until(Duration::from_secs(30), counted(3)),
        "{}",
        d.stderr()
    );
    assert!(d.terminate().is_some_and(|s| s.success()), "{}", d.stderr());
    let before = numbers(&sub, &out);
    let last = *before.last().unwrap();
    // About 365 W × 2 s between polls: more than nothing, less than a kilowatt for it.
    assert!(last > 0.0 && last < 5.0, "{before:?}");
    assert!(before.windows(2).all(|w| w[1] >= w[0]), "{before:?}");
    assert_eq!(
        sub.last(&topic("data/battery_wNow")),
        Some((true, "365".into()))
    );
    assert_eq!(
        numbers(&sub, &topic("data/battery_charged_whLifetime")).last(),
        Some(&0.0)
    );
    // Each ACB: its charge, cell temperature and status (inventory), power and last
    // report (the microinverters' list, devType 11); none is a microinverter.
    for (name, value) in [
        ("battery/122122013879/soc", "24"),
        ("battery/122122013879/temperature", "18"),
        ("battery/122122013879/status", "discharging"),
        ("battery/122122013879/wNow", "2"),
        ("battery/122122013879/last_report", "1732089577"),
        ("battery/122311091641/status", "discharging"),
    ] {
        assert_eq!(sub.last(&topic(name)), Some((true, value.into())), "{name}");
    }
    assert!(sub.last(&topic("inverter/122122013879/wNow")).is_none());

    // The restart: the counters go on from where they were, never from 0.
    let n = before.len();
    let d = Daemon::start(&pairs(&env), &[]);
    assert!(
        sub.wait_until(Duration::from_secs(30), counted(n + 3)),
        "{}",
        d.stderr()
    );
    let after = &numbers(&sub, &out)[n..];
    assert!(
        after.iter().all(|v| *v >= last) && after.last() > Some(&last),
        "before {before:?}, after {after:?}"
    );
    let today: f64 = sub
        .last(&topic("data/battery_discharged_today"))
        .unwrap()
        .1
        .parse()
        .unwrap();
    assert!(today > 0.0 && today <= *after.last().unwrap(), "{today}");
    assert!(sub.last(&topic("battery_discharged/daily")).is_some());
    // Home Assistant: the Energy dashboard's battery slots take the kWh counters.
    let config =
        "homeassistant/sensor/envoy2mqtt_123456789012/battery_discharged_kwhLifetime/config";
    let (retained, payload) = sub.last(config).expect("discovery of the battery energy");
    let c: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert!(retained);
    assert_eq!(
        (&c["device_class"], &c["state_class"], &c["device"]["name"]),
        (
            &serde_json::json!("energy"),
            &serde_json::json!("total_increasing"),
            &serde_json::json!("Battery")
        )
    );
    let unit = "homeassistant/sensor/envoy2mqtt_123456789012/battery_122122013879_status/config";
    let (_, payload) = sub.last(unit).expect("discovery of an AC Battery");
    let c: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(
        (&c["device"]["name"], &c["device_class"], &c["options"]),
        (
            &serde_json::json!("AC Battery 122122013879"),
            &serde_json::json!("enum"),
            &serde_json::json!(["idle", "charging", "discharging"])
        )
    );
}
