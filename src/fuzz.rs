//! One function a fuzz target: every parser of what others wrote (the Envoy's answers,
//! tokens, settings files, retained ledgers, commands, the broker's bytes) and the pure code
//! behind it, driven with any input. cargo-fuzz runs them (`fuzz/`, `make fuzz`); `cargo
//! test` replays their seeds and any crash input kept, as plain test cases. None may panic
//! (but `tariff`, which checks that what it shows reads back the same).

use std::time::UNIX_EPOCH;

use crate::envoy::api::{info, meters, production, readings_scan};
use crate::envoy::auth::{cloud, jwt, token};
use crate::ledger::book;
use crate::mqtt::oversize::{self, Head};
use crate::readings::{data_fields, live, snapshot};
use crate::settings::{Format, Sources};
use crate::time::offpeak;
use crate::time::zone::{self, Zone};
use crate::topics::{Composer, LiveMessages, commands, payload};

/// An incoming MQTT message (any topic, a 0 byte, any payload) → a command.
pub fn command(data: &[u8]) {
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let topic = String::from_utf8_lossy(&data[..split]);
    let payload = data.get(split + 1..).unwrap_or_default();
    let _ = commands::parse("envoy", Some("homeassistant"), &topic, payload);
}

/// A `--config` file → validated settings (or an error naming the setting).
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut sources = Sources::default();
    if sources.file("fuzz.conf", text).is_ok() {
        let _ = sources.validate();
    }
}

/// The Envoy's JSON answers → meters, readings, production → the published fields, and a
/// raw tick's messages in both formats.
pub fn envoy_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let meters = meters::meters(text).unwrap_or_default();
    let readings = meters::readings(text).unwrap_or_default();
    let raw = readings_scan::raw_readings(text).unwrap_or_default();
    let _ = live(&snapshot(&meters, &raw, None));
    let inverters = production::production(text).ok().map(|v| v.inverters());
    let snap = snapshot(&meters, &readings, inverters);
    let _ = data_fields(&snap);
    let live = live(&snap);
    let mut kept = LiveMessages::default();
    for format in [Format::Simple, Format::Json] {
        let p = Composer {
            prefix: "envoy".into(),
            serial: "122238082763".into(),
            format,
            retain: false,
        };
        let _ = p.live(&live, UNIX_EPOCH, &mut kept);
    }
}

/// `/info` XML → firmware, serial, model.
pub fn info_xml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = info::parse(text);
    }
}

/// A token (pasted, cached, or from the cloud) → its claims, and its expiry as the status,
/// the log and `--check` write it (any `exp`, past year 9999 too).
pub fn jwt(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(claims) = jwt::decode(text) {
        let _ = zone::utc(claims.exp);
        let _ = token::date(claims.exp);
    }
}

/// The ledger's state file or retained `P/S/ledger` (it may be damaged) → a ledger that
/// then takes a poll and gives its messages.
pub fn ledger_state(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(zone) = Zone::parse("CET-1CEST,M3.5.0,M10.5.0/3") else {
        return;
    };
    let Some(mut l) = book::parse(text).ok().and_then(|l| l.restored(&zone)) else {
        return;
    };
    let at = l.at_ms.saturating_add(60_000);
    let _ = l.advance(&zone, &[], at, l.counters, Some(1000.0));
    let _ = l.daily_fields();
    let _ = l.totals(true);
    let _ = l.detailed(&zone);
}

/// What the broker sends (any bytes): the oversized-packet check, then the packet codec,
/// packet after packet, as the session reads its input (with a small limit, so that the
/// oversized path is reached with small inputs too).
pub fn mqtt_input(data: &[u8]) {
    let mut input = bytes::BytesMut::from(data);
    let max = 512;
    for _ in 0..64 {
        match oversize::head(&input, max) {
            Head::Fits => {}
            Head::More | Head::Other { .. } => return,
            Head::Publish { total, .. } => {
                let n = total.min(input.len());
                let _ = input.split_to(n);
                continue;
            }
        }
        if rumqttc::Packet::read(&mut input, max).is_err() {
            return;
        }
    }
}

/// `OFFPEAK_HOURS` → windows, every minute of the day against them, and what is shown
/// reading back the same (the one property checked: it panics otherwise).
pub fn tariff(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(windows) = offpeak::parse(text) {
        for minute in (0..1440).step_by(7) {
            let _ = offpeak::is_offpeak(&windows, minute);
        }
        let shown: Vec<String> = windows.iter().map(|w| w.to_string()).collect();
        assert_eq!(offpeak::parse(&shown.join(",")).ok(), Some(windows));
    }
}

/// The Enlighten cloud's answers: the login's JSON → its `session_id`; the token request's
/// body → a token's claims.
pub fn cloud_answer(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = cloud::session_id(&text);
    if let Ok(claims) = jwt::decode(text.trim()) {
        let _ = token::date(claims.exp);
    }
}

/// A retained `{sensor}_whLifetime_00h` or `_yesterday` (anyone may publish one) → a
/// number, dated or not → a ledger at noon that imports it as today's references.
pub fn references(data: &[u8]) {
    let Some((value, _date)) = payload::dated_number(&String::from_utf8_lossy(data)) else {
        return;
    };
    let Ok(zone) = Zone::parse("CET-1CEST,M3.5.0,M10.5.0/3") else {
        return;
    };
    let mut counters = book::Counters::default();
    counters[crate::readings::Flow::Production] = Some(5_000.0);
    counters[crate::readings::Flow::Net] = Some(-5.0);
    let Ok(mut l) = book::Ledger::start(&zone, 1_768_478_400_000, counters) else {
        return;
    };
    let refs: Vec<_> = crate::readings::Flow::ALL
        .into_iter()
        .map(|f| (f, Some(value), Some(value)))
        .collect();
    let _ = l.import(&refs);
    let _ = l.daily_fields();
    let _ = l.totals(true);
}

/// `TZ` (a POSIX string, or an IANA name read under the zoneinfo folders) → a zone → days,
/// day starts and wall-clock times across a century.
pub fn time_zone(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(zone) = Zone::parse(text) else {
        return;
    };
    // 2024 to 2124, in steps of about 89 days, and the instants around each day's start.
    for t in (1_704_067_200..4_859_827_200).step_by(7_700_000) {
        let day = zone.day(t);
        let start = zone.day_start(day);
        let _ = (zone.minute_of_day(t), zone.clock(t), zone.day(start - 1));
    }
}

#[cfg(test)]
mod tests {
    /// A fuzz target's body.
    type Target = fn(&[u8]);

    /// Every fuzz target with its function.
    const TARGETS: [(&str, Target); 11] = [
        ("cloud_answer", super::cloud_answer),
        ("command", super::command),
        ("config_file", super::config_file),
        ("envoy_json", super::envoy_json),
        ("info_xml", super::info_xml),
        ("jwt", super::jwt),
        ("ledger_state", super::ledger_state),
        ("mqtt_input", super::mqtt_input),
        ("references", super::references),
        ("tariff", super::tariff),
        ("time_zone", super::time_zone),
    ];

    #[test]
    fn the_fuzz_seeds_and_crashes_run_without_a_panic() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut ran = 0;
        for (target, run) in TARGETS {
            for folder in ["seeds", "artifacts"] {
                let Ok(files) = std::fs::read_dir(root.join(folder).join(target)) else {
                    continue;
                };
                for file in files.flatten() {
                    run(&std::fs::read(file.path()).unwrap());
                    ran += 1;
                }
            }
        }
        // 27 seeds today, in every target's folder.
        assert!(ran >= 27, "{ran} seeds");
    }
}
