//! A `--config` file → validated settings (or an error naming the setting).
//! The body is `envoy2mqtt::fuzz::config_file`, which `cargo test` also runs on the seeds.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| envoy2mqtt::fuzz::config_file(data));
