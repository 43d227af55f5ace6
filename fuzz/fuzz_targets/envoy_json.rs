//! The Envoy's JSON answers → meters, readings, production → the published fields.
//! The body is `envoy2mqtt::fuzz::envoy_json`, which `cargo test` also runs on the seeds.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| envoy2mqtt::fuzz::envoy_json(data));
