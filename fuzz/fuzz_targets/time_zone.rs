//! `TZ` → a zone → days and wall-clock times.
//! The body is `envoy2mqtt::fuzz::time_zone`, which `cargo test` also runs on the seeds.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| envoy2mqtt::fuzz::time_zone(data));
