//! What the bridge reads from each Envoy layout: golden messages for every fixture, production
//! from the right source, three-phase channels, derived counters.

use std::path::Path;
use std::time::Duration;

use super::sim::{self, Control};
use super::support::*;

/// The `P/S/data`, `P/S/raw`, per-battery, per-inverter and per-relay lines of an output
/// (no status, no discovery).
fn data_lines(out: &str) -> String {
    let values = ["/data/", "/raw/", "/battery/", "/inverter/", "/relay/"];
    out.lines()
        .filter(|l| values.iter().any(|t| l.contains(t)))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn golden_messages_for_every_fixture() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    // Rewritten only on purpose, with UPDATE_GOLDEN=1; each new value checked by hand.
    let update = std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1");
    let mut variants: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    variants.sort();
    assert!(variants.len() >= 12, "{variants:?}");
    // Firmware that exposes no JSON production fails: see production_from_the_right_source.
    variants.retain(|v| v != NO_JSON);
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
                    ("HA_DISCOVERY", "false"),
                ],
                &["--once", "--dry-run"],
            );
            assert!(
                out.status.success(),
                "{variant} {format}: {}",
                text(&out.stderr)
            );
            let got = normalize(&data_lines(&text(&out.stdout)));
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
fn production_from_the_right_source_on_every_layout() {
    // Expected values read by hand from each fixture's files (see their _readme):
    // - 7.3.466: v1 counters all 0 (wattsNow 689) -> production.json inverters 751 W, 702919 Wh.
    // - 8.2.4264 metered, CTs disabled: v1 stale (4 W, 1600 Wh) -> inverters 5512 W, 32104567 Wh.
    // - 8.3.5422 non-metered: v1 all 0 (0 W) -> inverters 1302 W, 9876543 Wh.
    // - 3.18.5: 401 to /ivp/meters without tokens -> v1 812 W, 12345678 Wh, 4321 Wh today.
    // The inverters' whToday is wrong on every firmware (pyenphase): no wattHoursToday from them.
    #[rustfmt::skip]
    let cases: [(&str, &str, &str, &str, Option<&str>); 4] = [
        ("7.3.466_metered_disabled_cts", "122238082763", "751", "702919", None),
        ("8.2.4264_metered_no_ct", "122412345678", "5512", "32104567", None),
        ("8.3.5422_v1_zero", "122412348765", "1302", "9876543", None),
        ("3.18.5_meters_401", "121512345678", "812", "12345678", Some("4321")),
    ];
    for (variant, serial, watts, wh, today) in cases {
        let (code, out, err) = dry_run(variant);
        assert_eq!(code, Some(0), "{variant}: {err}");
        let p = format!("envoy/{serial}/data/");
        let has =
            |field: &str, value: &str| out.contains(&format!("{p}{field} [retained] {value}\n"));
        assert!(
            has("prod_eim_wNow", watts),
            "{variant}: power {watts}\n{out}"
        );
        assert!(
            has("prod_eim_whLifetime", wh),
            "{variant}: lifetime {wh}\n{out}"
        );
        match today {
            Some(t) => assert!(has("prod_eim_wattHoursToday", t), "{variant}\n{out}"),
            None => assert!(!out.contains("wattHoursToday"), "{variant}\n{out}"),
        }
        assert!(
            out.contains(r#"envoy/status [retained] {"status":"ok""#),
            "{variant}\n{out}"
        );
        assert!(!err.contains("token"), "{variant}: no token problem: {err}");
    }

    // Nothing readable as JSON: an error, exit 1, and `P/status` says so.
    let (code, out, err) = dry_run(NO_JSON);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("exposes no production as JSON"), "{err}");
    assert!(
        out.contains(r#"envoy/status [retained] {"status":"error""#),
        "{out}"
    );
    assert!(!out.contains("/data/"), "{out}");

    // --check names the source in use.
    let e = envoy("8.2.4264_metered_no_ct");
    let state = Tmp::new("state");
    let out = run(
        &[
            ("ENVOY_HOST", &e.server.url()),
            ("ENVOY_TOKEN", &e.token),
            ("STATE_DIR", state.0.to_str().unwrap()),
            ("MQTT_PORT", &free_port().to_string()),
        ],
        &["--check"],
    );
    let report = text(&out.stdout);
    assert!(
        report
            .contains("production: from the microinverters (/production.json, inverters section)"),
        "{report}"
    );
}

#[test]
fn unwired_phases_are_left_out_of_the_three_phase_fixture() {
    // Checked by hand against 7.6.175_with_cts_3phase/ivp_meters_readings: both CTs are set
    // for three phases, only L1 is wired (235.236 V; L2 6.124 V, L3 11.469 V). Production
    // L1: 488.925 W over 510.003 VA apparent -> power factor 0.959; net L1 -36.162 W at
    // 235.201 V; house current |488.925 - 36.162| / 235.201 = 1.925 A.
    let (code, out, err) = dry_run("7.6.175_with_cts_3phase");
    assert_eq!(code, Some(0), "{err}");
    let p = "envoy/122238082763/data/";
    for (field, value) in [
        ("prod_eim_voltage", "235.236"),
        ("prod_eim_current", "2.169"),
        ("prod_eim_pwrFactor", "0.959"),
        ("prod_eim_voltage_l1", "235.236"),
        ("conso_net_eim_voltage", "235.201"),
        ("conso_all_eim_rmsVoltage", "235.201"),
        ("conso_all_eim_rmsCurrent", "1.925"),
    ] {
        assert!(
            out.contains(&format!("{p}{field} [retained] {value}\n")),
            "{field} {value}:\n{out}"
        );
    }
    assert!(!out.contains("_l2") && !out.contains("_l3"), "{out}");
    assert_eq!(
        err.matches("phases without mains voltage").count(),
        1,
        "one log line: {err}"
    );
}

#[test]
fn noise_of_unwired_phases_in_the_envoys_aggregate_is_left_out() {
    // Derived from 7.6.175_with_cts_3phase: the unwired L2 and L3 read 25 W and 12 W of
    // noise, and the Envoy's aggregate adds them (525.925 W). Only L1 is the house's.
    let readings = fixture_file("7.6.175_with_cts_3phase", "ivp_meters_readings");
    let mut v: serde_json::Value = serde_json::from_str(&readings).unwrap();
    v[0]["channels"][1]["activePower"] = 25.0.into();
    v[0]["channels"][2]["activePower"] = 12.0.into();
    v[0]["activePower"] = 525.925.into();
    v[0]["instantaneousDemand"] = 525.925.into();
    let fixture = variant_with(
        "7.6.175_with_cts_3phase",
        "ivp_meters_readings",
        Some(&v.to_string()),
    );
    let (code, out, err) = dry_run_of(&fixture.0);
    assert_eq!(code, Some(0), "{err}");
    let p = "envoy/122238082763/data/";
    // Production L1 alone; the house: production + net on L1 (488.925 - 36.162).
    for (field, value) in [
        ("prod_eim_wNow", "488.925"),
        ("conso_all_eim_wNow", "452.763"),
    ] {
        assert!(
            out.contains(&format!("{p}{field} [retained] {value}\n")),
            "{field} {value}:\n{out}"
        );
    }
    assert!(!out.contains("525.925"), "the aggregate's noise: {out}");
}

#[test]
fn derived_counters_never_decrease_under_ct_jitter() {
    // Every counter the CTs measure only goes up, but not in step (export +8 Wh each
    // answer, production +16 Wh every other one): self-consumption (production - export)
    // and house consumption (production + import - export) would step back by 8 Wh every
    // other poll.
    let fixture = fixtures().join("7.6.175_with_cts");
    let control = Control::new(&serial_of(&fixture));
    {
        let mut s = control.lock();
        s.faults.counters = sim::Counters::Jitter;
    }
    let e = envoy_with(&fixture, control);
    let state = Tmp::new("state");
    let d = Daemon::start(
        &[
            ("ENVOY_HOST", &e.server.url()),
            ("ENVOY_TOKEN", &e.token),
            ("STATE_DIR", state.0.to_str().unwrap()),
            ("HA_DISCOVERY", "false"),
            ("RAW_DATA_INTERVAL_SECONDS", "0"),
            ("DATA_INTERVAL_SECONDS", "100ms"),
        ],
        &["--dry-run"],
    );
    let series = |d: &Daemon, name: &str| -> Vec<f64> {
        let topic = format!("envoy/122238082763/data/{name} [retained] ");
        d.stdout()
            .iter()
            .filter_map(|l| l.strip_prefix(&topic)?.parse().ok())
            .collect()
    };
    let done = d.wait_until(Duration::from_secs(60), |d| {
        series(d, "eco_eim_whLifetime").len() >= 100
    });
    assert!(done, "100 polls: {}", d.stderr());
    for measured in [
        "prod_eim_whLifetime",
        "grid_eim_whLifetime",
        "import_eim_whLifetime",
    ] {
        let values = series(&d, measured);
        assert!(
            values.windows(2).all(|w| w[1] >= w[0]),
            "{measured} {values:?}"
        );
    }
    for name in [
        "eco_eim_whLifetime",
        "eco_eim_kwhLifetime",
        "conso_all_eim_whLifetime",
        "conso_all_eim_kwhLifetime",
    ] {
        let values = series(&d, name);
        assert!(values.len() >= 100, "{name}: {}", values.len());
        let back = values.windows(2).filter(|w| w[1] < w[0]).count();
        assert_eq!(back, 0, "{name} decreased {back} times: {values:?}");
        assert!(values.last() > values.first(), "{name} still advances");
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

#[test]
fn split_phase_total_consumption_fields_match_the_fixture_numbers() {
    // Checked by hand against 8.3.5433_tot_is_net_cons/ivp_meters and ivp_meters_readings:
    // split phase (phaseCount 2; the third channel reads 0 V). Production CT 352.751 W,
    // L1 180.664 W / 231.924 VA at 121.342 V, L2 179.906 W / 232.259 VA at 121.424 V: mean
    // voltage 121.383 V, power factor (180.664 + 179.906) / (231.924 + 232.259) = 0.777,
    // 14405465.57 Wh. Total-consumption CT 786.513 W, L1 431.202 W, L2 364.572 W, mean
    // 121.393 V, 20055053.325 Wh. Net = total - production: 433.762 W (L1 250.538 W, L2
    // 184.666 W), 20055053.325 - 14405465.57 = 5649587.755 Wh; importing, so no export and
    // all production is self-consumed.
    let (code, out, err) = dry_run("8.3.5433_tot_is_net_cons");
    assert_eq!(code, Some(0), "{err}");
    let p = "envoy/123456789012/data/";
    for (field, value) in [
        ("prod_eim_wNow", "352.751"),
        ("prod_eim_voltage", "121.383"),
        ("prod_eim_pwrFactor", "0.777"),
        ("prod_eim_wNow_l1", "180.664"),
        ("prod_eim_wNow_l2", "179.906"),
        ("prod_eim_whLifetime", "14405465.57"),
        ("conso_all_eim_wNow", "786.513"),
        ("conso_all_eim_rmsVoltage", "121.393"),
        ("conso_all_eim_whLifetime", "20055053.325"),
        ("conso_net_eim_wNow", "433.762"),
        ("conso_net_eim_wNow_l1", "250.538"),
        ("conso_net_eim_wNow_l2", "184.666"),
        ("conso_net_eim_whLifetime", "5649587.755"),
        ("grid_eim_wNow", "0"),
        ("eco_eim_wNow", "352.751"),
    ] {
        assert!(
            out.contains(&format!("{p}{field} [retained] {value}\n")),
            "{field} {value}:\n{out}"
        );
    }
    assert!(!out.contains("_l3"), "two phases only: {out}");
}

#[test]
fn consumption_from_production_json_where_ivp_meters_is_not_usable() {
    // Older metered firmware: consumption CTs, but no /ivp/meters (404). Derived from
    // 7.6.175_with_cts without its meter answers; pyenphase then reads production.json's
    // eim sections: production 488.154 W / 3183793.303 Wh, total consumption 476.686 W /
    // 5145153.621 Wh, net -11.468 W / 1961512.786 Wh (import less export).
    let dir = Tmp::new("fixture");
    for entry in std::fs::read_dir(fixtures().join("7.6.175_with_cts")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("ivp_meters") {
            std::fs::copy(&path, dir.0.join(&name)).unwrap();
        }
    }
    let (code, out, err) = dry_run_of(&dir.0);
    assert_eq!(code, Some(0), "{err}");
    let value = |name: &str| {
        let line = format!("/data/{name} [retained] ");
        out.lines()
            .find_map(|l| l.split_once(&line).map(|(_, v)| v.to_string()))
    };
    #[rustfmt::skip]
    let want = [
        ("prod_eim_wNow", "488.154"), ("prod_eim_whLifetime", "3183793.303"),
        ("conso_all_eim_wNow", "476.686"), ("conso_all_eim_whLifetime", "5145153.621"),
        ("conso_all_eim_rmsVoltage", "235.743"),
        ("conso_net_eim_wNow", "-11.468"), ("conso_net_eim_whLifetime", "1961512.786"),
        ("grid_eim_wNow", "11.468"), ("conso_all_eim_today", "0"),
    ];
    for (name, v) in want {
        assert_eq!(value(name).as_deref(), Some(v), "{name}: {out}");
    }
    // Import and export are not counted apart there: not published rather than wrong.
    for name in [
        "import_eim_whLifetime",
        "grid_eim_whLifetime",
        "eco_eim_whLifetime",
    ] {
        assert_eq!(value(name), None, "{name}: {out}");
    }
    assert_eq!(
        err.matches("/production.json reports consumption CTs")
            .count(),
        1,
        "{err}"
    );
}

#[test]
fn well_formed_answers_of_the_wrong_shape_are_a_clear_error_not_a_panic() {
    // JSON that parses, but not as the Envoy's readings: an object, wrong types, numbers
    // out of range, NaN (not JSON at all).
    let cases = [
        r#"{"eid": 704643328, "activePower": 488.9}"#,
        r#"[{"eid": "704643328", "activePower": 488.9}]"#,
        r#"[{"eid": 704643328, "activePower": "488.9", "channels": {}}]"#,
        r#"[{"eid": 704643328, "activePower": 1e999}]"#,
        r#"[{"eid": 704643328, "activePower": NaN}]"#,
        r#"[{"eid": 704643328, "activePower": 488.9, "channels": [1, 2]}]"#,
        r#""readings""#,
    ];
    for body in cases {
        let fixture = variant_with("7.6.175_with_cts", "ivp_meters_readings", Some(body));
        let (code, out, err) = dry_run_of(&fixture.0);
        assert_eq!(code, Some(1), "{body}: {err}");
        assert!(
            err.contains("/ivp/meters/readings is not the JSON expected"),
            "{body}: {err}"
        );
        assert!(!err.contains("panicked"), "{body}: {err}");
        // P/status says it; no value is published from it.
        assert!(out.contains(r#""status":"error""#), "{body}: {out}");
        assert!(!out.contains("/data/prod_eim_wNow"), "{body}: {out}");
    }
}
