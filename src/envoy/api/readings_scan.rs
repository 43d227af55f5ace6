//! A raw tick's read of `/ivp/meters/readings`: one pass over the text that converts only
//! the numbers a raw tick publishes (each meter's `eid` and power, and each channel's power
//! and voltage, which tell an unwired phase) and steps over everything else, where
//! serde_json converts and stores every field of every channel (see `docs/design.md` for
//! what it measured). The data poll still
//! parses the whole answer with serde ([`super::meters::readings`]); a unit test checks
//! that both read the same powers from every fixture. Pure.
//!
//! Anything that is not well-formed JSON of the expected shape is an error, so that a bad
//! answer is skipped as the data poll would skip it.

use super::meters::{Channel, MeterReading};

/// Nesting deeper than this is not an Envoy answer (and would cost stack).
const MAX_DEPTH: usize = 32;

struct Scan<'a> {
    text: &'a [u8],
    at: usize,
}

type Result<T> = std::result::Result<T, String>;

impl<'a> Scan<'a> {
    fn fail<T>(&self, what: &str) -> Result<T> {
        Err(format!(
            "/ivp/meters/readings is not the JSON expected: {what} at byte {}",
            self.at
        ))
    }

    fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.text.get(self.at) {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(b);
            }
            self.at += 1;
        }
        None
    }

    fn expect(&mut self, byte: u8) -> Result<()> {
        if self.peek() != Some(byte) {
            return self.fail(&format!("'{}' expected", byte as char));
        }
        self.at += 1;
        Ok(())
    }

    /// A string's raw bytes, escapes left as they are (the keys looked for have none).
    fn string(&mut self) -> Result<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.at;
        loop {
            let rest = self.text.get(self.at..).unwrap_or_default();
            let Some(n) = rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            else {
                return self.fail("unterminated string");
            };
            self.at += n + 1;
            match rest[n] {
                b'"' => return Ok(&self.text[start..self.at - 1]),
                b'\\' => self.at += 1,
                _ => return self.fail("control character in a string"),
            }
        }
    }

    /// The text of a number, not converted.
    fn digits(&mut self) -> Result<&'a [u8]> {
        let start = self.at;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.text.get(self.at) {
            self.at += 1;
        }
        if self.at == start {
            return self.fail("value expected");
        }
        Ok(&self.text[start..self.at])
    }

    /// A number, or `null` as `None`.
    fn number(&mut self) -> Result<Option<f64>> {
        if self.peek() == Some(b'n') {
            return self.literal(b"null").map(|_| None);
        }
        let digits = self.digits()?;
        let text = std::str::from_utf8(digits).unwrap_or_default();
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(Some(n)),
            _ => self.fail("number expected"),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<()> {
        if !self.text[self.at..].starts_with(word) {
            return self.fail("value expected");
        }
        self.at += word.len();
        Ok(())
    }

    /// Steps over any value.
    fn skip(&mut self, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return self.fail("nesting too deep");
        }
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'{') => self.object(|s, _| s.skip(depth + 1)),
            Some(b'[') => self.array(|s| s.skip(depth + 1)),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            // Stepped over, not converted: most of the answer is numbers no one reads.
            _ => self.digits().map(|_| ()),
        }
    }

    /// An object: `field` reads (or skips) the value of each key.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &[u8]) -> Result<()>) -> Result<()> {
        self.expect(b'{')?;
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(());
        }
        loop {
            let key = self.string()?;
            self.expect(b':')?;
            field(self, key)?;
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return self.fail("',' or '}' expected"),
            }
        }
    }

    /// An array: `item` reads (or skips) each element.
    fn array(&mut self, mut item: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        self.expect(b'[')?;
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return self.fail("',' or ']' expected"),
            }
        }
    }

    /// One channel: its power and voltage.
    fn channel(&mut self) -> Result<Channel> {
        let (mut active, mut demand, mut voltage) = (None, None, None);
        self.object(|s, key| {
            match key {
                b"activePower" => active = s.number()?,
                b"instantaneousDemand" => demand = s.number()?,
                b"voltage" => voltage = s.number()?,
                _ => s.skip(4)?,
            }
            Ok(())
        })?;
        Ok(Channel {
            power: active.or(demand).unwrap_or(0.0),
            voltage: voltage.unwrap_or(0.0),
            ..Channel::default()
        })
    }

    /// One meter: its eid, power and channels.
    fn meter(&mut self) -> Result<MeterReading> {
        let (mut eid, mut active, mut demand) = (None, None, None);
        let mut channels = Vec::new();
        self.object(|s, key| {
            match key {
                b"eid" => eid = s.number()?,
                b"activePower" => active = s.number()?,
                b"instantaneousDemand" => demand = s.number()?,
                b"channels" => s.array(|s| {
                    channels.push(s.channel()?);
                    Ok(())
                })?,
                _ => s.skip(2)?,
            }
            Ok(())
        })?;
        let eid = match eid {
            Some(e) if e >= 0.0 && e.fract() == 0.0 && e <= u64::MAX as f64 => e as u64,
            _ => return self.fail("an eid expected"),
        };
        Ok(MeterReading {
            eid,
            total: Channel {
                power: active.or(demand).unwrap_or(0.0),
                ..Channel::default()
            },
            channels,
            ..MeterReading::default()
        })
    }
}

/// `GET /ivp/meters/readings` for a raw tick: the powers only (energy, current and power
/// factor are left at 0; a raw tick publishes none of them).
pub fn raw_readings(body: &str) -> Result<Vec<MeterReading>> {
    let mut s = Scan {
        text: body.as_bytes(),
        at: 0,
    };
    let mut meters = Vec::new();
    s.array(|s| {
        meters.push(s.meter()?);
        Ok(())
    })?;
    if s.peek().is_some() {
        return s.fail("text after the answer");
    }
    Ok(meters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_answers_are_errors() {
        let cases = [
            "",
            "{}",
            "[",
            r#"[{"eid": 7046, "activePower": nul"#,
            r#"[{"eid": 7046, "activePower": 1.5}] x"#,
            r#"[{"eid": "7046"}]"#,
            r#"[{"activePower": 1}]"#,
            r#"[{"eid": 1, "activePower": 1e999}]"#,
            r#"[{"eid": 1, "x": "a"#,
            r#"[{"eid": 1 "activePower": 1}]"#,
            &format!("[{}{}]", "[".repeat(100), "]".repeat(100)),
        ];
        for body in cases {
            assert!(raw_readings(body).is_err(), "{body}");
        }
    }

    #[test]
    fn the_numbers_of_a_raw_tick_and_nothing_else() {
        let body = r#"[{"eid":1,"note":"a \"quoted\" {[","flags":[true,false,null,{"x":[]}],
            "activePower":-12.5,"voltage":230,"channels":[{"activePower":null,
            "instantaneousDemand":3,"voltage":231.5},{}]},{"eid":2,"instantaneousDemand":7}]"#;
        let got = raw_readings(body).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].eid, got[0].total.power), (1, -12.5));
        assert_eq!(got[0].total.voltage, 0.0, "not read on a raw tick");
        let channels: Vec<(f64, f64)> = got[0]
            .channels
            .iter()
            .map(|c| (c.power, c.voltage))
            .collect();
        assert_eq!(channels, [(3.0, 231.5), (0.0, 0.0)]);
        assert_eq!((got[1].eid, got[1].total.power), (2, 7.0));
        assert!(raw_readings("[]").unwrap().is_empty());
    }
}
