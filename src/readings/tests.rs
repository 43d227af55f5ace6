//! Readings' unit tests: each layout publishes what it measures, phases, derived values.
use super::*;
use crate::envoy::api::{Channel, Inverters, Meter, MeterReading, Role};

fn meter(eid: u64, kind: &str, enabled: bool, phases: usize) -> Meter {
    Meter {
        eid,
        kind: kind.into(),
        role: Role::from_measurement_type(kind),
        enabled,
        phases,
    }
}

fn ch(power: f64, voltage: f64, current: f64) -> Channel {
    Channel {
        power,
        apparent: power.abs() * 1.25,
        voltage,
        current,
        line: 0,
    }
}

fn reading(eid: u64, chans: &[Channel], delivered: f64, received: f64) -> MeterReading {
    let used = chans.iter().filter(|c| c.voltage > 0.0);
    MeterReading {
        eid,
        total: Channel {
            power: used.clone().map(|c| c.power).sum(),
            apparent: 0.0,
            voltage: used.clone().map(|c| c.voltage).sum(),
            current: used.map(|c| c.current).sum(),
            line: 0,
        },
        pwr_factor: 0.8,
        delivered,
        received,
        channels: chans.to_vec(),
        timestamp: None,
    }
}

fn names(fields: &[Field]) -> Vec<String> {
    fields.iter().map(Field::name).collect()
}

fn value(fields: &[Field], name: &str) -> Option<f64> {
    fields.iter().find(|f| f.name() == name).map(|f| f.value)
}

#[test]
#[allow(clippy::type_complexity)] // a table of cases
fn layouts_publish_what_they_measure() {
    let inv = Some(Inverters {
        watts_now: 700.0,
        wh_today: Some(4000.0),
        wh_lifetime: Some(900_000.0),
    });
    let no_energy = Some(Inverters {
        watts_now: 700.0,
        wh_today: None,
        wh_lifetime: None,
    });
    let noise = ch(-1.0, 11.0, 0.2);
    let one = |p| [ch(p, 230.0, 2.0), noise, noise];
    #[rustfmt::skip]
    let cases: Vec<(
        &str,
        Vec<Meter>,
        Vec<MeterReading>,
        Option<Inverters>,
        &[&str],
        &[&str],
    )> = vec![
        ("production and net CTs", vec![meter(1, "production", true, 1), meter(2, "net-consumption", true, 1)], vec![reading(1, &one(500.0), 1000.0, 5.0), reading(2, &one(-100.0), 3000.0, 800.0)], inv, &["prod_eim_pwrFactor", "import_eim_whLifetime", "eco_eim_whLifetime", "conso_all_eim_kwhLifetime"], &["prod_eim_wNow_l1", "conso_net_eim_voltage_l2"]),
        ("production CT only", vec![meter(1, "production", true, 1), meter(2, "net-consumption", false, 1)], vec![reading(1, &one(500.0), 1000.0, 5.0), reading(2, &one(0.0), 0.0, 0.0)], inv, &["prod_eim_whLifetime", "prod_eim_wattHoursToday"], &["conso_net_eim_wNow", "grid_eim_wNow", "eco_eim_wNow", "conso_all_eim_wNow", "import_eim_whLifetime"]),
        ("disabled CTs, inverters without sound counters: power kept, no energy", vec![meter(1, "production", false, 1), meter(2, "net-consumption", false, 1)], vec![reading(1, &one(500.0), 1000.0, 5.0), reading(2, &one(-100.0), 3000.0, 800.0)], no_energy, &["prod_eim_wNow", "prod_eim_wNow_binary"], &["prod_eim_whLifetime", "prod_eim_wattHoursToday", "prod_eim_voltage", "conso_net_eim_wNow"]),
        ("non-metered", vec![], vec![], inv, &["prod_eim_wNow", "prod_eim_whLifetime", "prod_eim_kwhLifetime", "prod_eim_wattHoursToday"], &["prod_eim_voltage", "conso_net_eim_wNow", "conso_all_eim_wNow"]),
        ("total-consumption CT", vec![meter(1, "production", true, 1), meter(2, "total-consumption", true, 1)], vec![reading(1, &one(500.0), 1000.0, 5.0), reading(2, &one(800.0), 3000.0, 0.0)], inv, &["conso_net_eim_wNow", "conso_net_eim_whLifetime", "grid_eim_wNow", "conso_all_eim_rmsCurrent"], &["import_eim_whLifetime", "grid_eim_whLifetime", "eco_eim_whLifetime", "conso_net_eim_current"]),
        ("extra eid and storage ignored", vec![meter(1, "production", true, 1), meter(3, "storage", true, 1)], vec![reading(1, &one(500.0), 1000.0, 5.0), reading(3, &one(-900.0), 1.0, 2.0), reading(99, &one(1.0), 1.0, 1.0)], None, &["prod_eim_wNow"], &["conso_net_eim_wNow", "prod_eim_wattHoursToday"]),
    ];
    for (name, meters, readings, inv, present, absent) in cases {
        let fields = data_fields(&snapshot(&meters, &readings, inv));
        let got = names(&fields);
        for p in present {
            assert!(
                got.iter().any(|g| g == p),
                "{name}: {p} missing from {got:?}"
            );
        }
        for a in absent {
            assert!(
                !got.iter().any(|g| g == a),
                "{name}: {a} published in {got:?}"
            );
        }
    }
}

