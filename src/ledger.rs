//! The energy ledger (docs/topics.md): today, yesterday, month and year energy,
//! half-hour detail, the day's peak grid import and the off-peak split, from the Envoy's
//! lifetime counters.
//!
//! Pure: a time and counters in, the ledger updated and notes for the log out. Every poll
//! adds the counters' increase since the previous poll, spread linearly over the time
//! between them, minute by minute; so a midnight, a half-hour or an off-peak edge crossed
//! between two polls is placed by linear interpolation, and missed midnights roll one
//! day at a time. A counter that goes backwards (the net counter excepted) adds nothing: if
//! it is back above its reference within [`RESET_POLLS`] polls it was a glitch, else a reset
//! and the ledger re-bases on it and says so. A jump by more than [`MAX_POWER_W`] could
//! explain re-bases at once; a 0 is ignored. Nothing happens while the clock is before 2024.

use serde::{Deserialize, Serialize};

use crate::reading::{Field, Unit};
use crate::tariff::{self, Window};
use crate::zone::{Date, Zone};

/// The counters the ledger follows, by their topic names.
pub const SENSORS: [&str; 6] = [
    "prod_eim",
    "conso_all_eim",
    "import_eim",
    "grid_eim",
    "eco_eim",
    "conso_net_eim",
];
/// The energy-tree flows and the sensor each follows.
pub const FLOWS: [(&str, usize); 4] = [
    ("production", 0),
    ("consumption", 1),
    ("import", 2),
    ("export", 3),
];
/// The flows split into off-peak (hc) and peak (hp) with `OFFPEAK_HOURS`.
const SPLIT: [&str; 2] = ["consumption", "import"];
/// Import minus export: the one counter that may go down.
const NET: usize = 5;
/// More than any home draws or feeds (36 kVA in France, 3 × 63 A ≈ 43 kW elsewhere): an
/// increase faster than this, plus 5 kWh of slack, is a counter glitch, not energy.
pub const MAX_POWER_W: f64 = 50_000.0;
const SLACK_WH: f64 = 5_000.0;
/// A step back this small is rounding or the two CTs behind a derived counter
/// (self-consumption) not sampled at once: no energy, and the higher value stays the
/// reference so that nothing is counted twice when it climbs back.
const JITTER_WH: f64 = 1.0;
/// A counter that stays below its reference this many polls in a row was reset (an Envoy
/// reboot, a firmware update): the ledger continues from it. Fewer, it was a glitch (a CT
/// misreading), and the reference stays, so that nothing is counted twice when it is back.
const RESET_POLLS: u8 = 3;
/// Before this year the clock is not set yet (a router before NTP).
const FIRST_YEAR: i64 = 2024;
/// A longer silence is not spread over the days: the ledger starts again at today.
const MAX_GAP_DAYS: i64 = 40;
const SLOT_SECONDS: i64 = 1800;
/// 25 hours: the longest day.
const MAX_SLOTS: usize = 50;

/// Lifetime counters in Wh, by [`SENSORS`] index; `None` where the system has no such CT.
pub type Counters = [Option<f64>; 6];

/// One local day's energy, in Wh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Day {
    pub date: Date,
    /// Unix second of the day's first second.
    pub start: i64,
    pub energy: [f64; 6],
    /// The part of `energy` inside the off-peak windows.
    pub offpeak: [f64; 6],
    /// Half-hour energy of the four [`FLOWS`], from the day's start.
    pub slots: Vec<[f64; 4]>,
    /// The day's highest grid import power, W.
    pub max_import: Option<f64>,
}

impl Day {
    fn new(zone: &Zone, day: i64) -> Day {
        Day {
            date: Date::from_days(day),
            start: zone.day_start(day),
            energy: [0.0; 6],
            offpeak: [0.0; 6],
            slots: Vec::new(),
            max_import: None,
        }
    }
}

/// A finished day: what `_yesterday` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Past {
    pub date: Date,
    pub energy: [f64; 6],
}

