//! Time: the time zone that splits days (read from `TZ` or the system, its date arithmetic
//! pure) and the off-peak (HC/HP) windows of French and other tariffs.

pub mod offpeak;
pub mod zone;
