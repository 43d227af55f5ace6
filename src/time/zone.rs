//! The local time zone: where local days begin, for the ledger (docs/topics.md, the energy ledger).
//!
//! `TZ` is a POSIX string (`CET-1CEST,M3.5.0,M10.5.0/3`, as OpenWrt sets it) or an IANA
//! name read from the zoneinfo directory. Without `TZ`, the system's: `/etc/TZ` (OpenWrt),
//! then `/etc/localtime`, else UTC. The rules come from tz-rs; this module adds the
//! calendar arithmetic the ledger needs, in whole local days counted from 1970-01-01.

use serde::{Deserialize, Serialize};
use tz::TimeZone;

use crate::error::Error;

const DAY: i64 = 86_400;

/// A time zone's rules.
#[derive(Debug, Clone)]
pub struct Zone {
    rules: TimeZone,
    pub name: String,
}

/// A local calendar date; `YYYY-MM-DD` in files and payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Date {
    pub year: i64,
    pub month: u8,
    pub day: u8,
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl From<Date> for String {
    fn from(d: Date) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for Date {
    type Error = String;
    fn try_from(text: String) -> Result<Date, String> {
        Date::parse(&text).ok_or_else(|| format!("'{text}' is not a date like 2026-01-15"))
    }
}

impl Date {
    /// `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Option<Date> {
        let mut parts = text.splitn(3, '-');
        let date = Date {
            year: parts.next()?.parse().ok()?,
            month: parts.next()?.parse().ok()?,
            day: parts.next()?.parse().ok()?,
        };
        (date.month >= 1 && date.month <= 12 && date.day >= 1 && date.day <= 31).then_some(date)
    }

    /// The date of day number `n` (days since 1970-01-01), by H. Hinnant's civil algorithm.
    pub fn from_days(n: i64) -> Date {
        let z = n + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Date { year, month, day }
    }

    /// The day number of this date.
    pub fn days(self) -> i64 {
        let y = self.year - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }
}

/// The latest second RFC 3339 can write: 9999-12-31T23:59:59Z.
const LAST_SECOND: i64 = 253_402_300_799;

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix second, clamped to years 1970 to 9999: cannot fail,
/// whatever a token's `exp` or the clock says.
pub fn utc(secs: i64) -> String {
    let mut out = String::with_capacity(20);
    write_utc(&mut out, secs);
    out
}

/// [`utc`] appended to `out`, for a buffer kept from one tick to the next.
pub fn write_utc(out: &mut String, secs: i64) {
    use std::fmt::Write;
    let t = secs.clamp(0, LAST_SECOND);
    let (day, s) = (t.div_euclid(DAY), t.rem_euclid(DAY));
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{}T{:02}:{:02}:{:02}Z",
        Date::from_days(day),
        s / 3600,
        s / 60 % 60,
        s % 60
    );
}

/// [`utc`] of a time.
pub fn utc_time(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    utc(secs)
}

impl Zone {
    /// A POSIX TZ string or an IANA name; the error says which it could not read.
    pub fn parse(text: &str) -> Result<Zone, String> {
        // tz-rs reads a name as a file under the zoneinfo folders, or as a path: only zone
        // files, never `..` or a device.
        let path = text.trim().trim_start_matches(':');
        if path.contains("..")
            || (path.starts_with('/') && !std::fs::metadata(path).is_ok_and(|m| m.is_file()))
        {
            return Err(format!("'{text}' is not a time zone file"));
        }
        // The parser's own words ("cannot parse integer from empty string") help nobody.
        let rules = TimeZone::from_posix_tz(text.trim()).map_err(|_| {
            format!("'{text}' is neither a POSIX TZ string nor a zone in /usr/share/zoneinfo")
        })?;
        Ok(Zone {
            rules,
            name: text.trim().to_string(),
        })
    }

    /// The zone named by `TZ` if set, else the system's (`/etc/TZ`, `/etc/localtime`), else UTC.
    pub fn system(tz: Option<&str>) -> Result<Zone, Error> {
        if let Some(text) = tz {
            return Zone::parse(text).map_err(|problem| {
                Error::config("TZ", problem, "use an IANA name like Europe/Paris (needs tzdata) or a POSIX string like CET-1CEST,M3.5.0,M10.5.0/3")
            });
        }
        if let Ok(text) = std::fs::read_to_string("/etc/TZ") {
            if let Ok(zone) = Zone::parse(&text) {
                return Ok(zone);
            }
        }
        if let Ok(bytes) = std::fs::read("/etc/localtime") {
            if let Ok(rules) = TimeZone::from_tz_data(&bytes) {
                return Ok(Zone {
                    rules,
                    name: "/etc/localtime".into(),
                });
            }
        }
        Ok(Zone {
            rules: TimeZone::utc(),
            name: "UTC (no TZ, /etc/TZ or /etc/localtime)".into(),
        })
    }

    /// Seconds east of UTC at `t` (Unix seconds).
    pub fn offset(&self, t: i64) -> i64 {
        self.rules
            .find_local_time_type(t)
            .map_or(0, |l| i64::from(l.ut_offset()))
    }