/// The ledger: what the state file and the `P/S/ledger` topic keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub today: Day,
    pub yesterday: Option<Past>,
    /// Energy of this month and of this year before today, Wh.
    pub month: [f64; 6],
    pub year: [f64; 6],
    /// The last poll: its time (Unix ms) and the counters the next increase is taken from.
    pub at_ms: i64,
    pub counters: Counters,
    /// A counter below its reference: the first value seen there, and for how many polls.
    #[serde(default)]
    pub below: [Option<(f64, u8)>; 6],
    /// After a reset: the value the counter left, and what was counted since, in case it
    /// comes back to it (a glitch longer than [`RESET_POLLS`] polls).
    #[serde(default)]
    pub left: [Option<(f64, f64)>; 6],
}

/// What happened to the ledger that the log should tell.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    ClockUnset(Date),
    ClockBack { seconds: i64 },
    Rebased { sensor: usize, from: f64, to: f64 },
    Zero { sensor: usize },
    Gap { days: i64 },
    NewDay(Date),
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Note::ClockUnset(d) => write!(
                f,
                "the clock says {d}: no ledger work until it is set (NTP)"
            ),
            Note::ClockBack { seconds } => write!(
                f,
                "the clock went back {seconds} s: energy counted at the latest time seen"
            ),
            Note::Rebased { sensor, from, to } => write!(
                f,
                "{}_whLifetime went from {from} to {to} Wh (Envoy reboot, firmware update or \
                 CT glitch): not counted, the ledger continues from the new value",
                SENSORS[*sensor]
            ),
            Note::Zero { sensor } => write!(
                f,
                "{}_whLifetime reads 0: ignored until it counts again",
                SENSORS[*sensor]
            ),
            Note::Gap { days } => write!(
                f,
                "no reading for {days} days: the ledger starts again today (the energy of \
                 the gap is not spread over days)"
            ),
            Note::NewDay(d) => write!(f, "new day {d}"),
        }
    }
}

/// Counters the Envoy measures (production, grid import, grid export), and the ones derived
/// from two of them on a net CT (house consumption = production + import - export,
/// self-consumption = production - export): their CTs are not sampled at once, so a
/// derived counter can step back while every measured one went up.
const MEASURED: [usize; 3] = [0, 2, 3];
const DERIVED: [usize; 2] = [1, 4];

/// Holds the derived counters of a net-CT system monotone: one below its previous value
/// while no measured counter went back (a reset, which the ledger handles) keeps the
/// previous value. Returns the sensors whose value was held.
pub fn hold(previous: &Counters, now: &mut Counters) -> Vec<usize> {
    let net_ct = now[2].is_some() && now[3].is_some();
    let reset = MEASURED
        .iter()
        .any(|&i| matches!((previous[i], now[i]), (Some(p), Some(n)) if n < p - JITTER_WH));
    if !net_ct || reset {
        return Vec::new();
    }
    let mut held = Vec::new();
    for i in DERIVED {
        if let (Some(p), Some(n)) = (previous[i], now[i]) {
            if n < p {
                now[i] = Some(p);
                held.push(i);
            }
        }
    }
    held
}

fn set_clock(zone: &Zone, at_ms: i64) -> Result<i64, Note> {
    let day = zone.day(at_ms.div_euclid(1000));
    let date = Date::from_days(day);
    if date.year < FIRST_YEAR {
        return Err(Note::ClockUnset(date));
    }
    Ok(day)
}

impl Ledger {
    /// A ledger that starts counting at this poll; `None` while the clock is unset.
    pub fn start(zone: &Zone, at_ms: i64, counters: Counters) -> Result<Ledger, Note> {
        let day = set_clock(zone, at_ms)?;
        Ok(Ledger {
            today: Day::new(zone, day),
            yesterday: None,
            month: [0.0; 6],
            year: [0.0; 6],
            at_ms,
            counters,
            below: [None; 6],
            left: [None; 6],
        })
    }

