//! envoy2mqtt's modules; the code map is in `main.rs`. A library so that the fuzz targets
//! (`fuzz/`) can call the parsers; the program is the binary.

pub mod archive;
pub mod certificate;
pub mod check;
pub mod cli;
pub mod cloud;
pub mod command;
pub mod config;
pub mod connector;
pub mod diagnose;
pub mod discovery;
pub mod envoy;
pub mod error;
pub mod info;
pub mod inventory;
pub mod json;
pub mod jwt;
pub mod ledger;
pub mod link;
pub mod message;
pub mod mqtt;
pub mod once;
pub mod output;
pub mod packet;
pub mod reading;
pub mod schedule;
pub mod service;
pub mod signal;
pub mod source;
pub mod state;
pub mod tariff;
pub mod token;
pub mod topic;
pub mod zone;