#[test]
fn net_ct_derivations() {
    let meters = [
        meter(1, "production", true, 1),
        meter(2, "net-consumption", true, 1),
    ];
    let cases = [
        // prod W, net W, export, eco, house, import flag
        (500.0, -100.0, 100.0, 400.0, 400.0, 0.0),
        (500.0, 300.0, 0.0, 500.0, 800.0, 1.0),
        (0.0, 250.0, 0.0, 0.0, 250.0, 1.0),
        (100.0, -150.0, 150.0, 0.0, -50.0, 0.0),
    ];
    for (prod, net, export, eco, house, importing) in cases {
        let readings = [
            reading(1, &[ch(prod, 230.0, 1.0)], 10_000.0, 1.0),
            reading(2, &[ch(net, 230.0, 1.0)], 7_000.0, 3_000.0),
        ];
        let f = data_fields(&snapshot(&meters, &readings, None));
        let case = format!("prod {prod} net {net}");
        assert_eq!(value(&f, "grid_eim_wNow"), Some(export), "{case}");
        assert_eq!(value(&f, "eco_eim_wNow"), Some(eco), "{case}");
        assert_eq!(value(&f, "conso_all_eim_wNow"), Some(house), "{case}");
        assert_eq!(value(&f, "grid_eim_wNow_binary"), Some(importing), "{case}");
        assert_eq!(
            value(&f, "conso_net_eim_whLifetime"),
            Some(4_000.0),
            "{case}"
        );
        assert_eq!(value(&f, "import_eim_whLifetime"), Some(7_000.0), "{case}");
        assert_eq!(value(&f, "grid_eim_whLifetime"), Some(3_000.0), "{case}");
        assert_eq!(value(&f, "eco_eim_whLifetime"), Some(7_000.0), "{case}");
        assert_eq!(
            value(&f, "conso_all_eim_whLifetime"),
            Some(14_000.0),
            "{case}"
        );
    }
}

#[test]
fn phases_in_use_only_and_mean_voltage() {
    let meters = [meter(1, "production", true, 2)];
    let readings = [reading(
        1,
        &[
            ch(800.0, 120.0, 7.0),
            ch(700.0, 122.0, 6.0),
            ch(55.0, 3.0, 9.0),
        ],
        1.0,
        0.0,
    )];
    let f = data_fields(&snapshot(&meters, &readings, None));
    assert_eq!(value(&f, "prod_eim_voltage"), Some(121.0));
    assert_eq!(value(&f, "prod_eim_wNow_l2"), Some(700.0));
    assert_eq!(value(&f, "prod_eim_voltage_l1"), Some(120.0));
    assert_eq!(value(&f, "prod_eim_current_l2"), Some(6.0));
    assert_eq!(value(&f, "prod_eim_wNow_l3"), None);
    assert_eq!(value(&f, "prod_eim_pwrFactor"), Some(0.8));
}

