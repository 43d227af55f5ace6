//! The feed table: each feed's period (from the settings) and next due time, counted from
//! a common start, and the pause after failures. Pure: instants in, instants out.
//!
//! Tick n of a period is due at start + n × period: a slow answer makes the loop skip
//! ticks, never bunch them. A failed request pauses every feed: the Envoy is one small
//! device that answers one request at a time, and what failed one feed would fail the next.

use std::time::{Duration, Instant};

use crate::settings::Config;

/// The longest pause after repeated Envoy failures.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The first tick of `period` after `now`, counted from `start`.
pub fn next_tick(start: Instant, period: Duration, now: Instant) -> Instant {
    let elapsed = now.saturating_duration_since(start).as_nanos();
    let n = elapsed / period.as_nanos() + 1;
    start + period * u32::try_from(n).unwrap_or(u32::MAX)
}

/// The pause after `failures` failures in a row: 1 s, 2 s, 4 s... up to 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(9)).min(MAX_BACKOFF)
}

/// What a row of the table polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Feed {
    /// The data poll: the meter list, the readings and production. Its readings also feed
    /// the raw topics, so a raw tick due with it is done by it.
    Data,
    /// A raw tick: one readings request, the powers only.
    Readings,
    /// The ensemble's inventory (which batteries, controller, collar), hourly, or at the
    /// data period where it tells the grid status; an eighth of a data period after the
    /// data poll.
    Inventory,
    /// The batteries' aggregate (`/ivp/ensemble/secctrl`), at the data period, half a
    /// period after the data poll.
    Battery,
    /// The storage settings (`/admin/lib/tariff`), at the data period, a quarter of a
    /// period after the data poll.
    Tariff,
    /// Each IQ Battery's power (`/ivp/ensemble/power`), at the data period, three quarters
    /// of a period after the data poll.
    BatteryPower,
    /// Each microinverter, every `INVERTER_INTERVAL_SECONDS`, 40 % of a data period after
    /// the data poll.
    Inverters,
    /// The generator (`/ivp/ensemble/generator`), at the data period, ⅝ of it after the
    /// data poll.
    Generator,
    /// The dry-contact relays (`/ivp/ensemble/dry_contacts`), at the data period, ⅞ of it
    /// after the data poll.
    Relays,
}

/// How often the inventory is read: batteries are added or removed by an installer.
pub const INVENTORY_PERIOD: Duration = Duration::from_secs(3600);

/// One feed, its period and when it is next due: ticks at start + offset + n × period.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    feed: Feed,
    period: Duration,
    offset: Duration,
    next: Instant,
}

/// The feed table of the service: the data poll, a raw tick when raw topics are on, the
/// ensemble's inventory and the batteries.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    start: Instant,
    rows: Vec<Row>,
    /// The end of the pause after failures, while one runs.
    paused: Option<Instant>,
}

impl Table {
    /// Feeds counted from `start`: the data poll every `data`, raw ticks every `raw`, the
    /// inventory hourly, the batteries every `data`, half a period after the data poll.
    /// All are due at `start`, in that order, or (`wait`) at their first tick after it.
    pub fn new(
        start: Instant,
        (data, raw, inverters): (Duration, Option<Duration>, Option<Duration>),
        wait: bool,
    ) -> Table {
        let row = |feed, period, offset| Row {
            feed,
            period,
            offset,
            next: if wait { start + offset + period } else { start },
        };
        let zero = Duration::ZERO;
        let mut rows = vec![row(Feed::Data, data, zero)];
        rows.extend(raw.map(|period| row(Feed::Readings, period, zero)));
        rows.push(row(Feed::Inventory, INVENTORY_PERIOD, data / 8));
        rows.push(row(Feed::Battery, data, data / 2));
        rows.push(row(Feed::Tariff, data, data / 4));
        rows.push(row(Feed::BatteryPower, data, data * 3 / 4));
        rows.extend(inverters.map(|period| row(Feed::Inverters, period, data * 2 / 5)));
        rows.push(row(Feed::Generator, data, data * 5 / 8));
        rows.push(row(Feed::Relays, data, data * 7 / 8));
        Table {
            start,
            rows,
            paused: None,
        }
    }

    /// When `feed` is next due; `None` when the table has no such feed.
    pub fn next(&self, feed: Feed) -> Option<Instant> {
        self.rows.iter().find(|r| r.feed == feed).map(|r| r.next)
    }

