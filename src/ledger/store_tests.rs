//! The store's unit tests: waiting for the broker, restoring, the batteries' integrated counters.
use super::*;
use crate::settings::{Format, Sources};
use std::time::UNIX_EPOCH;

/// A store over an empty folder, read-only (nothing is written), at `TZ=UTC0`.
fn store(name: &str) -> (Store, Composer) {
    store_in(name, true)
}

/// The settings of a store in the folder `envoy2mqtt-{name}-{pid}`, at `TZ=UTC0`.
fn config(name: &str) -> Config {
    let dir = std::env::temp_dir().join(format!("envoy2mqtt-{name}-{}", std::process::id()));
    let mut sources = Sources::default();
    sources.environment(|k| match k {
        "STATE_DIR" => Some(dir.display().to_string()),
        "TZ" => Some("UTC0".into()),
        _ => None,
    });
    sources.validate().unwrap()
}

fn store_in(name: &str, read_only: bool) -> (Store, Composer) {
    let config = config(name);
    let p = Composer {
        prefix: "envoy".into(),
        serial: "1".into(),
        format: Format::Simple,
        retain: true,
    };
    (Store::open(&config, read_only).unwrap(), p)
}

fn production(wh: f64) -> Vec<Field> {
    vec![Field::new(Flow::Production, Measure::Lifetime, wh)]
}

/// 2026-01-15 12:00 UTC.
fn noon() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_768_478_400)
}

fn today(a: &Store) -> Option<f64> {
    let f = a.fields();
    f.iter()
        .find(|f| f.is(Flow::Production, Measure::Today))
        .map(|f| f.value)
}

#[test]
fn nothing_starts_fresh_while_the_broker_cannot_be_read() {
    let (mut a, p) = store("store-wait");
    assert!(a.waiting());
    a.adopt(&p, None);
    assert!(a.waiting(), "still waiting for the broker");
    assert!(!a.update(&p, noon(), &production(5000.0)));
    assert!(a.fields().is_empty(), "no ledger started");
    a.adopt(&p, Some(Vec::new()));
    assert!(!a.waiting());
    assert!(
        a.update(&p, noon(), &production(5000.0)),
        "a first ledger: save"
    );
    assert_eq!(today(&a), Some(0.0));
}

#[test]
fn the_retained_ledger_and_the_originals_references_are_taken() {
    // The retained P/S/ledger of an earlier run: 700 Wh produced today.
    let (mut first, p) = store("store-first");
    first.adopt(&p, Some(Vec::new()));
    first.update(&p, noon(), &production(5000.0));
    first.update(&p, noon() + Duration::from_secs(600), &production(5700.0));
    let kept = first
        .messages(&p, noon())
        .into_iter()
        .find(|m| m.topic == "envoy/1/ledger")
        .unwrap();
    let (mut a, _) = store("store-retained");
    a.adopt(&p, Some(vec![(kept.topic, kept.payload.into_bytes())]));
    assert!(!a.waiting());
    a.update(&p, noon() + Duration::from_secs(1200), &production(5900.0));
    assert_eq!(today(&a), Some(900.0));

    // The original envoy2mqtt's bare midnight reference: 1,200 Wh before the counter.
    let (mut b, _) = store("store-original");
    let reference = (
        "envoy/1/data/prod_eim_whLifetime_00h".to_string(),
        b"3800".to_vec(),
    );
    b.adopt(&p, Some(vec![reference]));
    b.update(&p, noon(), &production(5000.0));
    assert_eq!(today(&b), Some(1200.0));
}

