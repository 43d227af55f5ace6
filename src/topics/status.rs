//! The bridge's own state topics: `P/S/status` (whether the bridge runs: its last will
//! says `offline`), `P/S/envoy` (whether the Envoy answers) and `P/status` (the JSON
//! health report). Pure.

use std::time::SystemTime;

use super::compose::Composer;
use super::payload;
use super::tree;
use crate::mqtt::Message;
use crate::time::guard::is_set;
use crate::time::zone;

/// What `P/status` reports (docs/topics.md).
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub last_sync: Option<SystemTime>,
    pub next_sync: Option<SystemTime>,
    /// The latest distinct errors, newest last.
    pub errors: Vec<String>,
    pub firmware: Option<String>,
    pub token_expires: Option<i64>,
}

impl Composer {
    /// `P/S/{name}`: `online` / `offline`, retained.
    fn online(&self, name: &str, online: bool) -> Message {
        Message {
            topic: self.topic("", name),
            payload: if online { "online" } else { "offline" }.to_string(),
            retain: true,
            live: false,
        }
    }

    /// `P/S/status`: whether the bridge runs (the last will is the `offline` one).
    pub fn availability(&self, online: bool) -> Message {
        self.online("status", online)
    }

    /// `P/S/envoy`: whether the Envoy answers.
    pub fn envoy(&self, online: bool) -> Message {
        self.online("envoy", online)
    }

    /// `P/status`: JSON, retained; `ok` tells whether the last poll worked.
    pub fn status(&self, ok: bool, health: &Health) -> Message {
        let status = payload::Status {
            status: if ok { "ok" } else { "error" },
            // No time while the clock is not set (1970 before NTP).
            last_sync: health.last_sync.filter(|t| is_set(*t)).map(zone::utc_time),
            next_sync: health.next_sync.filter(|t| is_set(*t)).map(zone::utc_time),
            envoy_count: 1,
            errors: &health.errors,
            version: env!("CARGO_PKG_VERSION"),
            firmware: health.firmware.as_deref(),
            token_expires: health.token_expires.map(zone::utc),
        };
        Message {
            topic: tree::status(&self.prefix),
            payload: payload::status(&status),
            retain: true,
            live: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Format;
    use crate::topics::compose::tests::composer;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn status_and_availability() {
        let p = composer(Format::Simple, false);
        let on = p.availability(true);
        assert_eq!(
            on.to_string(),
            "envoy/122238082763/status [retained] online"
        );
        assert_eq!(p.availability(false).payload, "offline");
        let health = Health {
            last_sync: Some(UNIX_EPOCH + Duration::from_secs(1_768_473_000)),
            next_sync: None,
            errors: vec!["envoy: HTTP 503".into()],
            firmware: Some("D7.6.175".into()),
            token_expires: Some(1_800_000_000),
        };
        let s = p.status(false, &health);
        assert_eq!(s.topic, "envoy/status");
        assert!(s.retain, "retained even when MQTT_RETAIN is false");
        assert_eq!(
            s.payload,
            format!(
                r#"{{"status":"error","last_sync":"2026-01-15T10:30:00Z","next_sync":null,"envoy_count":1,"errors":["envoy: HTTP 503"],"version":"{}","firmware":"D7.6.175","token_expires":"2027-01-15T08:00:00Z"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        );
    }
}
