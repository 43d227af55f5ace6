//! Composing messages: the topics and payloads of fields, in the `simple` or `json`
//! format (docs/topics.md), and a raw tick's messages rewritten in place.
//!
//! Pure functions: the same fields, time and settings always give the same messages.

use std::time::{SystemTime, UNIX_EPOCH};

use super::payload::{self, Dated};
use super::tree;
use crate::mqtt::Message;
use crate::readings::{Field, Live, Unit};
use crate::settings::{Config, Format};
use crate::time::guard::is_set as set;
use crate::time::zone;

/// Composes the messages of one Envoy (it publishes nothing): what every topic and payload
/// shares.
#[derive(Debug, Clone)]
pub struct Composer {
    pub prefix: String,
    pub serial: String,
    pub format: Format,
    /// `MQTT_RETAIN`, for state messages; raw messages are never retained.
    pub retain: bool,
}

impl Composer {
    /// The topics' and payloads' settings for the Envoy `serial`.
    pub fn new(config: &Config, serial: &str) -> Composer {
        Composer {
            prefix: config.mqtt.prefix.clone(),
            serial: serial.to_string(),
            format: config.mqtt.format,
            retain: config.mqtt.retain,
        }
    }

    /// `P/S/{group}/{name}`, or `P/S/{name}` without a group.
    pub(crate) fn topic(&self, group: &str, name: &str) -> String {
        tree::value(&self.prefix, &self.serial, group, name)
    }

    /// A value's message in the configured format.
    pub(crate) fn message(
        &self,
        topic: String,
        value: serde_json::Value,
        unit: Unit,
        stamp: &str,
        retain: bool,
        dated: Dated,
    ) -> Message {
        let payload = match self.format {
            Format::Simple => match &value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            },
            Format::Json => payload::payload(value, unit.symbol(), stamp, &self.serial, dated),
        };
        Message {
            topic,
            payload,
            retain,
            live: false,
        }
    }

    fn messages(
        &self,
        group: &str,
        fields: &[Field],
        now: SystemTime,
        retain: bool,
    ) -> Vec<Message> {
        // The text time only where it is written: `timestamp_text` and `json` payloads;
        // no time at all while the clock is not set (a router before NTP says 1970).
        let set = set(now);
        let stamp = if set && (group == "data" || self.format == Format::Json) {
            zone::utc_time(now)
        } else {
            String::new()
        };
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut out: Vec<Message> = fields
            .iter()
            .map(|f| {
                self.message(
                    self.topic(group, &f.name()),
                    value(f),
                    f.unit(),
                    &stamp,
                    retain,
                    Dated::default(),
                )
            })
            .collect();
        if !set {
            return out;
        }
        out.push(self.message(
            self.topic(group, "timestamp"),
            secs.into(),
            Unit::None,
            &stamp,
            retain,
            Dated::default(),
        ));
        if group == "data" {
            out.push(self.message(
                self.topic(group, "timestamp_text"),
                stamp.clone().into(),
                Unit::None,
                &stamp,
                retain,
                Dated::default(),
            ));
        }
        out
    }

    /// `P/S/data/{field}`, retained per `MQTT_RETAIN`, with `timestamp` and `timestamp_text`.
    pub fn data(&self, fields: &[Field], now: SystemTime) -> Vec<Message> {
        self.messages("data", fields, now, self.retain)
    }

    /// Each field at its path under `P/S/` (`data/battery_soc`), retained per
    /// `MQTT_RETAIN`: a feed's values, without the data poll's timestamps.
    pub fn values(&self, fields: &[Field], now: SystemTime) -> Vec<Message> {
        let stamp = match self.format {
            Format::Json if set(now) => zone::utc_time(now),
            _ => String::new(),
        };
        fields
            .iter()
            .map(|f| {
                let topic = tree::device(&self.prefix, &self.serial, &f.path());
                let value = value(f);
                let dated = Dated::default();
                self.message(topic, value, f.unit(), &stamp, self.retain, dated)
            })
            .collect()
    }

    /// Empty retained messages on the topics of `fields`: the broker forgets their values
    /// (a device that left the system).
    pub fn cleared(&self, fields: &[Field]) -> Vec<Message> {
        fields
            .iter()
            .map(|f| Message {
                topic: tree::device(&self.prefix, &self.serial, &f.path()),
                payload: String::new(),
                retain: true,
                live: false,
            })
            .collect()
    }

    /// `P/S/raw/{value}` and `P/S/raw/timestamp`: never retained, live (QoS 0), written
    /// into `into`, which keeps them from one tick to the next.
    pub fn live<'m>(
        &self,
        live: &Live,
        now: SystemTime,
        into: &'m mut LiveMessages,
    ) -> &'m [Message] {
        let present = live.watts.map(|w| w.is_some());
        if into.messages.is_empty()
            || into.present != present
            || into.prefix != self.prefix
            || into.serial != self.serial
        {
            into.prefix.clone_from(&self.prefix);
            into.serial.clone_from(&self.serial);
            into.present = present;
            into.messages = live
                .values()
                .map(|f| f.name())
                .chain(["timestamp".to_string()])
                .map(|name| Message {
                    topic: self.topic("raw", &name),
                    payload: String::new(),
                    retain: false,
                    live: true,
                })
                .collect();
        }
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        into.stamp.clear();
        if self.format == Format::Json && set(now) {
            zone::write_utc(&mut into.stamp, i64::try_from(secs).unwrap_or(i64::MAX));
        }
        let values = live
            .values()
            .map(|f| (payload::number(f.value), f.unit()))
            .chain([(secs.into(), Unit::None)]);
        for (m, (value, unit)) in into.messages.iter_mut().zip(values) {
            let mut bytes = std::mem::take(&mut m.payload).into_bytes();
            bytes.clear();
            match self.format {
                // Writing a number into memory cannot fail.
                Format::Simple => drop(serde_json::to_writer(&mut bytes, &value)),
                Format::Json => {
                    let (stamp, serial) = (&into.stamp, &self.serial);
                    payload::write_payload(
                        &mut bytes,
                        value,
                        unit.symbol(),
                        stamp,
                        serial,
                        Dated::default(),
                    );
                }
            }
            m.payload = String::from_utf8(bytes).unwrap_or_default();
        }
        // The last one is `raw/timestamp`: not while the clock is not set.
        let n = into.messages.len() - usize::from(!set(now));
        &into.messages[..n]
    }
}

