//! Incoming packets too big to take. Anyone on the LAN can leave a retained message of
//! megabytes under `P/command/#`; the broker sends it again at every subscription, so
//! refusing it by closing the connection would loop for ever. Such a PUBLISH is read only
//! as far as its topic and packet id (to acknowledge it, so the broker does not send it
//! again), and the rest of its bytes are dropped as they come, never held. Pure: the head
//! of the input in, what to do out.

/// The largest packet taken from the broker: commands are a few bytes, the retained
/// ledger a few KB; nothing of envoy2mqtt's comes near it.
pub const MAX_INCOMING: usize = 64 * 1024;

/// What the head of the input holds.
#[derive(Debug, PartialEq)]
pub enum Head {
    /// A packet of at most `max` bytes (whole or not yet): for the codec.
    Fits,
    /// Not enough bytes yet to tell.
    More,
    /// A PUBLISH of `total` bytes, over the limit: its topic and packet id (0 at QoS 0).
    Publish {
        total: usize,
        topic: String,
        qos: u8,
        pkid: u16,
    },
    /// Another packet over the limit: a broker that sends one is broken.
    Other { total: usize },
}

/// The bytes of an oversized packet still to drop, and whether one was said in the log.
#[derive(Debug, Default)]
pub struct Dropper {
    skip: usize,
    told: bool,
}

impl Dropper {
    /// Drops what is left of an oversized packet from `input`; returns whether more of it
    /// is still to come.
    pub fn drain(&mut self, input: &mut bytes::BytesMut) -> bool {
        let n = self.skip.min(input.len());
        let _ = input.split_to(n);
        self.skip -= n;
        self.skip > 0
    }

    /// An oversized PUBLISH of `total` bytes on `topic` begins: dropped as it comes, said
    /// once at `warn`, then at `debug`.
    pub fn start(&mut self, total: usize, topic: &str) {
        self.skip = total;
        let text = format!(
            "a message of {total} bytes on {:?} was dropped unread: envoy2mqtt takes at most {MAX_INCOMING} bytes (someone on the network published it; clear it with an empty retained message)",
            topic.chars().take(80).collect::<String>()
        );
        if self.told {
            log::debug!("{text}");
        } else {
            log::warn!("{text}");
            self.told = true;
        }
    }

    /// A new connection: nothing half-read is left.
    pub fn reset(&mut self) {
        self.skip = 0;
    }
}

/// The fixed header's remaining length and the header's size, if complete.
fn remaining(buf: &[u8]) -> Option<Option<(usize, usize)>> {
    let mut length = 0usize;
    for (i, byte) in buf.iter().skip(1).take(4).enumerate() {
        length |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(Some((length, i + 2)));
        }
    }
    // Four length bytes that all go on: not MQTT; fewer: wait for more.
    if buf.len() >= 5 { None } else { Some(None) }
}

/// What to do with the packet at the head of `buf`, for a limit of `max` bytes.
pub fn head(buf: &[u8], max: usize) -> Head {
    let Some(&first) = buf.first() else {
        return Head::More;
    };
    let (length, header) = match remaining(buf) {
        None => return Head::Other { total: usize::MAX },
        Some(None) => return Head::More,
        Some(Some(found)) => found,
    };
    let total = header + length;
    if total <= max {
        return Head::Fits;
    }
    if first >> 4 != 3 {
        return Head::Other { total };
    }
    let qos = (first >> 1) & 3;
    let body = &buf[header..];
    let Some(topic_len) = body
        .get(..2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    else {
        return Head::More;
    };
    let need = 2 + topic_len + if qos > 0 { 2 } else { 0 };
    let Some(var) = body.get(..need) else {
        return Head::More;
    };
    let topic = String::from_utf8_lossy(&var[2..2 + topic_len]).into_owned();
    let pkid = if qos > 0 {
        u16::from_be_bytes([var[need - 2], var[need - 1]])
    } else {
        0
    };
    Head::Publish {
        total,
        topic,
        qos,
        pkid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PUBLISH's first bytes: fixed header with `length`, then topic and packet id.
    fn publish(qos: u8, length: usize, topic: &str, pkid: u16) -> Vec<u8> {
        let mut out = vec![0x30 | (qos << 1) | 1];
        let mut n = length;
        loop {
            let byte = (n % 128) as u8;
            n /= 128;
            out.push(if n > 0 { byte | 0x80 } else { byte });
            if n == 0 {
                break;
            }
        }
        out.extend((topic.len() as u16).to_be_bytes());
        out.extend(topic.as_bytes());
        if qos > 0 {
            out.extend(pkid.to_be_bytes());
        }
        out
    }

    #[test]
    fn oversized_publishes_are_named_and_the_rest_fits() {
        let big = publish(1, 300_000, "envoy/command/x", 7);
        assert_eq!(
            head(&big, MAX_INCOMING),
            Head::Publish {
                total: 300_004,
                topic: "envoy/command/x".into(),
                qos: 1,
                pkid: 7
            }
        );
        let qos0 = publish(0, 70_000, "t", 0);
        assert!(matches!(
            head(&qos0, MAX_INCOMING),
            Head::Publish {
                qos: 0,
                pkid: 0,
                total: 70_004,
                ..
            }
        ));
        #[rustfmt::skip]
        let cases: [(&[u8], Head); 7] = [
            (&[], Head::More),
            (&[0x30], Head::More),
            (&[0x30, 0x80, 0x80], Head::More),
            (&[0x30, 0x05, b'x'], Head::Fits),
            (&[0xd0, 0x00], Head::Fits),
            (&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], Head::Other { total: usize::MAX }),
            (&[0x90, 0x80, 0x80, 0x10], Head::Other { total: 262_148 }),
        ];
        for (buf, want) in cases {
            assert_eq!(head(buf, MAX_INCOMING), want, "{buf:?}");
        }
        // The topic not all there yet: wait for it.
        assert_eq!(head(&big[..10], MAX_INCOMING), Head::More);
    }
}
