//! The discovery record: which Home Assistant entities were announced, kept in
//! `STATE_DIR/discovery.json`, so that those that are gone get removed.

use crate::config::Config;
use crate::discovery::{self, Device};
use crate::envoy::Envoy;
use crate::message::Message;
use crate::reading;
use crate::state;

/// Where the discovery topics last published are remembered, to remove stale entities.
const DISCOVERY_FILE: &str = "discovery.json";

/// The discovery messages for `fields`, with removals of entities that are gone, and the
/// remembered topic list updated (written only when it changed: flash wears).
pub fn announce(
    config: &Config,
    envoy: &Envoy,
    fields: &[reading::Field],
    expire_after: Option<u64>,
) -> Vec<Message> {
    if !config.ha_discovery {
        return Vec::new();
    }
    let device = Device {
        prefix: config.mqtt.prefix.clone(),
        ha_prefix: config.ha_prefix.clone(),
        serial: envoy.serial.clone(),
        model: envoy.info.model().to_string(),
        firmware: envoy.info.firmware.clone(),
        format: config.mqtt.format,
        expire_after,
    };
    let mut messages = discovery::messages(&device, fields);
    let file = config.state_dir.join(DISCOVERY_FILE);
    let before = state::read(&file)
        .unwrap_or_else(|e| {
            log::warn!("{e}");
            None
        })
        .map(|t| parse_strings(&t))
        .unwrap_or_default();
    let now: Vec<String> = messages.iter().map(|m| m.topic.clone()).collect();
    messages.extend(discovery::removals(&before, &messages));
    if before != now {
        // Not remembered means only that a later removal may be missed: no failed poll.
        if let Err(e) = state::write(&file, strings(&now).as_bytes()) {
            log::warn!("{e}");
        }
    }
    messages
}

/// A list of strings as JSON (the remembered discovery topics).
pub fn strings(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_default()
}

/// Reads a list of strings; anything else is an empty list.
pub fn parse_strings(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}
