//! The message: one MQTT publication (topic, payload, retained, live), as every room
//! builds it and the session sends it.

use std::fmt;

/// One MQTT message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: String,
    pub retain: bool,
    /// A live value (`P/S/raw/`): sent at QoS 0, since the next one follows within
    /// seconds. Every other message goes at `MQTT_QOS`, retained or not.
    pub live: bool,
}

/// `topic [retained] payload`, as `--dry-run` prints it.
impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.retain { " [retained]" } else { "" };
        write!(f, "{}{mark} {}", self.topic, self.payload)
    }
}
