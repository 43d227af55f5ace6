//! A `--config` file → validated settings (or an error naming the setting).
#![no_main]
use envoy2mqtt::fuzz::Sources;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut sources = Sources::default();
    if sources.file("fuzz.conf", text).is_ok() {
        let _ = sources.validate();
    }
});
