//! The ledger's bounds, one comparison at a time: the gap that starts the ledger again, a
//! step that is jitter, a reset or a jump, the references taken from the original
//! envoy2mqtt, the notes' words. Each case sits on or beside a limit (written to catch the
//! mutants `make mutants` found surviving: docs/development.md).
use super::*;
use crate::readings::Flow::{Consumption, Export, Import, Net, Production, SelfConsumption};

const PARIS: &str = "CET-1CEST,M3.5.0,M10.5.0/3";
const DAY: i64 = 86_400_000;

fn zone() -> Zone {
    Zone::parse(PARIS).unwrap()
}

/// Unix ms of 2026-01-01 00:00 in Paris, plus `ms`.
fn jan1(ms: i64) -> i64 {
    let z = zone();
    let day = Date::parse("2026-01-01").unwrap().days();
    z.day_start(day) * 1000 + ms
}

fn all(wh: f64) -> Counters {
    let mut c = PerFlow::default();
    for i in [Production, Consumption, Import, Export, SelfConsumption] {
        c[i] = Some(wh);
    }
    c[Net] = Some(0.0);
    c
}

fn gap(notes: &[Note]) -> Option<i64> {
    notes.iter().find_map(|n| match n {
        Note::Gap { days } => Some(*days),
        _ => None,
    })
}

#[test]
fn a_gap_is_more_than_40_days_by_date_or_41_by_time() {
    let z = zone();
    let min = 60_000;
    // (what, last poll, next poll, the date the ledger says for the last poll (days
    // after its real one, as a damaged state may), gap expected)
    #[rustfmt::skip]
    let cases = [
        ("41 dates apart, 41 days less 30 s", jan1(min), jan1(41 * DAY + 30_000), 0, Some(41)),
        ("40 dates apart, 40 days", jan1(12 * 60 * min), jan1(40 * DAY + 12 * 60 * min), 0, None),
        ("40 dates apart by a date a day ahead, exactly 41 days", jan1(min), jan1(41 * DAY + min), 1, None),
        ("40 dates apart by a date a day ahead, 41 days and 1 ms", jan1(min), jan1(41 * DAY + min + 1), 1, Some(40)),
        ("39 dates apart by a date a day ahead, 40 days", jan1(min), jan1(40 * DAY + min), 1, None),
    ];
    for (what, last, next, ahead, want) in cases {
        let mut l = Ledger::start(&z, last, all(0.0)).unwrap();
        l.today.date = Date::from_days(l.today.date.days() + ahead);
        l.today.start = z.day_start(l.today.date.days());
        let notes = l.advance(&z, &[], next, all(1000.0), None);
        assert_eq!(gap(&notes), want, "{what}");
    }
}

#[test]
fn a_gap_keeps_the_counters_and_the_integrated_battery_energy() {
    let z = zone();
    let mut l = Ledger::start(&z, jan1(0), all(100.0)).unwrap();
    let integrated = Integrated {
        charged: 1234.0,
        discharged: 567.0,
        at_ms: jan1(0),
        watts: 0.0,
    };
    l.integrated = Some(integrated);
    let notes = l.advance(&z, &[], jan1(50 * DAY), all(9000.0), None);
    assert_eq!(gap(&notes), Some(50));
    assert_eq!(l.integrated, Some(integrated));
    assert_eq!(l.counters[Production], Some(9000.0));
    assert_eq!(l.today.energy[Production], 0.0);
}

/// The production counter's polls, one hour apart from 10:00, and the energy counted.
fn steps(readings: &[f64]) -> (f64, Vec<Note>) {
    let z = zone();
    let t0 = jan1(10 * 3_600_000);
    let mut l = Ledger::start(&z, t0, all(readings[0])).unwrap();
    let mut notes = Vec::new();
    for (n, wh) in readings.iter().enumerate().skip(1) {
        let mut c = all(readings[0]);
        c[Production] = Some(*wh);
        notes.extend(l.advance(&z, &[], t0 + n as i64 * 3_600_000, c, None));
    }
    (l.today.energy[Production], notes)
}

