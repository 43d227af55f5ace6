//! SIGTERM and SIGINT (stop) and SIGHUP (reload), as flags the loop reads.
//!
//! The loop waits in one broker read until its next deadline: with `SO_RCVTIMEO` set,
//! Linux ends that read with `EINTR` when a signal arrives, even under `SA_RESTART`
//! (signal(7)), so a stop is seen at once, raw polling on or off, with no wake-up for it
//! in between. A signal that lands in the few microseconds between the loop's look at the
//! flags and the read is seen at the read's end: the next deadline, or the keep-alive's
//! ping within 30 s. Sleeps are not ended by a signal, so they are cut at [`SIGNAL_CHECK`].

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::error::{Error, Result};

/// The longest sleep before the loop looks at signals again (`--dry-run`, back-off, a
/// broker that is down): a sleep, unlike a read, is not ended by a signal.
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
