//! The ledger's unit tests: midnights, DST days, glitches and resets, derived counters.
use super::*;
use crate::readings::Flow::{Consumption, Export, Import, Net, Production, SelfConsumption};

const PARIS: &str = "CET-1CEST,M3.5.0,M10.5.0/3";
const H: i64 = 3_600_000;

fn zone() -> Zone {
    Zone::parse(PARIS).unwrap()
}

/// Unix ms of a local Paris time `YYYY-MM-DD HH:MM`.
fn at(text: &str) -> i64 {
    let z = zone();
    let (date, time) = text.split_once(' ').unwrap();
    let (h, m) = time.split_once(':').unwrap();
    let day = Date::parse(date).unwrap().days();
    let wall = day * 86_400 + h.parse::<i64>().unwrap() * 3600 + m.parse::<i64>().unwrap() * 60;
    // The offset that makes the wall time come out right.
    let t = [3600, 7200]
        .into_iter()
        .map(|o| wall - o)
        .find(|t| z.day(*t) == day && z.clock(*t) == time[..5])
        .expect("a time that exists");
    t * 1000
}

/// The six flows of a system without batteries (the battery's at their default).
fn flows<T: Default + Copy>(six: [T; 6]) -> PerFlow<T> {
    let mut out = PerFlow::default();
    out.0[..6].copy_from_slice(&six);
    out
}

/// Every counter at the same value `wh` (the net one at 0: it may go down).
fn all(wh: f64) -> Counters {
    flows([Some(wh), Some(wh), Some(wh), Some(wh), Some(wh), Some(0.0)])
}

