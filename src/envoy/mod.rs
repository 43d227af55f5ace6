//! The Envoy side: the HTTPS client and its transport ([`client`], [`transport`]), the
//! memory of the Envoy's self-signed certificate ([`certificate`]), the token and its
//! renewal ([`auth`]), and the pure parsers of its answers ([`api`]). Nothing here knows
//! of the broker, the ledger or Home Assistant.

pub mod api;
pub mod auth;
pub mod certificate;
pub mod client;
pub mod transport;

pub use client::{Envoy, Reply};
