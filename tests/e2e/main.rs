//! End-to-end tests: the real `envoy2mqtt` binary against the simulated Envoy (real HTTPS,
//! real fixture answers), a real mosquitto and, where a test needs it, the simulated Enphase
//! cloud. Everything listens on 127.0.0.1; every wait is bounded and ends on an event (a
//! message, a log line, a counter). One test binary, a module per subject.

#[path = "../../examples/envoy_sim/pki.rs"]
mod pki;
#[path = "../../examples/envoy_sim/sim.rs"]
mod sim;

mod support;

mod app;
mod battery;
mod discovery;
mod fault;
mod layout;
mod ledger;
mod mqtt;
mod packaging;
mod reading;
mod restore;
mod service;
mod settings;
mod token;
