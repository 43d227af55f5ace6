//! The energy ledger (docs/topics.md): today, yesterday, month and year energy from the
//! Envoy's lifetime counters ([`book`], pure), a value per flow ([`counters`]), the
//! batteries' counters integrated from their power where no CT counts them
//! ([`integrated`], pure), whether a ledger read back could be true ([`plausible`], pure),
//! where the
//! ledger is kept between runs ([`store`]: the state file or the retained `P/S/ledger`),
//! and its messages ([`messages`], pure).

pub mod book;
pub mod counters;
pub mod integrated;
pub mod messages;
pub mod plausible;
pub mod store;

pub use store::Store;