    /// A ledger read back from a file or a topic, if it is one this program could have
    /// written: times after 2024 and before 2200, a today consistent with its last poll, at
    /// most 50 half-hours, finite values. The day's start is derived again from its date,
    /// never trusted.
    pub fn restored(mut self, zone: &Zone) -> Option<Ledger> {
        let day = zone.day(self.at_ms.div_euclid(1000));
        let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        let sound = (1_704_067_200_000..7_258_118_400_000).contains(&self.at_ms)
            && (FIRST_YEAR..2200).contains(&self.today.date.year)
            && (day - self.today.date.days()).abs() <= 1
            && self.today.slots.len() <= MAX_SLOTS
            && finite(&self.today.energy)
            && finite(&self.today.offpeak)
            && finite(&self.month)
            && finite(&self.year)
            && self.today.slots.iter().all(|s| finite(s))
            && self.counters.iter().flatten().all(|c| c.is_finite())
            && self.yesterday.as_ref().is_none_or(|y| finite(&y.energy));
        if !sound {
            return None;
        }
        self.today.start = zone.day_start(self.today.date.days());
        Some(self)
    }

    /// Adds the poll at `at_ms` (Unix ms) with `counters` and the grid import power.
    pub fn advance(
        &mut self,
        zone: &Zone,
        windows: &[Window],
        at_ms: i64,
        counters: Counters,
        import_power: Option<f64>,
    ) -> Vec<Note> {
        let day = match set_clock(zone, at_ms) {
            Ok(day) => day,
            Err(note) => return vec![note],
        };
        let mut notes = Vec::new();
        let at = if at_ms < self.at_ms {
            notes.push(Note::ClockBack {
                seconds: (self.at_ms - at_ms) / 1000,
            });
            self.at_ms
        } else {
            at_ms
        };
        let hours = at.saturating_sub(self.at_ms) as f64 / 3_600_000.0;
        let limit = MAX_POWER_W * hours + SLACK_WH;
        let mut delta = [0.0; 6];
        for (i, now) in counters.iter().enumerate() {
            let (Some(now), Some(before)) = (*now, self.counters[i]) else {
                self.counters[i] = self.counters[i].or(counters[i]);
                continue;
            };
            if now == 0.0 && before != 0.0 {
                notes.push(Note::Zero { sensor: i });
                continue;
            }
            let d = now - before;
            if (-JITTER_WH..0.0).contains(&d) && i != NET {
                continue;
            }
            if d < 0.0 && i != NET {
                // Below the reference: a glitch if it comes back, a reset if it stays.
                let (low, polls) = self.below[i].map_or((now, 1), |(low, n)| (low, n + 1));
                if polls < RESET_POLLS {
                    self.below[i] = Some((low, polls));
                    continue;
                }
                notes.push(Note::Rebased {
                    sensor: i,
                    from: before,
                    to: now,
                });
                // What it counted since it went down is energy all the same.
                delta[i] = (now - low).clamp(0.0, limit);
                self.below[i] = None;
                self.left[i] = Some((before, delta[i]));
                self.counters[i] = Some(now);
                continue;
            }
            self.below[i] = None;
            if let Some((from, counted)) =
                self.left[i].filter(|(from, _)| before < *from && now >= *from)
            {
                // Back on the series it left: the energy since then is what that series
                // gained, less what was counted meanwhile.
                delta[i] = (now - from - counted).clamp(0.0, limit);
                self.left[i] = None;
                self.counters[i] = Some(now);
                continue;
            }
            if d.abs() > limit {
                notes.push(Note::Rebased {
                    sensor: i,
                    from: before,
                    to: now,
                });
            } else {
                delta[i] = d;
                if let Some((_, counted)) = &mut self.left[i] {
                    *counted += d;
                }
            }
            self.counters[i] = Some(now);
        }
        // Measured both by the day and by the last poll's time, so that a damaged state
        // whose two disagree cannot make the minute walk below run for years.
        let gap_ms = at.saturating_sub(self.at_ms);
        if day - self.today.date.days() > MAX_GAP_DAYS || gap_ms > (MAX_GAP_DAYS + 1) * 86_400_000 {
            notes.push(Note::Gap {
                days: day - self.today.date.days(),
            });
            *self = Ledger {
                counters: self.counters,
                ..Ledger::start(zone, at, self.counters).expect("clock checked above")
            };
            notes.push(Note::NewDay(self.today.date));
        } else {
            self.spread(zone, windows, at, &delta, &mut notes);
        }
        if let Some(w) = import_power {
            self.peak(zone, at, w);
        }
        self.at_ms = at;
        notes
    }

