//! Readings: what the Envoy measured, turned into the named fields of docs/topics.md.
//!
//! Pure functions on plain data. Meters are matched to readings by `eid` (never by position);
//! only `channels[0..phaseCount)` are real phases; the Envoy's aggregate `voltage` is the SUM
//! of the phases, so a voltage is published as their mean. A field the system cannot measure
//! (no consumption CT, a disabled CT) is left out rather than published as 0.

use crate::source::Source;

/// What a CT measures, from `measurementType` in `/ivp/meters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Production,
    NetConsumption,
    TotalConsumption,
    /// Storage, backfeed, load, EV charger, PV3P... measured but not published.
    Other,
}

impl Role {
    pub fn from_measurement_type(text: &str) -> Role {
        match text {
            "production" => Role::Production,
            "net-consumption" => Role::NetConsumption,
            "total-consumption" => Role::TotalConsumption,
            _ => Role::Other,
        }
    }
}

/// One entry of `/ivp/meters`.
#[derive(Debug, Clone, PartialEq)]
pub struct Meter {
    pub eid: u64,
    pub kind: String,
    pub role: Role,
    pub enabled: bool,
    pub phases: usize,
}

/// One phase of a reading.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Channel {
    pub power: f64,
    pub apparent: f64,
    pub voltage: f64,
    pub current: f64,
    /// The phase number (1-3) once assigned to a CT, 0 in a raw reading.
    pub line: u8,
}

/// One entry of `/ivp/meters/readings`: the meter's aggregate and its channels.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MeterReading {
    pub eid: u64,
    pub total: Channel,
    pub pwr_factor: f64,
    /// Wh delivered (`actEnergyDlvd`): produced, or imported on a net-consumption CT.
    pub delivered: f64,
    /// Wh received (`actEnergyRcvd`): exported, on a net-consumption CT.
    pub received: f64,
    pub channels: Vec<Channel>,
}

/// What the microinverters report (`/api/v1/production` or `/production.json`; see
/// [`source`](crate::source) for which): production where no CT measures it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inverters {
    pub watts_now: f64,
    /// The Envoy's own energy today, where it is right (`/api/v1/production` only).
    pub wh_today: Option<f64>,
    /// `None` where the source has no sound lifetime counter.
    pub wh_lifetime: Option<f64>,
}

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
    pub inverters: Option<Inverters>,
    /// Where production came from (`None`: a raw tick, or nothing measures it).
    pub source: Option<Source>,
    /// Readings whose eid `/ivp/meters` did not list (the meter list may be stale).
    pub unknown_eids: Vec<u64>,
}

/// The unit of a field, for JSON payloads and discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Watt,
    Volt,
    Ampere,
    WattHour,
    KiloWattHour,
    /// Power factor, on/off flags.
    None,
}

impl Unit {
    pub fn symbol(self) -> Option<&'static str> {
        match self {
            Unit::Watt => Some("W"),
            Unit::Volt => Some("V"),
            Unit::Ampere => Some("A"),
            Unit::WattHour => Some("Wh"),
            Unit::KiloWattHour => Some("kWh"),
            Unit::None => None,
        }
    }
}

/// One named value, as published under `P/S/data/` or `P/S/raw/`.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub value: f64,
    pub unit: Unit,
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

struct Fields(Vec<Field>);

impl Fields {
    fn add(&mut self, name: &str, value: f64, unit: Unit) {
        self.0.push(Field {
            name: name.to_string(),
            value,
            unit,
        });
    }

    /// `wNow`, `voltage`, `current` of each phase: `{prefix}_wNow_l1`, ...
    fn phases(&mut self, prefix: &str, phases: &[Channel], with_current: bool) {
        for p in phases {
            let n = p.line;
            self.add(&format!("{prefix}_wNow_l{n}"), p.power, Unit::Watt);
            self.add(&format!("{prefix}_voltage_l{n}"), p.voltage, Unit::Volt);
            if with_current {
                self.add(&format!("{prefix}_current_l{n}"), p.current, Unit::Ampere);
            }
        }
    }

    fn energy(&mut self, prefix: &str, wh: f64) {
        self.add(&format!("{prefix}_whLifetime"), wh, Unit::WattHour);
        self.add(
            &format!("{prefix}_kwhLifetime"),
            wh / 1000.0,
            Unit::KiloWattHour,
        );
    }
}

fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

/// The `data` fields that this system measures, in the order of the contract.
/// `timestamp` and `timestamp_text` are added by the message layer.
pub fn data_fields(s: &Snapshot) -> Vec<Field> {
    let mut f = Fields(Vec::new());
    let prod = production(&mut f, s);
    let net_power = net_consumption(&mut f, s, prod);
    grid_and_eco(&mut f, s, net_power, prod);
    house_consumption(&mut f, s, prod);
    f.0
}

/// Production's power and lifetime energy, where the system has them.
type Production = (Option<f64>, Option<f64>);

/// Production: the production CT, else the microinverters.
fn production(f: &mut Fields, s: &Snapshot) -> Production {
    let (prod_power, prod_energy) = match (&s.production, s.inverters) {
        (Some(p), _) => (Some(p.power), Some(p.delivered)),
        (None, Some(inv)) => (Some(inv.watts_now), inv.wh_lifetime),
        (None, None) => (None, None),
    };
    if let Some(power) = prod_power {
        f.add("prod_eim_wNow", power, Unit::Watt);
    }
    if let Some(p) = &s.production {
        f.add("prod_eim_voltage", p.voltage, Unit::Volt);
        f.add("prod_eim_current", p.current, Unit::Ampere);
        f.add("prod_eim_pwrFactor", p.pwr_factor, Unit::None);
    }
    if let Some(wh) = prod_energy {
        f.energy("prod_eim", wh);
    }
    if let Some(power) = prod_power {
        // 5 W: the seed's threshold, above the CT's night-time noise.
        f.add("prod_eim_wNow_binary", flag(power > 5.0), Unit::None);
    }
    if let Some(wh) = s.inverters.and_then(|i| i.wh_today) {
        f.add("prod_eim_wattHoursToday", wh, Unit::WattHour);
    }
    if let Some(p) = &s.production {
        f.phases("prod_eim", &p.phases, true);
    }
    (prod_power, prod_energy)
}

/// Net consumption: the net CT, else total CT minus production. Returns the net power.
fn net_consumption(
    f: &mut Fields,
    s: &Snapshot,
    (prod_power, prod_energy): Production,
) -> Option<f64> {
    let net_power = match (&s.net, &s.total) {
        (Some(n), _) => Some(n.power),
        (None, Some(t)) => prod_power.map(|p| t.power - p),
        (None, None) => None,
    };
    if let Some(n) = &s.net {
        f.add("conso_net_eim_wNow", n.power, Unit::Watt);
        f.add("conso_net_eim_voltage", n.voltage, Unit::Volt);
        f.add("conso_net_eim_current", n.current, Unit::Ampere);
        f.add("conso_net_eim_pwrFactor", n.pwr_factor, Unit::None);
        // Import minus export, as firmware 7.6.175 and later report it: it can decrease.
        f.energy("conso_net_eim", n.delivered - n.received);
        f.phases("conso_net_eim", &n.phases, true);
        f.energy("import_eim", n.delivered);
        f.energy("grid_eim", n.received);
    } else if let (Some(t), Some(net)) = (&s.total, net_power) {
        f.add("conso_net_eim_wNow", net, Unit::Watt);
        f.add("conso_net_eim_voltage", t.voltage, Unit::Volt);
        if let Some(wh) = prod_energy {
            f.energy("conso_net_eim", t.delivered - wh);
        }
        if let Some(p) = s
            .production
            .as_ref()
            .filter(|p| same_lines(&p.phases, &t.phases))
        {
            let phases: Vec<Channel> = t
                .phases
                .iter()
                .zip(&p.phases)
                .map(|(t, p)| Channel {
                    power: t.power - p.power,
                    ..*t
                })
                .collect();
            f.phases("conso_net_eim", &phases, false);
        }
    }
    net_power
}

