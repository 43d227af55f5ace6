//! Settings (docs/settings.md): the command line, the table of every setting, where each
//! value came from, and their validation into the one typed [`Config`] the program runs
//! on. Parsed once, at start and at each reload; nothing else reads the environment.

pub mod app;
pub mod cli;
mod config;
mod load;
pub(crate) mod parsers;
mod sources;
pub(crate) mod table;
mod validate;

pub use config::{Config, EnvoyConfig, Format, MqttConfig, Secret, TlsVerify};
pub use load::load;
pub use sources::{Origin, Sources};

#[cfg(test)]
mod tests;
