//! What the broker sends (any bytes): the oversized-packet check, then the codec.
//! The body is `envoy2mqtt::fuzz::mqtt_input`, which `cargo test` also runs on the seeds.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| envoy2mqtt::fuzz::mqtt_input(data));
