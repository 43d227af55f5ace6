//! A token (pasted by the user, cached, or from the cloud) → its claims and its expiry.
//! The body is `envoy2mqtt::fuzz::jwt`, which `cargo test` also runs on the seeds.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| envoy2mqtt::fuzz::jwt(data));
