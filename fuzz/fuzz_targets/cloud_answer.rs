//! The Enlighten login and token answers.
//! The body is `envoy2mqtt::fuzz::cloud_answer`, which `cargo test` also runs on the seeds.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| envoy2mqtt::fuzz::cloud_answer(data));