/// A field's value in a payload: its word for a state, else its number.
fn value(f: &Field) -> serde_json::Value {
    match f.word() {
        Some(word) => word.into(),
        None => payload::number(f.value),
    }
}

/// The messages of raw ticks, kept from one tick to the next: their topics are built once
/// (again only when the values present, the prefix or the serial change) and their payloads
/// rewritten in place, so a raw tick allocates nothing for them.
#[derive(Debug, Default)]
pub struct LiveMessages {
    /// What the topics were built for.
    prefix: String,
    serial: String,
    present: [bool; 4],
    messages: Vec<Message>,
    /// The time as text, for `json` payloads.
    stamp: String,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::readings::{Flow, Measure};
    use std::time::Duration;

    /// The composer of the tests: prefix `envoy`, serial `122238082763`.
    pub(crate) fn composer(format: Format, retain: bool) -> Composer {
        Composer {
            prefix: "envoy".into(),
            serial: "122238082763".into(),
            format,
            retain,
        }
    }

    #[test]
    fn topics_payloads_and_retain() {
        let now = UNIX_EPOCH + Duration::from_secs(1_768_473_000);
        let fields = [
            Field::new(Flow::Production, Measure::Power, 488.925),
            Field::new(Flow::Production, Measure::PowerFactor, 0.957),
            Field::new(Flow::Production, Measure::LifetimeKwh, 3183.793885),
        ];
        let cases = [
            (
                Format::Simple,
                true,
                "data",
                vec![
                    "envoy/122238082763/data/prod_eim_wNow [retained] 488.925",
                    "envoy/122238082763/data/prod_eim_pwrFactor [retained] 0.957",
                    "envoy/122238082763/data/prod_eim_kwhLifetime [retained] 3183.794",
                    "envoy/122238082763/data/timestamp [retained] 1768473000",
                    "envoy/122238082763/data/timestamp_text [retained] 2026-01-15T10:30:00Z",
                ],
            ),
            (
                Format::Simple,
                false,
                "data",
                vec![
                    "envoy/122238082763/data/prod_eim_wNow 488.925",
                    "envoy/122238082763/data/prod_eim_pwrFactor 0.957",
                    "envoy/122238082763/data/prod_eim_kwhLifetime 3183.794",
                    "envoy/122238082763/data/timestamp 1768473000",
                    "envoy/122238082763/data/timestamp_text 2026-01-15T10:30:00Z",
                ],
            ),
            (
                Format::Json,
                true,
                "data",
                vec![
                    r#"envoy/122238082763/data/prod_eim_wNow [retained] {"value":488.925,"unit":"W","timestamp":"2026-01-15T10:30:00Z","serial":"122238082763"}"#,
                    r#"envoy/122238082763/data/prod_eim_pwrFactor [retained] {"value":0.957,"timestamp":"2026-01-15T10:30:00Z","serial":"122238082763"}"#,
                    r#"envoy/122238082763/data/prod_eim_kwhLifetime [retained] {"value":3183.794,"unit":"kWh","timestamp":"2026-01-15T10:30:00Z","serial":"122238082763"}"#,
                    r#"envoy/122238082763/data/timestamp [retained] {"value":1768473000,"timestamp":"2026-01-15T10:30:00Z","serial":"122238082763"}"#,
                    r#"envoy/122238082763/data/timestamp_text [retained] {"value":"2026-01-15T10:30:00Z","timestamp":"2026-01-15T10:30:00Z","serial":"122238082763"}"#,
                ],
            ),
        ];
        for (format, retain, group, want) in cases {
            let p = composer(format, retain);
            let got = p.data(&fields, now);
            assert!(got.iter().all(|m| !m.live), "{group}");
            let got: Vec<String> = got.iter().map(Message::to_string).collect();
            assert_eq!(got, want, "{format:?} {retain} {group}");
        }
    }

