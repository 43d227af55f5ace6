//! Readings: what the Envoy measured, turned into the typed fields of docs/topics.md.
//! The production-source table picks where production comes from; a snapshot matches
//! readings to meters; `data` and `live` turn a snapshot into fields. Pure.

pub mod data;
pub mod field;
pub mod live;
pub mod snapshot;
pub mod source;

pub use data::data_fields;
pub use field::{Field, Flow, Measure, Part, Quantity, Unit};
pub use live::{Live, live};
pub use snapshot::{MAINS_MIN_VOLTS, Snapshot, snapshot};
pub use source::Source;

#[cfg(test)]
mod tests;
