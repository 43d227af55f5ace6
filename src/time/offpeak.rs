//! Off-peak (heures creuses) windows: parsing and showing `OFFPEAK_HOURS`.
//!
//! Pure functions on plain data. A window may cross midnight (`22:00-06:00`); several
//! windows are separated by commas.

/// One off-peak window, in minutes after local midnight: `start` inclusive, `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: u16,
    pub end: u16,
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (s, e) = (self.start, self.end);
        write!(f, "{:02}:{:02}-{:02}:{:02}", s / 60, s % 60, e / 60, e % 60)
    }
}

/// Parses `HH:MM-HH:MM[,HH:MM-HH:MM...]`. The error says which part is wrong.
pub fn parse(text: &str) -> Result<Vec<Window>, String> {
    let mut windows = Vec::new();
    for part in text.split(',').map(str::trim) {
        let (start, end) = part
            .split_once('-')
            .ok_or_else(|| format!("'{part}' is not a window like 22:00-06:00"))?;
        let window = Window {
            start: minute_of_day(start.trim())
                .ok_or_else(|| format!("'{start}' in '{part}' is not a time like 22:00"))?,
            end: minute_of_day(end.trim())
                .ok_or_else(|| format!("'{end}' in '{part}' is not a time like 06:00"))?,
        };
        if window.start == window.end {
            return Err(format!("'{part}' starts and ends at the same time"));
        }
        if let Some(other) = windows.iter().find(|w: &&Window| w.overlaps(window)) {
            return Err(format!("'{part}' overlaps {other}"));
        }
        windows.push(window);
    }
    Ok(windows)
}

impl Window {
    /// Whether `minute` (after local midnight) falls in the window; a window that ends
    /// before it starts crosses midnight.
    pub fn contains(self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

impl Window {
    /// Whether the two share a minute (each may cross midnight).
    fn overlaps(self, other: Window) -> bool {
        self.contains(other.start) || other.contains(self.start)
    }
}

/// Whether `minute` is off-peak (heures creuses) in any of `windows`.
pub fn is_offpeak(windows: &[Window], minute: u16) -> bool {
    windows.iter().any(|w| w.contains(minute))
}

fn minute_of_day(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    match (h, m) {
        (24, 0) => Some(1440 % 1440),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::type_complexity)] // a table of cases
    fn parses_windows() {
        let cases: &[(&str, Result<Vec<(u16, u16)>, &str>)] = &[
            ("22:00-06:00", Ok(vec![(1320, 360)])),
            ("01:30-07:30, 12:30-14:30", Ok(vec![(90, 450), (750, 870)])),
            ("6:00-8:00", Ok(vec![(360, 480)])),
            ("22:00-24:00", Ok(vec![(1320, 0)])),
            ("22:00", Err("'22:00' is not a window")),
            ("25:00-06:00", Err("'25:00' in")),
            ("22:00-06:0", Err("'06:0' in")),
            ("10:00-10:00", Err("same time")),
            (
                "22:00-06:00,05:00-07:00",
                Err("'05:00-07:00' overlaps 22:00-06:00"),
            ),
            (
                "01:00-03:00,23:00-01:30",
                Err("'23:00-01:30' overlaps 01:00-03:00"),
            ),
            ("12:00-14:00,13:59-15:00", Err("overlaps 12:00-14:00")),
            ("22:00-06:00,06:00-07:00", Ok(vec![(1320, 360), (360, 420)])),
            ("", Err("is not a window")),
        ];
        for (text, want) in cases {
            let got = parse(text);
            match (got, want) {
                (Ok(w), Ok(want)) => {
                    let got: Vec<(u16, u16)> = w.iter().map(|w| (w.start, w.end)).collect();
                    assert_eq!(&got, want, "{text}");
                }
                (Err(e), Err(want)) => assert!(e.contains(want), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn offpeak_minutes_across_midnight_and_in_several_windows() {
        let windows = parse("22:00-06:00,12:30-14:30").unwrap();
        let cases = [
            ("00:00", true),
            ("05:59", true),
            ("06:00", false),
            ("12:29", false),
            ("12:30", true),
            ("14:29", true),
            ("14:30", false),
            ("21:59", false),
            ("22:00", true),
            ("23:59", true),
        ];
        for (time, want) in cases {
            let minute = minute_of_day(time).unwrap();
            assert_eq!(is_offpeak(&windows, minute), want, "{time}");
        }
        assert!(!is_offpeak(&[], 0), "no windows: all peak");
        let to_midnight = parse("22:00-24:00").unwrap();
        assert!(is_offpeak(&to_midnight, 1439) && !is_offpeak(&to_midnight, 0));
    }

    #[test]
    fn displays_as_written() {
        let w = parse("22:00-06:00, 7:30-9:05").unwrap();
        let shown: Vec<String> = w.iter().map(Window::to_string).collect();
        assert_eq!(shown, ["22:00-06:00", "07:30-09:05"]);
    }
}