#[test]
fn steps_on_and_beside_their_limits() {
    // The limit of one hour: 50 kW for an hour and 5 kWh of slack.
    #[rustfmt::skip]
    let cases: &[(&str, &[f64], f64, usize)] = &[
        ("the same value for four hours: no step, no reset", &[1000.0, 1000.0, 1000.0, 1000.0, 1000.0], 0.0, 0),
        ("back 0.5 Wh three times: jitter, not a reset", &[1000.0, 999.5, 999.5, 999.5, 1010.0], 10.0, 0),
        ("up by the hour's limit exactly: counted", &[1000.0, 56_000.0], 55_000.0, 0),
        ("up by 1 Wh more than the limit: a jump, not counted", &[1000.0, 56_001.0], 0.0, 1),
        // Reset to 100, counting 100 (100 → 200) while below; 100 more (200 → 300); back on
        // the old series at 1500: what it gained past 1000, less the 200 counted, so that
        // the day holds what the counter really gained: 500.
        ("a reset, counted below, then back on the old series", &[1000.0, 100.0, 150.0, 200.0, 300.0, 1500.0], 500.0, 1),
    ];
    for (what, readings, want, rebased) in cases {
        let (today, notes) = steps(readings);
        assert!((today - want).abs() < 1e-6, "{what}: {today} Wh, {notes:?}");
        let n = notes
            .iter()
            .filter(|n| matches!(n, Note::Rebased { .. }))
            .count();
        assert_eq!(n, *rebased, "{what}: {notes:?}");
    }
}

#[test]
fn the_net_counter_steps_back_by_less_than_jitter_and_it_counts() {
    let z = zone();
    let t0 = jan1(10 * 3_600_000);
    let mut l = Ledger::start(&z, t0, all(1000.0)).unwrap();
    let mut c = all(1000.0);
    c[Net] = Some(-0.5);
    let notes = l.advance(&z, &[], t0 + 60_000, c, None);
    assert!(notes.is_empty(), "{notes:?}");
    assert!((l.today.energy[Net] + 0.5).abs() < 1e-9);
    assert_eq!(l.counters[Net], Some(-0.5));
}

#[test]
fn a_poll_at_the_same_millisecond_is_not_the_clock_going_back() {
    let z = zone();
    let t0 = jan1(10 * 3_600_000);
    let mut l = Ledger::start(&z, t0, all(1000.0)).unwrap();
    assert_eq!(l.advance(&z, &[], t0, all(1001.0), None), []);
    assert_eq!(l.today.energy[Production], 1.0);
    assert_eq!(
        l.advance(&z, &[], t0 - 5000, all(1002.0), None),
        [Note::ClockBack { seconds: 5 }]
    );
}

#[test]
fn the_first_plausible_year_is_2024() {
    let z = zone();
    let new_year_2024 = z.day_start(Date::parse("2024-01-01").unwrap().days()) * 1000;
    assert!(Ledger::start(&z, new_year_2024, all(0.0)).is_ok());
    assert_eq!(
        Ledger::start(&z, new_year_2024 - 1, all(0.0)).unwrap_err(),
        Note::ClockUnset(Date::parse("2023-12-31").unwrap())
    );
}

#[test]
fn a_today_days_away_from_its_last_poll_is_not_sound() {
    let z = zone();
    let good = Ledger::start(&z, jan1(5 * DAY + 3_600_000), all(5.0)).unwrap();
    for (ahead, sound) in [(-5, false), (-2, false), (-1, true), (1, true), (2, false)] {
        let mut l = good.clone();
        l.today.date = Date::from_days(l.today.date.days() + ahead);
        assert_eq!(l.restored(&z).is_some(), sound, "{ahead} days");
    }
}

