//! The ensemble (firmware 7 and later, owner token): `/ivp/ensemble/inventory` (which IQ
//! Batteries, IQ System Controller and IQ Meter Collar the system has, and each battery's
//! temperature, capacity and last report), `/ivp/ensemble/secctrl` (the batteries'
//! aggregate: state of charge, stored energy, capacity, backup reserve) and
//! `/ivp/ensemble/power` (each battery's power and state of charge). Read as pyenphase reads them, by their documented fields;
//! a field an answer lacks is `None`, never 0. Pure.

use serde::Deserialize;
use serde_json::Value;

use super::parse;

/// What `/ivp/ensemble/inventory` lists.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    /// The IQ Batteries (Encharge).
    pub batteries: usize,
    /// An IQ System Controller (Enpower).
    pub controller: bool,
    /// An IQ Meter Collar.
    pub collar: bool,
    /// Each IQ Battery, as the inventory lists it.
    pub units: Vec<BatteryUnit>,
    /// Whether the system is on the grid, as the IQ System Controller's main relay
    /// (`mains_oper_state`) or the collar (`grid_state`) says; `None` without either, or
    /// for a word they do not document.
    pub on_grid: Option<bool>,
}

/// One IQ Battery of the inventory; a number it lacks is `None`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BatteryUnit {
    #[serde(rename = "serial_num")]
    pub serial: String,
    #[serde(rename = "percentFull", default)]
    pub percent_full: Option<f64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(rename = "encharge_capacity", default)]
    pub capacity_wh: Option<f64>,
    #[serde(rename = "last_rpt_date", default)]
    pub last_report: Option<f64>,
}

/// A group of devices of one type, as the inventories list them (`/ivp/ensemble/inventory`,
/// `/inventory.json`).
#[derive(Deserialize)]
pub(crate) struct GroupJson {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub devices: Vec<Value>,
}

/// `GET /ivp/ensemble/inventory`: a list of device groups by type. Firmware without
/// ensemble devices answers `[]`, or an object with an `error`.
pub fn inventory(body: &str) -> Result<Inventory, String> {
    if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(body) {
        if o.contains_key("error") {
            return Ok(Inventory::default());
        }
    }
    let groups: Vec<GroupJson> = parse("/ivp/ensemble/inventory", body)?;
    let count = |kind: &str| {
        groups
            .iter()
            .filter(|g| g.kind == kind)
            .map(|g| g.devices.len())
            .sum::<usize>()
    };
    let first = |kind: &str, key: &str| {
        let device = groups.iter().find(|g| g.kind == kind)?.devices.first()?;
        device.get(key)?.as_str().map(str::to_string)
    };
    let relay = first("ENPOWER", "mains_oper_state").and_then(|s| match s.as_str() {
        "closed" => Some(true),
        "open" => Some(false),
        _ => None,
    });
    let collar = first("COLLAR", "grid_state").and_then(|s| match s.as_str() {
        "on_grid" => Some(true),
        "off_grid" => Some(false),
        _ => None,
    });
    let units = groups
        .iter()
        .filter(|g| g.kind == "ENCHARGE")
        .flat_map(|g| &g.devices)
        .filter_map(|d| serde_json::from_value::<BatteryUnit>(d.clone()).ok())
        .collect();
    Ok(Inventory {
        units,
        batteries: count("ENCHARGE"),
        controller: count("ENPOWER") > 0,
        collar: count("COLLAR") > 0,
        on_grid: relay.or(collar),
    })
}

/// What `/ivp/ensemble/secctrl` says of the batteries, Wh and %.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct Secctrl {
    /// IQ Batteries and AC Batteries together.
    pub agg_soc: Option<f64>,
    #[serde(rename = "Max_energy")]
    pub max_energy: Option<f64>,
    /// The IQ Batteries alone.
    #[serde(rename = "ENC_agg_soc")]
    pub enc_soc: Option<f64>,
    #[serde(rename = "ENC_agg_avail_energy")]
    pub enc_available: Option<f64>,
    #[serde(rename = "Enc_max_available_capacity")]
    pub enc_capacity: Option<f64>,
    #[serde(rename = "ENC_agg_backup_energy")]
    pub enc_backup: Option<f64>,
    /// The backup reserve the owner set.
    pub configured_backup_soc: Option<f64>,
    /// The AC Batteries alone.
    #[serde(rename = "ACB_agg_energy")]
    pub acb_energy: Option<f64>,
}

