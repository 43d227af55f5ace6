//! `/info` XML → firmware, serial, model.
//! The body is `envoy2mqtt::fuzz::info_xml`, which `cargo test` also runs on the seeds.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| envoy2mqtt::fuzz::info_xml(data));
