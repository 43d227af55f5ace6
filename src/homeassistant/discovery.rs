//! Home Assistant MQTT discovery (docs/topics.md): one device per Envoy, one entity per
//! published data field, with the device class, unit and state class that let the Energy
//! dashboard pick production, house consumption, grid import and grid export.
//!
//! Pure: fields and device facts in, retained config messages out. Each field's class
//! comes from its [`Quantity`] (and, for on/off flags, its flow); its name from its flow,
//! measure and phase:
//! - power: `power`, W, `measurement`; voltage, current, power factor likewise;
//! - energy that only grows (lifetime counters, today): `energy`, `total_increasing`;
//!   energy that may go down (`conso_net_eim_*`, import − export): `total`; a closed
//!   period (yesterday): no state class; the midnight references: no entity;
//! - an on/off flag: a `binary_sensor` with payloads `1` / `0` (`power` class for production);
//! - `timestamp_text`: `timestamp` class, diagnostic; `timestamp` (seconds): no entity.

use super::entity::{self, Entity, Owner};
use crate::mqtt::Message;
use crate::readings::{DeviceKind, Field, Flow, Measure, Part, Quantity, Subject};
use crate::settings::{Config, Format};
use crate::topics::tree;

/// How Home Assistant should show one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    pub component: &'static str,
    pub device_class: Option<&'static str>,
    pub unit: Option<&'static str>,
    pub state_class: Option<&'static str>,
    pub diagnostic: bool,
    /// The words of a state: a binary sensor's off and on payloads, an enum's options.
    pub states: Option<&'static [&'static str]>,
}

fn sensor(
    device_class: &'static str,
    unit: Option<&'static str>,
    state_class: Option<&'static str>,
) -> Class {
    Class {
        component: "sensor",
        device_class: Some(device_class),
        unit,
        state_class,
        diagnostic: false,
        states: None,
    }
}

/// The entity class of a field; `None` for fields that are no entity.
pub fn class(field: &Field) -> Option<Class> {
    let unit = field.unit().symbol();
    let energy = |state_class| sensor("energy", unit, state_class);
    Some(match field.quantity() {
        Quantity::Reference => return None,
        Quantity::Flag => binary(field.flow() == Some(Flow::Production), None),
        // On or off the grid: power present or not.
        Quantity::State if field.measure == Measure::GridStatus => {
            binary(true, field.measure.states())
        }
        // A relay: closed is on.
        Quantity::State if field.measure == Measure::RelayState => {
            binary(false, field.measure.states())
        }
        Quantity::State => Class {
            states: field.measure.states(),
            ..sensor("enum", None, None)
        },
        Quantity::Power => sensor("power", unit, Some("measurement")),
        Quantity::Voltage => sensor("voltage", unit, Some("measurement")),
        Quantity::Current => sensor("current", unit, Some("measurement")),
        Quantity::PowerFactor => sensor("power_factor", None, Some("measurement")),
        Quantity::EnergyIncreasing => energy(Some("total_increasing")),
        Quantity::EnergyTotal => energy(Some("total")),
        Quantity::EnergyClosed => energy(None),
        Quantity::Charge => sensor("battery", unit, Some("measurement")),
        Quantity::EnergyStored => sensor("energy_storage", unit, Some("measurement")),
        Quantity::Temperature => sensor("temperature", unit, Some("measurement")),
        Quantity::Frequency => sensor("frequency", unit, Some("measurement")),
        // Unix seconds, turned into a time by the template (see `value_template`).
        Quantity::Time => Class {
            diagnostic: true,
            ..sensor("timestamp", None, None)
        },
    })
}

/// A binary sensor (`power` class or none), its payloads `states` (off, on) or `0` / `1`.
fn binary(power: bool, states: Option<&'static [&'static str]>) -> Class {
    Class {
        component: "binary_sensor",
        device_class: power.then_some("power"),
        unit: None,
        state_class: None,
        diagnostic: false,
        states,
    }
}

/// `timestamp_text`: the time of the last reading, diagnostic.
fn timestamp_class() -> Class {
    Class {
        diagnostic: true,
        ..sensor("timestamp", None, None)
    }
}

/// A subject's words in entity names: short, since Home Assistant puts the device's name
/// ("Envoy", "Battery") before them and its device page cuts long names.
fn label(of: Subject) -> &'static str {
    match of {
        Subject::Flow(Flow::Production) => "Solar",
        Subject::Flow(Flow::Consumption) => "House",
        Subject::Flow(Flow::Import) => "Grid import",
        Subject::Flow(Flow::Export) => "Grid export",
        Subject::Flow(Flow::SelfConsumption) => "Self-consumed",
        Subject::Flow(Flow::Net) => "Grid net",
        Subject::Flow(Flow::BatteryCharged) => "Charged",
        Subject::Flow(Flow::BatteryDischarged) => "Discharged",
        Subject::Battery => "",
        Subject::System | Subject::Inverter => "",
    }
}