/// One IQ Battery's power (W, > 0 discharging) and state of charge, from
/// `/ivp/ensemble/power`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatteryPower {
    pub serial: String,
    pub watts: f64,
    pub soc: Option<f64>,
}

#[derive(Deserialize)]
struct PowerJson {
    // Firmware writes the key with a colon.
    #[serde(rename = "devices:", alias = "devices", default)]
    devices: Vec<PowerDeviceJson>,
}

#[derive(Deserialize)]
struct PowerDeviceJson {
    serial_num: String,
    real_power_mw: f64,
    #[serde(default)]
    soc: Option<f64>,
}

/// `GET /ivp/ensemble/power`: each IQ Battery's power (the Envoy's mW turned into W).
pub fn power(body: &str) -> Result<Vec<BatteryPower>, String> {
    let p: PowerJson = parse("/ivp/ensemble/power", body)?;
    Ok(p.devices
        .into_iter()
        .filter(|d| d.real_power_mw.is_finite() && d.soc.is_none_or(f64::is_finite))
        .map(|d| BatteryPower {
            serial: d.serial_num,
            watts: d.real_power_mw / 1000.0,
            soc: d.soc,
        })
        .collect())
}

#[derive(Deserialize)]
struct GeneratorJson {
    #[serde(default)]
    oper_state: String,
    #[serde(default)]
    present: u8,
}

/// `GET /ivp/ensemble/generator`: whether a generator runs (its relay closed); `None` where
/// none is present (firmware without one answers `{}`).
pub fn generator(body: &str) -> Result<Option<bool>, String> {
    let g: GeneratorJson = parse("/ivp/ensemble/generator", body)?;
    Ok((g.present != 0).then_some(g.oper_state == "closed"))
}

#[derive(Deserialize)]
struct ContactsJson {
    dry_contacts: Vec<ContactJson>,
}

#[derive(Deserialize)]
struct ContactJson {
    id: String,
    status: String,
}

/// `GET /ivp/ensemble/dry_contacts`: each dry-contact relay of the IQ System Controller
/// and its state (`open` / `closed`; another word is passed over).
pub fn dry_contacts(body: &str) -> Result<Vec<(String, String)>, String> {
    let c: ContactsJson = parse("/ivp/ensemble/dry_contacts", body)?;
    Ok(c.dry_contacts
        .into_iter()
        .filter(|c| c.status == "open" || c.status == "closed")
        .map(|c| (c.id, c.status))
        .collect())
}

