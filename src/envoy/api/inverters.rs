//! The microinverters one by one: `/ivp/pdm/device_data` (firmware 7 and later: power,
//! DC and AC voltage and current, frequency, temperature, lifetime and today's energy) and,
//! where it does not answer or lists too few, `/api/v1/production/inverters` (power, the
//! highest power, the last report). Read as pyenphase 4 reads them. Pure.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::parse;

/// One microinverter's last report; a number its answer lacks is `None`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Inverter {
    pub serial: String,
    /// Unix seconds.
    pub last_report: f64,
    pub watts: f64,
    pub max_watts: f64,
    pub dc_voltage: Option<f64>,
    pub dc_current: Option<f64>,
    pub ac_voltage: Option<f64>,
    pub ac_current: Option<f64>,
    /// Hz.
    pub frequency: Option<f64>,
    /// °C.
    pub temperature: Option<f64>,
    pub wh_lifetime: Option<f64>,
    pub wh_today: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct V1Json {
    serial_number: String,
    last_report_date: f64,
    last_report_watts: f64,
    max_report_watts: f64,
    /// 1 (or absent): a microinverter; 11: an AC Battery.
    #[serde(default = "microinverter")]
    dev_type: i64,
}

fn microinverter() -> i64 {
    1
}

/// The v1 list, split: the microinverters, and the AC Batteries (`devType` 11) that
/// firmware lists with them. Other device types are passed over, as pyenphase does.
#[derive(Debug, Default)]
pub struct V1List {
    pub inverters: Vec<Inverter>,
    pub acb: Vec<Inverter>,
}

/// `GET /api/v1/production/inverters`.
pub fn v1(body: &str) -> Result<V1List, String> {
    let list: Vec<V1Json> = parse("/api/v1/production/inverters", body)?;
    let mut out = V1List::default();
    for i in list {
        let kind = i.dev_type;
        let unit = Inverter {
            serial: i.serial_number,
            last_report: i.last_report_date,
            watts: i.last_report_watts,
            max_watts: i.max_report_watts,
            ..Inverter::default()
        };
        match kind {
            _ if !finite(&unit) => {}
            1 => out.inverters.push(unit),
            11 => out.acb.push(unit),
            _ => {}
        }
    }
    Ok(out)
}