#[test]
fn phases_without_mains_voltage_are_left_out() {
    let meters = [
        meter(1, "production", true, 3),
        meter(2, "net-consumption", true, 3),
    ];
    // 7.6.175_with_cts_3phase: configured for three phases, only L1 wired.
    let l1_only = [
        reading(
            1,
            &[
                ch(488.925, 235.236, 2.169),
                ch(0.0, 6.124, 0.0),
                ch(-1.044, 11.469, 0.227),
            ],
            1.0,
            0.0,
        ),
        reading(
            2,
            &[
                ch(-36.162, 235.201, 2.745),
                ch(0.0, 2.981, 0.0),
                ch(-0.451, 4.635, 0.242),
            ],
            1.0,
            0.0,
        ),
    ];
    let s = snapshot(&meters, &l1_only, None);
    assert_eq!(s.production.as_ref().unwrap().unwired, [2, 3]);
    let f = data_fields(&s);
    assert_eq!(value(&f, "prod_eim_voltage"), Some(235.236));
    assert_eq!(value(&f, "prod_eim_current"), Some(2.169));
    assert_eq!(value(&f, "prod_eim_wNow"), Some(488.925));
    assert_eq!(value(&f, "prod_eim_wNow_l1"), Some(488.925));
    assert_eq!(value(&f, "conso_net_eim_voltage"), Some(235.201));
    for gone in [
        "prod_eim_wNow_l2",
        "prod_eim_voltage_l3",
        "conso_net_eim_current_l3",
    ] {
        assert_eq!(value(&f, gone), None, "{gone}");
    }
    // L2 not wired, L1 and L3 are: the phase numbers stay.
    let l1_l3 = [reading(
        1,
        &[
            ch(400.0, 230.0, 2.0),
            ch(3.0, 4.0, 0.1),
            ch(300.0, 232.0, 1.5),
        ],
        1.0,
        0.0,
    )];
    let f = data_fields(&snapshot(&meters[..1], &l1_l3, None));
    assert_eq!(value(&f, "prod_eim_voltage"), Some(231.0));
    assert_eq!(value(&f, "prod_eim_current"), Some(3.5));
    assert_eq!(value(&f, "prod_eim_wNow"), Some(700.0));
    assert_eq!(value(&f, "prod_eim_wNow_l3"), Some(300.0));
    assert_eq!(value(&f, "prod_eim_wNow_l2"), None);
    // No phase at mains (a meter reading nothing at night): nothing is left out.
    let dark = [reading(
        1,
        &[ch(0.0, 3.0, 0.0), ch(0.0, 2.0, 0.0)],
        1.0,
        0.0,
    )];
    let s = snapshot(&[meter(1, "production", true, 2)], &dark, None);
    assert!(s.production.unwrap().unwired.is_empty());
}

#[test]
#[allow(clippy::type_complexity)] // a table of cases
fn live_values_by_layout() {
    let one = |p| [ch(p, 230.0, 1.0)];
    let cases: Vec<(Vec<Meter>, Vec<MeterReading>, Vec<(&str, f64)>)> = vec![
        (
            vec![
                meter(1, "production", true, 1),
                meter(2, "net-consumption", true, 1),
            ],
            vec![
                reading(1, &one(500.0), 1.0, 0.0),
                reading(2, &one(-100.0), 1.0, 0.0),
            ],
            vec![
                ("prod_eim_wNow", 500.0),
                ("conso_net_eim_wNow", -100.0),
                ("conso_all_eim_wNow", 400.0),
            ],
        ),
        (
            vec![
                meter(1, "production", true, 1),
                meter(2, "total-consumption", true, 1),
            ],
            vec![
                reading(1, &one(500.0), 1.0, 0.0),
                reading(2, &one(800.0), 1.0, 0.0),
            ],
            vec![
                ("prod_eim_wNow", 500.0),
                ("conso_net_eim_wNow", 300.0),
                ("conso_all_eim_wNow", 800.0),
            ],
        ),
        (
            vec![meter(1, "production", true, 1)],
            vec![reading(1, &one(500.0), 1.0, 0.0)],
            vec![("prod_eim_wNow", 500.0)],
        ),
        (vec![], vec![], vec![]),
    ];
    for (meters, readings, want) in cases {
        let live = live(&snapshot(&meters, &readings, None));
        let got: Vec<(String, f64)> = live.values().map(|f| (f.name(), f.value)).collect();
        let want_owned: Vec<(String, f64)> =
            want.iter().map(|(n, w)| (n.to_string(), *w)).collect();
        assert_eq!(got, want_owned);
        assert_eq!(live.is_empty(), want.is_empty());
        let net = want.iter().find(|(n, _)| *n == "conso_net_eim_wNow");
        assert_eq!(live.import(), net.map(|(_, w)| w.max(0.0)));
    }
}

#[test]
fn unknown_eids_are_reported() {
    let s = snapshot(
        &[meter(1, "production", true, 1)],
        &[reading(7, &[], 0.0, 0.0)],
        None,
    );
    assert_eq!(s.unknown_eids, [7]);
    assert!(s.production.is_none());
}
