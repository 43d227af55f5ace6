//! Home Assistant MQTT discovery: which entity each field is ([`discovery`], pure), the
//! config payload of an entity ([`entity`], pure), and the record of what was announced
//! ([`announced`]), so that entities that are gone get removed.

pub mod announced;
pub mod discovery;
pub mod entity;

pub use announced::announce;
pub use discovery::Device;