fn run(start: &str, polls: &[(i64, f64)]) -> (Ledger, Vec<Note>) {
    let z = zone();
    let t0 = at(start);
    let mut l = Ledger::start(&z, t0, all(polls[0].1)).unwrap();
    let mut notes = Vec::new();
    for (ms, wh) in &polls[1..] {
        notes.extend(l.advance(&z, &[], t0 + ms, all(*wh), None));
    }
    (l, notes)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn midnight_between_two_polls_is_interpolated() {
    // 23:50 → 00:20 with 300 Wh: 100 Wh before midnight, 200 Wh after.
    let (l, notes) = run("2026-01-14 23:50", &[(0, 1000.0), (30 * 60_000, 1300.0)]);
    assert_eq!(l.today.date.to_string(), "2026-01-15");
    assert!(
        close(l.today.energy[Production], 200.0),
        "{:?}",
        l.today.energy
    );
    let y = l.yesterday.as_ref().unwrap();
    assert_eq!(y.date.to_string(), "2026-01-14");
    assert!(close(y.energy[Production], 100.0));
    assert_eq!(notes, [Note::NewDay(Date::parse("2026-01-15").unwrap())]);
    let fields = l.daily_fields();
    let get = |n: &str| fields.iter().find(|f| f.name() == n).unwrap().value;
    assert!(close(get("prod_eim_whLifetime_00h"), 1100.0));
    assert!(close(get("prod_eim_today"), 200.0));
    assert!(close(get("prod_eim_yesterday"), 100.0));
}

/// Constant 1 kW across the DST days: the day holds 23, 24 or 25 kWh, in 46, 48 or 50
/// half-hour slots; by IANA name and by POSIX string.
#[test]
fn dst_days_hold_23_and_25_hours() {
    for tz in ["Europe/Paris", PARIS] {
        let z = Zone::parse(tz).unwrap();
        for (date, hours, slots) in [
            ("2026-03-29", 23.0, 46),
            ("2026-10-25", 25.0, 50),
            ("2026-01-15", 24.0, 48),
        ] {
            let day = Date::parse(date).unwrap().days();
            let t0 = (z.day_start(day) - 1800) * 1000;
            let mut l = Ledger::start(&z, t0, all(0.0)).unwrap();
            // Polls every 7 minutes for 26 h, counters at 1 kW.
            for n in 1..=(26 * 60 / 7) {
                let ms = i64::from(n) * 7 * 60_000;
                l.advance(&z, &[], t0 + ms, all(ms as f64 / H as f64 * 1000.0), None);
            }
            let y = l.yesterday.as_ref().unwrap();
            assert_eq!(y.date.to_string(), date, "{tz}");
            assert!(
                close(y.energy[Production], hours * 1000.0),
                "{tz} {date}: {}",
                y.energy[Production]
            );
            // The day's detail, looked at just before its end.
            let mut l = Ledger::start(&z, t0, all(0.0)).unwrap();
            let end = (z.day_start(day + 1) - 1) * 1000;
            l.advance(
                &z,
                &[],
                end,
                all((end - t0) as f64 / H as f64 * 1000.0),
                None,
            );
            let detail = &l.detailed(&z)[0].1;
            assert_eq!(detail.len(), slots, "{tz} {date}");
            assert_eq!(detail[0].0, "00:00");
            assert!(
                detail.iter().all(|(_, kwh)| (kwh - 0.5).abs() < 0.001),
                "{detail:?}"
            );
        }
    }
}

#[test]
fn missed_midnights_roll_every_day() {
    // Down from Monday 18:00 to Tuesday noon (one missed midnight) or to Thursday noon
    // (three), at a steady 2 kW.
    for (hours, days, yesterday) in [(18, 1, 12_000.0), (66, 3, 48_000.0)] {
        let (l, notes) = run(
            "2026-01-12 18:00",
            &[(0, 0.0), (hours * H, hours as f64 * 2000.0)],
        );
        let new_days = notes
            .iter()
            .filter(|n| matches!(n, Note::NewDay(_)))
            .count();
        assert_eq!(new_days, days, "{hours} h");
        let y = l.yesterday.as_ref().unwrap();
        assert!(
            close(y.energy[Production], yesterday),
            "{hours} h: {}",
            y.energy[Production]
        );
        assert!(
            close(l.today.energy[Production], 24_000.0),
            "{hours} h: {}",
            l.today.energy[Production]
        );
        // The month holds everything before today.
        assert!(
            close(l.month[Production], hours as f64 * 2000.0 - 24_000.0),
            "{hours} h"
        );
    }
}

#[test]
#[allow(clippy::type_complexity)] // a table of cases
fn glitches_rebase_instead_of_counting() {
    let m = 60_000;
    #[rustfmt::skip]
    let cases: &[(&str, &[(i64, f64)], f64, usize)] = &[
        // (what, polls, today's Wh, notes)
        ("steady", &[(0, 5000.0), (m, 5010.0), (2 * m, 5020.0)], 20.0, 0),
        ("backwards glitch, then back", &[(0, 5000.0), (m, 5010.0), (2 * m, 4000.0), (3 * m, 5020.0)], 20.0, 0),
        // Three polls below: a reset; what it counted from 4000 is energy.
        ("backwards step that stays", &[(0, 5000.0), (m, 5010.0), (2 * m, 4000.0), (3 * m, 4005.0), (4 * m, 4010.0), (5 * m, 4015.0)], 25.0, 1),
        // Below for longer than a reset takes, then back where it was: the energy
        // is the old series' gain, counted once.
        ("long glitch, then back", &[(0, 5000.0), (m, 5010.0), (2 * m, 4000.0), (3 * m, 4000.0), (4 * m, 4000.0), (5 * m, 4000.0), (6 * m, 5070.0)], 70.0, 1),
        ("reset to a small value", &[(0, 5000.0), (m, 5010.0), (2 * m, 3.0), (3 * m, 8.0), (4 * m, 13.0)], 20.0, 1),
        ("drop to zero and back", &[(0, 5000.0), (m, 5010.0), (2 * m, 0.0), (3 * m, 5030.0)], 30.0, 1),
        ("1.19 MWh step", &[(0, 5000.0), (m, 5010.0), (2 * m, 1_195_010.0), (3 * m, 1_195_020.0)], 20.0, 1),
    ];
    for (what, polls, today, notes) in cases {
        let (l, got) = run("2026-01-15 10:00", polls);
        assert!(
            close(l.today.energy[Production], *today),
            "{what}: {}",
            l.today.energy[Production]
        );
        let glitches = got
            .iter()
            .filter(|n| {
                matches!(
                    n,
                    Note::Rebased {
                        sensor: Production,
                        ..
                    } | Note::Zero { sensor: Production }
                )
            })
            .count();
        assert_eq!(glitches, *notes, "{what}: {got:?}");
        // The reference may go below 0 after a reset (today = counter − reference
        // stays true); no day may.
        let days = l.daily_fields();
        assert!(
            days.iter()
                .filter(|f| !f.name().ends_with("_00h"))
                .all(|f| f.value >= 0.0),
            "{what}"
        );
    }
}

#[test]
fn net_counter_may_go_down() {
    let z = zone();
    let t0 = at("2026-01-15 12:00");
    let c = |net: f64| flows([None, None, None, None, None, Some(net)]);
    let mut l = Ledger::start(&z, t0, c(1000.0)).unwrap();
    let notes = l.advance(&z, &[], t0 + H, c(400.0), None);
    assert!(notes.is_empty());
    assert!(close(l.today.energy[Net], -600.0));
}

#[test]
fn unset_clock_does_nothing() {
    let z = zone();
    let t1970 = 1_000_000;
    assert!(matches!(
        Ledger::start(&z, t1970, all(5.0)),
        Err(Note::ClockUnset(_))
    ));
    let t0 = at("2026-01-15 12:00");
    let mut l = Ledger::start(&z, t0, all(5000.0)).unwrap();
    let before = l.clone();
    let notes = l.advance(&z, &[], t1970, all(9000.0), None);
    assert!(matches!(notes[..], [Note::ClockUnset(_)]));
    assert_eq!(l, before);
}

#[test]
fn clock_going_back_counts_at_the_latest_time() {
    let z = zone();
    let t0 = at("2026-01-15 00:30");
    let mut l = Ledger::start(&z, t0, all(0.0)).unwrap();
    l.advance(&z, &[], t0 + H, all(100.0), None);
    // Back by an hour, across midnight: still 2026-01-15, nothing lost.
    let notes = l.advance(&z, &[], t0 - H / 2, all(150.0), None);
    assert_eq!(notes, [Note::ClockBack { seconds: 5400 }]);
    assert_eq!(l.today.date.to_string(), "2026-01-15");
    assert!(close(l.today.energy[Production], 150.0));
}

#[test]
fn offpeak_windows_across_midnight_split_consumption_and_import() {
    let z = zone();
    let windows = crate::time::offpeak::parse("22:00-06:00,12:30-14:30").unwrap();
    let t0 = at("2026-01-14 21:00");
    let mut l = Ledger::start(&z, t0, all(0.0)).unwrap();
    // 1 kW steady, polled every 40 minutes until 23:00 the next day.
    for n in 1..=39 {
        let ms = n * 40 * 60_000;
        l.advance(
            &z,
            &windows,
            t0 + ms,
            all(ms as f64 / H as f64 * 1000.0),
            None,
        );
    }
    // 2026-01-15 until 23:00: off-peak 00:00-06:00, 12:30-14:30, 22:00-23:00 = 9 h.
    assert!(
        close(l.today.energy[Consumption], 23_000.0),
        "{}",
        l.today.energy[Consumption]
    );
    assert!(
        close(l.today.offpeak[Consumption], 9_000.0),
        "{}",
        l.today.offpeak[Consumption]
    );
    let totals = l.totals(true);
    let get = |n: &str| totals.iter().find(|f| f.name() == n).map(|f| f.value);
    assert_eq!(
        get("consumption/daily/hc").map(|v| (v * 1000.0).round()),
        Some(9000.0)
    );
    assert_eq!(
        get("import/daily/hp").map(|v| (v * 1000.0).round()),
        Some(14000.0)
    );
    assert_eq!(get("production/daily/hc"), None, "production is not split");
    assert_eq!(
        l.totals(false)
            .iter()
            .filter(|f| f.name().ends_with("/hc"))
            .count(),
        0
    );
}

#[test]
fn derived_counters_are_held_unless_a_measured_one_was_reset() {
    // prod, house, import, export, self-consumption, net
    let before = flows([
        Some(1000.0),
        Some(3000.0),
        Some(2500.0),
        Some(500.0),
        Some(500.0),
        Some(2000.0),
    ]);
    #[rustfmt::skip]
    let cases: [(&str, Counters, Counters, &[Flow]); 5] = [
        ("export read 8 Wh ahead: both derived step back, held", flows([Some(1001.0), Some(2994.0), Some(2501.0), Some(508.0), Some(493.0), Some(1993.0)]), flows([Some(1001.0), Some(3000.0), Some(2501.0), Some(508.0), Some(500.0), Some(1993.0)]), &[Consumption, SelfConsumption]),
        ("all up: nothing held", flows([Some(1010.0), Some(3020.0), Some(2515.0), Some(505.0), Some(505.0), Some(2010.0)]), flows([Some(1010.0), Some(3020.0), Some(2515.0), Some(505.0), Some(505.0), Some(2010.0)]), &[]),
        ("production counter reset: followed, the ledger re-bases", flows([Some(0.0), Some(2001.0), Some(2501.0), Some(500.0), Some(0.0), Some(2001.0)]), flows([Some(0.0), Some(2001.0), Some(2501.0), Some(500.0), Some(0.0), Some(2001.0)]), &[]),
        ("total CT (no import/export): house is measured, not held", flows([Some(1001.0), Some(2990.0), None, None, None, Some(1989.0)]), flows([Some(1001.0), Some(2990.0), None, None, None, Some(1989.0)]), &[]),
        ("net counter may go down: not held", flows([Some(1001.0), Some(3000.5), Some(2501.0), Some(503.0), Some(500.0), Some(1998.0)]), flows([Some(1001.0), Some(3000.5), Some(2501.0), Some(503.0), Some(500.0), Some(1998.0)]), &[]),
    ];
    for (name, mut now, want, held) in cases {
        let mut prev = before;
        if name.starts_with("total CT") {
            prev = flows([Some(1000.0), Some(3000.0), None, None, None, Some(2000.0)]);
        }
        assert_eq!(hold(&prev, &mut now), held, "{name}");
        assert_eq!(now, want, "{name}");
    }
}

#[test]
fn month_and_year_restart_at_their_first_day() {
    let (l, _) = run("2026-12-31 23:00", &[(0, 0.0), (2 * H, 2000.0)]);
    // 23:00 → 01:00: half in 2026, half in 2027.
    assert!(close(l.month[Production], 0.0) && close(l.year[Production], 0.0));
    let totals = l.totals(false);
    let get = |n: &str| totals.iter().find(|f| f.name() == n).unwrap().value;
    assert!(close(get("production/year"), 1.0));
    assert!(close(get("production/month"), 1.0));
    let (l, _) = run("2026-01-14 12:00", &[(0, 0.0), (24 * H, 24_000.0)]);
    assert!(close(l.month[Production], 12_000.0) && close(l.year[Production], 12_000.0));
    // Month ends inside a year: the month starts again, the year goes on (a "same year"
    // rollover would keep January in February's month).
    for start in ["2026-01-31 12:00", "2026-06-30 12:00"] {
        let (l, _) = run(start, &[(0, 0.0), (24 * H, 24_000.0)]);
        let totals = l.totals(false);
        let get = |n: &str| totals.iter().find(|f| f.name() == n).unwrap().value;
        assert!(
            close(l.month[Production], 0.0),
            "{start}: month {:?}",
            l.month
        );
        assert!(
            close(l.year[Production], 12_000.0),
            "{start}: year {:?}",
            l.year
        );
        assert!(close(get("production/month"), 12.0), "{start}");
        assert!(close(get("production/year"), 24.0), "{start}");
    }
}

#[test]
fn peak_import_power_of_the_day() {
    let z = zone();
    let t0 = at("2026-01-15 23:58");
    let mut l = Ledger::start(&z, t0, all(0.0)).unwrap();
    l.advance(&z, &[], t0 + 60_000, all(1.0), Some(4200.0));
    l.peak(&z, t0 + 90_000, 3000.0);
    assert_eq!(l.today.max_import, Some(4200.0));
    // After midnight the peak starts again.
    l.advance(&z, &[], t0 + 3 * 60_000, all(2.0), Some(800.0));
    assert_eq!(l.today.max_import, Some(800.0));
}

#[test]
#[allow(clippy::type_complexity)] // a table of cases
fn damaged_states_are_not_sound() {
    let z = zone();
    let good = Ledger::start(&z, at("2026-01-15 12:00"), all(5.0)).unwrap();
    assert!(good.clone().restored(&z).is_some());
    let cases: [(&str, fn(&mut Ledger)); 6] = [
        ("time in 1970", |l| l.at_ms = 0),
        ("time far ahead", |l| l.at_ms = i64::MAX),
        ("today far from the last poll", |l| {
            l.today.date = Date::parse("2020-01-01").unwrap()
        }),
        ("too many slots", |l| l.today.slots = vec![[0.0; 4]; 51]),
        ("not a number", |l| l.month[Import] = f64::NAN),
        ("a date of year 10^15", |l| {
            l.today.date.year = 1_000_000_000_000_000
        }),
    ];
    for (what, damage) in cases {
        let mut l = good.clone();
        damage(&mut l);
        assert!(l.restored(&z).is_none(), "{what}");
    }
    // An absurd day start is not trusted: derived from the date, and the ledger goes on.
    let mut l = good.clone();
    l.today.start = i64::MIN;
    let mut l = l.restored(&z).expect("sound but for its start");
    assert_eq!(l.today.start, good.today.start);
    let notes = l.advance(&z, &[], at("2026-01-15 12:30"), all(6.0), Some(100.0));
    assert!(notes.is_empty(), "{notes:?}");
    assert!(close(l.today.energy[Production], 1.0));
}

#[test]
fn a_long_silence_starts_again() {
    let (l, notes) = run("2026-01-01 12:00", &[(0, 0.0), (50 * 24 * H, 100_000.0)]);
    assert!(notes.contains(&Note::Gap { days: 50 }));
    assert!(close(l.today.energy[Production], 0.0));
    assert_eq!(l.today.date.to_string(), "2026-02-20");
}

#[test]
fn original_references_are_imported_where_they_fit() {
    let z = zone();
    let t0 = at("2026-01-15 10:00");
    let mut l = Ledger::start(&z, t0, all(10_000.0)).unwrap();
    // prod: 10 h after midnight, 2 kWh: taken; import: above the counter: refused;
    // export: 1 MWh below it, more than 10 h could explain: refused.
    let taken = l.import(&[
        (Production, Some(8_000.0), Some(5_500.0)),
        (Import, Some(10_500.0), None),
        (Export, Some(-990_000.0), None),
    ]);
    assert_eq!(taken, [Production]);
    assert!(close(l.today.energy[Production], 2_000.0));
    assert!(close(
        l.yesterday.as_ref().unwrap().energy[Production],
        5_500.0
    ));
    assert!(close(l.today.energy[Import], 0.0));
}

#[test]
fn battery_energy_has_its_day_month_and_year() {
    let z = zone();
    let mut c = all(1000.0);
    c[Flow::BatteryCharged] = Some(500.0);
    c[Flow::BatteryDischarged] = Some(800.0);
    let mut l = Ledger::start(&z, at("2026-01-31 23:00"), c).unwrap();
    c[Flow::BatteryCharged] = Some(700.0);
    c[Flow::BatteryDischarged] = Some(1400.0);
    l.advance(&z, &[], at("2026-02-01 01:00"), c, None);
    let totals: Vec<(String, f64)> = l
        .totals(false)
        .iter()
        .filter(|f| f.of.is_battery())
        .map(|f| (f.name(), (f.value * 1000.0).round()))
        .collect();
    // Half before midnight (January's), half after (today's, February's).
    #[rustfmt::skip]
    assert_eq!(totals, [
        ("battery_charged/daily".to_string(), 100.0), ("battery_charged/month".to_string(), 100.0), ("battery_charged/year".to_string(), 200.0),
        ("battery_discharged/daily".to_string(), 300.0), ("battery_discharged/month".to_string(), 300.0), ("battery_discharged/year".to_string(), 600.0),
    ]);
    let daily: Vec<String> = l
        .daily_fields()
        .iter()
        .filter(|f| f.of.is_battery())
        .map(|f| format!("{}={}", f.name(), f.value.round()))
        .collect();
    assert_eq!(
        daily,
        [
            "battery_charged_whLifetime_00h=600",
            "battery_charged_today=100",
            "battery_charged_yesterday=100",
            "battery_discharged_whLifetime_00h=1100",
            "battery_discharged_today=300",
            "battery_discharged_yesterday=300"
        ]
    );
    // Version 1 (six values per array, read by PerFlow) and 2 read; a newer one does not.
    let v2 = text(&l);
    let v1 = parse(&v2.replace("\"version\":2", "\"version\":1")).unwrap();
    assert_eq!(v1.counters, l.counters);
    let v3 = parse(&v2.replace("\"version\":2", "\"version\":3")).unwrap_err();
    assert!(v3.contains("newer envoy2mqtt"), "{v3}");
}
