//! How requests to the Envoy are authorised from firmware 7 on: the owner's JWT, decoded
//! ([`jwt`]), kept and renewed ([`token`]), fetched from the Enphase cloud when the
//! settings give an account ([`cloud`]).

pub mod cloud;
pub mod jwt;
pub mod token;
