//! `OFFPEAK_HOURS` → windows, and what is shown reads back the same.
//! The body is `envoy2mqtt::fuzz::tariff`, which `cargo test` also runs on the seeds.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| envoy2mqtt::fuzz::tariff(data));
