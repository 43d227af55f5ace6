//! A token (pasted by the user, cached, or from the cloud) → its claims, and its expiry as
//! the status, the log and `--check` write it (any `exp`, past year 9999 too).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(claims) = envoy2mqtt::fuzz::jwt::decode(text) {
            let _ = envoy2mqtt::fuzz::zone::utc(claims.exp);
            let _ = envoy2mqtt::fuzz::token::date(claims.exp);
        }
    }
});
