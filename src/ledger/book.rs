//! The energy ledger (docs/topics.md): today, yesterday, month and year energy,
//! half-hour detail, the day's peak grid import and the off-peak split, from the Envoy's
//! lifetime counters.
//!
//! Pure: a time and counters in, the ledger updated and notes for the log out. Every poll
//! adds the counters' increase since the previous poll, spread linearly over the time
//! between them, minute by minute; so a midnight, a half-hour or an off-peak edge crossed
//! between two polls is placed by linear interpolation, and missed midnights roll one
//! day at a time. A counter that goes backwards (the net counter excepted) adds nothing: if
//! it is back above its reference within `RESET_POLLS` polls it was a glitch, else a reset
//! and the ledger re-bases on it and says so. A jump by more than [`MAX_POWER_W`] could
//! explain re-bases at once; a 0 is ignored. Nothing happens while the clock is before 2024.

use serde::{Deserialize, Serialize};

use super::counters::PerFlow;
use super::integrated::Integrated;
use crate::readings::{Field, Flow, Measure, Part};
use crate::time::offpeak::{self, Window};
use crate::time::zone::{Date, Zone};

/// The flows of the half-hour detail; `slots` are in this order.
pub const FLOWS: [Flow; 4] = [
    Flow::Production,
    Flow::Consumption,
    Flow::Import,
    Flow::Export,
];
/// The energy tree's flows (`{tree}/daily`, `month`, `year`): the detail's and the
/// batteries'.
const TREE: [Flow; 6] = [
    Flow::Production,
    Flow::Consumption,
    Flow::Import,
    Flow::Export,
    Flow::BatteryCharged,
    Flow::BatteryDischarged,
];
/// The flows split into off-peak (hc) and peak (hp) with `OFFPEAK_HOURS`.
const SPLIT: [Flow; 2] = [Flow::Consumption, Flow::Import];
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

/// Lifetime counters in Wh; `None` where the system has no such CT.
pub type Counters = PerFlow<Option<f64>>;

/// One local day's energy, in Wh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Day {
    pub date: Date,
    /// Unix second of the day's first second.
    pub start: i64,
    pub energy: PerFlow<f64>,
    /// The part of `energy` inside the off-peak windows.
    pub offpeak: PerFlow<f64>,
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
            energy: PerFlow::default(),
            offpeak: PerFlow::default(),
            slots: Vec::new(),
            max_import: None,
        }
    }
}

/// A finished day: what `_yesterday` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Past {
    pub date: Date,
    pub energy: PerFlow<f64>,
}

/// The ledger: what the state file and the `P/S/ledger` topic keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub today: Day,
    pub yesterday: Option<Past>,
    /// Energy of this month and of this year before today, Wh.
    pub month: PerFlow<f64>,
    pub year: PerFlow<f64>,
    /// The last poll: its time (Unix ms) and the counters the next increase is taken from.
    pub at_ms: i64,
    pub counters: Counters,
    /// A counter below its reference: the first value seen there, and for how many polls.
    #[serde(default)]
    pub below: PerFlow<Option<(f64, u8)>>,
    /// After a reset: the value the counter left, and what was counted since, in case it
    /// comes back to it (a glitch longer than `RESET_POLLS` polls).
    #[serde(default)]
    pub left: PerFlow<Option<(f64, f64)>>,
    /// The batteries' counters integrated from their power, where no storage CT counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrated: Option<Integrated>,
}

