//! The ledger's state file or retained `P/S/ledger` → a ledger that takes a poll.
//! The body is `envoy2mqtt::fuzz::ledger_state`, which `cargo test` also runs on the seeds.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| envoy2mqtt::fuzz::ledger_state(data));