/// A readable entity name: `conso_all_eim_kwhLifetime` is "House energy",
/// `import/daily/hc` "Grid import energy today off-peak (HC)".
pub fn name(field: &Field) -> String {
    let label = label(field.of);
    let what = match field.measure {
        Measure::Power => "power",
        Measure::Voltage | Measure::RmsVoltage => "voltage",
        Measure::Current | Measure::RmsCurrent => "current",
        Measure::PowerFactor => "power factor",
        Measure::Lifetime => "energy (Wh)",
        Measure::LifetimeKwh => "energy",
        Measure::Active if field.flow() == Some(Flow::Export) => return "Grid importing".into(),
        Measure::Active => "producing",
        Measure::EnvoyToday => "energy today (Envoy)",
        Measure::Midnight => "energy at midnight (Wh)",
        Measure::Today => "energy today (Wh)",
        Measure::Yesterday => "energy yesterday (Wh)",
        Measure::Daily(None) => "energy today",
        Measure::Daily(Some(Part::OffPeak)) => "energy today off-peak (HC)",
        Measure::Daily(Some(Part::Peak)) => "energy today peak (HP)",
        Measure::Month => "energy this month",
        Measure::Year => "energy this year",
        Measure::Peak => return "Grid import peak power today".into(),
        Measure::Soc => "state of charge",
        Measure::Available => "available energy",
        Measure::Capacity => "capacity",
        Measure::ReserveSoc => "backup reserve",
        Measure::Reserve => "backup reserve energy",
        Measure::GridStatus => "grid status",
        Measure::StorageMode => "storage mode",
        Measure::ChargeFromGrid => "charge from grid",
        Measure::Temperature => "temperature",
        Measure::LastReport => "last report",
        Measure::MaxPower => "highest power",
        Measure::DcVoltage => "DC voltage",
        Measure::DcCurrent => "DC current",
        Measure::AcVoltage => "AC voltage",
        Measure::AcCurrent => "AC current",
        Measure::Frequency => "frequency",
        Measure::WhToday => "energy today (Wh)",
        Measure::GeneratorRunning => "generator running",
        Measure::ChargeStatus => "status",
        Measure::RelayState => match field.device {
            Some(key) => return format!("Relay {}", key.serial()),
            None => "relay",
        },
    };
    let name = match field.phase {
        Some(n) => format!("{label} {what} L{n}"),
        None => format!("{label} {what}"),
    };
    // Without a label ("Battery" is the device's name): the measure, capitalised.
    let name = name.trim_start();
    let mut chars = name.chars();
    chars
        .next()
        .map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
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
    /// The Envoy `serial` as a device, with its model and firmware, for the settings of
    /// `config`; `expire_after` from cron.
    pub fn new(
        config: &Config,
        serial: &str,
        model: &str,
        firmware: &str,
        expire_after: Option<u64>,
    ) -> Device {
        Device {
            prefix: config.mqtt.prefix.clone(),
            ha_prefix: config.ha_prefix.clone(),
            serial: serial.to_string(),
            model: model.to_string(),
            firmware: firmware.to_string(),
            format: config.mqtt.format,
            expire_after,
        }
    }

    fn node(&self) -> String {
        format!("envoy2mqtt_{}", self.serial)
    }

    /// The device a field's entity belongs to: the batteries have theirs, behind the Envoy.
    fn owner<'a>(&'a self, field: &'a Field) -> Owner<'a> {
        let storage = matches!(
            field.measure,
            Measure::StorageMode | Measure::ChargeFromGrid
        );
        let behind = field
            .device
            .as_ref()
            .filter(|k| k.kind != DeviceKind::Relay);
        if let Some(key) = behind {
            let serial = key.serial();
            let model = match key.kind {
                DeviceKind::Battery => "IQ Battery",
                DeviceKind::AcBattery => "AC Battery",
                _ => "Microinverter",
            };
            return Owner {
                node: format!("{}_{}_{serial}", self.node(), key.kind.word()),
                name: format!("{model} {serial}"),
                model,
                serial: Some(serial),
                firmware: None,
                via: Some(self.node()),
            };
        }
        if field.of.is_battery() || storage {
            return Owner {
                node: format!("{}_battery", self.node()),
                name: "Battery".into(),
                model: "IQ Battery",
                serial: None,
                firmware: None,
                via: Some(self.node()),
            };
        }
        Owner {
            node: self.node(),
            name: "Envoy".into(),
            model: &self.model,
            serial: Some(&self.serial),
            firmware: Some(&self.firmware),
            via: None,
        }
    }

    /// `P/S/envoy`: `online` while the Envoy answers, `offline` after a few failed polls.
    pub fn envoy_topic(&self) -> String {
        tree::envoy(&self.prefix, &self.serial)
    }

    /// Where an entity's availability comes from: none from cron (`expire_after` does it);
    /// the bridge's `P/S/status`, and for the Envoy's values also `P/S/envoy`, so that an
    /// Envoy that stopped answering shows as unavailable rather than as frozen values.
    fn availability(&self, envoy_value: bool) -> Vec<String> {
        if self.expire_after.is_some() {
            return Vec::new();
        }
        let mut topics = vec![tree::availability(&self.prefix, &self.serial)];
        if envoy_value {
            topics.push(self.envoy_topic());
        }
        topics
    }

    /// The config topic of a field.
    pub fn config_topic(&self, component: &str, field: &str) -> String {
        tree::discovery(&self.ha_prefix, component, &self.node(), field)
    }
}

