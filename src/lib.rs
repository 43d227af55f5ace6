//! envoy2mqtt reads an Enphase Envoy / IQ Gateway over its local HTTPS API and publishes
//! what it measures to MQTT. Synchronous, one thread. The map of the folders, one room per
//! edge, is in docs/design.md; data flows one way: Envoy → readings → ledger → messages →
//! MQTT.
//!
//! A library so that the fuzz targets (`fuzz/`) reach the parsers; the program is the
//! binary. The modules are the crate's own: what is public is re-exported here on purpose,
//! for `main` and for the fuzz targets.

#![deny(unsafe_code)]

pub(crate) mod envoy;
pub(crate) mod error;
pub(crate) mod homeassistant;
pub(crate) mod ledger;
pub(crate) mod mqtt;
pub(crate) mod readings;
pub(crate) mod run;
pub(crate) mod settings;
pub(crate) mod signal;
pub(crate) mod state_file;
pub(crate) mod time;
pub(crate) mod tls;
pub(crate) mod topics;

/// What `main` runs: the command line and settings, the runs, the one error type.
pub use error::{Error, Result};
pub use run::app::load;
pub use run::{check, diagnose, once, service};
pub use settings::{Config, Sources, cli};
pub use state_file::read_only;

pub mod fuzz;
