//! Time: the time zone that splits days (read from `TZ` or the system, its date arithmetic
//! pure), the off-peak (HC/HP) windows of French and other tariffs, and the wall clock
//! checked against the monotonic one (`guard`, pure).

pub mod guard;
pub mod offpeak;
pub mod zone;