/// `GET /ivp/ensemble/secctrl`.
pub fn secctrl(body: &str) -> Result<Secctrl, String> {
    let s: Secctrl = parse("/ivp/ensemble/secctrl", body)?;
    let finite = |v: Option<f64>| v.is_none_or(f64::is_finite);
    let all = [
        s.agg_soc,
        s.max_energy,
        s.enc_soc,
        s.enc_available,
        s.enc_capacity,
        s.enc_backup,
        s.configured_backup_soc,
        s.acb_energy,
    ];
    if all.into_iter().all(finite) {
        Ok(s)
    } else {
        Err("/ivp/ensemble/secctrl holds a number out of range".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy::api::fixture;

    #[test]
    fn inventories_of_the_captures() {
        #[rustfmt::skip]
        let cases = [
            ("8.2.127_with_3cts_and_battery_split", Inventory { batteries: 5, controller: true, collar: false, on_grid: Some(true), ..Inventory::default() }),
            ("8.3.1598_collar", Inventory { batteries: 2, controller: false, collar: true, on_grid: Some(true), ..Inventory::default() }),
            ("8.2.4382_ACB", Inventory { batteries: 1, controller: false, collar: false, on_grid: None, ..Inventory::default() }),
            ("8.3.5169_with_generator", Inventory { batteries: 0, controller: true, collar: false, on_grid: Some(true), ..Inventory::default() }),
            ("7.6.175_with_cts", Inventory::default()),
        ];
        for (variant, want) in cases {
            let got = inventory(&fixture(variant, "ivp_ensemble_inventory")).map(|i| Inventory {
                units: Vec::new(),
                ..i
            });
            assert_eq!(got, Ok(want), "{variant}");
        }
        let i = inventory(&fixture(
            "8.2.127_with_3cts_and_battery_split",
            "ivp_ensemble_inventory",
        ))
        .unwrap();
        assert_eq!(i.units.len(), 5);
        assert_eq!(
            i.units[0],
            BatteryUnit {
                serial: "12345678901006".into(),
                percent_full: Some(21.0),
                temperature: Some(12.0),
                capacity_wh: Some(5000.0),
                last_report: Some(1_709_829_434.0),
            }
        );
        let p = power(&fixture(
            "8.2.127_with_3cts_and_battery_split",
            "ivp_ensemble_power",
        ))
        .unwrap();
        assert_eq!(p.len(), 5);
        assert_eq!(
            p[0],
            BatteryPower {
                serial: "12345678901006".into(),
                watts: -136.0,
                soc: Some(21.0)
            }
        );
        assert!(power("{").is_err() && power("<html>").is_err());
        assert_eq!(power(r#"{"devices":[]}"#), Ok(Vec::new()));
        assert_eq!(inventory("[]"), Ok(Inventory::default()));
        let off = r#"[{"type":"ENPOWER","devices":[{"mains_oper_state":"open"}]}]"#;
        assert_eq!(inventory(off).map(|i| i.on_grid), Ok(Some(false)));
        let odd = r#"[{"type":"COLLAR","devices":[{"grid_state":"multimode"}]}]"#;
        assert_eq!(inventory(odd).map(|i| i.on_grid), Ok(None));
        assert_eq!(inventory(r#"{"error":"404"}"#), Ok(Inventory::default()));
    }

    #[test]
    fn generator_and_relays() {
        let g = |v: &str| generator(&fixture(v, "ivp_ensemble_generator"));
        assert_eq!(
            g("8.3.5169_with_generator"),
            Ok(Some(false)),
            "present, relay open"
        );
        assert_eq!(g("8.2.4382_ACB"), Ok(None), "none present");
        assert_eq!(
            generator(r#"{"present":1,"oper_state":"closed"}"#),
            Ok(Some(true))
        );
        assert_eq!(generator("{}"), Ok(None));
        let relays = dry_contacts(&fixture("8.2.4382_ACB", "ivp_ensemble_dry_contacts")).unwrap();
        assert_eq!(relays[0], ("NC1".to_string(), "open".to_string()));
        assert_eq!(relays.len(), 4);
        for bad in ["", "[]", "<html>", r#"{"dry_contacts":[{"id":1}]}"#] {
            assert!(dry_contacts(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secctrl_of_a_capture_and_bad_answers() {
        let s = secctrl(&fixture("8.2.4382_ACB", "ivp_ensemble_secctrl")).unwrap();
        assert_eq!(
            (s.agg_soc, s.max_energy, s.enc_available, s.acb_energy),
            (Some(39.0), Some(7220.0), Some(1890.0), Some(930.0))
        );
        assert_eq!(
            secctrl("{}"),
            Ok(Secctrl::default()),
            "fields it lacks are None"
        );
        for bad in [
            "",
            "[]",
            "<html>",
            r#"{"agg_soc":"x"}"#,
            r#"{"agg_soc":1e999}"#,
        ] {
            assert!(secctrl(bad).is_err(), "{bad}");
            assert!(inventory(bad).is_err() || bad == "[]", "{bad}");
        }
    }
}
