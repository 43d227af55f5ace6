//! The feed table: each feed's period and next due time, counted from a common start, and
//! the pause after failures. Pure: instants in, instants out.
//!
//! Tick n of a period is due at start + n × period: a slow answer makes the loop skip
//! ticks, never bunch them. A failed request pauses every feed: the Envoy is one small
//! device that answers one request at a time, and what failed one feed would fail the next.

use std::time::{Duration, Instant};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// The data poll: the meter list, the readings and production. Its readings also feed
    /// the raw topics, so a raw tick due with it is done by it.
    Data,
    /// A raw tick: one readings request, the powers only.
    Readings,
}

/// One feed, its period and when it is next due.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    feed: Feed,
    period: Duration,
    next: Instant,
}

/// The feed table of the service: the data poll, and a raw tick when raw topics are on.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    start: Instant,
    rows: Vec<Row>,
}

impl Table {
    /// Feeds counted from `start`: the data poll every `data`, raw ticks every `raw`. Both
    /// are due at `start`, or (`wait`) one period after it.
    pub fn new(start: Instant, data: Duration, raw: Option<Duration>, wait: bool) -> Table {
        let row = |feed, period| Row {
            feed,
            period,
            next: if wait { start + period } else { start },
        };
        let mut rows = vec![row(Feed::Data, data)];
        rows.extend(raw.map(|period| row(Feed::Readings, period)));
        Table { start, rows }
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

    /// `ran` finished at `done`: its row, and a raw tick it did the work of, move to their
    /// next tick after `done`.
    pub fn done(&mut self, ran: Feed, done: Instant) {
        for row in &mut self.rows {
            if row.feed == ran || ran == Feed::Data {
                row.next = next_tick(self.start, row.period, done.max(row.next));
            }
        }
    }

    /// After a failure: no feed runs before `until` (ticks inside the pause are skipped,
    /// not queued).
    pub fn pause(&mut self, until: Instant) {
        for row in &mut self.rows {
            row.next = row.next.max(until);
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
        let mut t = Table::new(start, secs(60), Some(secs(1)), false);
        assert_eq!(t.due(start), Some(Feed::Data), "both due: the data poll");
        t.done(Feed::Data, start + ms(300));
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
        // Without raw topics, one row; waiting one period first.
        let t = Table::new(start, secs(60), None, true);
        assert_eq!((t.next(Feed::Readings), t.wake()), (None, start + secs(60)));
    }
}
