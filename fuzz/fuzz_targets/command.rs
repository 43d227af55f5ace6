//! An incoming MQTT message (any topic, any payload) → a command.
//! The body is `envoy2mqtt::fuzz::command`, which `cargo test` also runs on the seeds.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| envoy2mqtt::fuzz::command(data));
