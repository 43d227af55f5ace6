//! Home Assistant discovery: the payloads pass Home Assistant's own rules, discovery comes
//! before the data, entities become unavailable with the Envoy.

use std::time::Duration;

use super::support::*;

/// Home Assistant's MQTT sensor validation, as the rules this test checks (source: Home
/// Assistant developer docs, "Sensor entity": device classes and their units, and "state
/// class"; `homeassistant/components/sensor/const.py` DEVICE_CLASS_UNITS and
/// DEVICE_CLASS_STATE_CLASSES):
/// - power: W, kW, MW, GW, TW, BTU/h; state class measurement (or none)
/// - energy: Wh, kWh, MWh, ...; state class total or total_increasing, never measurement
/// - voltage: V, mV, kV...; current: A, mA; measurement
/// - power_factor: % or no unit; measurement
/// - timestamp: no unit, no state class
/// - battery: %; energy_storage: Wh, kWh...; both measurement
/// - enum: `options`, no unit, no state class
/// - temperature: °C; frequency: Hz; both measurement
/// - every entity needs unique_id, state_topic, device with identifiers; a binary_sensor has
///   no unit and no state class.
pub fn ha_accepts(component: &str, config: &serde_json::Value) -> Result<(), String> {
    let s = |k: &str| config.get(k).and_then(|v| v.as_str());
    for key in ["unique_id", "state_topic", "name", "default_entity_id"] {
        s(key).ok_or(format!("{key} missing"))?;
    }
    config["device"]["identifiers"]
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or("device.identifiers")?;
    config["origin"]["name"].as_str().ok_or("origin.name")?;
    if config.get("availability_topic").is_none() && config.get("expire_after").is_none() {
        return Err("neither availability_topic nor expire_after".into());
    }
    let (class, unit, state) = (
        s("device_class"),
        s("unit_of_measurement"),
        s("state_class"),
    );
    if component == "binary_sensor" {
        return if unit.is_none() && state.is_none() {
            Ok(())
        } else {
            Err("binary_sensor with unit".into())
        };
    }
    let ok = match class {
        Some("power") => {
            matches!(unit, Some("W" | "kW")) && matches!(state, Some("measurement") | None)
        }
        Some("energy") => {
            matches!(unit, Some("Wh" | "kWh"))
                && matches!(state, Some("total" | "total_increasing"))
        }
        Some("voltage") => unit == Some("V") && state == Some("measurement"),
        Some("current") => unit == Some("A") && state == Some("measurement"),
        Some("power_factor") => matches!(unit, None | Some("%")) && state == Some("measurement"),
        Some("timestamp") => unit.is_none() && state.is_none(),
        Some("battery") => unit == Some("%") && state == Some("measurement"),
        Some("temperature") => unit == Some("°C") && state == Some("measurement"),
        Some("frequency") => unit == Some("Hz") && state == Some("measurement"),
        // An enum: its states as options, no unit, no state class.
        Some("enum") => unit.is_none() && state.is_none() && config["options"].as_array().is_some(),
        Some("energy_storage") => {
            matches!(unit, Some("Wh" | "kWh")) && state == Some("measurement")
        }
        None => true,
        Some(_) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{class:?} {unit:?} {state:?}"))
    }
}

/// The entities Home Assistant shows by default for `variant` (the others can be enabled).
fn shown_by_default(variant: &str) -> Vec<&'static str> {
    let mut want = match variant {
        "5.0.62" => vec!["prod_eim_wNow", "prod_eim_kwhLifetime", "production_daily"],
        "8.3.5433_tot_is_net_cons" => vec![
            "prod_eim_wNow",
            "conso_net_eim_wNow",
            "conso_all_eim_wNow",
            "prod_eim_kwhLifetime",
            "production_daily",
            "consumption_daily",
        ],
        _ => vec![
            "prod_eim_wNow",
            "conso_net_eim_wNow",
            "conso_all_eim_wNow",
            "prod_eim_kwhLifetime",
            "import_eim_kwhLifetime",
            "grid_eim_kwhLifetime",
            "production_daily",
            "consumption_daily",
            "import_daily",
            "export_daily",
        ],
    };
    if variant == "8.2.127_with_3cts_and_battery_split" {
        want.extend([
            "battery_wNow",
            "battery_soc",
            "battery_charged_kwhLifetime",
            "battery_discharged_kwhLifetime",
            "grid_status",
            "storage_mode",
            "generator_running",
        ]);
    }
    want.push("timestamp_text");
    want.sort_unstable();
    want
}

