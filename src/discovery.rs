//! Home Assistant MQTT discovery (docs/topics.md): one device per Envoy, one entity per
//! published data field, with the device class, unit and state class that let the Energy
//! dashboard pick production, house consumption, grid import and grid export.
//!
//! Pure: fields and device facts in, retained config messages out. The choices, per field:
//! - power (`*_wNow`, per phase too): `power`, W, `measurement`;
//! - `*_voltage`, `*_rmsVoltage`: `voltage`, V; `*_current`, `*_rmsCurrent`: `current`, A;
//!   `*_pwrFactor`: `power_factor`, no unit; all `measurement`;
//! - lifetime counters (`*_whLifetime` Wh, `*_kwhLifetime` kWh): `energy`, `total_increasing`,
//!   except `conso_net_eim_*` (import − export, it decreases): `total`;
//! - `prod_eim_wattHoursToday`: `energy`, Wh, `total_increasing` (it falls to 0 at midnight,
//!   which `total_increasing` reads as a new cycle);
//! - `*_binary`: a `binary_sensor` with payloads `1` / `0` (`power` class for production);
//! - `timestamp_text`: `timestamp` class, diagnostic; `timestamp` (seconds): no entity.

use crate::config::Format;
use crate::entity::{self, Entity};
use crate::message::Message;
use crate::reading::{Field, Unit};
use crate::topic;

/// How Home Assistant should show one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    pub component: &'static str,
    pub device_class: Option<&'static str>,
    pub unit: Option<&'static str>,
    pub state_class: Option<&'static str>,
    pub diagnostic: bool,
}

/// The entity class of a field; `None` for fields that are no entity.
pub fn class(name: &str, unit: Unit) -> Option<Class> {
    let sensor = |device_class, unit, state_class| Class {
        component: "sensor",
        device_class: Some(device_class),
        unit,
        state_class,
        diagnostic: false,
    };
    // The midnight references are for the ledger's users, not dashboards.
    if name == "timestamp" || name.ends_with("_00h") {
        return None;
    }
    if name == "timestamp_text" {
        return Some(Class {
            diagnostic: true,
            ..sensor("timestamp", None, None)
        });
    }
    if name.ends_with("_binary") {
        return Some(Class {
            component: "binary_sensor",
            device_class: name.starts_with("prod_").then_some("power"),
            unit: None,
            state_class: None,
            diagnostic: false,
        });
    }
    Some(match unit {
        Unit::Watt => sensor("power", Some("W"), Some("measurement")),
        Unit::Volt => sensor("voltage", Some("V"), Some("measurement")),
        Unit::Ampere => sensor("current", Some("A"), Some("measurement")),
        Unit::WattHour | Unit::KiloWattHour => {
            let state_class = if name.ends_with("_yesterday") {
                None
            } else if name.starts_with("conso_net_eim_") {
                Some("total")
            } else {
                Some("total_increasing")
            };
            sensor("energy", unit.symbol(), state_class)
        }
        Unit::None if name.contains("pwrFactor") => {
            sensor("power_factor", None, Some("measurement"))
        }
        Unit::None => Class {
            device_class: None,
            ..sensor("", None, Some("measurement"))
        },
    })
}

/// Where a field is published under `P/S/`: the ledger's totals by their path
/// (`production/daily`, `max_power`), every other field under `data/`.
pub fn path(field: &str) -> String {
    if field.contains('/') || field == "max_power" {
        field.to_string()
    } else {
        format!("data/{field}")
    }
}

/// A readable name for a ledger total: `import/daily/hc` is "Grid import today off-peak".
fn total_name(field: &str) -> Option<String> {
    if field == "max_power" {
        return Some("Grid import peak power today".into());
    }
    let mut parts = field.split('/');
    let flow = match parts.next()? {
        "production" => "Solar",
        "consumption" => "House",
        "import" => "Grid import",
        "export" => "Grid export",
        _ => return None,
    };
    let period = match parts.next()? {
        "daily" => "today",
        "month" => "this month",
        "year" => "this year",
        other => other,
    };
    let part = match parts.next() {
        Some("hc") => " off-peak (HC)",
        Some("hp") => " peak (HP)",
        _ => "",
    };
    Some(format!("{flow} energy {period}{part}"))
}

