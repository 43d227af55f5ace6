//! The wall clock, checked against the monotonic one. A router's clock can jump: a day
//! forward and back (a wrong NTP answer, an RTC battery), or from 1970 to now when NTP first
//! sets it. Days are split by the wall clock, so a jump would put energy on the wrong day.
//! Here a jump of more than two minutes between two readings, where the monotonic clock
//! says a few seconds passed, is held: time goes on from before the jump, by the monotonic
//! clock, until the wall clock comes back, or the Envoy's own clock (the time of its
//! readings, set by Enphase's servers) agrees with the new time, or the wall clock keeps its
//! new time for an hour: then it is taken. A first setting of the clock (before 2024), and a
//! jump forward from a time the ledger has already passed (a router that booted with a
//! stale clock), are taken at once. Pure: milliseconds in, milliseconds out.

/// A step of the wall clock beyond the monotonic one larger than this is a jump.
const STEP_MS: i64 = 120_000;
/// A jump the wall clock keeps this long, steadily, is taken.
const HOLD_MS: i64 = 3_600_000;
/// 2024-01-01: before it the clock is not set yet.
const PLAUSIBLE_MS: i64 = 1_704_067_200_000;

/// What changed, for the log (once per jump).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jump {
    /// The wall clock jumped by this much: held.
    Held(i64),
    /// The wall clock is back in step with the time kept.
    Back,
    /// The wall clock kept its new time for an hour (this far from the time kept): taken.
    Taken(i64),
}

/// The time kept, and the jump held if one is.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// The last time given and the monotonic time then, ms.
    last: Option<(i64, i64)>,
    /// Added to the wall clock while a jump is held.
    offset: i64,
    /// When (monotonic ms) the jump held began.
    since: i64,
}

/// Whether `ms` (Unix) is a time the clock can have once it is set.
pub fn plausible(ms: i64) -> bool {
    ms >= PLAUSIBLE_MS
}

/// Whether the clock that read `t` is set (not 1970 before NTP): only then are times
/// published.
pub fn is_set(t: std::time::SystemTime) -> bool {
    plausible(unix_ms(t))
}