/// Grid export and self-consumption (eco), derived from the net power.
fn grid_and_eco(
    f: &mut Fields,
    s: &Snapshot,
    net_power: Option<f64>,
    (prod_power, prod_energy): Production,
) {
    if let Some(net) = net_power {
        f.add("grid_eim_wNow", (-net).max(0.0), Unit::Watt);
        // The seed's meaning: 1 while importing from the grid.
        f.add("grid_eim_wNow_binary", flag(net > 0.0), Unit::None);
    }
    if let (Some(net), Some(prod)) = (net_power, prod_power) {
        f.add(
            "eco_eim_wNow",
            (prod + net.min(0.0)).clamp(0.0, prod.max(0.0)),
            Unit::Watt,
        );
    }
    if let (Some(n), Some(wh)) = (&s.net, prod_energy) {
        f.energy("eco_eim", (wh - n.received).max(0.0));
    }
}

/// House consumption: the total CT, else production plus net.
fn house_consumption(f: &mut Fields, s: &Snapshot, (prod_power, prod_energy): Production) {
    if let Some(t) = &s.total {
        f.add("conso_all_eim_wNow", t.power, Unit::Watt);
        f.add("conso_all_eim_rmsCurrent", t.current, Unit::Ampere);
        f.add("conso_all_eim_rmsVoltage", t.voltage, Unit::Volt);
        f.energy("conso_all_eim", t.delivered);
    } else if let (Some(n), Some(prod)) = (&s.net, prod_power) {
        f.add("conso_all_eim_wNow", prod + n.power, Unit::Watt);
        f.add(
            "conso_all_eim_rmsCurrent",
            house_current(s.production.as_ref(), n, prod),
            Unit::Ampere,
        );
        f.add("conso_all_eim_rmsVoltage", n.voltage, Unit::Volt);
        if let Some(wh) = prod_energy {
            f.energy("conso_all_eim", wh + n.delivered - n.received);
        }
    }
}

/// Whether two CTs measure the same phases.
fn same_lines(a: &[Channel], b: &[Channel]) -> bool {
    a.iter().map(|c| c.line).eq(b.iter().map(|c| c.line))
}

/// The house's active current on a net CT: per phase |production + net| / voltage, summed.
/// (Currents cannot be added as the CTs report them: their magnitudes carry no sign.)
fn house_current(production: Option<&Ct>, net: &Ct, prod_power: f64) -> f64 {
    match production {
        Some(p) if same_lines(&p.phases, &net.phases) && !net.phases.is_empty() => p
            .phases
            .iter()
            .zip(&net.phases)
            .filter(|(_, n)| n.voltage > 0.0)
            .map(|(p, n)| (p.power + n.power).abs() / n.voltage)
            .sum(),
        _ if net.voltage > 0.0 => (prod_power + net.power).abs() / net.voltage,
        _ => 0.0,
    }
}

/// The names of the live values, in the order they are published.
pub const LIVE_NAMES: [&str; 3] = ["prod_eim_wNow", "conso_net_eim_wNow", "conso_all_eim_wNow"];

/// The `raw` values: the three powers a CT measures, from one readings request (W), each
/// `None` where the Envoy has no CT for it. Plain numbers, so that a raw tick allocates
/// nothing for them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Live {
    /// Production, consumption from the grid (net, negative when exporting), and the
    /// house's whole consumption: [`LIVE_NAMES`] in this order.
    pub watts: [Option<f64>; 3],
}

impl Live {
    /// The values there are, with their names, in [`LIVE_NAMES`] order.
    pub fn values(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        LIVE_NAMES
            .iter()
            .zip(&self.watts)
            .filter_map(|(n, w)| w.map(|w| (*n, w)))
    }

    pub fn is_empty(&self) -> bool {
        self.watts.iter().all(Option::is_none)
    }

    /// The power drawn from the grid (never negative), for the day's peak.
    pub fn import(&self) -> Option<f64> {
        self.watts[1].map(|w| w.max(0.0))
    }
}

/// The `raw` values of a snapshot.
pub fn live(s: &Snapshot) -> Live {
    let prod = s.production.as_ref().map(|p| p.power);
    let (net, all) = match (&s.net, &s.total, prod) {
        (Some(n), _, p) => (Some(n.power), p.map(|p| p + n.power)),
        (None, Some(t), p) => (p.map(|p| t.power - p), Some(t.power)),
        (None, None, _) => (None, None),
    };
    Live {
        watts: [prod, net, all],
    }
}

#[cfg(test)]
mod tests;