    /// The grid import power at `at_ms`, for the day's peak (raw ticks call this too).
    pub fn peak(&mut self, zone: &Zone, at_ms: i64, watts: f64) {
        if zone.day(at_ms.div_euclid(1000)) == self.today.date.days() {
            let top = self.today.max_import.map_or(watts, |m| m.max(watts));
            self.today.max_import = Some(top);
        }
    }

    /// Spreads `delta` linearly over (self.at_ms, to], one wall-clock minute at a time.
    fn spread(
        &mut self,
        zone: &Zone,
        windows: &[Window],
        to: i64,
        delta: &[f64; 6],
        notes: &mut Vec<Note>,
    ) {
        let from = self.at_ms;
        if to == from {
            self.add(zone, windows, from, delta, 1.0, notes);
            return;
        }
        let total = (to - from) as f64;
        let mut s = from;
        while s < to {
            let e = ((s.div_euclid(60_000) + 1) * 60_000).min(to);
            self.add(zone, windows, s, delta, (e - s) as f64 / total, notes);
            s = e;
        }
    }

    /// Adds `share` of `delta` at `at_ms`, rolling to its day first.
    fn add(
        &mut self,
        zone: &Zone,
        windows: &[Window],
        at_ms: i64,
        delta: &[f64; 6],
        share: f64,
        notes: &mut Vec<Note>,
    ) {
        let t = at_ms.div_euclid(1000);
        let day = zone.day(t);
        while self.today.date.days() < day {
            self.roll(zone);
            notes.push(Note::NewDay(self.today.date));
        }
        let offpeak = tariff::is_offpeak(windows, zone.minute_of_day(t));
        let slot = (((t - self.today.start).max(0) / SLOT_SECONDS) as usize).min(MAX_SLOTS - 1);
        if self.today.slots.len() <= slot {
            self.today.slots.resize(slot + 1, [0.0; 4]);
        }
        for (i, d) in delta.iter().enumerate() {
            let e = d * share;
            self.today.energy[i] += e;
            if offpeak {
                self.today.offpeak[i] += e;
            }
        }
        for (k, (_, i)) in FLOWS.iter().enumerate() {
            self.today.slots[slot][k] += delta[*i] * share;
        }
    }

    /// Closes today and opens the next day.
    fn roll(&mut self, zone: &Zone) {
        let old = &self.today;
        let next = Date::from_days(old.date.days() + 1);
        let same_year = next.year == old.date.year;
        for i in 0..6 {
            self.month[i] = if same_year && next.month == old.date.month {
                self.month[i] + old.energy[i]
            } else {
                0.0
            };
            self.year[i] = if same_year {
                self.year[i] + old.energy[i]
            } else {
                0.0
            };
        }
        self.yesterday = Some(Past {
            date: old.date,
            energy: old.energy,
        });
        self.today = Day::new(zone, next.days());
    }

    /// Takes today's values from the original envoy2mqtt's retained `{sensor}_00h` and
    /// `{short}_yesterday` topics, where they fit the counters: a midnight reference above
    /// the counter, or further below it than a day at [`MAX_POWER_W`] could explain, is
    /// not today's.
    pub fn import(&mut self, references: &[(usize, Option<f64>, Option<f64>)]) -> Vec<usize> {
        let hours = (self.at_ms.div_euclid(1000) - self.today.start) as f64 / 3600.0;
        let mut taken = Vec::new();
        for &(i, midnight, yesterday) in references {
            let (Some(now), Some(midnight)) = (self.counters[i], midnight) else {
                continue;
            };
            let today = now - midnight;
            if (today >= 0.0 || i == NET) && today.abs() <= MAX_POWER_W * hours + SLACK_WH {
                self.today.energy[i] = today;
                if let Some(y) = yesterday {
                    let past = self.yesterday.get_or_insert(Past {
                        date: Date::from_days(self.today.date.days() - 1),
                        energy: [0.0; 6],
                    });
                    past.energy[i] = y;
                }
                taken.push(i);
            }
        }
        taken
    }

