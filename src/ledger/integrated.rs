//! The batteries' energy in and out where no storage CT counts it: lifetime counters
//! integrated from the batteries' power (the sum of the units, read every data period),
//! kept with the ledger in the state file and `P/S/ledger` so that they go on across
//! restarts. Trapezoids between two readings, split where the power crosses zero; a gap
//! longer than [`MAX_GAP_MS`] adds nothing (the energy of a silence is not invented). Pure.

use serde::{Deserialize, Serialize};

/// More than any home's batteries give or take (an IQ Battery 5P: 3.84 kW; a dozen of them
/// stay under it): a reading above is not a power.
const MAX_POWER_W: f64 = 50_000.0;

/// Two readings further apart than this are not joined (cron every 15 minutes still is).
pub const MAX_GAP_MS: i64 = 15 * 60_000;

/// The counters and the reading the next one is joined to.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Integrated {
    /// Energy the batteries took in, Wh.
    pub charged: f64,
    /// Energy the batteries gave out, Wh.
    pub discharged: f64,
    /// The last reading: Unix ms, and the power (W, > 0 discharging).
    pub at_ms: i64,
    pub watts: f64,
}

impl Integrated {
    /// Counters at 0 from a first reading.
    pub fn start(at_ms: i64, watts: f64) -> Integrated {
        Integrated {
            at_ms,
            watts,
            ..Integrated::default()
        }
    }

    /// Adds the reading `watts` at `at_ms`. A power no home battery has, or not a number,
    /// is skipped; a reading older than the last one is ignored.
    pub fn add(&mut self, at_ms: i64, watts: f64) {
        if !watts.is_finite() || watts.abs() > MAX_POWER_W || at_ms <= self.at_ms {
            return;
        }
        let ms = at_ms - self.at_ms;
        if ms <= MAX_GAP_MS {
            let hours = ms as f64 / 3_600_000.0;
            let (a, b) = (self.watts, watts);
            if a * b < 0.0 {
                // The power crossed zero: a triangle each side.
                let share = a / (a - b);
                self.count(a / 2.0 * hours * share);
                self.count(b / 2.0 * hours * (1.0 - share));
            } else {
                self.count((a + b) / 2.0 * hours);
            }
        }
        self.at_ms = at_ms;
        self.watts = watts;
    }

    fn count(&mut self, wh: f64) {
        if wh > 0.0 {
            self.discharged += wh;
        } else {
            self.charged -= wh;
        }
    }

    /// Whether it is one this program could have written.
    pub fn sound(&self) -> bool {
        [self.charged, self.discharged, self.watts]
            .iter()
            .all(|v| v.is_finite())
            && self.charged >= 0.0
            && self.discharged >= 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    /// What happens, the readings (ms, W), and the energy in and out after them.
    type Case = (&'static str, &'static [(i64, f64)], f64, f64);

    #[test]
    fn energy_in_and_out_by_trapezoids() {
        #[rustfmt::skip]
        let cases: [Case; 9] = [
            ("steady discharge, 1 kW for an hour", &[(0, 1000.0), (15 * MIN, 1000.0), (30 * MIN, 1000.0), (45 * MIN, 1000.0), (60 * MIN, 1000.0)], 0.0, 1000.0),
            ("steady charge, minute by minute", &[(0, -600.0), (MIN, -600.0), (2 * MIN, -600.0)], 20.0, 0.0),
            ("a ramp", &[(0, 0.0), (12 * MIN, 2000.0)], 0.0, 200.0),
            ("crossing zero: a triangle each side", &[(0, -1000.0), (12 * MIN, 1000.0)], 50.0, 50.0),
            ("a gap of 20 minutes adds nothing", &[(0, 1000.0), (20 * MIN, 1000.0), (21 * MIN, 1000.0)], 0.0, 1000.0 / 60.0),
            ("a reading back in time is ignored", &[(0, 1000.0), (MIN, 1000.0), (MIN / 2, 9000.0), (2 * MIN, 1000.0)], 0.0, 2000.0 / 60.0),
            ("no battery power is a number", &[(0, 1000.0), (MIN, f64::NAN), (2 * MIN, 1e9), (3 * MIN, 1000.0)], 0.0, 50.0),
            ("idle: zero, and zero again", &[(0, 0.0), (MIN, 0.0), (2 * MIN, 0.0)], 0.0, 0.0),
            ("50 kW is still a power", &[(0, 50_000.0), (MIN, 50_000.0)], 0.0, 50_000.0 / 60.0),
        ];
        for (what, readings, charged, discharged) in cases {
            let mut i = Integrated::start(readings[0].0, readings[0].1);
            for (at, w) in &readings[1..] {
                i.add(*at, *w);
            }
            assert!(
                (i.charged - charged).abs() < 1e-9 && (i.discharged - discharged).abs() < 1e-9,
                "{what}: {} in, {} out",
                i.charged,
                i.discharged
            );
            assert!(i.sound(), "{what}");
        }
        let damaged = Integrated {
            charged: -1.0,
            ..Integrated::default()
        };
        assert!(!damaged.sound());
    }
}
