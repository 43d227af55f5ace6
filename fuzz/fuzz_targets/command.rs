//! An incoming MQTT message (any topic, any payload) → a command.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let topic = String::from_utf8_lossy(&data[..split]);
    let payload = data.get(split + 1..).unwrap_or_default();
    let _ = envoy2mqtt::fuzz::commands::parse("envoy", Some("homeassistant"), &topic, payload);
});
