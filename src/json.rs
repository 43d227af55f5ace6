//! All JSON handling: the Envoy's and the Enphase cloud's answers in, payloads out.
//!
//! The rest of the program sees plain structs ([`reading`](crate::reading)) and strings, so
//! the JSON library can be swapped for a smaller one in one place. A parse error is a short
//! `String` that says what was expected; callers log it and skip the answer.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::ledger::Ledger;
use crate::reading::{Channel, Inverters, Meter, MeterReading, Role};
use crate::source::V1;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MeterJson {
    eid: u64,
    #[serde(default)]
    state: String,
    #[serde(default)]
    measurement_type: String,
    #[serde(default)]
    phase_count: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ChannelJson {
    instantaneous_demand: Option<f64>,
    active_power: Option<f64>,
    apparent_power: f64,
    voltage: f64,
    current: f64,
}

/// One meter's entry: its aggregate's fields beside its channels. Spelled out rather than
/// a flattened [`ChannelJson`]: `#[serde(flatten)]` buffers every field first (27k
/// instructions a raw tick on a three-phase Envoy).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadingJson {
    eid: u64,
    #[serde(default)]
    instantaneous_demand: Option<f64>,
    #[serde(default)]
    active_power: Option<f64>,
    #[serde(default)]
    apparent_power: f64,
    #[serde(default)]
    voltage: f64,
    #[serde(default)]
    current: f64,
    #[serde(default)]
    pwr_factor: f64,
    #[serde(default)]
    act_energy_dlvd: f64,
    #[serde(default)]
    act_energy_rcvd: f64,
    #[serde(default)]
    channels: Vec<ChannelJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProductionJson {
    watt_hours_today: f64,
    #[serde(default)]
    watt_hours_seven_days: f64,
    watt_hours_lifetime: f64,
    watts_now: f64,
}

/// `/production.json`: only its `production` list matters here.
#[derive(Deserialize)]
struct ProductionListJson {
    production: Vec<ProductionEntryJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProductionEntryJson {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    active_count: u64,
    #[serde(default)]
    w_now: f64,
    #[serde(default)]
    wh_lifetime: f64,
}

impl ChannelJson {
    fn channel(&self) -> Channel {
        Channel {
            power: self
                .instantaneous_demand
                .or(self.active_power)
                .unwrap_or(0.0),
            apparent: self.apparent_power,
            voltage: self.voltage,
            current: self.current,
            line: 0,
        }
    }
}

fn parse<T: for<'de> Deserialize<'de>>(what: &str, body: &str) -> Result<T, String> {
    serde_json::from_str(body).map_err(|e| format!("{what} is not the JSON expected: {e}"))
}

/// `GET /ivp/meters`: the CTs, their role, state and phase count.
pub fn meters(body: &str) -> Result<Vec<Meter>, String> {
    let list: Vec<MeterJson> = parse("/ivp/meters", body)?;
    Ok(list
        .into_iter()
        .map(|m| Meter {
            eid: m.eid,
            role: Role::from_measurement_type(&m.measurement_type),
            kind: m.measurement_type,
            enabled: m.state == "enabled",
            phases: m.phase_count.unwrap_or(1).clamp(1, 3),
        })
        .collect())
}

/// `GET /ivp/meters/readings`.
pub fn readings(body: &str) -> Result<Vec<MeterReading>, String> {
    let list: Vec<ReadingJson> = parse("/ivp/meters/readings", body)?;
    let finite = |v: f64| v.is_finite();
    Ok(list
        .into_iter()
        .map(|r| MeterReading {
            eid: r.eid,
            total: ChannelJson {
                instantaneous_demand: r.instantaneous_demand,
                active_power: r.active_power,
                apparent_power: r.apparent_power,
                voltage: r.voltage,
                current: r.current,
            }
            .channel(),
            pwr_factor: r.pwr_factor,
            delivered: r.act_energy_dlvd,
            received: r.act_energy_rcvd,
            channels: r.channels.iter().map(ChannelJson::channel).collect(),
        })
        .filter(|r| finite(r.total.power) && finite(r.delivered) && finite(r.received))
        .collect())
}

/// `GET /api/v1/production`: the microinverters' totals.
pub fn production(body: &str) -> Result<V1, String> {
    let p: ProductionJson = parse("/api/v1/production", body)?;
    Ok(V1 {
        watts_now: p.watts_now,
        wh_today: p.watt_hours_today,
        wh_seven_days: p.watt_hours_seven_days,
        wh_lifetime: p.watt_hours_lifetime,
    })
}

/// `GET /production.json`: the `inverters` section (power, lifetime energy); `None` when
/// the section is missing or no inverter is active.
pub fn production_inverters(body: &str) -> Result<Option<Inverters>, String> {
    let p: ProductionListJson = parse("/production.json", body)?;
    Ok(p.production
        .into_iter()
        .find(|e| e.kind == "inverters" && e.active_count > 0)
        .map(|e| Inverters {
            watts_now: e.w_now,
            // The inverters' whToday is wrong on every firmware (pyenphase): not published.
            wh_today: None,
            wh_lifetime: (e.wh_lifetime > 0.0).then_some(e.wh_lifetime),
        }))
}

/// The claims of an Enphase JWT that matter here.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// `owner` or `installer`.
    #[serde(rename = "enphaseUser", default)]
    pub enphase_user: String,
    /// The Enlighten account's e-mail address.
    #[serde(default)]
    pub username: String,
}

/// The decoded payload part of a JWT.
pub fn claims(payload: &[u8]) -> Result<Claims, String> {
    serde_json::from_slice(payload)
        .map_err(|e| format!("the token's claims are not JSON with an exp: {e}"))
}

/// The Enlighten login answer: `Ok(Some(session_id))`, or `Ok(None)` when the account
/// needs a second factor (no `session_id`).
pub fn session_id(body: &str) -> Result<Option<String>, String> {
    let v: Value = parse("the Enlighten login answer", body)?;
    Ok(v.get("session_id")
        .and_then(Value::as_str)
        .map(str::to_string))
}

/// The JSON body of the entrez token request.
pub fn token_request(session_id: &str, serial: &str, username: &str) -> String {
    serde_json::json!({"session_id": session_id, "serial_num": serial, "username": username})
        .to_string()
}

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
#[derive(serde::Serialize)]
struct Payload<'a> {
    value: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<&'a str>,
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
    let p = Payload {
        value,
        unit,
        timestamp,
        serial,
        date: dated.date,
        hc: dated.split.map(|s| number(s.0)),
        hp: dated.split.map(|s| number(s.1)),
    };
    serde_json::to_string(&p).unwrap_or_default()
}

