//! Home Assistant MQTT discovery: which entity each field is ([`discovery`], pure), the
//! config payload of an entity ([`entity`], pure), and the record of what was announced
//! ([`announced`]), so that entities that are gone get removed; and, for an App, the broker
//! its [`supervisor`] offers.

pub mod announced;
pub mod discovery;
pub mod entity;
pub mod supervisor;

pub use announced::announce;
pub use discovery::Device;