    /// The `data` fields: `{sensor}_whLifetime_00h`, `{short}_today`, `{short}_yesterday`.
    pub fn daily_fields(&self) -> Vec<Field> {
        let mut out = Vec::new();
        for (i, sensor) in SENSORS.iter().enumerate() {
            let Some(now) = self.counters[i] else {
                continue;
            };
            let wh = |name: String, value: f64| Field {
                name,
                value,
                unit: Unit::WattHour,
            };
            let today = self.today.energy[i];
            out.push(wh(format!("{sensor}_whLifetime_00h"), now - today));
            out.push(wh(format!("{sensor}_today"), today));
            if let Some(y) = self.yesterday.as_ref().filter(|y| self.is_yesterday(y)) {
                out.push(wh(format!("{sensor}_yesterday"), y.energy[i]));
            }
        }
        out
    }

    fn is_yesterday(&self, past: &Past) -> bool {
        past.date.days() + 1 == self.today.date.days()
    }

    /// The energy-tree totals, named by their path under `P/S/`, kWh (W for `max_power`); with
    /// off-peak windows, `{flow}/daily/hc` and `/hp` too.
    pub fn totals(&self, split: bool) -> Vec<Field> {
        let mut out = Vec::new();
        let kwh = |name: String, wh: f64| Field {
            name,
            value: wh / 1000.0,
            unit: Unit::KiloWattHour,
        };
        for (flow, i) in FLOWS {
            if self.counters[i].is_none() {
                continue;
            }
            let today = self.today.energy[i];
            out.push(kwh(format!("{flow}/daily"), today));
            if split && SPLIT.contains(&flow) {
                out.push(kwh(format!("{flow}/daily/hc"), self.today.offpeak[i]));
                out.push(kwh(
                    format!("{flow}/daily/hp"),
                    today - self.today.offpeak[i],
                ));
            }
            out.push(kwh(format!("{flow}/month"), self.month[i] + today));
            out.push(kwh(format!("{flow}/year"), self.year[i] + today));
        }
        if let Some(w) = self.today.max_import {
            out.push(Field {
                name: "max_power".into(),
                value: w,
                unit: Unit::Watt,
            });
        }
        out
    }