/// A readable entity name: `conso_all_eim_kwhLifetime` is "House consumption energy".
pub fn name(field: &str) -> String {
    if let Some(n) = total_name(field) {
        return n;
    }
    // Short group names: Home Assistant puts the device's name ("Envoy") before them, and
    // its device page cuts long names.
    let groups = [
        ("prod_eim_", "Solar"),
        ("conso_net_eim_", "Grid net"),
        ("conso_all_eim_", "House"),
        ("import_eim_", "Grid import"),
        ("grid_eim_", "Grid export"),
        ("eco_eim_", "Self-consumed"),
    ];
    let (group, rest) = groups
        .iter()
        .find_map(|(p, g)| field.strip_prefix(p).map(|r| (*g, r)))
        .unwrap_or(("", field));
    let (rest, phase) = match rest.rsplit_once("_l") {
        Some((r, n)) if n.len() == 1 && n.chars().all(|c| c.is_ascii_digit()) => {
            (r, format!(" L{n}"))
        }
        _ => (rest, String::new()),
    };
    let what = match rest {
        "wNow" => "power",
        "voltage" | "rmsVoltage" => "voltage",
        "current" | "rmsCurrent" => "current",
        "pwrFactor" => "power factor",
        "whLifetime" => "energy (Wh)",
        "kwhLifetime" => "energy",
        "wNow_binary" if group == "Grid export" => return "Grid importing".into(),
        "wNow_binary" => "producing",
        "wattHoursToday" => "energy today (Envoy)",
        "today" => "energy today (Wh)",
        "yesterday" => "energy yesterday (Wh)",
        "timestamp_text" => "Last reading",
        other => other,
    };
    format!("{group} {what}{phase}").trim().to_string()
}

/// The device and how entities tell availability.
#[derive(Debug, Clone)]
pub struct Device {
    pub prefix: String,
    pub ha_prefix: String,
    pub serial: String,
    pub model: String,
    pub firmware: String,
    pub format: Format,
    /// `Some(seconds)`: cron mode, entities expire after that long without an update;
    /// `None`: the service, availability from `P/S/status`.
    pub expire_after: Option<u64>,
}

impl Device {
    fn node(&self) -> String {
        format!("envoy2mqtt_{}", self.serial)
    }

    /// `P/S/envoy`: `online` while the Envoy answers, `offline` after a few failed polls.
    pub fn envoy_topic(&self) -> String {
        topic::envoy(&self.prefix, &self.serial)
    }

    /// Where an entity's availability comes from: none from cron (`expire_after` does it);
    /// the bridge's `P/S/status`, and for the Envoy's values also `P/S/envoy`, so that an
    /// Envoy that stopped answering shows as unavailable rather than as frozen values.
    fn availability(&self, envoy_value: bool) -> Vec<String> {
        if self.expire_after.is_some() {
            return Vec::new();
        }
        let mut topics = vec![topic::availability(&self.prefix, &self.serial)];
        if envoy_value {
            topics.push(self.envoy_topic());
        }
        topics
    }

    /// The config topic of a field.
    pub fn config_topic(&self, component: &str, field: &str) -> String {
        topic::discovery(&self.ha_prefix, component, &self.node(), field)
    }
}

/// The retained config message of every field that is an entity.
pub fn messages(device: &Device, fields: &[Field]) -> Vec<Message> {
    fields
        .iter()
        .map(|f| (f.name.as_str(), f.unit))
        .chain([("timestamp_text", Unit::None)])
        .filter_map(|(field, unit)| {
            let class = class(field, unit)?;
            let id = field.replace('/', "_");
            let entity = Entity {
                name: name(field),
                unique_id: format!("{}_{id}", device.node()),
                default_entity_id: format!(
                    "{}.envoy_{}_{}",
                    class.component,
                    device.serial,
                    id.to_lowercase()
                ),
                state_topic: topic::device(&device.prefix, &device.serial, &path(field)),
                // Always a template: Home Assistant keeps the old one when a config without
                // one replaces it (a switch of MQTT_FORMAT would freeze every sensor).
                value_template: Some(value_template(device.format)),
                device_class: class.device_class,
                unit_of_measurement: class.unit,
                state_class: class.state_class,
                entity_category: class.diagnostic.then_some("diagnostic"),
                payload_on: (class.component == "binary_sensor").then_some("1"),
                payload_off: (class.component == "binary_sensor").then_some("0"),
                availability: device.availability(true),
                expire_after: device.expire_after,
                enabled_by_default: shown_by_default(field),
                serial: &device.serial,
                model: &device.model,
                firmware: &device.firmware,
                node: device.node(),
            };
            Some(config(device, class.component, &id, &entity))
        })
        .chain(device.expire_after.is_none().then(|| connectivity(device)))
        .collect()
}

