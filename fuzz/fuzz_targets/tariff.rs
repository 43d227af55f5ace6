//! `OFFPEAK_HOURS` → windows, and every minute of the day against them.
#![no_main]
use envoy2mqtt::fuzz::offpeak;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(windows) = offpeak::parse(text) {
        for minute in (0..1440).step_by(7) {
            let _ = offpeak::is_offpeak(&windows, minute);
        }
        let shown: Vec<String> = windows.iter().map(|w| w.to_string()).collect();
        // What is shown reads back the same.
        assert_eq!(offpeak::parse(&shown.join(",")).ok(), Some(windows));
    }
});
