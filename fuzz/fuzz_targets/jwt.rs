//! A token (pasted by the user, cached, or from the cloud) → its claims.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = envoy2mqtt::jwt::decode(text);
    }
});