fn config(device: &Device, component: &str, id: &str, entity: &Entity) -> Message {
    Message {
        topic: device.config_topic(component, id),
        payload: entity::payload(entity),
        retain: true,
        live: false,
    }
}

fn value_template(format: Format) -> String {
    match format {
        Format::Simple => "{{ value }}",
        Format::Json => "{{ value_json.value }}",
    }
    .to_string()
}

/// The dozen entities most owners want, shown by default: power now, energy today, the
/// lifetime counters the Energy dashboard takes, the Envoy's connection and last reading.
/// Per-phase values, voltages, currents, power factors, the Wh copies, month and year and
/// the other variants are published too, as entities the user can enable.
pub fn shown_by_default(field: &str) -> bool {
    matches!(
        field,
        "prod_eim_wNow"
            | "conso_all_eim_wNow"
            | "conso_net_eim_wNow"
            | "prod_eim_kwhLifetime"
            | "import_eim_kwhLifetime"
            | "grid_eim_kwhLifetime"
            | "production/daily"
            | "consumption/daily"
            | "import/daily"
            | "export/daily"
            | "timestamp_text"
    )
}

/// The Envoy's connection, as a connectivity sensor on `P/S/envoy` (service only).
fn connectivity(device: &Device) -> Message {
    let entity = Entity {
        name: "Envoy connection".into(),
        unique_id: format!("{}_envoy", device.node()),
        default_entity_id: format!("binary_sensor.envoy_{}_connection", device.serial),
        state_topic: device.envoy_topic(),
        value_template: None,
        device_class: Some("connectivity"),
        unit_of_measurement: None,
        state_class: None,
        entity_category: Some("diagnostic"),
        payload_on: Some("online"),
        payload_off: Some("offline"),
        availability: device.availability(false),
        expire_after: None,
        enabled_by_default: true,
        serial: &device.serial,
        model: &device.model,
        firmware: &device.firmware,
        node: device.node(),
    };
    config(device, "binary_sensor", "envoy", &entity)
}