    /// The feed to run if one is due by `soon`: the data poll first, since it also does
    /// a raw tick's work.
    pub fn due(&self, soon: Instant) -> Option<Feed> {
        self.rows
            .iter()
            .filter(|r| soon >= r.next)
            .map(|r| r.feed)
            .min_by_key(|f| *f != Feed::Data)
    }

    /// `ran` finished at `done`: its row, and a raw tick the data poll did the work of,
    /// move to their next tick after `done`.
    pub fn done(&mut self, ran: Feed, done: Instant) {
        for row in &mut self.rows {
            if row.feed == ran || (ran == Feed::Data && row.feed == Feed::Readings) {
                let (first, after) = (self.start + row.offset, done.max(row.next));
                // A run before its first tick (at start) stands in for that tick.
                row.next = if after < first {
                    first + row.period
                } else {
                    next_tick(first, row.period, after)
                };
            }
        }
    }

    /// `feed` comes every `period` from its next tick on (the inventory, once a
    /// controller or a collar says the grid status in it): call it before [`Table::done`].
    pub fn set_period(&mut self, feed: Feed, period: Duration) {
        for row in self.rows.iter_mut().filter(|r| r.feed == feed) {
            row.period = period;
        }
    }

    /// After `feed` failed on its own: it does not run before `until`; the others go on.
    pub fn pause_feed(&mut self, feed: Feed, until: Instant) {
        for row in self.rows.iter_mut().filter(|r| r.feed == feed) {
            row.next = row.next.max(until);
        }
    }

    /// After a failure: no feed runs before `until` (ticks inside the pause are skipped,
    /// not queued).
    pub fn pause(&mut self, until: Instant) {
        for row in &mut self.rows {
            row.next = row.next.max(until);
        }
        self.paused = Some(until);
    }

    /// The end of the pause after failures, if one is running at `now`.
    pub fn paused(&self, now: Instant) -> Option<Instant> {
        self.paused.filter(|until| *until > now)
    }

    /// The Envoy answers again at `now`: the feeds the pause held come back to their next
    /// tick after `now` (a feed's own back-off stays, where it ends later than the pause).
    pub fn resume(&mut self, now: Instant) {
        let Some(until) = self.paused.take() else {
            return;
        };
        for row in &mut self.rows {
            // Held by the pause: due at its end, or at the first tick after it.
            if row.next <= until + row.period {
                let first = self.start + row.offset;
                row.next = row.next.min(if now < first {
                    first
                } else {
                    next_tick(first, row.period, now)
                });
            }
        }
    }

    /// Makes `feed` due at `at` if it is not due sooner; returns whether that moved it.
    pub fn bring_forward(&mut self, feed: Feed, at: Instant) -> bool {
        match self.rows.iter_mut().find(|r| r.feed == feed) {
            Some(row) if at < row.next => {
                row.next = at;
                true
            }
            _ => false,
        }
    }

    /// When the next feed is due.
    pub fn wake(&self) -> Instant {
        self.rows.iter().map(|r| r.next).min().unwrap_or(self.start)
    }
}

