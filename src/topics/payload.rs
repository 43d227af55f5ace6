//! Payloads: the `json` format's value objects, the `detailed` half-hours, the `P/status`
//! object, and reading a retained value back. Pure.

use serde::Serialize;
use serde_json::Value;

/// A number for a JSON payload: integers without a fraction, others rounded to 3 decimals.
pub fn number(value: f64) -> Value {
    let rounded = (value * 1000.0).round() / 1000.0;
    if rounded.fract() == 0.0 && rounded.abs() < 1e15 {
        Value::from(rounded as i64)
    } else {
        Value::from(rounded)
    }
}

/// A `json`-format payload, its keys in the contract's order.
#[derive(Serialize)]
struct Payload<'a> {
    value: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    timestamp: &'a str,
    serial: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    date: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hc: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hp: Option<Value>,
}

/// What a ledger value adds to its payload: the day it belongs to, and for a daily value
/// split by `OFFPEAK_HOURS`, its off-peak and peak parts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dated<'a> {
    pub date: Option<&'a str>,
    pub split: Option<(f64, f64)>,
}

/// A `json`-format payload: `{"value", "unit", "timestamp", "serial"}`, then
/// `"date"`, `"hc"`, `"hp"` for ledger values.
pub fn payload(
    value: Value,
    unit: Option<&str>,
    timestamp: &str,
    serial: &str,
    dated: Dated,
) -> String {
    let mut out = Vec::with_capacity(96);
    write_payload(&mut out, value, unit, timestamp, serial, dated);
    String::from_utf8(out).unwrap_or_default()
}

/// [`payload`] appended to `out`, for a buffer kept from one tick to the next.
pub fn write_payload(
    out: &mut Vec<u8>,
    value: Value,
    unit: Option<&str>,
    timestamp: &str,
    serial: &str,
    dated: Dated,
) {
    let p = Payload {
        value,
        unit,
        timestamp,
        serial,
        date: dated.date,
        hc: dated.split.map(|s| number(s.0)),
        hp: dated.split.map(|s| number(s.1)),
    };
    // Serializing plain strings and numbers into memory cannot fail.
    let _ = serde_json::to_writer(out, &p);
}

#[derive(Serialize)]
struct Slot<'a> {
    time: &'a str,
    value: Value,
}

#[derive(Serialize)]
struct Detailed<'a> {
    date: &'a str,
    serial: &'a str,
    interval: &'static str,
    unit: &'static str,
    data: Vec<Slot<'a>>,
}

/// A `detailed` payload: the day's half-hour energy in kWh.
pub fn detailed(date: &str, serial: &str, slots: &[(String, f64)]) -> String {
    let d = Detailed {
        date,
        serial,
        interval: "30min",
        unit: "kWh",
        data: slots
            .iter()
            .map(|(time, kwh)| Slot {
                time,
                value: number(*kwh),
            })
            .collect(),
    };
    serde_json::to_string(&d).unwrap_or_default()
}

/// The `P/status` payload.
#[derive(Serialize)]
pub struct Status<'a> {
    pub status: &'a str,
    pub last_sync: Option<String>,
    pub next_sync: Option<String>,
    pub envoy_count: u32,
    pub errors: &'a [String],
    pub version: &'a str,
    pub firmware: Option<&'a str>,
    pub token_expires: Option<String>,
}

/// Serializes a status.
pub fn status(s: &Status) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// A retained value: a bare number (the original envoy2mqtt, `MQTT_FORMAT=simple`) or a
/// `json` payload, with its `date` when it has one.
pub fn dated_number(payload: &str) -> Option<(f64, Option<String>)> {
    if let Ok(n) = payload.trim().parse::<f64>() {
        return n.is_finite().then_some((n, None));
    }
    let v: Value = serde_json::from_str(payload).ok()?;
    let date = v.get("date").and_then(Value::as_str).map(str::to_string);
    Some((v.get("value")?.as_f64()?, date))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let cases = [
            (488.925, "488.925"),
            (4374.0, "4374"),
            (-0.0, "0"),
            (3183.793885, "3183.794"),
            (0.1 + 0.2, "0.3"),
            // Integers up to 10^15 are written as such; from there on, as floats.
            (999_999_999_999_999.0, "999999999999999"),
            (1e15, "1000000000000000.0"),
        ];
        for (v, want) in cases {
            assert_eq!(number(v).to_string(), want, "{v}");
        }
    }

    #[test]
    fn a_detailed_payload() {
        let slots = [("00:00".to_string(), 0.1234), ("00:30".to_string(), 2.0)];
        assert_eq!(
            detailed("2026-01-15", "122238082763", &slots),
            r#"{"date":"2026-01-15","serial":"122238082763","interval":"30min","unit":"kWh","data":[{"time":"00:00","value":0.123},{"time":"00:30","value":2}]}"#
        );
    }
}