/// The retained config message of every field that is an entity.
pub fn messages(device: &Device, fields: &[Field]) -> Vec<Message> {
    let entities = fields.iter().filter_map(|f| {
        let class = class(f)?;
        Some((f.name(), name(f), f.path(), class, shown_by_default(f), *f))
    });
    let last_reading = (
        "timestamp_text".to_string(),
        "Last reading".to_string(),
        "data/timestamp_text".to_string(),
        timestamp_class(),
        true,
        Field::new(Flow::Production, Measure::Power, 0.0),
    );
    entities
        .chain([last_reading])
        .map(|(field, title, path, class, shown, owner)| {
            let id = field.replace('/', "_");
            let entity = Entity {
                name: title,
                unique_id: format!("{}_{id}", device.node()),
                default_entity_id: format!(
                    "{}.envoy_{}_{}",
                    class.component,
                    device.serial,
                    id.to_lowercase()
                ),
                state_topic: tree::device(&device.prefix, &device.serial, &path),
                // Always a template: Home Assistant keeps the old one when a config without
                // one replaces it (a switch of MQTT_FORMAT would freeze every sensor).
                value_template: Some(value_template(device.format, owner.quantity())),
                device_class: class.device_class,
                unit_of_measurement: class.unit,
                state_class: class.state_class,
                entity_category: class.diagnostic.then_some("diagnostic"),
                payload_on: on_off(&class).map(|(_, on)| on),
                payload_off: on_off(&class).map(|(off, _)| off),
                options: class.states.filter(|_| class.component == "sensor"),
                availability: device.availability(true),
                expire_after: device.expire_after,
                enabled_by_default: shown,
                device: device.owner(&owner),
            };
            config(device, class.component, &id, &entity)
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

/// A binary sensor's payloads, off and on.
fn on_off(class: &Class) -> Option<(&'static str, &'static str)> {
    if class.component != "binary_sensor" {
        return None;
    }
    match class.states {
        Some([off, on]) => Some((off, on)),
        _ => Some(("0", "1")),
    }
}

/// The template that reads a value in `format`; a time in Unix seconds becomes the ISO 8601
/// text that Home Assistant's `timestamp` class wants.
fn value_template(format: Format, quantity: Quantity) -> String {
    let value = match format {
        Format::Simple => "value",
        Format::Json => "value_json.value",
    };
    match quantity {
        Quantity::Time => format!(
            "{{{{ ({value} | int) | timestamp_custom('%Y-%m-%dT%H:%M:%S+00:00', false) }}}}"
        ),
        _ => format!("{{{{ {value} }}}}"),
    }
}

/// The dozen entities most owners want, shown by default: power now, energy today, the
/// lifetime counters the Energy dashboard takes, the Envoy's connection and last reading.
/// Per-phase values, voltages, currents, power factors, the Wh copies, month and year and
/// the other variants are published too, as entities the user can enable.
pub fn shown_by_default(field: &Field) -> bool {
    use Flow::{BatteryCharged, BatteryDischarged, Consumption, Export, Import, Net, Production};
    use Subject::{Battery, Flow as F, Inverter};
    field.phase.is_none()
        && matches!(
            (field.of, field.measure),
            (
                F(Production | Consumption | Net) | Battery | Inverter,
                Measure::Power
            ) | (
                F(Production | Import | Export | BatteryCharged | BatteryDischarged),
                Measure::LifetimeKwh
            ) | (
                F(Production | Consumption | Import | Export),
                Measure::Daily(None)
            ) | (Battery, Measure::Soc)
                | (
                    Subject::System,
                    Measure::GridStatus | Measure::StorageMode | Measure::GeneratorRunning
                )
        )
}

/// The Envoy's connection, as a connectivity sensor on `P/S/envoy` (service only).
fn connectivity(device: &Device) -> Message {
    let envoy = Field::new(Flow::Production, Measure::Power, 0.0);
    let entity = Entity {
        name: "Connection".into(),
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
        options: None,
        device: device.owner(&envoy),
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

    use Flow::{Consumption, Export, Import, Net, Production, SelfConsumption};
    use Measure::*;

    fn field(flow: Flow, measure: Measure, phase: Option<u8>) -> Field {
        Field {
            phase,
            ..Field::new(flow, measure, 1.0)
        }
    }

    #[test]
    fn classes_by_field() {
        #[rustfmt::skip]
        let cases = [
            (field(Production, Power, None), "prod_eim_wNow", Some(("sensor", Some("power"), Some("W"), Some("measurement")))),
            (field(Net, Power, Some(2)), "conso_net_eim_wNow_l2", Some(("sensor", Some("power"), Some("W"), Some("measurement")))),
            (field(Production, Voltage, None), "prod_eim_voltage", Some(("sensor", Some("voltage"), Some("V"), Some("measurement")))),
            (field(Consumption, RmsCurrent, None), "conso_all_eim_rmsCurrent", Some(("sensor", Some("current"), Some("A"), Some("measurement")))),
            (field(Production, PowerFactor, None), "prod_eim_pwrFactor", Some(("sensor", Some("power_factor"), None, Some("measurement")))),
            (field(Production, LifetimeKwh, None), "prod_eim_kwhLifetime", Some(("sensor", Some("energy"), Some("kWh"), Some("total_increasing")))),
            (field(Import, Lifetime, None), "import_eim_whLifetime", Some(("sensor", Some("energy"), Some("Wh"), Some("total_increasing")))),
            (field(Net, LifetimeKwh, None), "conso_net_eim_kwhLifetime", Some(("sensor", Some("energy"), Some("kWh"), Some("total")))),
            (field(Production, EnvoyToday, None), "prod_eim_wattHoursToday", Some(("sensor", Some("energy"), Some("Wh"), Some("total_increasing")))),
            (field(Production, Active, None), "prod_eim_wNow_binary", Some(("binary_sensor", Some("power"), None, None))),
            (field(Export, Active, None), "grid_eim_wNow_binary", Some(("binary_sensor", None, None, None))),
            (field(Production, Today, None), "prod_eim_today", Some(("sensor", Some("energy"), Some("Wh"), Some("total_increasing")))),
            (field(Net, Today, None), "conso_net_eim_today", Some(("sensor", Some("energy"), Some("Wh"), Some("total")))),
            (field(Import, Yesterday, None), "import_eim_yesterday", Some(("sensor", Some("energy"), Some("Wh"), None))),
            (field(Production, Midnight, None), "prod_eim_whLifetime_00h", None),
            (field(Consumption, Daily(Some(Part::OffPeak)), None), "consumption/daily/hc", Some(("sensor", Some("energy"), Some("kWh"), Some("total_increasing")))),
            (field(Import, Peak, None), "max_power", Some(("sensor", Some("power"), Some("W"), Some("measurement")))),
        ];
        for (field, name, want) in cases {
            let got = class(&field).map(|c| (c.component, c.device_class, c.unit, c.state_class));
            assert_eq!((field.name().as_str(), got), (name, want));
        }
        let t = timestamp_class();
        assert_eq!(
            (t.device_class, t.unit, t.state_class, t.diagnostic),
            (Some("timestamp"), None, None, true)
        );
    }

    #[test]
    fn names() {
        #[rustfmt::skip]
        let cases = [
            (field(Production, Power, None), "Solar power"),
            (field(Production, Active, None), "Solar producing"),
            (field(Consumption, LifetimeKwh, None), "House energy"),
            (field(Import, Lifetime, None), "Grid import energy (Wh)"),
            (field(Net, Voltage, Some(3)), "Grid net voltage L3"),
            (field(Export, Active, None), "Grid importing"),
            (field(SelfConsumption, Yesterday, None), "Self-consumed energy yesterday (Wh)"),
            (field(Export, Month, None), "Grid export energy this month"),
            (field(Import, Daily(Some(Part::Peak)), None), "Grid import energy today peak (HP)"),
            (field(Consumption, Daily(None), None), "House energy today"),
            (field(Import, Peak, None), "Grid import peak power today"),
        ];
        for (field, want) in cases {
            assert_eq!(name(&field), want, "{}", field.name());
        }
        let paths = [
            (field(Production, Today, None), "data/prod_eim_today"),
            (field(Production, Daily(None), None), "production/daily"),
            (field(Import, Peak, None), "max_power"),
        ];
        for (field, want) in paths {
            assert_eq!(field.path(), want);
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
            field(Production, Power, None),
            field(Production, Voltage, None),
            field(Production, Lifetime, None),
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
            // Home Assistant puts the device's name first: "Envoy Connection", not
            // "Envoy Envoy connection".
            assert_eq!(
                (&link["name"], &link["device"]["name"]),
                (
                    &serde_json::json!("Connection"),
                    &serde_json::json!("Envoy")
                )
            );
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
