//! The announced record: which Home Assistant entities were announced, kept in
//! `STATE_DIR/discovery.json`, so that those that are gone get removed.

use std::path::Path;

use super::discovery::{self, Device};
use crate::mqtt::Message;
use crate::readings::Field;
use crate::state_file;

/// Where the discovery topics last published are remembered, to remove stale entities.
const DISCOVERY_FILE: &str = "discovery.json";

/// The discovery messages for `fields`, with removals of entities that are gone, and the
/// remembered topic list updated (written only when it changed: flash wears).
pub fn announce(device: &Device, state_dir: &Path, fields: &[Field]) -> Vec<Message> {
    let mut messages = discovery::messages(device, fields);
    let file = state_dir.join(DISCOVERY_FILE);
    let before = state_file::read(&file)
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
        if let Err(e) = state_file::write(&file, strings(&now).as_bytes()) {
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