    /// Seconds since 1970-01-01 00:00 local at `t`.
    fn local(&self, t: i64) -> i64 {
        t + self.offset(t)
    }

    /// The local day number of `t`.
    pub fn day(&self, t: i64) -> i64 {
        self.local(t).div_euclid(DAY)
    }

    /// Minutes since local midnight, on the wall clock (for off-peak windows).
    pub fn minute_of_day(&self, t: i64) -> u16 {
        (self.local(t).rem_euclid(DAY) / 60) as u16
    }

    /// `HH:MM` on the wall clock at `t`.
    pub fn clock(&self, t: i64) -> String {
        let m = self.minute_of_day(t);
        format!("{:02}:{:02}", m / 60, m % 60)
    }

    /// The first second of local day `day`: its midnight, or 01:00 where midnight does not
    /// exist (a zone whose clocks go forward at 00:00).
    pub fn day_start(&self, day: i64) -> i64 {
        // Offsets stay within ±26 h: the day starts inside this range.
        let (mut lo, mut hi) = (day * DAY - 2 * DAY, day * DAY + 2 * DAY);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.day(mid) >= day {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-03-29 (spring) and 2026-10-25 (autumn) in Paris, by name and by POSIX string.
    #[test]
    fn paris_dst_days_by_name_and_posix_string() {
        for tz in ["Europe/Paris", "CET-1CEST,M3.5.0,M10.5.0/3"] {
            let z = Zone::parse(tz).unwrap();
            let cases = [
                // (date, UTC second of local midnight, hours in the day)
                ("2026-03-28", 1_774_652_400, 24),
                ("2026-03-29", 1_774_738_800, 23),
                ("2026-03-30", 1_774_821_600, 24),
                ("2026-10-25", 1_792_879_200, 25),
                ("2026-10-26", 1_792_969_200, 24),
            ];
            for (date, midnight, hours) in cases {
                let day = Date::parse(date).unwrap().days();
                assert_eq!(z.day_start(day), midnight, "{tz} {date}");
                assert_eq!(
                    (z.day_start(day + 1) - z.day_start(day)) / 3600,
                    hours,
                    "{tz} {date}"
                );
                assert_eq!(z.day(midnight), day, "{tz} {date}");
                assert_eq!(z.day(midnight - 1), day - 1, "{tz} {date}");
            }
            // 02:30 local happens twice on the autumn day; 02:30 never on the spring day.
            assert_eq!(z.clock(1_792_888_200), "02:30");
            assert_eq!(z.clock(1_792_888_200 + 3600), "02:30");
            assert_eq!(z.clock(1_774_747_800), "03:30");
        }
    }

    #[test]
    fn midnight_that_does_not_exist_starts_the_day_at_one() {
        // Clocks go from 00:00 to 01:00 on the first Sunday of September (a made-up rule).
        let z = Zone::parse("XST3XDT,M9.1.0/0,M4.1.0/0").unwrap();
        let day = Date::parse("2026-09-06").unwrap().days();
        let start = z.day_start(day);
        assert_eq!(z.clock(start), "01:00");
        assert_eq!(z.day(start - 1), day - 1);
    }

    #[test]
    fn utc_times_never_fail() {
        for (secs, want) in [
            (0, "1970-01-01T00:00:00Z"),
            (1_768_473_000, "2026-01-15T10:30:00Z"),
            (1_709_164_799, "2024-02-28T23:59:59Z"),
            (1_709_251_200, "2024-03-01T00:00:00Z"),
            (253_402_300_799, "9999-12-31T23:59:59Z"),
            (253_402_300_800, "9999-12-31T23:59:59Z"),
            (1_000_000_000_000_000, "9999-12-31T23:59:59Z"),
            (i64::MAX, "9999-12-31T23:59:59Z"),
            (-5, "1970-01-01T00:00:00Z"),
            (i64::MIN, "1970-01-01T00:00:00Z"),
        ] {
            assert_eq!(utc(secs), want, "{secs}");
        }
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_768_473_000);
        assert_eq!(
            utc_time(t),
            humantime::format_rfc3339_seconds(t).to_string()
        );
    }

    #[test]
    fn dates_and_day_numbers() {
        let cases = [
            ("1970-01-01", 0),
            ("2000-02-29", 11_016),
            ("2024-01-01", 19_723),
            ("2026-01-15", 20_468),
            ("2026-12-31", 20_818),
        ];
        for (text, n) in cases {
            let d = Date::parse(text).unwrap();
            assert_eq!(d.days(), n, "{text}");
            assert_eq!(Date::from_days(n), d, "{text}");
            assert_eq!(d.to_string(), text);
        }
        assert_eq!(Date::parse("2026-13-01"), None);
        assert_eq!(Date::parse("2026-01"), None);
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(Zone::parse("Europe/Nowhere").is_err());
        assert!(Zone::parse("../../../dev/zero").is_err());
        assert!(Zone::parse("/dev/zero").is_err());
        assert!(Zone::parse(":/dev/zero").is_err());
        assert!(Zone::parse("").is_err());
    }
}
