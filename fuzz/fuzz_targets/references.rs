//! A retained `_00h` or `_yesterday` reference → a number → the ledger's import.
//! The body is `envoy2mqtt::fuzz::references`, which `cargo test` also runs on the seeds.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| envoy2mqtt::fuzz::references(data));
