//! The Envoy's answers, one pure file per endpoint family: each turns the text the Envoy
//! sent into plain structs. A parse error is a short `String` that says what was expected;
//! the caller logs it and skips the answer.

pub mod acb;
pub mod eim;
pub mod ensemble;
pub mod info;
pub mod inverters;
pub mod meters;
pub mod production;
pub mod readings_scan;
pub mod tariff;

pub use info::Info;
pub use meters::{Channel, Meter, MeterReading, Role};
pub use production::{Inverters, V1};

use serde::Deserialize;

/// A capture's answer, for the parsers' tests: `tests/fixtures/envoy/{variant}/{file}`.
#[cfg(test)]
pub(crate) fn fixture(variant: &str, file: &str) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/envoy");
    std::fs::read_to_string(format!("{dir}/{variant}/{file}")).unwrap()
}

/// Parses `body`, an answer of `what`.
pub(crate) fn parse<T: for<'de> Deserialize<'de>>(what: &str, body: &str) -> Result<T, String> {
    serde_json::from_str(body).map_err(|e| format!("{what} is not the JSON expected: {e}"))
}
