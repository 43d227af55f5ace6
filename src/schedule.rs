//! The service's clock arithmetic: when the next tick of a period is due, and how long
//! to pause after failures. Pure.
//!
//! Tick n of a period is due at start + n × period: a slow answer makes the loop skip
//! ticks, never bunch them.

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
}
