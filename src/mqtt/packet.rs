//! The PUBLISH packet, encoded straight from a [`Message`] into the session's output
//! buffer (MQTT 3.1.1, section 3.3): no owned copy of topic and payload per message, as
//! rumqttc's `Publish` would need. Every other packet is rumqttc's. Pure.

use bytes::{BufMut, BytesMut};
use rumqttc::QoS;

use super::message::Message;

/// The largest packet either way: discovery payloads are larger than 10 KiB.
pub const MAX_PACKET: usize = 256 * 1024;

/// Appends a PUBLISH of `m` to `out` (MQTT 3.1.1, section 3.3), straight from the
/// message's topic and payload: no copy into an owned packet first.
pub fn publish(
    out: &mut BytesMut,
    m: &Message,
    qos: QoS,
    id: Option<u16>,
) -> std::result::Result<(), String> {
    let topic = m.topic.as_bytes();
    let length = 2 + topic.len() + id.map_or(0, |_| 2) + m.payload.len();
    if length + 5 > MAX_PACKET || topic.len() > usize::from(u16::MAX) {
        return Err(format!("{length} bytes is more than a packet may hold"));
    }
    out.reserve(length + 5);
    out.put_u8(0x30 | (qos as u8) << 1 | u8::from(m.retain));
    let mut rest = length;
    loop {
        let byte = (rest % 128) as u8;
        rest /= 128;
        if rest == 0 {
            out.put_u8(byte);
            break;
        }
        out.put_u8(byte | 0x80);
    }
    out.put_u16(topic.len() as u16);
    out.put_slice(topic);
    if let Some(id) = id {
        out.put_u16(id);
    }
    out.put_slice(m.payload.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{Packet, Publish};

    fn message(topic: &str, payload: &str, retain: bool) -> Message {
        Message {
            topic: topic.to_string(),
            payload: payload.to_string(),
            retain,
            live: false,
        }
    }

    #[test]
    fn publish_packets_are_the_codecs_own() {
        let long_topic = "envoy/122238082763/".repeat(10);
        let big = "x".repeat(20_000);
        let cases = [
            ("a", "", false, QoS::AtMostOnce, None),
            (
                "envoy/1/raw/prod_eim_wNow",
                "1234.5",
                false,
                QoS::AtMostOnce,
                None,
            ),
            ("envoy/1/status", "online", true, QoS::AtLeastOnce, Some(1)),
            (
                long_topic.as_str(),
                big.as_str(),
                true,
                QoS::AtLeastOnce,
                Some(65_535),
            ),
            ("été/ü", "{\"v\":1}", false, QoS::ExactlyOnce, Some(300)),
        ];
        for (topic, payload, retain, qos, id) in cases {
            let m = message(topic, payload, retain);
            let mut ours = BytesMut::new();
            publish(&mut ours, &m, qos, id).unwrap();
            let mut p = Publish::new(topic, qos, payload);
            p.retain = retain;
            p.pkid = id.unwrap_or(0);
            let mut theirs = BytesMut::new();
            Packet::Publish(p.clone())
                .write(&mut theirs, MAX_PACKET)
                .unwrap();
            assert_eq!(ours, theirs, "{topic}");
            assert_eq!(
                Packet::read(&mut ours, MAX_PACKET).unwrap(),
                Packet::Publish(p)
            );
            assert!(ours.is_empty());
        }
    }

    #[test]
    fn a_message_too_large_for_a_packet_is_refused() {
        let m = message("t", &"x".repeat(MAX_PACKET), true);
        let mut out = BytesMut::new();
        assert!(publish(&mut out, &m, QoS::AtLeastOnce, Some(1)).is_err());
        assert!(out.is_empty());
    }
}