/// Empty retained payloads for config topics published before and not now.
pub fn removals(before: &[String], now: &[Message]) -> Vec<Message> {
    before
        .iter()
        .filter(|t| !now.iter().any(|m| &m.topic == *t))
        .map(|t| Message {
            topic: t.clone(),
            payload: String::new(),
            retain: true,
            live: false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_by_field() {
        #[rustfmt::skip]
        let cases = [
            ("prod_eim_wNow", Unit::Watt, Some(("sensor", Some("power"), Some("W"), Some("measurement")))),
            ("conso_net_eim_wNow_l2", Unit::Watt, Some(("sensor", Some("power"), Some("W"), Some("measurement")))),
            ("prod_eim_voltage", Unit::Volt, Some(("sensor", Some("voltage"), Some("V"), Some("measurement")))),
            ("conso_all_eim_rmsCurrent", Unit::Ampere, Some(("sensor", Some("current"), Some("A"), Some("measurement")))),
            ("prod_eim_pwrFactor", Unit::None, Some(("sensor", Some("power_factor"), None, Some("measurement")))),
            ("prod_eim_kwhLifetime", Unit::KiloWattHour, Some(("sensor", Some("energy"), Some("kWh"), Some("total_increasing")))),
            ("import_eim_whLifetime", Unit::WattHour, Some(("sensor", Some("energy"), Some("Wh"), Some("total_increasing")))),
            ("conso_net_eim_kwhLifetime", Unit::KiloWattHour, Some(("sensor", Some("energy"), Some("kWh"), Some("total")))),
            ("prod_eim_wattHoursToday", Unit::WattHour, Some(("sensor", Some("energy"), Some("Wh"), Some("total_increasing")))),
            ("prod_eim_wNow_binary", Unit::None, Some(("binary_sensor", Some("power"), None, None))),
            ("grid_eim_wNow_binary", Unit::None, Some(("binary_sensor", None, None, None))),
            ("timestamp_text", Unit::None, Some(("sensor", Some("timestamp"), None, None))),
            ("timestamp", Unit::None, None),
            ("prod_eim_today", Unit::WattHour, Some(("sensor", Some("energy"), Some("Wh"), Some("total_increasing")))),
            ("conso_net_eim_today", Unit::WattHour, Some(("sensor", Some("energy"), Some("Wh"), Some("total")))),
            ("import_eim_yesterday", Unit::WattHour, Some(("sensor", Some("energy"), Some("Wh"), None))),
            ("prod_eim_whLifetime_00h", Unit::WattHour, None),
            ("consumption/daily/hc", Unit::KiloWattHour, Some(("sensor", Some("energy"), Some("kWh"), Some("total_increasing")))),
            ("max_power", Unit::Watt, Some(("sensor", Some("power"), Some("W"), Some("measurement")))),
        ];
        for (field, unit, want) in cases {
            let got =
                class(field, unit).map(|c| (c.component, c.device_class, c.unit, c.state_class));
            assert_eq!(got, want, "{field}");
        }
    }

    #[test]
    fn names() {
        let cases = [
            ("prod_eim_wNow", "Solar power"),
            ("prod_eim_wNow_binary", "Solar producing"),
            ("conso_all_eim_kwhLifetime", "House energy"),
            ("import_eim_whLifetime", "Grid import energy (Wh)"),
            ("conso_net_eim_voltage_l3", "Grid net voltage L3"),
            ("grid_eim_wNow_binary", "Grid importing"),
            ("timestamp_text", "Last reading"),
            ("eco_eim_yesterday", "Self-consumed energy yesterday (Wh)"),
            ("export/month", "Grid export energy this month"),
            ("import/daily/hp", "Grid import energy today peak (HP)"),
            ("consumption/daily", "House energy today"),
            ("max_power", "Grid import peak power today"),
        ];
        for (field, want) in cases {
            assert_eq!(name(field), want);
        }
        let paths = [
            ("prod_eim_today", "data/prod_eim_today"),
            ("production/daily", "production/daily"),
            ("max_power", "max_power"),
        ];
        for (field, want) in paths {
            assert_eq!(path(field), want);
        }
    }

    fn device(format: Format, expire_after: Option<u64>) -> Device {
        Device {
            prefix: "envoy".into(),
            ha_prefix: "homeassistant".into(),
            serial: "122238082763".into(),
            model: "Envoy S Metered".into(),
            firmware: "D7.6.175".into(),
            format,
            expire_after,
        }
    }

    #[test]
    fn configs_carry_a_template_the_default_set_and_the_envoy_availability() {
        let fields = [
            Field {
                name: "prod_eim_wNow".into(),
                value: 1.0,
                unit: Unit::Watt,
            },
            Field {
                name: "prod_eim_voltage".into(),
                value: 230.0,
                unit: Unit::Volt,
            },
            Field {
                name: "prod_eim_whLifetime".into(),
                value: 1.0,
                unit: Unit::WattHour,
            },
        ];
        for (format, template) in [
            (Format::Simple, "{{ value }}"),
            (Format::Json, "{{ value_json.value }}"),
        ] {
            let m = messages(&device(format, None), &fields);
            let get = |topic: &str| -> serde_json::Value {
                let m = m.iter().find(|m| m.topic.contains(topic)).expect(topic);
                serde_json::from_str(&m.payload).unwrap()
            };
            let power = get("/prod_eim_wNow/");
            assert_eq!(power["value_template"], template);
            assert!(
                power.get("enabled_by_default").is_none(),
                "shown by default"
            );
            assert_eq!(power["availability_mode"], "all");
            assert_eq!(
                power["availability"],
                serde_json::json!([{"topic": "envoy/122238082763/status"}, {"topic": "envoy/122238082763/envoy"}])
            );
            assert_eq!(power["device"]["name"], "Envoy");
            assert_eq!(get("/prod_eim_voltage/")["enabled_by_default"], false);
            assert_eq!(get("/prod_eim_whLifetime/")["enabled_by_default"], false);
            let link = get("binary_sensor/envoy2mqtt_122238082763/envoy/config");
            assert_eq!(link["state_topic"], "envoy/122238082763/envoy");
            assert_eq!(link["device_class"], "connectivity");
            assert_eq!(link["availability_topic"], "envoy/122238082763/status");
        }
        // From cron: no availability, entities expire; no connectivity entity.
        let m = messages(&device(Format::Simple, Some(900)), &fields);
        assert!(m.iter().all(|m| !m.payload.contains("availability")));
        assert!(!m.iter().any(|m| m.topic.ends_with("/envoy/config")));
    }

    #[test]
    fn removed_entities_get_empty_retained_payloads() {
        let now = vec![Message {
            topic: "a".into(),
            payload: "{}".into(),
            retain: true,
            live: false,
        }];
        let gone = removals(&["a".into(), "b".into()], &now);
        assert_eq!(gone.len(), 1);
        assert_eq!(
            (
                gone[0].topic.as_str(),
                gone[0].payload.as_str(),
                gone[0].retain
            ),
            ("b", "", true)
        );
    }
}
