//! What the broker sends (any bytes): the oversized-packet check, then the packet codec,
//! packet after packet, as the session reads its input.
#![no_main]
use envoy2mqtt::fuzz::{BytesMut, MqttPacket, oversize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = BytesMut::from(data);
    // A small limit, so that the oversized path is reached with small inputs too.
    let max = 512;
    for _ in 0..64 {
        match oversize::head(&input, max) {
            oversize::Head::Fits => {}
            oversize::Head::More | oversize::Head::Other { .. } => return,
            oversize::Head::Publish { total, .. } => {
                let n = total.min(input.len());
                let _ = input.split_to(n);
                continue;
            }
        }
        if MqttPacket::read(&mut input, max).is_err() {
            return;
        }
    }
});
