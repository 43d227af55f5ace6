//! The meters: `/ivp/meters` (the CTs, their role, state and phase count) and
//! `/ivp/meters/readings` (what each CT measures now), as the Envoy writes them. Pure.

use serde::Deserialize;

use super::parse;

/// What a CT measures, from `measurementType` in `/ivp/meters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Production,
    NetConsumption,
    TotalConsumption,
    /// Backfeed, load, EV charger, PV3P... measured but not published.
    /// The batteries' CT: power > 0 discharging; delivered is discharged, received charged.
    Storage,
    Other,
}

impl Role {
    pub fn from_measurement_type(text: &str) -> Role {
        match text {
            "production" => Role::Production,
            "net-consumption" => Role::NetConsumption,
            "total-consumption" => Role::TotalConsumption,
            "storage" => Role::Storage,
            _ => Role::Other,
        }
    }
}

/// One entry of `/ivp/meters`.
#[derive(Debug, Clone, PartialEq)]
pub struct Meter {
    pub eid: u64,
    pub kind: String,
    pub role: Role,
    pub enabled: bool,
    pub phases: usize,
}

/// One phase of a reading.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Channel {
    pub power: f64,
    pub apparent: f64,
    pub voltage: f64,
    pub current: f64,
    /// The phase number (1-3) once assigned to a CT, 0 in a raw reading.
    pub line: u8,
}

/// One entry of `/ivp/meters/readings`: the meter's aggregate and its channels.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MeterReading {
    pub eid: u64,
    pub total: Channel,
    pub pwr_factor: f64,
    /// Wh delivered (`actEnergyDlvd`): produced, or imported on a net-consumption CT.
    pub delivered: f64,
    /// Wh received (`actEnergyRcvd`): exported, on a net-consumption CT.
    pub received: f64,
    pub channels: Vec<Channel>,
    /// The Envoy's clock at the reading, Unix s (the data poll's; a raw tick reads none).
    pub timestamp: Option<i64>,
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
    #[serde(default)]
    timestamp: Option<i64>,
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
            timestamp: r.timestamp,
        })
        .filter(|r| finite(r.total.power) && finite(r.delivered) && finite(r.received))
        .collect())
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
            let (Ok(full), Ok(raw)) = (
                readings(&body),
                super::super::readings_scan::raw_readings(&body),
            ) else {
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