/// How many values of a `--once --dry-run` output should be entities: every data field but
/// the timestamp and the midnight references, and every ledger total but the detail.
fn entity_values(out: &str) -> usize {
    let totals = ["/daily", "/hc", "/hp", "/month", "/year", "/max_power"];
    out.lines()
        .map(|l| l.split(' ').next().unwrap())
        .filter(|topic| {
            topic.starts_with("envoy/")
                && !topic.ends_with("/data/timestamp")
                && !topic.ends_with("_00h")
                && (["/data/", "/battery/", "/inverter/", "/relay/"]
                    .iter()
                    .any(|t| topic.contains(t))
                    || totals.iter().any(|end| topic.ends_with(end)))
        })
        .count()
}

/// One discovery config line: Home Assistant's rules, the template of `format`, a name
/// without the serial.
fn check_config(variant: &str, format: &str, line: &str) {
    let (topic, rest) = line.split_once(" [retained] ").expect("retained");
    let component = topic.split('/').nth(1).unwrap();
    let config: serde_json::Value = serde_json::from_str(rest).unwrap();
    ha_accepts(component, &config).unwrap_or_else(|e| panic!("{variant} {topic}: {e}"));
    // Always a template: a config without one would keep the old format's.
    let template = if format == "json" {
        "{{ value_json.value }}"
    } else {
        "{{ value }}"
    };
    if topic.ends_with("_last_report/config") {
        // Unix seconds, made the ISO 8601 time a `timestamp` sensor wants.
        let t = config["value_template"].as_str().unwrap();
        assert!(
            t.contains("timestamp_custom") && t.contains(&template[3..template.len() - 3]),
            "{t}"
        );
    } else if !topic.ends_with("/envoy/config") {
        assert_eq!(config["value_template"], template, "{topic}");
    }
    assert!(
        !config["name"].as_str().unwrap().contains("1222"),
        "{topic}"
    );
}