    /// Today's half-hour energy per flow, kWh, labelled with the wall-clock time of each slot
    /// (on the autumn DST day 02:00 and 02:30 come twice).
    pub fn detailed(&self, zone: &Zone) -> Vec<(&'static str, Vec<(String, f64)>)> {
        FLOWS
            .iter()
            .enumerate()
            .filter(|(_, (_, i))| self.counters[*i].is_some())
            .map(|(k, (flow, _))| {
                let slots = self
                    .today
                    .slots
                    .iter()
                    .enumerate()
                    .map(|(n, s)| {
                        let at = self.today.start + n as i64 * SLOT_SECONDS;
                        (zone.clock(at), s[k] / 1000.0)
                    })
                    .collect();
                (*flow, slots)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Every counter at the same value `wh` (the net one at 0: it may go down).
    fn all(wh: f64) -> Counters {
        [Some(wh), Some(wh), Some(wh), Some(wh), Some(wh), Some(0.0)]
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
        assert!(close(l.today.energy[0], 200.0), "{:?}", l.today.energy);
        let y = l.yesterday.as_ref().unwrap();
        assert_eq!(y.date.to_string(), "2026-01-14");
        assert!(close(y.energy[0], 100.0));
        assert_eq!(notes, [Note::NewDay(Date::parse("2026-01-15").unwrap())]);
        let fields = l.daily_fields();
        let get = |n: &str| fields.iter().find(|f| f.name == n).unwrap().value;
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
                    close(y.energy[0], hours * 1000.0),
                    "{tz} {date}: {}",
                    y.energy[0]
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
            assert!(close(y.energy[0], yesterday), "{hours} h: {}", y.energy[0]);
            assert!(
                close(l.today.energy[0], 24_000.0),
                "{hours} h: {}",
                l.today.energy[0]
            );
            // The month holds everything before today.
            assert!(
                close(l.month[0], hours as f64 * 2000.0 - 24_000.0),
                "{hours} h"
            );
        }
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table of cases
    fn glitches_rebase_instead_of_counting() {
        let m = 60_000;
        let cases: &[(&str, &[(i64, f64)], f64, usize)] = &[
            // (what, polls, today's Wh, notes)
            (
                "steady",
                &[(0, 5000.0), (m, 5010.0), (2 * m, 5020.0)],
                20.0,
                0,
            ),
            (
                "backwards glitch, then back",
                &[(0, 5000.0), (m, 5010.0), (2 * m, 4000.0), (3 * m, 5020.0)],
                20.0,
                0,
            ),
            (
                // Three polls below: a reset; what it counted from 4000 is energy.
                "backwards step that stays",
                &[
                    (0, 5000.0),
                    (m, 5010.0),
                    (2 * m, 4000.0),
                    (3 * m, 4005.0),
                    (4 * m, 4010.0),
                    (5 * m, 4015.0),
                ],
                25.0,
                1,
            ),
            (
                // Below for longer than a reset takes, then back where it was: the energy
                // is the old series' gain, counted once.
                "long glitch, then back",
                &[
                    (0, 5000.0),
                    (m, 5010.0),
                    (2 * m, 4000.0),
                    (3 * m, 4000.0),
                    (4 * m, 4000.0),
                    (5 * m, 4000.0),
                    (6 * m, 5070.0),
                ],
                70.0,
                1,
            ),
            (
                "reset to a small value",
                &[
                    (0, 5000.0),
                    (m, 5010.0),
                    (2 * m, 3.0),
                    (3 * m, 8.0),
                    (4 * m, 13.0),
                ],
                20.0,
                1,
            ),
            (
                "drop to zero and back",
                &[(0, 5000.0), (m, 5010.0), (2 * m, 0.0), (3 * m, 5030.0)],
                30.0,
                1,
            ),
            (
                "1.19 MWh step",
                &[
                    (0, 5000.0),
                    (m, 5010.0),
                    (2 * m, 1_195_010.0),
                    (3 * m, 1_195_020.0),
                ],
                20.0,
                1,
            ),
        ];
        for (what, polls, today, notes) in cases {
            let (l, got) = run("2026-01-15 10:00", polls);
            assert!(
                close(l.today.energy[0], *today),
                "{what}: {}",
                l.today.energy[0]
            );
            let glitches = got
                .iter()
                .filter(|n| {
                    matches!(
                        n,
                        Note::Rebased { sensor: 0, .. } | Note::Zero { sensor: 0 }
                    )
                })
                .count();
            assert_eq!(glitches, *notes, "{what}: {got:?}");
            // The reference may go below 0 after a reset (today = counter − reference
            // stays true); no day may.
            let days = l.daily_fields();
            assert!(
                days.iter()
                    .filter(|f| !f.name.ends_with("_00h"))
                    .all(|f| f.value >= 0.0),
                "{what}"
            );
        }
    }

    #[test]
    fn net_counter_may_go_down() {
        let z = zone();
        let t0 = at("2026-01-15 12:00");
        let c = |net: f64| [None, None, None, None, None, Some(net)];
        let mut l = Ledger::start(&z, t0, c(1000.0)).unwrap();
        let notes = l.advance(&z, &[], t0 + H, c(400.0), None);
        assert!(notes.is_empty());
        assert!(close(l.today.energy[NET], -600.0));
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
        assert!(close(l.today.energy[0], 150.0));
    }

    #[test]
    fn offpeak_windows_across_midnight_split_consumption_and_import() {
        let z = zone();
        let windows = tariff::parse("22:00-06:00,12:30-14:30").unwrap();
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
        assert!(close(l.today.energy[1], 23_000.0), "{}", l.today.energy[1]);
        assert!(close(l.today.offpeak[1], 9_000.0), "{}", l.today.offpeak[1]);
        let totals = l.totals(true);
        let get = |n: &str| totals.iter().find(|f| f.name == n).map(|f| f.value);
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
                .filter(|f| f.name.ends_with("/hc"))
                .count(),
            0
        );
    }

    #[test]
    fn derived_counters_are_held_unless_a_measured_one_was_reset() {
        // prod, house, import, export, self-consumption, net
        let before = [
            Some(1000.0),
            Some(3000.0),
            Some(2500.0),
            Some(500.0),
            Some(500.0),
            Some(2000.0),
        ];
        let cases: [(&str, Counters, Counters, &[usize]); 5] = [
            (
                "export read 8 Wh ahead: both derived step back, held",
                [
                    Some(1001.0),
                    Some(2994.0),
                    Some(2501.0),
                    Some(508.0),
                    Some(493.0),
                    Some(1993.0),
                ],
                [
                    Some(1001.0),
                    Some(3000.0),
                    Some(2501.0),
                    Some(508.0),
                    Some(500.0),
                    Some(1993.0),
                ],
                &[1, 4],
            ),
            (
                "all up: nothing held",
                [
                    Some(1010.0),
                    Some(3020.0),
                    Some(2515.0),
                    Some(505.0),
                    Some(505.0),
                    Some(2010.0),
                ],
                [
                    Some(1010.0),
                    Some(3020.0),
                    Some(2515.0),
                    Some(505.0),
                    Some(505.0),
                    Some(2010.0),
                ],
                &[],
            ),
            (
                "production counter reset: followed, the ledger re-bases",
                [
                    Some(0.0),
                    Some(2001.0),
                    Some(2501.0),
                    Some(500.0),
                    Some(0.0),
                    Some(2001.0),
                ],
                [
                    Some(0.0),
                    Some(2001.0),
                    Some(2501.0),
                    Some(500.0),
                    Some(0.0),
                    Some(2001.0),
                ],
                &[],
            ),
            (
                "total CT (no import/export): house is measured, not held",
                [Some(1001.0), Some(2990.0), None, None, None, Some(1989.0)],
                [Some(1001.0), Some(2990.0), None, None, None, Some(1989.0)],
                &[],
            ),
            (
                "net counter may go down: not held",
                [
                    Some(1001.0),
                    Some(3000.5),
                    Some(2501.0),
                    Some(503.0),
                    Some(500.0),
                    Some(1998.0),
                ],
                [
                    Some(1001.0),
                    Some(3000.5),
                    Some(2501.0),
                    Some(503.0),
                    Some(500.0),
                    Some(1998.0),
                ],
                &[],
            ),
        ];
        for (name, mut now, want, held) in cases {
            let mut prev = before;
            if name.starts_with("total CT") {
                prev = [Some(1000.0), Some(3000.0), None, None, None, Some(2000.0)];
            }
            assert_eq!(hold(&prev, &mut now), held, "{name}");
            assert_eq!(now, want, "{name}");
        }
    }

    #[test]
    fn month_and_year_restart_at_their_first_day() {
        let (l, _) = run("2026-12-31 23:00", &[(0, 0.0), (2 * H, 2000.0)]);
        // 23:00 → 01:00: half in 2026, half in 2027.
        assert!(close(l.month[0], 0.0) && close(l.year[0], 0.0));
        let totals = l.totals(false);
        let get = |n: &str| totals.iter().find(|f| f.name == n).unwrap().value;
        assert!(close(get("production/year"), 1.0));
        assert!(close(get("production/month"), 1.0));
        let (l, _) = run("2026-01-14 12:00", &[(0, 0.0), (24 * H, 24_000.0)]);
        assert!(close(l.month[0], 12_000.0) && close(l.year[0], 12_000.0));
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
            ("not a number", |l| l.month[2] = f64::NAN),
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
        assert!(close(l.today.energy[0], 1.0));
    }

    #[test]
    fn a_long_silence_starts_again() {
        let (l, notes) = run("2026-01-01 12:00", &[(0, 0.0), (50 * 24 * H, 100_000.0)]);
        assert!(notes.contains(&Note::Gap { days: 50 }));
        assert!(close(l.today.energy[0], 0.0));
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
            (0, Some(8_000.0), Some(5_500.0)),
            (2, Some(10_500.0), None),
            (3, Some(-990_000.0), None),
        ]);
        assert_eq!(taken, [0]);
        assert!(close(l.today.energy[0], 2_000.0));
        assert!(close(l.yesterday.as_ref().unwrap().energy[0], 5_500.0));
        assert!(close(l.today.energy[2], 0.0));
    }
}
