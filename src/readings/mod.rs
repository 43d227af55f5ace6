//! Readings: what the Envoy measured, turned into the typed fields of docs/topics.md.
//! The production-source table picks where production comes from; a snapshot matches
//! readings to meters; `data` and `live` turn a snapshot into fields. Pure.

pub mod battery;
pub mod data;
pub mod device;
pub mod field;
pub mod inverters;
pub mod live;
pub mod snapshot;
pub mod source;
pub mod system;

pub use data::data_fields;
pub use device::DeviceKind;
pub use field::{Field, Flow, Measure, Part, Quantity, Subject, Unit};
pub use live::{Live, live};
pub use snapshot::{MAINS_MIN_VOLTS, Snapshot, snapshot};
pub use source::Source;

#[cfg(test)]
mod tests;