#[test]
fn discovery_payloads_pass_home_assistant_rules() {
    for variant in [
        "7.6.175_with_cts_3phase",
        "8.3.5433_tot_is_net_cons",
        "5.0.62",
        "8.2.127_with_3cts_and_battery_split",
    ] {
        let e = envoy(variant);
        let state = Tmp::new("state");
        for format in ["simple", "json"] {
            let env = [
                ("ENVOY_HOST", e.server.url()),
                ("ENVOY_TOKEN", e.token.clone()),
                ("STATE_DIR", state.0.to_str().unwrap().to_string()),
                ("MQTT_FORMAT", format.to_string()),
            ];
            let out = run(&pairs(&env), &["--once", "--dry-run"]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            let out = text(&out.stdout);
            let configs: Vec<&str> = out
                .lines()
                .filter(|l| l.starts_with("homeassistant/"))
                .collect();
            // One entity per value (from cron: no entity for the Envoy's connection).
            assert_eq!(configs.len(), entity_values(&out), "{variant}");
            // Each battery's and inverter's device: its power (and charge) shown, the rest not.
            let (each, system): (Vec<&str>, Vec<&str>) = configs
                .iter()
                .partition(|l| l.contains(r#""via_device""#) && l.contains(r#""serial_number""#));
            for line in &each {
                let id = line.split('/').nth(3).unwrap();
                let shown = !line.contains(r#""enabled_by_default":false"#);
                assert_eq!(shown, id.ends_with("_wNow") || id.ends_with("_soc"), "{id}");
            }
            assert!(
                variant != "8.2.127_with_3cts_and_battery_split" || each.len() >= 5 * 3 + 5 * 5,
                "{variant}: a device per battery and inverter: {}",
                each.len()
            );
            let mut shown: Vec<&str> = system
                .iter()
                .filter(|l| !l.contains(r#""enabled_by_default":false"#))
                .map(|l| l.split('/').nth(3).unwrap())
                .collect();
            shown.sort_unstable();
            assert_eq!(
                shown,
                shown_by_default(variant),
                "{variant}: shown by default"
            );
            for line in configs {
                check_config(variant, format, line);
            }
        }
    }
}

#[test]
fn discovery_comes_before_the_data_when_the_format_changes_both_ways() {
    let e = envoy("7.6.175_with_cts");
    let broker = Mosquitto::start("allow_anonymous true");
    let sub = Subscriber::start(&broker, &[]);
    let state = Tmp::new("state");
    let file = state.path("envoy2mqtt.env");
    std::fs::write(&file, "RAW_DATA_INTERVAL_SECONDS=0\nMQTT_FORMAT=simple\n").unwrap();
    let d = Daemon::start(
        &pairs(&bridge_env(&e, &broker, &state)),
        &["--config", file.to_str().unwrap()],
    );
    // The configs of the data fields (each microinverter's come with its own values).
    let is_config =
        |m: &Seen| m.topic.starts_with("homeassistant/sensor/") && m.payload.contains("/data/");
    let is_data = |m: &Seen| m.topic.starts_with("envoy/122238082763/data/");
    // After a switch to `format`: every sensor config with its template comes before the
    // first data message in that format.
    let check = |seen: &[Seen], from: usize, template: &str, json: bool| -> bool {
        let seen = &seen[from..];
        let Some(first) = seen
            .iter()
            .position(|m| is_data(m) && m.payload.starts_with('{') == json)
        else {
            return false;
        };
        let before = seen[..first]
            .iter()
            .filter(|m| is_config(m) && m.payload.contains(template))
            .count();
        let all = seen.iter().filter(|m| is_config(m)).count();
        before > 20 && before == all
    };
    assert!(
        sub.wait_until(Duration::from_secs(10), |s| check(
            s,
            0,
            "{{ value }}",
            false
        )),
        "{}",
        d.stderr()
    );
    for (format, template, json) in [
        ("json", "{{ value_json.value }}", true),
        ("simple", "{{ value }}", false),
    ] {
        let from = sub.seen.lock().unwrap().len();
        std::fs::write(
            &file,
            format!("RAW_DATA_INTERVAL_SECONDS=0\nMQTT_FORMAT={format}\n"),
        )
        .unwrap();
        publish(&broker, "envoy/command/reload", "", &[]);
        // A reload runs at most every 10 s.
        let ok = sub.wait_until(Duration::from_secs(20), |s| check(s, from, template, json));
        assert!(ok, "{format}: {}", d.stderr());
    }
}

#[test]
fn a_hung_envoy_makes_its_entities_unavailable_and_back() {
    let Rig { d, sub, c, .. } = &rig(
        "7.6.175_with_cts",
        &[
            ("RAW_DATA_INTERVAL_SECONDS", "1"),
            ("DATA_INTERVAL_SECONDS", "5"),
            ("ENVOY_TIMEOUT_SECONDS", "2"),
        ],
    );
    let topic = "envoy/122238082763/envoy";
    let says = |s: &[Seen], what: &str| s.iter().any(|m| m.topic == topic && m.payload == what);
    assert!(
        sub.wait_until(Duration::from_secs(10), |s| says(s, "online")),
        "{}",
        d.stderr()
    );
    let config = sub
        .last("homeassistant/sensor/envoy2mqtt_122238082763/prod_eim_wNow/config")
        .unwrap()
        .1;
    assert!(config.contains(r#""availability_mode":"all""#), "{config}");
    assert!(config.contains(topic), "{config}");
    // The Envoy hangs: every answer comes after the 2 s budget (ENVOY_TIMEOUT_SECONDS=2;
    // 10 s by default). Three failed polls (the README's number) make it offline: 2 s each,
    // back-off 1 + 2 s between them.
    let polls = || c.count("GET /ivp/meters/readings");
    c.lock().faults.delay = Duration::from_secs(3);
    let hung = polls();
    assert!(
        sub.wait_until(Duration::from_secs(60), |s| says(s, "offline")),
        "{}",
        d.stderr()
    );
    assert!(
        (1..=3).contains(&(polls() - hung)),
        "offline within 3 polls: {}",
        polls() - hung
    );
    c.lock().faults.delay = Duration::ZERO;
    let online_again = |s: &[Seen]| {
        let last = s.iter().rev().find(|m| m.topic == topic);
        last.is_some_and(|m| m.payload == "online")
    };
    assert!(
        sub.wait_until(Duration::from_secs(60), online_again),
        "{}",
        d.stderr()
    );
    assert_eq!(sub.last("envoy/122238082763/status").unwrap().1, "online");
}