#[test]
fn derived_counters_are_held_only_with_both_import_and_export() {
    let mut before = all(1000.0);
    before[Consumption] = Some(3000.0);
    for (import, export, held) in [
        (Some(1000.0), Some(1000.0), true),
        (Some(1000.0), None, false),
        (None, Some(1000.0), false),
    ] {
        let mut now = before;
        (now[Import], now[Export]) = (import, export);
        now[Consumption] = Some(2990.0);
        let got = hold(&before, &mut now);
        assert_eq!(got.contains(&Consumption), held, "{import:?} {export:?}");
        assert_eq!(now[Consumption] == Some(3000.0), held);
    }
}

#[test]
fn references_fit_within_what_the_hours_since_midnight_could_make() {
    let z = zone();
    // At 10:00: 10 h at 50 kW and 5 kWh of slack, 505 kWh at most since midnight.
    let t0 = jan1(5 * DAY + 10 * 3_600_000);
    for (midnight, taken) in [
        (1_000_000.0 - 505_000.0, true),
        (1_000_000.0 - 505_001.0, false),
        (1_000_000.0 - 500_000.0, true),
    ] {
        let mut l = Ledger::start(&z, t0, all(1_000_000.0)).unwrap();
        let got = l.import(&[(Production, Some(midnight), Some(42.0))]);
        assert_eq!(got == [Production], taken, "{midnight}");
        if taken {
            let y = l.yesterday.as_ref().unwrap();
            assert_eq!(y.date.to_string(), "2026-01-05");
            let fields = l.daily_fields();
            let yesterday = fields.iter().find(|f| f.name() == "prod_eim_yesterday");
            assert_eq!(yesterday.map(|f| f.value), Some(42.0));
        }
    }
}

#[test]
fn a_yesterday_older_than_yesterday_is_not_published() {
    let z = zone();
    let mut l = Ledger::start(&z, jan1(5 * DAY), all(10.0)).unwrap();
    for (days_back, shown) in [(1, true), (2, false), (0, false)] {
        l.yesterday = Some(Past {
            date: Date::from_days(l.today.date.days() - days_back),
            energy: PerFlow::default(),
        });
        let fields = l.daily_fields();
        let has = fields.iter().any(|f| f.name() == "prod_eim_yesterday");
        assert_eq!(has, shown, "{days_back} days back");
    }
}

#[test]
fn half_hours_are_labelled_with_their_wall_clock_time() {
    let z = zone();
    let mut l = Ledger::start(&z, jan1(0), all(0.0)).unwrap();
    l.advance(&z, &[], jan1(70 * 60_000), all(700.0), None);
    let detailed = l.detailed(&z);
    let (_, slots) = detailed.iter().find(|(f, _)| *f == Production).unwrap();
    let labels: Vec<&str> = slots.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(labels, ["00:00", "00:30", "01:00"]);
    let kwh: Vec<f64> = slots.iter().map(|(_, v)| (v * 1000.0).round()).collect();
    assert_eq!(kwh, [300.0, 300.0, 100.0]);
}

#[test]
fn every_note_says_what_happened() {
    let d = Date::parse("1970-01-01").unwrap();
    #[rustfmt::skip]
    let cases = [
        (Note::ClockUnset(d), "the clock says 1970-01-01: no ledger work until it is set (NTP)"),
        (Note::ClockBack { seconds: 7 }, "the clock went back 7 s: energy counted at the latest time seen"),
        (Note::Rebased { sensor: Production, from: 5.0, to: 1.0 }, "prod_eim_whLifetime went from 5 to 1 Wh (Envoy reboot, firmware update or CT glitch): not counted, the ledger continues from the new value"),
        (Note::Zero { sensor: Import }, "import_eim_whLifetime reads 0: ignored until it counts again"),
        (Note::Gap { days: 50 }, "no reading for 50 days: the ledger starts again today (the energy of the gap is not spread over days)"),
        (Note::NewDay(d), "new day 1970-01-01"),
    ];
    for (note, want) in cases {
        assert_eq!(note.to_string(), want);
    }
}
