//! The Envoy's JSON answers (`/ivp/meters`, `/ivp/meters/readings`, `/api/v1/production`,
//! `/production.json`) into the plain structs of [`reading`](crate::reading) and
//! [`source`](crate::source). A parse error is a short `String` that says what was
//! expected; the caller logs it and skips the answer. Pure.

use serde::Deserialize;

use crate::reading::{Channel, Inverters, Meter, MeterReading, Role};
use crate::source::V1;

/// Parses `body`, an answer of `what`.
pub fn parse<T: for<'de> Deserialize<'de>>(what: &str, body: &str) -> Result<T, String> {
    serde_json::from_str(body).map_err(|e| format!("{what} is not the JSON expected: {e}"))
}

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
            // `activePower`, as pyenphase reads it; `instantaneousDemand` differs on some
            // channels of firmware 8.3 (a few percent) and is the fallback.
            power: self
                .active_power
                .or(self.instantaneous_demand)
                .unwrap_or(0.0),
            apparent: self.apparent_power,
            voltage: self.voltage,
            current: self.current,
            line: 0,
        }
    }
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
    fn a_raw_tick_reads_the_same_powers_as_a_data_poll() {
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/envoy");
        let mut checked = 0;
        for dir in std::fs::read_dir(fixtures).unwrap() {
            let Ok(body) = std::fs::read_to_string(dir.unwrap().path().join("ivp_meters_readings"))
            else {
                continue;
            };
            let (Ok(full), Ok(raw)) = (readings(&body), crate::scan::raw_readings(&body)) else {
                continue;
            };
            type Powers = Vec<(u64, f64, Vec<(f64, f64)>)>;
            let powers = |v: &[MeterReading]| -> Powers {
                v.iter()
                    .map(|r| {
                        let ch = r.channels.iter().map(|c| (c.power, c.voltage)).collect();
                        (r.eid, r.total.power, ch)
                    })
                    .collect()
            };
            assert_eq!(powers(&full), powers(&raw));
            checked += 1;
        }
        assert!(checked >= 8, "{checked} fixtures with readings");
    }
}