fn finite(i: &Inverter) -> bool {
    let some = [
        i.dc_voltage,
        i.dc_current,
        i.ac_voltage,
        i.ac_current,
        i.frequency,
        i.temperature,
        i.wh_lifetime,
        i.wh_today,
    ];
    [i.last_report, i.watts, i.max_watts]
        .iter()
        .chain(some.iter().flatten())
        .all(|v| v.is_finite())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceJson {
    dev_name: String,
    sn: String,
    #[serde(default)]
    active: bool,
    channels: Vec<ChannelJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChannelJson {
    watts: WattsJson,
    last_reading: ReadingJson,
    #[serde(default)]
    lifetime: Option<LifetimeJson>,
    #[serde(default)]
    watt_hours: Option<WattHoursJson>,
}

#[derive(Deserialize)]
struct WattsJson {
    now: f64,
    max: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadingJson {
    end_date: f64,
    #[serde(rename = "dcVoltageINmV", default)]
    dc_voltage_mv: Option<f64>,
    #[serde(rename = "dcCurrentINmA", default)]
    dc_current_ma: Option<f64>,
    #[serde(rename = "acVoltageINmV", default)]
    ac_voltage_mv: Option<f64>,
    #[serde(rename = "acCurrentInmA", default)]
    ac_current_ma: Option<f64>,
    #[serde(rename = "acFrequencyINmHz", default)]
    ac_frequency_mhz: Option<f64>,
    #[serde(default)]
    channel_temp: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LifetimeJson {
    #[serde(default)]
    joules_produced: Option<f64>,
}

#[derive(Deserialize)]
struct WattHoursJson {
    #[serde(default)]
    today: Option<f64>,
}

/// `GET /ivp/pdm/device_data`: the active microinverters (`pcu`); `None` where the answer
/// lists fewer than there are (`deviceCount` reached `deviceDataLimit`), then the v1 list
/// is the one to read. An entry that is not a microinverter's is passed over.
pub fn device_data(body: &str) -> Result<Option<Vec<Inverter>>, String> {
    let all: BTreeMap<String, Value> = parse("/ivp/pdm/device_data", body)?;
    let number = |key: &str| all.get(key).and_then(Value::as_f64);
    match (number("deviceCount"), number("deviceDataLimit")) {
        (Some(count), Some(limit)) if count < limit => {}
        _ => return Ok(None),
    }
    let milli = |v: Option<f64>| v.map(|v| v / 1000.0);
    let list: Vec<Inverter> = all
        .values()
        .filter_map(|v| serde_json::from_value::<DeviceJson>(v.clone()).ok())
        .filter(|d| d.dev_name == "pcu" && d.active)
        .filter_map(|d| {
            let c = d.channels.into_iter().next()?;
            let r = c.last_reading;
            Some(Inverter {
                serial: d.sn,
                last_report: r.end_date,
                watts: c.watts.now,
                max_watts: c.watts.max,
                dc_voltage: milli(r.dc_voltage_mv),
                dc_current: milli(r.dc_current_ma),
                ac_voltage: milli(r.ac_voltage_mv),
                ac_current: milli(r.ac_current_ma),
                frequency: milli(r.ac_frequency_mhz),
                temperature: r.channel_temp,
                wh_lifetime: c
                    .lifetime
                    .and_then(|l| l.joules_produced)
                    .map(|j| (j / 3600.0).round()),
                wh_today: c.watt_hours.and_then(|w| w.today),
            })
        })
        .filter(finite)
        .collect();
    Ok((!list.is_empty()).then_some(list))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy::api::fixture;

    #[test]
    fn device_data_of_a_capture_as_pyenphase_reads_it() {
        let list = device_data(&fixture("8.3.5169_with_generator", "ivp_pdm_device_data"))
            .unwrap()
            .unwrap();
        let first = list.iter().find(|i| i.serial == "482208990001").unwrap();
        // pyenphase 4.2: 136 W (max 297), 40.352 V / 3.707 A DC, 248.875 V / 0.582 A AC,
        // 59.988 Hz, 32 °C, 2011819050 J = 558839 Wh, 145 Wh today, report 1785593319.
        assert_eq!(
            *first,
            Inverter {
                serial: "482208990001".into(),
                last_report: 1_785_593_319.0,
                watts: 136.0,
                max_watts: 297.0,
                dc_voltage: Some(40.352),
                dc_current: Some(3.707),
                ac_voltage: Some(248.875),
                ac_current: Some(0.582),
                frequency: Some(59.988),
                temperature: Some(32.0),
                wh_lifetime: Some(558_839.0),
                wh_today: Some(145.0),
            }
        );
        let full = r#"{"deviceCount": 50, "deviceDataLimit": 50}"#;
        assert_eq!(device_data(full), Ok(None), "a list cut at its limit");
        assert_eq!(
            device_data(r#"{"deviceCount": 0, "deviceDataLimit": 50}"#),
            Ok(None)
        );
    }

    #[test]
    fn the_v1_list_and_bad_answers() {
        let list = v1(&fixture(
            "8.3.5169_with_generator",
            "api_v1_production_inverters",
        ))
        .unwrap();
        assert_eq!((list.inverters.len(), list.acb.len()), (20, 0));
        assert_eq!(
            list.inverters[0],
            Inverter {
                serial: "482208990001".into(),
                last_report: 1_785_592_409.0,
                watts: 116.0,
                max_watts: 297.0,
                ..Inverter::default()
            }
        );
        // 8.2.4382_ACB: 17 microinverters (devType 1) and 3 AC Batteries (devType 11).
        let acb = v1(&fixture("8.2.4382_ACB", "api_v1_production_inverters")).unwrap();
        assert_eq!((acb.inverters.len(), acb.acb.len()), (17, 3));
        assert_eq!(
            (
                acb.acb[0].serial.as_str(),
                acb.acb[0].watts,
                acb.acb[0].last_report
            ),
            ("122122013879", 2.0, 1_732_089_577.0)
        );
        let mixed = r#"[{"serialNumber":"1","lastReportDate":1,"lastReportWatts":1,"maxReportWatts":1},
            {"serialNumber":"2","lastReportDate":1,"lastReportWatts":1,"maxReportWatts":1,"devType":12}]"#;
        let mixed = v1(mixed).unwrap();
        assert_eq!((mixed.inverters.len(), mixed.acb.len()), (1, 0));
        for bad in ["", "{", "<html>", r#"[{"serialNumber":1}]"#] {
            assert!(v1(bad).is_err(), "{bad}");
            assert!(device_data(bad).is_err() || bad.starts_with('['), "{bad}");
        }
    }
}