#[derive(serde::Serialize)]
struct Slot<'a> {
    time: &'a str,
    value: Value,
}

#[derive(serde::Serialize)]
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

#[derive(serde::Serialize, Deserialize)]
struct LedgerFile {
    version: u32,
    #[serde(flatten)]
    ledger: Ledger,
}

/// The ledger as the state file and the `P/S/ledger` topic keep it.
pub fn ledger(l: &Ledger) -> String {
    let file = LedgerFile {
        version: 1,
        ledger: l.clone(),
    };
    serde_json::to_string(&file).unwrap_or_default()
}

/// Reads what [`ledger`] wrote.
pub fn parse_ledger(text: &str) -> Result<Ledger, String> {
    let file: LedgerFile = parse("ledger state", text)?;
    if file.version != 1 {
        return Err(format!("ledger state version {} is not 1", file.version));
    }
    Ok(file.ledger)
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

/// One Home Assistant entity, as [`discovery`](crate::discovery) decided it.
pub struct Entity<'a> {
    pub name: String,
    pub unique_id: String,
    pub default_entity_id: String,
    pub state_topic: String,
    pub value_template: Option<String>,
    pub device_class: Option<&'static str>,
    pub unit_of_measurement: Option<&'static str>,
    pub state_class: Option<&'static str>,
    pub entity_category: Option<&'static str>,
    pub payload_on: Option<&'static str>,
    pub payload_off: Option<&'static str>,
    /// Availability topics (`online` / `offline`); several: all must say `online`.
    pub availability: Vec<String>,
    pub expire_after: Option<u64>,
    /// Shown by default, or one the user can enable.
    pub enabled_by_default: bool,
    pub serial: &'a str,
    pub model: &'a str,
    pub firmware: &'a str,
    pub node: String,
}

