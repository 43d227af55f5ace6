//! Whether a ledger read back from the broker could be true. Anyone on the LAN can publish
//! a retained `P/S/ledger` (a month of 9e9 Wh stamped now); the bridge takes the retained
//! ledger when it is newer than its file, so before it is trusted it is checked: a time
//! not in the future, no day, month or year holding more than a home could use or make in
//! that time, and no total above what the Envoy's own lifetime counters ever counted. Pure.

use super::book::{Counters, Ledger, MAX_POWER_W};
use crate::readings::Flow;

/// A clock a little ahead of ours is still ours (NTP, a broker on another machine).
const AHEAD_MS: i64 = 5 * 60_000;
/// Rounding and the counters read between two polls.
const SLACK_WH: f64 = 5_000.0;

/// The problem with a ledger read back at `now_ms`, if it is not one the bridge could have
/// kept: times, and the energy of each period against [`MAX_POWER_W`].
pub fn problem(l: &Ledger, now_ms: i64) -> Option<String> {
    if l.at_ms > now_ms + AHEAD_MS {
        return Some(format!(
            "its last poll is {} s in the future",
            (l.at_ms - now_ms) / 1000
        ));
    }
    let day = MAX_POWER_W * 25.0;
    let periods = [
        ("today", &l.today.energy, day),
        ("this month", &l.month, day * 31.0),
        ("this year", &l.year, day * 366.0),
    ];
    for (what, energy, most) in periods {
        for flow in Flow::ALL.into_iter().filter(|f| *f != Flow::Net) {
            let wh = energy[flow];
            if !(0.0..=most).contains(&wh) {
                return Some(format!(
                    "{} {what} is {wh} Wh, more than {MAX_POWER_W} W could make or use",
                    flow.stem()
                ));
            }
        }
    }
    None
}

/// The problem with a ledger read back, against the Envoy's lifetime counters `now` at the
/// first poll: its month or year above what a counter ever counted, or its counters ahead
/// of the Envoy's.
pub fn against(l: &Ledger, now: &Counters) -> Option<String> {
    for flow in Flow::ALL.into_iter().filter(|f| *f != Flow::Net) {
        let Some(counter) = now[flow] else { continue };
        let year = l.year[flow] + l.today.energy[flow];
        if year > counter + SLACK_WH {
            return Some(format!(
                "{} this year is {year} Wh while the Envoy's counter has only ever counted {counter} Wh",
                flow.stem()
            ));
        }
        if l.counters[flow].is_some_and(|c| c > counter + SLACK_WH && counter > 0.0) {
            return Some(format!(
                "its {} counter is ahead of the Envoy's ({counter} Wh)",
                flow.stem()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::zone::Zone;

    const NOW: i64 = 1_768_478_400_000; // 2026-01-15 12:00 UTC

    fn ledger() -> Ledger {
        let zone = Zone::parse("UTC0").unwrap();
        let mut c = Counters::default();
        c[Flow::Production] = Some(5_000_000.0);
        let mut l = Ledger::start(&zone, NOW - 60_000, c).unwrap();
        l.month[Flow::Production] = 250_000.0;
        l.year[Flow::Production] = 3_000_000.0;
        l
    }

    #[test]
    fn forged_ledgers_are_told_apart() {
        let mut counters = Counters::default();
        counters[Flow::Production] = Some(5_001_000.0);
        assert_eq!(problem(&ledger(), NOW), None);
        assert_eq!(against(&ledger(), &counters), None);
        let future = Ledger {
            at_ms: NOW + 3_600_000,
            ..ledger()
        };
        assert!(
            problem(&future, NOW)
                .unwrap()
                .contains("3600 s in the future")
        );
        let mut month = ledger();
        month.month[Flow::Consumption] = 9e9;
        assert!(
            problem(&month, NOW)
                .unwrap()
                .contains("conso_all_eim this month is 9000000000 Wh")
        );
        let mut negative = ledger();
        negative.year[Flow::Import] = -5.0;
        assert!(problem(&negative, NOW).is_some());
        let mut net = ledger();
        net.month[Flow::Net] = -50_000.0;
        assert_eq!(problem(&net, NOW), None, "the net flow may be below 0");
        // Plausible alone, not against the Envoy: 3 MWh this year from a counter at 2 MWh.
        counters[Flow::Production] = Some(2_000_000.0);
        assert!(
            against(&ledger(), &counters)
                .unwrap()
                .contains("has only ever counted")
        );
        let mut ahead = ledger();
        ahead.year[Flow::Production] = 0.0;
        assert!(
            against(&ahead, &counters)
                .unwrap()
                .contains("ahead of the Envoy's")
        );
    }

    #[test]
    fn the_limits_are_where_they_say() {
        let m = 60_000;
        let at = |ms| Ledger {
            at_ms: ms,
            ..ledger()
        };
        // A clock up to 5 minutes ahead is ours; more is the future.
        assert_eq!(problem(&at(NOW + 4 * m), NOW), None);
        assert_eq!(problem(&at(NOW + 5 * m), NOW), None);
        assert!(problem(&at(NOW + 5 * m + 1000), NOW).is_some());
        // 50 kW for 25 hours a day, 31 days a month, 366 a year: the most each may hold.
        let mut full = ledger();
        full.today.energy[Flow::Consumption] = 1_000_000.0;
        full.month[Flow::Consumption] = 30_000_000.0;
        full.year[Flow::Consumption] = 400_000_000.0;
        assert_eq!(problem(&full, NOW), None);
        // Against the counters: the year and today together, up to 5 kWh of slack.
        let mut c = Counters::default();
        c[Flow::Production] = Some(3_010_000.0);
        let mut l = ledger();
        l.counters[Flow::Production] = Some(3_010_000.0);
        l.year[Flow::Production] = 3_000_000.0;
        l.today.energy[Flow::Production] = 15_000.0;
        assert_eq!(against(&l, &c), None, "exactly at the slack");
        l.today.energy[Flow::Production] = 15_001.0;
        assert!(against(&l, &c).is_some(), "year + today above the counter");
        // Counters ahead by the slack exactly are ours; a counter the Envoy reads as 0 (a
        // reset it reports) is not "ahead".
        let mut l = ledger();
        l.year[Flow::Production] = 0.0;
        l.counters[Flow::Production] = Some(3_015_000.0);
        assert_eq!(against(&l, &c), None);
        c[Flow::Production] = Some(0.0);
        assert_eq!(against(&l, &c), None, "a counter at 0");
    }
}