    #[test]
    fn no_time_is_published_while_the_clock_is_not_set() {
        let fields = [Field::new(Flow::Production, Measure::Power, 5.0)];
        let unset = UNIX_EPOCH + Duration::from_secs(600);
        for format in [Format::Simple, Format::Json] {
            let p = composer(format, true);
            let data = p.data(&fields, unset);
            let topics: Vec<&str> = data.iter().map(|m| m.topic.as_str()).collect();
            assert_eq!(
                topics,
                ["envoy/122238082763/data/prod_eim_wNow"],
                "{format:?}"
            );
            assert!(!data[0].payload.contains("1970") && !data[0].payload.contains("timestamp"));
            let live = Live {
                watts: [Some(5.0), None, None, None],
            };
            let mut into = LiveMessages::default();
            let raw: Vec<String> = p
                .live(&live, unset, &mut into)
                .iter()
                .map(|m| m.topic.clone())
                .collect();
            assert_eq!(raw, ["envoy/122238082763/raw/prod_eim_wNow"], "{format:?}");
            // Once set, the times are there again.
            let set = UNIX_EPOCH + Duration::from_secs(1_768_473_000);
            assert_eq!(p.live(&live, set, &mut into).len(), 2);
            assert_eq!(p.data(&fields, set).len(), 3);
        }
    }

    #[test]
    fn live_messages_are_rewritten_in_place() {
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        let all = Live {
            watts: [Some(488.925), Some(-120.0), Some(368.925), None],
        };
        let no_net = Live {
            watts: [Some(500.5), None, None, None],
        };
        #[rustfmt::skip]
        let ticks: [(Format, &str, Live, u64, &[&str]); 5] = [
            (Format::Simple, "envoy", all, 1_768_473_000, &[
                "envoy/122238082763/raw/prod_eim_wNow 488.925",
                "envoy/122238082763/raw/conso_net_eim_wNow -120",
                "envoy/122238082763/raw/conso_all_eim_wNow 368.925",
                "envoy/122238082763/raw/timestamp 1768473000",
            ]),
            (Format::Simple, "envoy", Live { watts: [Some(0.0), Some(3183.793885), Some(1.5), None] }, 1_768_473_001, &[
                "envoy/122238082763/raw/prod_eim_wNow 0",
                "envoy/122238082763/raw/conso_net_eim_wNow 3183.794",
                "envoy/122238082763/raw/conso_all_eim_wNow 1.5",
                "envoy/122238082763/raw/timestamp 1768473001",
            ]),
            (Format::Simple, "envoy", no_net, 1_768_473_002, &[
                "envoy/122238082763/raw/prod_eim_wNow 500.5",
                "envoy/122238082763/raw/timestamp 1768473002",
            ]),
            (Format::Simple, "home/solar", no_net, 1_768_473_003, &[
                "home/solar/122238082763/raw/prod_eim_wNow 500.5",
                "home/solar/122238082763/raw/timestamp 1768473003",
            ]),
            (Format::Json, "home/solar", no_net, 1_768_473_004, &[
                r#"home/solar/122238082763/raw/prod_eim_wNow {"value":500.5,"unit":"W","timestamp":"2026-01-15T10:30:04Z","serial":"122238082763"}"#,
                r#"home/solar/122238082763/raw/timestamp {"value":1768473004,"timestamp":"2026-01-15T10:30:04Z","serial":"122238082763"}"#,
            ]),
        ];
        let mut kept = LiveMessages::default();
        let mut topics_before = Vec::new();
        for (format, prefix, live, secs, want) in ticks {
            let p = Composer {
                prefix: prefix.into(),
                ..composer(format, true)
            };
            let got = p.live(&live, at(secs), &mut kept);
            assert!(got.iter().all(|m| m.live && !m.retain), "{secs}");
            let topics: Vec<*const u8> = got.iter().map(|m| m.topic.as_ptr()).collect();
            if secs == 1_768_473_001 {
                assert_eq!(
                    topics, topics_before,
                    "the same values: the same topic buffers"
                );
            }
            topics_before = topics;
            let got: Vec<String> = got.iter().map(Message::to_string).collect();
            assert_eq!(got, want, "{secs}");
        }
    }
}
