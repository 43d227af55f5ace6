//! SIGTERM and SIGINT (stop) and SIGHUP (reload), as flags the loop reads.
//!
//! The loop waits in one broker read until its next deadline: with `SO_RCVTIMEO` set,
//! Linux ends that read with `EINTR` when a signal arrives, even under `SA_RESTART`
//! (signal(7)), so a stop is seen at once. Sleeps are not ended that way, so they are
//! bounded by [`SIGNAL_CHECK`].

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::error::{Error, Result};

/// The longest the loop waits before looking at signals again when it cannot be woken by
/// one: while sleeping (`--dry-run`, back-off) and while raw polling is off. (A broker
/// read is ended by a signal at once; this bound covers a signal that lands between the
/// loop's check of the flags and the read.) With raw polling on, the raw period bounds it.
pub const SIGNAL_CHECK: Duration = Duration::from_secs(1);

/// SIGTERM/SIGINT (stop) and SIGHUP (reload), as flags.
pub struct Signals {
    pub stop: Arc<AtomicBool>,
    pub reload: Arc<AtomicBool>,
}

impl Signals {
    pub fn register() -> Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let s = Signals {
            stop: Arc::new(AtomicBool::new(false)),
            reload: Arc::new(AtomicBool::new(false)),
        };
        for (signal, flag) in [(SIGTERM, &s.stop), (SIGINT, &s.stop), (SIGHUP, &s.reload)] {
            signal_hook::flag::register(signal, flag.clone())
                .map_err(|e| Error::File(format!("cannot handle signal {signal}: {e}")))?;
        }
        Ok(s)
    }
}