#[test]
fn a_midnight_reference_is_taken_only_when_it_is_a_number_of_today() {
    // The counter reads 5,000 Wh at noon on 2026-01-15.
    #[rustfmt::skip]
    let cases: [(&str, Option<f64>); 9] = [
        ("3800", Some(1200.0)),
        (" 3800.5 ", Some(1199.5)),
        (r#"{"value":3800,"date":"2026-01-15"}"#, Some(1200.0)),
        // Of another day, not a number, not finite, garbage: today counts from now.
        (r#"{"value":3800,"date":"2026-01-14"}"#, Some(0.0)),
        ("abc", Some(0.0)),
        ("NaN", Some(0.0)),
        ("inf", Some(0.0)),
        (r#"{"value":"3800"}"#, Some(0.0)),
        ("\u{0}\u{ff}3800", Some(0.0)),
    ];
    let (_, p) = store("store-00h");
    for (payload, want) in cases {
        let (mut a, _) = store("store-00h");
        let reference = (
            "envoy/1/data/prod_eim_whLifetime_00h".to_string(),
            payload.as_bytes().to_vec(),
        );
        a.adopt(&p, Some(vec![reference]));
        a.update(&p, noon(), &production(5000.0));
        assert_eq!(today(&a), want, "{payload:?}");
    }
}

fn value(a: &Store, flow: Flow, measure: Measure) -> Option<f64> {
    let f = a.fields();
    f.iter().find(|f| f.is(flow, measure)).map(|f| f.value)
}

#[test]
fn battery_counters_integrated_without_a_storage_ct_go_on_after_a_restart() {
    let (mut a, p) = store("store-battery");
    a.adopt(&p, Some(Vec::new()));
    let power = |w| vec![Field::new(Subject::Battery, Measure::Power, w)];
    let poll = |a: &mut Store, at: SystemTime| {
        let mut fields = production(5000.0);
        a.integrated(&mut fields);
        a.update(&p, at, &fields);
        fields
    };
    let minute = Duration::from_secs(60);
    poll(&mut a, noon());
    // Discharging 600 W for 10 minutes (100 Wh), down to 0 in a minute (5 Wh), to
    // charging at 1,200 W in a minute (10 Wh), then for 5 minutes (100 Wh).
    for n in 0..=10 {
        a.battery(noon() + minute * n, &power(600.0));
    }
    a.battery(noon() + minute * 11, &power(0.0));
    a.battery(noon() + minute * 12, &power(-1200.0));
    a.battery(noon() + minute * 17, &power(-1200.0));
    let fields = poll(&mut a, noon() + minute * 18);
    let lifetime = |flow| {
        fields
            .iter()
            .find(|f| f.is(flow, Measure::Lifetime))
            .map(|f| f.value)
    };
    assert_eq!(lifetime(Flow::BatteryDischarged), Some(105.0));
    assert_eq!(lifetime(Flow::BatteryCharged), Some(110.0));
    let kwh = fields
        .iter()
        .find(|f| f.is(Flow::BatteryCharged, Measure::LifetimeKwh))
        .map(|f| f.value);
    assert_eq!(kwh, Some(0.11));
    // A storage CT's counters are never overwritten.
    let mut ct = vec![Field::new(Flow::BatteryCharged, Measure::Lifetime, 7.0)];
    a.integrated(&mut ct);
    assert_eq!(ct.len(), 1);

    // The restart: the retained ledger carries the counters and the last reading on.
    let kept = a
        .messages(&p, noon())
        .into_iter()
        .find(|m| m.topic == "envoy/1/ledger")
        .unwrap();
    let (mut b, _) = store("store-battery-2");
    b.adopt(&p, Some(vec![(kept.topic, kept.payload.into_bytes())]));
    b.battery(noon() + minute * 20, &power(-1200.0));
    poll(&mut b, noon() + minute * 21);
    b.battery(noon() + minute * 25, &power(-1200.0));
    poll(&mut b, noon() + minute * 26);
    // 3 minutes from the last reading before the restart (60 Wh), then 5 (100 Wh).
    assert_eq!(value(&b, Flow::BatteryCharged, Measure::Today), Some(160.0));
    assert_eq!(
        value(&b, Flow::BatteryDischarged, Measure::Today),
        Some(0.0)
    );
}

#[test]
fn the_newer_of_the_state_file_and_the_retained_ledger_wins_either_way() {
    // Two ledgers of one day: 700 Wh today at 12:10, 900 Wh at 12:20.
    let (mut a, p) = store("store-newer");
    a.adopt(&p, Some(Vec::new()));
    a.update(&p, noon(), &production(5000.0));
    a.update(&p, noon() + Duration::from_secs(600), &production(5700.0));
    let at_1210 = book::text(a.ledger.as_ref().unwrap());
    a.update(&p, noon() + Duration::from_secs(1200), &production(5900.0));
    let at_1220 = book::text(a.ledger.as_ref().unwrap());
    let cases = [
        ("retained newer than the file", &at_1210, &at_1220, 900.0),
        ("file newer than the retained", &at_1220, &at_1210, 900.0),
        ("both the same", &at_1210, &at_1210, 700.0),
    ];
    for (n, (what, file, retained, want)) in cases.into_iter().enumerate() {
        let (b, _) = store(&format!("store-either-{n}"));
        std::fs::create_dir_all(b.path.parent().unwrap()).unwrap();
        std::fs::write(&b.path, file.as_bytes()).unwrap();
        let (mut b, _) = store(&format!("store-either-{n}"));
        assert!(b.has_file(), "{what}");
        let topic = "envoy/1/ledger".to_string();
        b.adopt(&p, Some(vec![(topic, retained.clone().into_bytes())]));
        assert_eq!(today(&b), Some(want), "{what}");
        std::fs::remove_dir_all(b.path.parent().unwrap()).unwrap();
    }
    // A file that is not a ledger (truncated) loses to the retained one, and a retained one
    // that is not a ledger (garbage) leaves the file's.
    let (b, _) = store("store-truncated");
    std::fs::create_dir_all(b.path.parent().unwrap()).unwrap();
    std::fs::write(&b.path, &at_1220.as_bytes()[..40]).unwrap();
    let (mut b, _) = store("store-truncated");
    assert!(!b.has_file());
    b.adopt(
        &p,
        Some(vec![(
            "envoy/1/ledger".into(),
            at_1210.clone().into_bytes(),
        )]),
    );
    assert_eq!(today(&b), Some(700.0));
    std::fs::remove_dir_all(b.path.parent().unwrap()).unwrap();
    let (c, _) = store("store-garbage");
    std::fs::create_dir_all(c.path.parent().unwrap()).unwrap();
    std::fs::write(&c.path, at_1210.as_bytes()).unwrap();
    let (mut c, _) = store("store-garbage");
    c.adopt(
        &p,
        Some(vec![(
            "envoy/1/ledger".into(),
            b"{\"version\":2,\"today".to_vec(),
        )]),
    );
    assert_eq!(today(&c), Some(700.0));
    std::fs::remove_dir_all(c.path.parent().unwrap()).unwrap();
}

#[test]
fn the_state_file_is_written_when_the_ledger_changed_and_again_after_a_failure() {
    let dir = std::env::temp_dir().join(format!("envoy2mqtt-store-save-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (mut a, p) = store_in("store-save", false);
    assert_eq!(a.last_poll_ms(), 0, "no ledger yet");
    a.save(true).unwrap();
    assert!(
        !dir.join("ledger.json").exists(),
        "nothing to write without a ledger"
    );
    a.adopt(&p, Some(Vec::new()));
    a.update(&p, noon(), &production(5000.0));
    assert_eq!(a.last_poll_ms(), 1_768_478_400_000);
    a.save(false).unwrap();
    let written = std::fs::read_to_string(dir.join("ledger.json")).unwrap();
    assert!(written.contains("\"version\":2"), "{written}");
    assert_eq!(a.problem(), None);
    // Unchanged: not written again (the file's own removal is not noticed).
    std::fs::remove_file(dir.join("ledger.json")).unwrap();
    a.save(false).unwrap();
    assert!(!dir.join("ledger.json").exists());
    // STATE_DIR gone (a file in its place): the ledger goes on, the problem is said...
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, "not a folder").unwrap();
    a.update(&p, noon() + Duration::from_secs(60), &production(5100.0));
    a.save(true).unwrap();
    let problem = a.problem().expect("a problem to report").to_string();
    assert!(problem.contains("the ledger goes on"), "{problem}");
    assert_eq!(today(&a), Some(100.0));
    // ...and once it can be written, it is at the next save, changed since or not.
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    a.save(false).unwrap();
    assert_eq!(a.problem(), None);
    assert!(dir.join("ledger.json").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn derived_counters_held_in_the_published_fields_in_wh_and_kwh() {
    let (mut a, p) = store("store-hold");
    a.adopt(&p, Some(Vec::new()));
    let net_ct = |house: f64| {
        vec![
            Field::new(Flow::Production, Measure::Lifetime, 1000.0),
            Field::new(Flow::Import, Measure::Lifetime, 2500.0),
            Field::new(Flow::Export, Measure::Lifetime, 500.0),
            Field::new(Flow::Consumption, Measure::Lifetime, house),
            Field::new(Flow::Consumption, Measure::LifetimeKwh, house / 1000.0),
        ]
    };
    a.update(&p, noon(), &net_ct(3000.0));
    let mut stepped_back = net_ct(2994.0);
    a.hold(&mut stepped_back);
    assert_eq!(stepped_back[3].value, 3000.0);
    assert_eq!(stepped_back[4].value, 3.0);
}

#[test]
fn the_grid_import_power_is_the_net_power_when_positive() {
    let net = |w: f64| vec![Field::new(Flow::Net, Measure::Power, w)];
    assert_eq!(import_power(&net(1200.0)), Some(1200.0));
    assert_eq!(import_power(&net(-300.0)), Some(0.0));
    assert_eq!(import_power(&production(5.0)), None);
    // A data poll's import power is the day's peak so far.
    let (mut a, p) = store("store-peak");
    a.adopt(&p, Some(Vec::new()));
    let mut fields = production(5000.0);
    a.update(&p, noon(), &fields);
    fields.extend(net(4200.0));
    a.update(&p, noon() + Duration::from_secs(60), &fields);
    assert_eq!(value(&a, Flow::Import, Measure::Peak), Some(4200.0));
}

#[test]
fn yesterday_is_taken_from_the_originals_topic_when_dated_yesterday() {
    let (_, p) = store("store-yesterday");
    for (date, want) in [
        ("2026-01-14", Some(500.0)),
        ("2026-01-16", None),
        ("2026-01-15", None),
    ] {
        let (mut a, _) = store("store-yesterday");
        let refs = vec![
            (
                "envoy/1/data/prod_eim_whLifetime_00h".to_string(),
                b"3800".to_vec(),
            ),
            (
                "envoy/1/data/prod_eim_yesterday".to_string(),
                format!(r#"{{"value":500,"date":"{date}"}}"#).into_bytes(),
            ),
        ];
        a.adopt(&p, Some(refs));
        a.update(&p, noon(), &production(5000.0));
        assert_eq!(
            value(&a, Flow::Production, Measure::Yesterday),
            want,
            "{date}"
        );
    }
}

#[test]
fn a_retained_ledger_that_counted_more_than_the_counters_is_refused() {
    let (_, p) = store("store-forged");
    let zone = Zone::parse("UTC0").unwrap();
    let mut counters = book::Counters::default();
    counters[Flow::Production] = Some(5000.0);
    let mut forged = Ledger::start(&zone, 1_768_478_400_000 - 60_000, counters).unwrap();
    // Plausible on its own (a day of 20 kWh), not against the counter: 5 kWh in all.
    forged.today.energy[Flow::Production] = 20_000.0;
    let retained = vec![(
        "envoy/1/ledger".to_string(),
        book::text(&forged).into_bytes(),
    )];
    let (mut a, _) = store("store-forged");
    a.adopt(&p, Some(retained));
    a.update(&p, noon(), &production(5000.0));
    assert_eq!(today(&a), Some(0.0), "a fresh start, not 20 kWh");
}

#[test]
fn a_battery_power_that_is_not_a_number_starts_no_counter() {
    let (mut a, p) = store("store-battery-nan");
    a.adopt(&p, Some(Vec::new()));
    a.update(&p, noon(), &production(5000.0));
    a.battery(
        noon(),
        &[Field::new(Subject::Battery, Measure::Power, f64::NAN)],
    );
    let mut fields = Vec::new();
    a.integrated(&mut fields);
    assert!(fields.is_empty(), "{fields:?}");
}

#[test]
fn the_ledgers_notes_in_the_log_a_clock_behind_said_once() {
    use log::Level::{Debug, Info, Warn};
    let day = crate::time::zone::Date::parse("2026-01-15").unwrap();
    let back = Note::ClockBack { seconds: 5 };
    let mut told = false;
    let said = |notes: &[Note], told: &mut bool| -> Vec<log::Level> {
        lines(notes, told).into_iter().map(|(l, _)| l).collect()
    };
    assert_eq!(
        lines(&[Note::NewDay(day)], &mut told),
        [(Info, "ledger: new day 2026-01-15".to_string())]
    );
    assert_eq!(
        said(
            &[Note::Zero {
                sensor: Flow::Import
            }],
            &mut told
        ),
        [Debug]
    );
    assert_eq!(said(&[Note::Gap { days: 50 }], &mut told), [Warn]);
    assert_eq!(said(std::slice::from_ref(&back), &mut told), [Warn]);
    assert_eq!(
        said(std::slice::from_ref(&back), &mut told),
        [Debug],
        "said once"
    );
    assert_eq!(said(&[], &mut told), Vec::<log::Level>::new());
    assert_eq!(
        said(std::slice::from_ref(&back), &mut told),
        [Warn],
        "caught up, then back again"
    );
}

#[test]
fn a_damaged_state_file_is_set_aside_unless_read_only() {
    let dir = std::env::temp_dir().join(format!("envoy2mqtt-store-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ledger.json"), "{ damaged").unwrap();
    let (a, _) = store_in("store-bad", true);
    assert_eq!(a.last_poll_ms(), 0);
    assert!(dir.join("ledger.json").exists() && !dir.join("ledger.json.bad").exists());
    let (_, _) = store_in("store-bad", false);
    assert!(!dir.join("ledger.json").exists() && dir.join("ledger.json.bad").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_new_day_asks_for_a_write_and_a_reload_writes_to_the_new_folder() {
    let (mut a, p) = store_in("store-newday", false);
    let dirs = [&config("store-newday"), &config("store-newday-2")].map(|c| c.state_dir.clone());
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d).unwrap();
    }
    a.adopt(&p, Some(Vec::new()));
    assert!(a.update(&p, noon(), &production(5000.0)), "a first ledger");
    a.save(false).unwrap();
    let hour = Duration::from_secs(3600);
    assert!(
        !a.update(&p, noon() + hour, &production(5100.0)),
        "the same day"
    );
    assert!(
        a.update(&p, noon() + hour * 13, &production(5200.0)),
        "a new day"
    );
    // A reload that moves STATE_DIR: the ledger is written there at once.
    a.configure(&config("store-newday-2")).unwrap();
    assert!(dirs[1].join("ledger.json").exists());
    for d in &dirs {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn a_retained_ledger_as_old_as_the_file_loses_to_it() {
    let dir = config("store-tie").state_dir;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (mut a, p) = store_in("store-tie", false);
    a.adopt(&p, Some(Vec::new()));
    a.update(&p, noon(), &production(5000.0));
    a.update(&p, noon() + Duration::from_secs(600), &production(5700.0));
    a.save(true).unwrap();
    // The retained one: the same poll's time, another day's total.
    let mut retained =
        book::parse(&std::fs::read_to_string(dir.join("ledger.json")).unwrap()).unwrap();
    retained.today.energy[Flow::Production] = 300.0;
    let (mut b, _) = store_in("store-tie", false);
    let message = (
        "envoy/1/ledger".to_string(),
        book::text(&retained).into_bytes(),
    );
    b.adopt(&p, Some(vec![message]));
    b.update(&p, noon() + Duration::from_secs(1200), &production(5900.0));
    assert_eq!(today(&b), Some(900.0), "the file's 700 Wh and 200 more");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn raw_ticks_feed_the_peak_and_hc_hp_only_with_off_peak_windows() {
    let (mut a, p) = store("store-ticks");
    a.adopt(&p, Some(Vec::new()));
    // Grid import is one of the flows split in HC/HP where there are windows.
    let mut fields = production(5000.0);
    fields.push(Field::new(Flow::Import, Measure::Lifetime, 800.0));
    a.update(&p, noon(), &fields);
    let live = crate::readings::Live {
        watts: [Some(100.0), Some(4500.0), Some(4600.0), None],
    };
    a.peak(noon() + Duration::from_secs(1), &live);
    assert_eq!(value(&a, Flow::Import, Measure::Peak), Some(4500.0));
    // No OFFPEAK_HOURS: no HC/HP split, in the fields or the messages.
    let split = a
        .fields()
        .into_iter()
        .any(|f| matches!(f.measure, Measure::Daily(Some(_))));
    assert!(!split);
    let messages = a.messages(&p, noon());
    assert!(
        messages
            .iter()
            .any(|m| m.topic == "envoy/1/production/daily")
    );
    assert!(!messages.iter().any(|m| m.topic.ends_with("/hc")));
}
