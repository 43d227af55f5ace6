//! What the service tells the log on its own: the hourly sign of life ([`Stats`]), a jump
//! of the wall clock ([`tell_jump`]), and the
//! lines that the LAN can repeat at will (an unknown command, Home Assistant's birth
//! message): the first is logged, the next ones in the same minute are counted, and the
//! count is said once the minute is over. Anyone can publish 10,000 messages; the log of a
//! router's flash should not grow by 10,000 lines. Pure: keys and instants in, what to say
//! out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::time::guard::Jump;

/// The log lines the LAN can repeat, as [`Repeats`] keys (and the words of their counts).
pub const BIRTH: &str = "Home Assistant online messages";
pub const UNKNOWN: &str = "ignored unknown commands or messages";

/// ` (and N more like it before)` when repeats were counted since the last line.
pub fn more(unsaid: u32) -> String {
    if unsaid == 0 {
        String::new()
    } else {
        format!(" (and {unsaid} more like it since the last one said)")
    }
}

/// How often the service says at `info` that it is alive, and what it did.
pub const SIGN_OF_LIFE: Duration = Duration::from_secs(3600);

/// What the service did since its last sign of life.
#[derive(Debug, Default, PartialEq)]
pub struct Stats {
    pub polls: u32,
    pub failed: u32,
    pub messages: usize,
    pub reconnects: u32,
}

impl Stats {
    /// The sign-of-life line for `period`.
    pub fn line(&self, period: Duration) -> String {
        format!(
            "alive: in the last {}, {} Envoy polls ({} failed), {} messages published, {} broker reconnects",
            humantime::format_duration(period),
            self.polls,
            self.failed,
            self.messages,
            self.reconnects
        )
    }
}

/// Says a jump of the wall clock (`time::guard`), once per jump.
pub fn tell_jump(jump: Option<Jump>) {
    let h = |ms: i64| humantime::format_duration(Duration::from_secs(ms.unsigned_abs() / 1000));
    match jump {
        Some(Jump::Held(by)) => log::warn!(
            "the wall clock jumped {} {}: the ledger keeps to the time it kept (taken if the clock keeps it for an hour)",
            h(by),
            if by > 0 { "forward" } else { "back" }
        ),
        Some(Jump::Back) => log::info!("the wall clock is back in step"),
        Some(Jump::Taken(by)) => log::warn!(
            "the wall clock kept its new time ({} off) for an hour: taken",
            h(by)
        ),
        None => {}
    }
}

/// How long repeats of one line are counted rather than logged.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Per kind of line: when the last one was logged, and how many came since, unlogged.
#[derive(Debug, Default)]
pub struct Repeats {
    lines: BTreeMap<&'static str, (Instant, u32)>,
}

impl Repeats {
    /// Whether to log this `key` line at `now`: `Some(n)` to log it, `n` being the
    /// repeats counted and not yet said; `None`: it is counted.
    pub fn allow(&mut self, key: &'static str, now: Instant) -> Option<u32> {
        match self.lines.get_mut(key) {
            Some((at, count)) if now.saturating_duration_since(*at) < WINDOW => {
                *count += 1;
                None
            }
            Some((at, count)) => {
                let unsaid = std::mem::take(count);
                *at = now;
                Some(unsaid)
            }
            None => {
                self.lines.insert(key, (now, 0));
                Some(0)
            }
        }
    }

    /// The lines whose minute is over with repeats unlogged: each key and its count (the
    /// count starts again).
    pub fn due(&mut self, now: Instant) -> Vec<(&'static str, u32)> {
        let mut out = Vec::new();
        for (key, (at, count)) in &mut self.lines {
            if *count > 0 && now.saturating_duration_since(*at) >= WINDOW {
                out.push((*key, *count));
                *at = now;
                *count = 0;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_of_life() {
        let s = Stats {
            polls: 3660,
            failed: 2,
            messages: 18_300,
            reconnects: 1,
        };
        assert_eq!(
            s.line(SIGN_OF_LIFE),
            "alive: in the last 1h, 3660 Envoy polls (2 failed), 18300 messages published, 1 broker reconnects"
        );
    }

    #[test]
    fn the_first_line_then_a_count_a_minute() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = Repeats::default();
        assert_eq!(r.allow("unknown", t0), Some(0));
        let logged = (1..10_000)
            .filter(|n| r.allow("unknown", t0 + s(n % 59)).is_some())
            .count();
        assert_eq!(logged, 0, "the next 9,999 in the minute are counted");
        assert_eq!(
            r.allow("birth", t0 + s(1)),
            Some(0),
            "another line has its own count"
        );
        assert_eq!(r.due(t0 + s(59)), []);
        assert_eq!(r.due(t0 + s(60)), [("unknown", 9_999)]);
        assert_eq!(r.due(t0 + s(200)), [], "said once");
        // A minute after the count was said, the line is logged again.
        assert_eq!(r.allow("unknown", t0 + s(100)), None);
        assert_eq!(
            r.allow("unknown", t0 + s(121)),
            Some(1),
            "with the one counted since"
        );
        assert_eq!(r.due(t0 + s(300)), []);
    }
}
