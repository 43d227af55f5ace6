//! A Home Assistant entity, as [`discovery`](super::discovery) decides it, and its MQTT
//! discovery config payload (derived `Serialize`). Pure.

use serde::Serialize;

/// One Home Assistant entity, as [`discovery`](super::discovery) decided it.
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
    /// An enum sensor's states.
    pub options: Option<&'static [&'static str]>,
    /// Availability topics (`online` / `offline`); several: all must say `online`.
    pub availability: Vec<String>,
    pub expire_after: Option<u64>,
    /// Shown by default, or one the user can enable.
    pub enabled_by_default: bool,
    /// The device it belongs to.
    pub device: Owner<'a>,
}

/// The Home Assistant device an entity belongs to: the Envoy, or a device behind it.
pub struct Owner<'a> {
    pub node: String,
    pub name: String,
    pub model: &'a str,
    /// The Envoy's serial and firmware; `None` for a device behind it.
    pub serial: Option<&'a str>,
    pub firmware: Option<&'a str>,
    /// The Envoy's node, for a device behind it.
    pub via: Option<String>,
}

/// The config payload as Home Assistant reads it. The fields are in alphabetical order: the
/// payloads' order since the first release (serde_json's sorted map), which the golden
/// files pin.
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    availability: Option<Vec<Topic<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    availability_mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    availability_topic: Option<&'a str>,
    default_entity_id: &'a str,
    device: DeviceInfo<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_class: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enabled_by_default: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entity_category: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expire_after: Option<u64>,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<&'static [&'static str]>,
    origin: Origin,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_off: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_on: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_class: Option<&'static str>,
    state_topic: &'a str,
    unique_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit_of_measurement: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_template: Option<&'a str>,
}

#[derive(Serialize)]
struct Topic<'a> {
    topic: &'a str,
}

#[derive(Serialize)]
struct DeviceInfo<'a> {
    identifiers: [&'a str; 1],
    manufacturer: &'static str,
    model: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    serial_number: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sw_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    via_device: Option<&'a str>,
}

#[derive(Serialize)]
struct Origin {
    name: &'static str,
    sw_version: &'static str,
}

/// The discovery config payload of an entity. Several availability topics: all must say
/// `online` (`availability_mode: all`).
pub fn payload(e: &Entity) -> String {
    let several = e.availability.len() > 1;
    let p = Payload {
        availability: several.then(|| e.availability.iter().map(|t| Topic { topic: t }).collect()),
        availability_mode: several.then_some("all"),
        availability_topic: match e.availability.as_slice() {
            [one] => Some(one),
            _ => None,
        },
        default_entity_id: &e.default_entity_id,
        device: DeviceInfo {
            identifiers: [&e.device.node],
            manufacturer: "Enphase",
            model: e.device.model,
            name: &e.device.name,
            serial_number: e.device.serial,
            sw_version: e.device.firmware,
            via_device: e.device.via.as_deref(),
        },
        device_class: e.device_class,
        enabled_by_default: (!e.enabled_by_default).then_some(false),
        entity_category: e.entity_category,
        expire_after: e.expire_after,
        name: &e.name,
        options: e.options,
        origin: Origin {
            name: "envoy2mqtt",
            sw_version: env!("CARGO_PKG_VERSION"),
        },
        payload_off: e.payload_off,
        payload_on: e.payload_on,
        state_class: e.state_class,
        state_topic: &e.state_topic,
        unique_id: &e.unique_id,
        unit_of_measurement: e.unit_of_measurement,
        value_template: e.value_template.as_deref(),
    };
    serde_json::to_string(&p).unwrap_or_default()
}
