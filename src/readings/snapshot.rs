//! A snapshot: what one poll learned, CT by role. Meters are matched to readings by `eid`
//! (never by position); only `channels[0..phaseCount)` are real phases; the Envoy's
//! aggregate `voltage` is the SUM of the phases, so a voltage is their mean; a phase that
//! carries no mains voltage is left out. Pure.

use super::source::Source;
use crate::envoy::api::eim::{Eim, Section};
use crate::envoy::api::{Channel, Inverters, Meter, MeterReading, Role};

/// A CT's values over the phases in use.
#[derive(Debug, Clone, PartialEq)]
pub struct Ct {
    pub power: f64,
    pub voltage: f64,
    pub current: f64,
    pub pwr_factor: f64,
    pub delivered: f64,
    pub received: f64,
    /// One entry per phase in use, empty on a single-phase meter.
    pub phases: Vec<Channel>,
    /// The phases (1-3) left out because they carry no mains voltage.
    pub unwired: Vec<u8>,
}

/// Everything one poll learned, by role.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub production: Option<Ct>,
    pub net: Option<Ct>,
    pub total: Option<Ct>,
    /// The batteries' CT.
    pub storage: Option<Ct>,
    pub inverters: Option<Inverters>,
    /// Where production came from (`None`: a raw tick, or nothing measures it).
    pub source: Option<Source>,
    /// Readings whose eid `/ivp/meters` did not list (the meter list may be stale).
    pub unknown_eids: Vec<u64>,
    /// The CTs come from `/production.json`: the net CT's one counter is import less
    /// export (`received` is 0), and import and export are not counted apart.
    pub net_counter_only: bool,
    /// The Envoy's clock at its readings, Unix s: a second clock to tell whether a jump of
    /// the wall clock is the time's or the machine's.
    pub envoy_time: Option<i64>,
}

/// A snapshot from `/production.json`'s active `eim` sections, for a metered Envoy without
/// a usable `/ivp/meters`; production from `inverters` where no production CT is active.
pub fn from_eim(eim: &Eim, inverters: Option<Inverters>) -> Snapshot {
    let ct = |s: Section| Ct {
        power: s.watts,
        voltage: s.voltage,
        current: s.current,
        pwr_factor: s.pwr_factor,
        delivered: s.wh_lifetime,
        received: 0.0,
        phases: Vec::new(),
        unwired: Vec::new(),
    };
    Snapshot {
        production: eim.production.map(ct),
        net: eim.net.map(ct),
        total: eim.total.map(ct),
        inverters,
        net_counter_only: true,
        ..Snapshot::default()
    }
}

/// Matches readings to meters by eid and keeps the enabled CTs of the roles the topics use.
pub fn snapshot(
    meters: &[Meter],
    readings: &[MeterReading],
    inverters: Option<Inverters>,
) -> Snapshot {
    let mut snap = Snapshot {
        inverters,
        ..Snapshot::default()
    };
    snap.envoy_time = readings.iter().filter_map(|r| r.timestamp).max();
    for reading in readings {
        let Some(meter) = meters.iter().find(|m| m.eid == reading.eid) else {
            snap.unknown_eids.push(reading.eid);
            continue;
        };
        if !meter.enabled {
            continue;
        }
        let slot = match meter.role {
            Role::Production => &mut snap.production,
            Role::NetConsumption => &mut snap.net,
            Role::TotalConsumption => &mut snap.total,
            Role::Storage => &mut snap.storage,
            Role::Other => continue,
        };
        *slot = Some(ct(reading, meter.phases));
    }
    snap
}

/// A phase below this while another phase reads more carries no mains voltage: it is not
/// wired, and what its channel reads is noise.
pub const MAINS_MIN_VOLTS: f64 = 50.0;

/// Reduces a reading to its `phases` real channels, less the phases that carry no mains
/// voltage (a meter set for three phases with only L1 wired reads 235, 6 and 11 V).
fn ct(reading: &MeterReading, phases: usize) -> Ct {
    let configured = &reading.channels[..phases.min(reading.channels.len())];
    let mains = configured.iter().any(|c| c.voltage >= MAINS_MIN_VOLTS);
    let numbered = configured.iter().enumerate().map(|(i, c)| Channel {
        line: i as u8 + 1,
        ..*c
    });
    let (used, unwired): (Vec<Channel>, Vec<Channel>) =
        numbered.partition(|c| !mains || c.voltage >= MAINS_MIN_VOLTS);
    let multi = configured.len() > 1;
    let sum = |f: fn(&Channel) -> f64| used.iter().map(f).sum::<f64>();
    let apparent = sum(|c| c.apparent);
    // The aggregate is the Envoy's own, unless noise of unwired phases had to be taken out.
    let (power, current) = if unwired.is_empty() {
        (reading.total.power, reading.total.current)
    } else {
        (sum(|c| c.power), sum(|c| c.current))
    };
    Ct {
        power,
        voltage: if multi && !used.is_empty() {
            sum(|c| c.voltage) / used.len() as f64
        } else {
            reading.total.voltage
        },
        current,
        // On several phases the Envoy's aggregate power factor is the sum of the phases'
        // (1.553 on a split-phase meter): the real one is active over apparent power.
        pwr_factor: if multi && apparent > 0.0 {
            sum(|c| c.power) / apparent
        } else {
            reading.pwr_factor
        },
        delivered: reading.delivered,
        received: reading.received,
        phases: if multi { used } else { Vec::new() },
        unwired: unwired.iter().map(|c| c.line).collect(),
    }
}