/// The discovery config payload of an entity.
pub fn entity(e: &Entity) -> String {
    let mut map = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            map.insert(k.to_string(), v);
        }
    };
    put("name", Some(e.name.clone().into()));
    put("unique_id", Some(e.unique_id.clone().into()));
    put(
        "default_entity_id",
        Some(e.default_entity_id.clone().into()),
    );
    put("state_topic", Some(e.state_topic.clone().into()));
    put("value_template", e.value_template.clone().map(Value::from));
    put("device_class", e.device_class.map(Value::from));
    put(
        "unit_of_measurement",
        e.unit_of_measurement.map(Value::from),
    );
    put("state_class", e.state_class.map(Value::from));
    put("entity_category", e.entity_category.map(Value::from));
    put("payload_on", e.payload_on.map(Value::from));
    put("payload_off", e.payload_off.map(Value::from));
    match e.availability.as_slice() {
        [] => {}
        [one] => put("availability_topic", Some(one.clone().into())),
        all => {
            let list: Vec<Value> = all
                .iter()
                .map(|t| serde_json::json!({"topic": t}))
                .collect();
            put("availability", Some(list.into()));
            put("availability_mode", Some("all".into()));
        }
    }
    put("expire_after", e.expire_after.map(Value::from));
    put(
        "enabled_by_default",
        (!e.enabled_by_default).then_some(false.into()),
    );
    put(
        "device",
        Some(serde_json::json!({
            "identifiers": [e.node],
            "name": "Envoy",
            "manufacturer": "Enphase",
            "model": e.model,
            "sw_version": e.firmware,
            "serial_number": e.serial,
        })),
    );
    put(
        "origin",
        Some(serde_json::json!({"name": "envoy2mqtt", "sw_version": env!("CARGO_PKG_VERSION")})),
    );
    Value::Object(map).to_string()
}

/// The `P/status` payload.
#[derive(serde::Serialize)]
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

/// A list of strings as JSON (the remembered discovery topics).
pub fn strings(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_default()
}

/// Reads a list of strings; anything else is an empty list.
pub fn parse_strings(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// The `_log.json` of a `--diagnose` capture, in the fixtures' format: `{"headers", "code"}`.
pub fn reply_log(status: u16, headers: &[(String, String)]) -> String {
    let headers: Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    let log = serde_json::json!({"headers": headers, "code": status});
    serde_json::to_string_pretty(&log).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let cases = [
            "",
            "{",
            "null",
            "[{\"eid\":\"x\"}]",
            "<html>",
            "{\"error\":\"404 - Not Found\"}",
        ];
        for body in cases {
            assert!(meters(body).is_err(), "{body}");
            assert!(readings(body).is_err(), "{body}");
            assert!(production(body).is_err() || body == "{", "{body}");
        }
    }

    #[test]
    fn numbers() {
        let cases = [
            (488.925, "488.925"),
            (4374.0, "4374"),
            (-0.0, "0"),
            (3183.793885, "3183.794"),
            (0.1 + 0.2, "0.3"),
        ];
        for (v, want) in cases {
            assert_eq!(number(v).to_string(), want);
        }
    }

    #[test]
    fn login_answers() {
        assert_eq!(
            session_id(r#"{"message":"success","session_id":"abc"}"#),
            Ok(Some("abc".into()))
        );
        assert_eq!(
            session_id(r#"{"message":"success","isBlocked":false}"#),
            Ok(None)
        );
        assert!(session_id("<html>").is_err());
    }
}