/// `t` as Unix milliseconds (0 before 1970).
pub fn unix_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Guard {
    /// The time to use now: `wall` (Unix ms) and `mono` (monotonic ms) read together;
    /// `known`, the latest time the ledger counted at (0: none); `envoy`, the Envoy's
    /// clock just read (Unix ms), if an answer told it.
    pub fn time(
        &mut self,
        wall: i64,
        mono: i64,
        known: i64,
        envoy: Option<i64>,
    ) -> (i64, Option<Jump>) {
        let Some((last, last_mono)) = self.last else {
            self.last = Some((wall, mono));
            return (wall, None);
        };
        let expected = last + (mono - last_mono);
        let gap = wall - expected;
        let envoy_agrees = envoy.is_some_and(|e| (e - wall).abs() <= STEP_MS);
        let mut jump = None;
        if self.offset != 0 {
            let held = wall + self.offset - expected;
            if gap.abs() <= STEP_MS {
                self.offset = 0;
                jump = Some(Jump::Back);
            } else if envoy_agrees {
                self.offset = 0;
                jump = Some(Jump::Taken(gap));
            } else if held.abs() > STEP_MS {
                // Another jump while one is held: held from here.
                self.offset = expected - wall;
                self.since = mono;
                jump = Some(Jump::Held(gap));
            } else if mono - self.since >= HOLD_MS {
                self.offset = 0;
                jump = Some(Jump::Taken(gap));
            }
        } else if gap.abs() > STEP_MS {
            let unset = !plausible(last);
            let stale = gap > 0 && last < known;
            if !(unset || stale || envoy_agrees) {
                self.offset = expected - wall;
                self.since = mono;
                jump = Some(Jump::Held(gap));
            }
        }
        let now = wall + self.offset;
        self.last = Some((now, mono));
        (now, jump)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_768_478_400_000; // 2026-01-15 12:00 UTC
    const S: i64 = 1000;
    const DAY: i64 = 86_400_000;

    /// Readings (wall, mono) every minute; the times given and the jumps said.
    fn run(readings: &[(i64, i64)], known: i64) -> (Vec<i64>, Vec<Jump>) {
        let mut g = Guard::default();
        let mut times = Vec::new();
        let mut jumps = Vec::new();
        for (wall, mono) in readings {
            let (t, j) = g.time(*wall, *mono, known, None);
            times.push(t);
            jumps.extend(j);
        }
        (times, jumps)
    }

    #[test]
    fn a_day_forward_and_back_is_held_and_said_once() {
        let m = 60 * S;
        let r = [
            (T, 0),
            (T + m, m),
            (T + DAY + 2 * m, 2 * m),
            (T + DAY + 3 * m, 3 * m),
            (T + 4 * m, 4 * m),
            (T + 5 * m, 5 * m),
        ];
        let (times, jumps) = run(&r, 0);
        assert_eq!(
            times,
            [T, T + m, T + 2 * m, T + 3 * m, T + 4 * m, T + 5 * m]
        );
        assert_eq!(jumps, [Jump::Held(DAY), Jump::Back]);
    }

    #[test]
    fn a_jump_kept_for_an_hour_is_taken() {
        let m = 60 * S;
        let mut r = vec![(T, 0), (T + m, m)];
        // The clock goes back 3 hours and stays there: held an hour, then taken.
        for n in 2..=63 {
            r.push((T + n * m - 3 * 3_600_000, n * m));
        }
        let (times, jumps) = run(&r, 0);
        assert_eq!(times[2], T + 2 * m);
        assert_eq!(times[61], T + 61 * m, "held");
        assert_eq!(times[62], T + 62 * m - 3 * 3_600_000, "taken after an hour");
        assert_eq!(
            jumps,
            [Jump::Held(-3 * 3_600_000), Jump::Taken(-3 * 3_600_000)]
        );
    }

    #[test]
    fn a_first_setting_and_a_stale_boot_clock_are_taken_at_once() {
        // 1970 until NTP answers.
        let (times, jumps) = run(&[(5 * S, 0), (T, 10 * S)], 0);
        assert_eq!((times[1], jumps.len()), (T, 0));
        // Booted three days behind the ledger's last poll, then NTP.
        let known = T - 60 * S;
        let (times, jumps) = run(&[(T - 3 * DAY, 0), (T, 10 * S)], known);
        assert_eq!((times[1], jumps.len()), (T, 0));
        // A step within two minutes is the clock's own drift or slew: followed.
        let (times, jumps) = run(&[(T, 0), (T + 61 * S, 60 * S)], 0);
        assert_eq!((times[1], jumps.len()), (T + 61 * S, 0));
        assert!(!plausible(5 * S) && plausible(T));
    }

    #[test]
    fn the_envoys_clock_tells_whose_jump_it_is() {
        let m = 60 * S;
        // The Envoy's readings say the new time too: the time jumped, not the machine.
        let mut g = Guard::default();
        g.time(T, 0, 0, Some(T));
        assert_eq!(
            g.time(T + DAY, m, 0, Some(T + DAY + 5 * S)),
            (T + DAY, None)
        );
        // The Envoy says the old time: held; at a poll where the Envoy has the new time, taken.
        let mut g = Guard::default();
        g.time(T, 0, 0, None);
        assert_eq!(
            g.time(T + DAY, m, 0, Some(T + m)),
            (T + m, Some(Jump::Held(DAY - m)))
        );
        assert_eq!(
            g.time(T + DAY + m, 2 * m, 0, None).0,
            T + 2 * m,
            "a raw tick: still held"
        );
        assert_eq!(
            g.time(T + DAY + 2 * m, 3 * m, 0, Some(T + DAY + 2 * m)),
            (T + DAY + 2 * m, Some(Jump::Taken(DAY - m)))
        );
    }

    #[test]
    fn jumps_on_and_beside_their_bounds() {
        let m = 60 * S;
        // A step of exactly two minutes is followed; a millisecond more is a jump.
        let (times, jumps) = run(&[(T, 0), (T + m + 120 * S, m)], 0);
        assert_eq!((times[1], jumps.len()), (T + m + 120 * S, 0));
        let (times, jumps) = run(&[(T, 0), (T + m + 120 * S + 1, m)], 0);
        assert_eq!((times[1], jumps), (T + m, vec![Jump::Held(120 * S + 1)]));
        // In normal running the ledger's latest time is the last reading: a jump forward
        // from it is held, not taken as a stale boot clock.
        let (times, jumps) = run(&[(T, 0), (T + DAY, m)], T);
        assert_eq!((times[1], jumps), (T + m, vec![Jump::Held(DAY - m)]));
    }

    #[test]
    fn a_second_jump_while_one_is_held_is_held_from_there() {
        let m = 60 * S;
        let mut g = Guard::default();
        g.time(T, 0, 0, None);
        assert_eq!(
            g.time(T + DAY, m, 0, None),
            (T + m, Some(Jump::Held(DAY - m)))
        );
        // Two minutes past the held jump: still the first jump, the wall clock's step followed.
        assert_eq!(
            g.time(T + DAY + m + 120 * S, 2 * m, 0, None).0,
            T + 2 * m + 120 * S
        );
        // Another day on: held again, time going on by the monotonic clock.
        assert_eq!(
            g.time(T + 2 * DAY, 3 * m, 0, None),
            (
                T + 3 * m + 120 * S,
                Some(Jump::Held(2 * DAY - 3 * m - 120 * S))
            )
        );
        assert_eq!(
            g.time(T + 2 * DAY + m, 4 * m, 0, None).0,
            T + 4 * m + 120 * S
        );
    }
}
