//! `--check`: a readable report on the configuration, the Envoy (reachability, firmware,
//! certificate, token, meters, a sample of readings), and the broker (a clean connect).
//!
//! Returns whether everything needed works; `main` turns that into exit code 0 or 1.

use std::fmt::Write as _;

use super::feeds::Feeds;
use crate::envoy::Envoy;
use crate::envoy::auth::token::{self, Obtained};
use crate::error::Result;
use crate::mqtt::Session;
use crate::readings::{self, Measure};
use crate::settings::parsers::hex;
use crate::settings::{Config, Sources};
use crate::topics::payload;

/// Prints the report on stdout; `Ok(true)` when the Envoy answered with readings.
pub fn run(config: &Config, sources: &Sources) -> Result<bool> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "envoy2mqtt {} --check\n\nconfiguration: valid",
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in config.describe() {
        let _ = writeln!(out, "  {name:<26} {value}  ({})", sources.origin(name));
    }
    let ok = match envoy_report(config, &mut out) {
        Ok(()) => true,
        Err(e) => {
            let _ = writeln!(out, "  FAILED: {e}");
            false
        }
    };
    let broker = check_broker(config);
    let line = match &broker {
        Ok(line) => line.clone(),
        Err(e) => format!("FAILED: {e}"),
    };
    let _ = writeln!(out, "\nbroker: {line}");
    let ok = ok && broker.is_ok();
    let _ = writeln!(out, "\nresult: {}", if ok { "ok" } else { "FAILED" });
    print!("{out}");
    Ok(ok)
}

fn envoy_report(config: &Config, out: &mut String) -> Result<()> {
    let _ = writeln!(out, "\nenvoy: {}", config.envoy.url);
    let mut envoy = Envoy::connect(config)?;
    let info = envoy.info.clone();
    let _ = writeln!(out, "  reachable: yes");
    let _ = writeln!(out, "  serial:    {}", envoy.serial);
    let _ = writeln!(
        out,
        "  firmware:  {} ({}, part {})",
        info.firmware,
        info.model(),
        info.part_number
    );
    if let Some(fp) = envoy.certificate() {
        let _ = writeln!(
            out,
            "  certificate SHA-256: {} (ENVOY_TLS_VERIFY={})",
            hex(&fp),
            format!("{:?}", config.envoy.tls_verify).to_lowercase()
        );
    }
    let mut feeds = Feeds::default();
    let meters = feeds.meters(&mut envoy)?;
    match envoy.token() {
        None => {
            let _ = writeln!(out, "  token: none needed (firmware before 7)");
        }
        Some(t) => {
            let from = match t.obtained {
                Obtained::Setting => "ENVOY_TOKEN",
                Obtained::Cache => "the cache in STATE_DIR",
                Obtained::Cloud => "the Enphase cloud, just now",
            };
            let days = t.claims.exp.saturating_sub(token::now()) / 86_400;
            let _ = writeln!(
                out,
                "  token: from {from}; {} {}; expires {} (in {days} days)",
                if t.claims.enphase_user.is_empty() {
                    "user"
                } else {
                    &t.claims.enphase_user
                },
                t.claims.username,
                token::date(t.claims.exp)
            );
        }
    }
    let _ = writeln!(out, "  meters:");
    if meters.is_empty() {
        let _ = writeln!(
            out,
            "    none: not metered; production from the microinverters, consumption not measured"
        );
    }
    for m in &meters {
        let _ = writeln!(
            out,
            "    {:<18} eid {}: {}, {} phase{}",
            m.kind,
            m.eid,
            if m.enabled { "enabled" } else { "disabled" },
            m.phases,
            if m.phases > 1 { "s" } else { "" }
        );
    }
    let snap = feeds.data(&mut envoy)?;
    ensemble_report(&mut feeds, &mut envoy, out);
    if let Some(source) = snap.source {
        let _ = writeln!(out, "  production: from {}", source.describe());
    }
    let fields = readings::data_fields(&snap);
    let _ = writeln!(out, "  readings: {} fields", fields.len());
    let powers = fields
        .iter()
        .filter(|f| f.measure == Measure::Power && f.phase.is_none());
    for f in powers {
        let _ = writeln!(out, "    {:<22} {} W", f.name(), payload::number(f.value));
    }
    Ok(())
}

/// `--check`'s broker line: connects and disconnects cleanly.
pub fn check_broker(config: &Config) -> Result<String> {
    let id = format!("envoy2mqtt-check-{}", std::process::id());
    let mut session = Session::new(&config.mqtt, &id, None, Vec::new())?;
    session.connect()?;
    session.close(&[])?;
    Ok(format!(
        "{}:{}{} accepted the connection",
        config.mqtt.host,
        config.mqtt.port,
        if config.mqtt.tls { " (TLS)" } else { "" }
    ))
}

/// What the ensemble has, the grid status, the batteries' aggregate and the storage
/// settings, for `--check`. A failure is a line of the report, not a failed check: the
/// meters are what the bridge needs.
fn ensemble_report(feeds: &mut Feeds, envoy: &mut Envoy, out: &mut String) {
    let grid = match feeds.inventory(envoy) {
        Ok(grid) => grid,
        Err(e) => {
            let _ = writeln!(out, "  ensemble: not read ({e})");
            return;
        }
    };
    let Some(ensemble) = feeds.ensemble() else {
        let _ = writeln!(out, "  ensemble: none (firmware before 7)");
        return;
    };
    let _ = writeln!(out, "  ensemble: {}", ensemble.describe());
    let read = [
        ("batteries", feeds.battery(envoy)),
        ("each battery", feeds.battery_power(envoy)),
        ("storage settings", feeds.storage(envoy)),
        ("generator", feeds.generator(envoy)),
        ("relays", feeds.relays(envoy)),
    ];
    for (what, fields) in [("grid", Ok(grid))].into_iter().chain(read) {
        match fields {
            Ok(fields) => {
                for f in fields {
                    let number = || payload::number(f.value).to_string();
                    let value = f.word().map_or_else(number, str::to_string);
                    let unit = f.unit().symbol().unwrap_or("");
                    let _ = writeln!(out, "    {:<22} {value} {unit}", f.name());
                }
            }
            Err(e) => {
                let _ = writeln!(out, "    {what}: not read ({e})");
            }
        }
    }
    inverter_report(feeds, envoy, out);
}

/// How many microinverters report, from which endpoint, and the endpoints this Envoy does
/// not have.
fn inverter_report(feeds: &mut Feeds, envoy: &mut Envoy, out: &mut String) {
    match feeds.each_inverter(envoy) {
        Ok(read) => {
            let serials: std::collections::BTreeSet<&str> = read
                .all
                .iter()
                .filter_map(|f| f.device.as_ref().map(|d| d.serial()))
                .collect();
            let _ = writeln!(out, "  microinverters: {}", serials.len());
        }
        Err(e) => {
            let _ = writeln!(out, "  microinverters: not read ({e})");
        }
    }
    let absent = feeds.absent_endpoints();
    if !absent.is_empty() {
        let _ = writeln!(out, "  not on this Envoy: {}", absent.join(", "));
    }
}