/// What happened to the ledger that the log should tell.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    ClockUnset(Date),
    ClockBack { seconds: i64 },
    Rebased { sensor: Flow, from: f64, to: f64 },
    Zero { sensor: Flow },
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
                sensor.stem()
            ),
            Note::Zero { sensor } => write!(
                f,
                "{}_whLifetime reads 0: ignored until it counts again",
                sensor.stem()
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
const MEASURED: [Flow; 3] = [Flow::Production, Flow::Import, Flow::Export];
const DERIVED: [Flow; 2] = [Flow::Consumption, Flow::SelfConsumption];

/// Holds the derived counters of a net-CT system monotone: one below its previous value
/// while no measured counter went back (a reset, which the ledger handles) keeps the
/// previous value. Returns the sensors whose value was held.
pub fn hold(previous: &Counters, now: &mut Counters) -> Vec<Flow> {
    let net_ct = now[Flow::Import].is_some() && now[Flow::Export].is_some();
    let reset = MEASURED
        .iter()
        .any(|&s| matches!((previous[s], now[s]), (Some(p), Some(n)) if n < p - JITTER_WH));
    if !net_ct || reset {
        return Vec::new();
    }
    let mut held = Vec::new();
    for s in DERIVED {
        if let (Some(p), Some(n)) = (previous[s], now[s]) {
            if n < p {
                now[s] = Some(p);
                held.push(s);
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
            month: PerFlow::default(),
            year: PerFlow::default(),
            at_ms,
            counters,
            below: PerFlow::default(),
            left: PerFlow::default(),
            integrated: None,
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
            && finite(&self.today.energy.0)
            && finite(&self.today.offpeak.0)
            && finite(&self.month.0)
            && finite(&self.year.0)
            && self.today.slots.iter().all(|s| finite(s))
            && self.counters.0.iter().flatten().all(|c| c.is_finite())
            && self.yesterday.as_ref().is_none_or(|y| finite(&y.energy.0))
            && self.integrated.as_ref().is_none_or(Integrated::sound);
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
        let mut delta = PerFlow::default();
        for i in Flow::ALL {
            delta[i] = self.increase(i, counters[i], limit, &mut notes);
        }
        // Measured both by the day and by the last poll's time, so that a damaged state
        // whose two disagree cannot make the minute walk below run for years.
        let gap_ms = at.saturating_sub(self.at_ms);
        if day - self.today.date.days() > MAX_GAP_DAYS || gap_ms > (MAX_GAP_DAYS + 1) * 86_400_000 {
            notes.push(Note::Gap {
                days: day - self.today.date.days(),
            });
            // The counters are the ones just read; the batteries' integrated counters go on.
            *self = Ledger {
                integrated: self.integrated,
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

    /// The energy counter `i` adds at this poll, `reading` being its new value: nothing for
    /// a step back (jitter, or a glitch until it lasts `RESET_POLLS` polls) or a jump no
    /// home could make; after a reset, what it counted since.
    fn increase(
        &mut self,
        i: Flow,
        reading: Option<f64>,
        limit: f64,
        notes: &mut Vec<Note>,
    ) -> f64 {
        let (Some(now), Some(before)) = (reading, self.counters[i]) else {
            self.counters[i] = self.counters[i].or(reading);
            return 0.0;
        };
        if now == 0.0 && before != 0.0 {
            notes.push(Note::Zero { sensor: i });
            return 0.0;
        }
        let d = now - before;
        if (-JITTER_WH..0.0).contains(&d) && i != Flow::Net {
            return 0.0;
        }
        if d < 0.0 && i != Flow::Net {
            // Below the reference: a glitch if it comes back, a reset if it stays.
            let (low, polls) = self.below[i].map_or((now, 1), |(low, n)| (low, n + 1));
            if polls < RESET_POLLS {
                self.below[i] = Some((low, polls));
                return 0.0;
            }
            notes.push(Note::Rebased {
                sensor: i,
                from: before,
                to: now,
            });
            // What it counted since it went down is energy all the same.
            let counted = (now - low).clamp(0.0, limit);
            self.below[i] = None;
            self.left[i] = Some((before, counted));
            self.counters[i] = Some(now);
            return counted;
        }
        self.below[i] = None;
        if let Some((from, counted)) =
            self.left[i].filter(|(from, _)| before < *from && now >= *from)
        {
            // Back on the series it left: the energy since then is what that series
            // gained, less what was counted meanwhile.
            self.left[i] = None;
            self.counters[i] = Some(now);
            return (now - from - counted).clamp(0.0, limit);
        }
        self.counters[i] = Some(now);
        if d.abs() > limit {
            notes.push(Note::Rebased {
                sensor: i,
                from: before,
                to: now,
            });
            return 0.0;
        }
        if let Some((_, counted)) = &mut self.left[i] {
            *counted += d;
        }
        d
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
        delta: &PerFlow<f64>,
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
        delta: &PerFlow<f64>,
        share: f64,
        notes: &mut Vec<Note>,
    ) {
        let t = at_ms.div_euclid(1000);
        let day = zone.day(t);
        while self.today.date.days() < day {
            self.roll(zone);
            notes.push(Note::NewDay(self.today.date));
        }
        let offpeak = offpeak::is_offpeak(windows, zone.minute_of_day(t));
        let slot = (((t - self.today.start).max(0) / SLOT_SECONDS) as usize).min(MAX_SLOTS - 1);
        if self.today.slots.len() <= slot {
            self.today.slots.resize(slot + 1, [0.0; 4]);
        }
        for i in Flow::ALL {
            let e = delta[i] * share;
            self.today.energy[i] += e;
            if offpeak {
                self.today.offpeak[i] += e;
            }
        }
        for (k, i) in FLOWS.iter().enumerate() {
            self.today.slots[slot][k] += delta[*i] * share;
        }
    }

    /// Closes today and opens the next day.
    fn roll(&mut self, zone: &Zone) {
        let old = &self.today;
        let next = Date::from_days(old.date.days() + 1);
        let same_year = next.year == old.date.year;
        for i in Flow::ALL {
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
    pub fn import(&mut self, references: &[(Flow, Option<f64>, Option<f64>)]) -> Vec<Flow> {
        let hours = (self.at_ms.div_euclid(1000) - self.today.start) as f64 / 3600.0;
        let mut taken = Vec::new();
        for &(i, midnight, yesterday) in references {
            let (Some(now), Some(midnight)) = (self.counters[i], midnight) else {
                continue;
            };
            let today = now - midnight;
            if (today >= 0.0 || i == Flow::Net) && today.abs() <= MAX_POWER_W * hours + SLACK_WH {
                self.today.energy[i] = today;
                if let Some(y) = yesterday {
                    let past = self.yesterday.get_or_insert(Past {
                        date: Date::from_days(self.today.date.days() - 1),
                        energy: PerFlow::default(),
                    });
                    past.energy[i] = y;
                }
                taken.push(i);
            }
        }
        taken
    }

    /// The `data` fields: `{stem}_whLifetime_00h`, `{stem}_today`, `{stem}_yesterday`.
    pub fn daily_fields(&self) -> Vec<Field> {
        let mut out = Vec::new();
        for i in Flow::ALL {
            let Some(now) = self.counters[i] else {
                continue;
            };
            let today = self.today.energy[i];
            out.push(Field::new(i, Measure::Midnight, now - today));
            out.push(Field::new(i, Measure::Today, today));
            if let Some(y) = self.yesterday.as_ref().filter(|y| self.is_yesterday(y)) {
                out.push(Field::new(i, Measure::Yesterday, y.energy[i]));
            }
        }
        out
    }

    fn is_yesterday(&self, past: &Past) -> bool {
        past.date.days() + 1 == self.today.date.days()
    }

    /// The energy-tree totals (`P/S/{flow}/daily`, …), kWh (W for `max_power`); with
    /// off-peak windows, `{flow}/daily/hc` and `/hp` too.
    pub fn totals(&self, split: bool) -> Vec<Field> {
        let mut out = Vec::new();
        let kwh = |flow, measure, wh: f64| Field::new(flow, measure, wh / 1000.0);
        for i in TREE {
            if self.counters[i].is_none() {
                continue;
            }
            let today = self.today.energy[i];
            out.push(kwh(i, Measure::Daily(None), today));
            if split && SPLIT.contains(&i) {
                let offpeak = self.today.offpeak[i];
                out.push(kwh(i, Measure::Daily(Some(Part::OffPeak)), offpeak));
                out.push(kwh(i, Measure::Daily(Some(Part::Peak)), today - offpeak));
            }
            out.push(kwh(i, Measure::Month, self.month[i] + today));
            out.push(kwh(i, Measure::Year, self.year[i] + today));
        }
        if let Some(w) = self.today.max_import {
            out.push(Field::new(Flow::Import, Measure::Peak, w));
        }
        out
    }

    /// Today's half-hour energy per flow, kWh, labelled with the wall-clock time of each slot
    /// (on the autumn DST day 02:00 and 02:30 come twice).
    pub fn detailed(&self, zone: &Zone) -> Vec<(Flow, Vec<(String, f64)>)> {
        FLOWS
            .iter()
            .enumerate()
            .filter(|(_, i)| self.counters[**i].is_some())
            .map(|(k, flow)| {
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

#[derive(Serialize, Deserialize)]
struct LedgerFile {
    version: u32,
    #[serde(flatten)]
    ledger: Ledger,
}

/// The version [`text`] writes: 2 since the battery flows (8 values per array, 6 in 1).
const VERSION: u32 = 2;

/// The ledger as the state file and the `P/S/ledger` topic keep it.
pub fn text(l: &Ledger) -> String {
    let file = LedgerFile {
        version: VERSION,
        ledger: l.clone(),
    };
    serde_json::to_string(&file).unwrap_or_default()
}

/// Reads what [`text`] wrote, in this version or the one before.
pub fn parse(text: &str) -> Result<Ledger, String> {
    let file: LedgerFile = serde_json::from_str(text)
        .map_err(|e| format!("ledger state is not the JSON expected: {e}"))?;
    if !(1..=VERSION).contains(&file.version) {
        return Err(format!(
            "ledger state version {} is not one this envoy2mqtt reads (1 to {VERSION}): written by a newer envoy2mqtt?",
            file.version
        ));
    }
    Ok(file.ledger)
}

#[cfg(test)]
#[path = "book_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "book_bounds_tests.rs"]
mod bounds_tests;
