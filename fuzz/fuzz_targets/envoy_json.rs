//! The Envoy's JSON answers → meters, readings, production → the published fields.
#![no_main]
use envoy2mqtt::fuzz::{
    Composer, Format, LiveMessages, data_fields, live, meters, production, readings_scan, snapshot,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The same text as each endpoint, then as a whole poll.
    let meters = meters::meters(text).unwrap_or_default();
    let readings = meters::readings(text).unwrap_or_default();
    // A raw tick's parse of the same text, and its fields.
    let raw = readings_scan::raw_readings(text).unwrap_or_default();
    let _ = live(&snapshot(&meters, &raw, None));
    let inverters = production::production(text).ok().map(|v| v.inverters());
    let snap = snapshot(&meters, &readings, inverters);
    let _ = data_fields(&snap);
    // A raw tick's messages in both formats, written into the same kept buffers.
    let live = live(&snap);
    let mut kept = LiveMessages::default();
    for format in [Format::Simple, Format::Json] {
        let p = Composer {
            prefix: "envoy".into(),
            serial: "122238082763".into(),
            format,
            retain: false,
        };
        let _ = p.live(&live, std::time::UNIX_EPOCH, &mut kept);
    }
});
