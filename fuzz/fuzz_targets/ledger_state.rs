//! The ledger's state file or retained `P/S/ledger` topic (it may be damaged) → a ledger
//! that then takes a poll and gives its messages.
#![no_main]
use envoy2mqtt::fuzz::{Zone, ledger};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let zone = Zone::parse("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
    // As the bridge reads it: only a ledger it could have written, its day start derived.
    let Some(mut l) = ledger::parse(text).ok().and_then(|l| l.restored(&zone)) else {
        return;
    };
    let at = l.at_ms.saturating_add(60_000);
    let _ = l.advance(&zone, &[], at, l.counters, Some(1000.0));
    let _ = l.daily_fields();
    let _ = l.totals(true);
    let _ = l.detailed(&zone);
});