/// The feed table's periods: data, raw, microinverters.
pub fn periods(c: &Config) -> (Duration, Option<Duration>, Option<Duration>) {
    (c.data_interval, c.raw_interval, c.inverter_interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_do_not_drift_or_bunch() {
        let start = Instant::now();
        let s = Duration::from_secs(1);
        let cases = [
            (Duration::from_millis(0), 1000),
            (Duration::from_millis(999), 1000),
            (Duration::from_millis(1000), 2000),
            (Duration::from_millis(1003), 2000),
            // A 3.5 s answer skips ticks 2 and 3.
            (Duration::from_millis(4500), 5000),
        ];
        for (elapsed, want) in cases {
            let next = next_tick(start, s, start + elapsed);
            assert_eq!(next - start, Duration::from_millis(want), "{elapsed:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let got: Vec<u64> = [1, 2, 3, 4, 9, 10, 30]
            .iter()
            .map(|f| backoff(*f).as_secs())
            .collect();
        assert_eq!(got, [1, 2, 4, 8, 256, 300, 300]);
    }

    #[test]
    fn the_data_poll_runs_first_and_does_the_raw_ticks_work() {
        let start = Instant::now();
        let (secs, ms) = (Duration::from_secs, Duration::from_millis);
        let mut t = Table::new(start, (secs(60), Some(secs(1)), None), false);
        assert_eq!(
            t.due(start),
            Some(Feed::Data),
            "all due: the data poll first"
        );
        t.done(Feed::Data, start + ms(300));
        let sides = [
            Feed::Inventory,
            Feed::Battery,
            Feed::Tariff,
            Feed::BatteryPower,
            Feed::Generator,
            Feed::Relays,
        ];
        for side in sides {
            t.done(side, start + ms(300));
        }
        assert_eq!(t.next(Feed::Data), Some(start + secs(60)));
        assert_eq!(
            t.next(Feed::Readings),
            Some(start + secs(1)),
            "done by the data poll"
        );
        assert_eq!(t.due(start + ms(999)), None);
        assert_eq!(t.due(start + secs(1)), Some(Feed::Readings));
        t.done(Feed::Readings, start + ms(1_020));
        assert_eq!(t.next(Feed::Readings), Some(start + secs(2)));
        assert_eq!(
            t.next(Feed::Data),
            Some(start + secs(60)),
            "a raw tick leaves the data poll"
        );
        assert_eq!(t.wake(), start + secs(2));
        // A failure at 2 s pauses both feeds 4 s: ticks inside the pause are skipped.
        t.pause(start + secs(6));
        t.done(Feed::Readings, start + ms(2_010));
        assert_eq!(t.next(Feed::Readings), Some(start + secs(7)));
        assert!(t.bring_forward(Feed::Data, start + secs(8)));
        assert!(
            !t.bring_forward(Feed::Data, start + secs(9)),
            "already due sooner"
        );
        assert_eq!(t.due(start + secs(8)), Some(Feed::Data));
        // The forced poll at 3 s works: every feed the pause held is back at its period,
        // and the pause is over.
        t.resume(start + ms(3_100));
        assert_eq!(t.next(Feed::Readings), Some(start + secs(4)));
        t.done(Feed::Data, start + ms(3_100));
        assert_eq!(
            t.next(Feed::Readings),
            Some(start + secs(5)),
            "the poll did its work"
        );
        assert_eq!(t.paused(start + ms(3_100)), None);
        let mut held = Table::new(start, (secs(60), Some(secs(1)), None), false);
        held.pause(start + secs(16));
        held.pause_feed(Feed::Battery, start + secs(300));
        held.done(Feed::Readings, start + ms(10));
        assert_eq!(held.paused(start + secs(1)), Some(start + secs(16)));
        held.resume(start + ms(2_500));
        assert_eq!(held.next(Feed::Readings), Some(start + secs(3)));
        assert_eq!(
            held.next(Feed::Tariff),
            Some(start + secs(15)),
            "its first tick"
        );
        assert_eq!(
            held.next(Feed::Battery),
            Some(start + secs(300)),
            "a feed's own back-off stays"
        );
        // Without raw topics, one row; waiting one period first.
        let t = Table::new(start, (secs(60), None, None), true);
        assert_eq!((t.next(Feed::Readings), t.wake()), (None, start + secs(60)));
    }

    #[test]
    fn the_batteries_come_half_a_period_after_the_data_poll_and_back_off_alone() {
        let start = Instant::now();
        let (secs, ms) = (Duration::from_secs, Duration::from_millis);
        let mut t = Table::new(start, (secs(60), Some(secs(1)), None), false);
        t.done(Feed::Data, start + ms(300));
        assert_eq!(
            t.due(start + ms(300)),
            Some(Feed::Inventory),
            "then the inventory"
        );
        t.done(Feed::Inventory, start + ms(400));
        assert_eq!(
            t.next(Feed::Inventory),
            Some(start + ms(7_500) + secs(3600))
        );
        assert_eq!(t.due(start + ms(400)), Some(Feed::Battery));
        t.done(Feed::Battery, start + ms(500));
        // Half a period off the data poll; the run at start stood in for the tick at 30 s.
        assert_eq!(t.next(Feed::Battery), Some(start + secs(90)));
        t.done(Feed::Battery, start + secs(90));
        assert_eq!(t.next(Feed::Battery), Some(start + secs(150)));
        // A failing battery endpoint pauses its row only.
        t.pause_feed(Feed::Battery, start + secs(200));
        t.done(Feed::Battery, start + secs(150));
        assert_eq!(t.next(Feed::Battery), Some(start + secs(210)));
        assert_eq!(t.next(Feed::Readings), Some(start + secs(1)));
        assert_eq!(t.next(Feed::Data), Some(start + secs(60)));
    }
}
