//! Commands that arrive over MQTT (docs/topics.md): `P/command/sync`,
//! `P/command/reload`, and Home Assistant's birth message. Pure: topic and payload in,
//! a [`Command`] out; any payload is accepted, unknown topics are reported as such.

use super::tree;

/// What an incoming message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Poll and publish now (rate-limited by the loop).
    Sync,
    /// Read the configuration file again and apply it.
    Reload,
    /// Home Assistant (re)started: send the discovery again, after a short random delay.
    HomeAssistantOnline,
    /// Anything else: logged and ignored.
    Unknown(String),
}

/// The topics to subscribe to.
pub fn subscriptions(prefix: &str, ha_prefix: Option<&str>) -> Vec<String> {
    let mut topics = vec![tree::commands(prefix)];
    if let Some(ha) = ha_prefix {
        topics.push(tree::home_assistant(ha));
    }
    topics
}

/// Classifies one incoming message.
pub fn parse(prefix: &str, ha_prefix: Option<&str>, topic: &str, payload: &[u8]) -> Command {
    if let Some(ha) = ha_prefix {
        if topic == tree::home_assistant(ha) {
            return if payload.trim_ascii() == b"online" {
                Command::HomeAssistantOnline
            } else {
                Command::Unknown(format!("{topic} = {}", String::from_utf8_lossy(payload)))
            };
        }
    }
    match tree::command(prefix, topic) {
        Some("sync") => Command::Sync,
        Some("reload") => Command::Reload,
        _ => Command::Unknown(topic.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        let cases: &[(&str, &[u8], Command)] = &[
            ("envoy/command/sync", b"", Command::Sync),
            ("envoy/command/sync", b"\xff garbage", Command::Sync),
            ("envoy/command/reload", b"now", Command::Reload),
            (
                "envoy/command/explode",
                b"",
                Command::Unknown("envoy/command/explode".into()),
            ),
            (
                "homeassistant/status",
                b"online",
                Command::HomeAssistantOnline,
            ),
            (
                "homeassistant/status",
                b"offline",
                Command::Unknown("homeassistant/status = offline".into()),
            ),
            (
                "other/command/sync",
                b"",
                Command::Unknown("other/command/sync".into()),
            ),
        ];
        for (topic, payload, want) in cases {
            assert_eq!(
                &parse("envoy", Some("homeassistant"), topic, payload),
                want,
                "{topic}"
            );
        }
        assert_eq!(
            parse("envoy", None, "homeassistant/status", b"online"),
            Command::Unknown("homeassistant/status".into())
        );
        assert_eq!(
            subscriptions("envoy", Some("ha")),
            ["envoy/command/+", "ha/status"]
        );
    }
}
