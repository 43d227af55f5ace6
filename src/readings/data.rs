//! The `data` fields of a snapshot, in the order of docs/topics.md: production from the
//! production CT or the microinverters, net consumption, grid export and self-consumption
//! derived from the net power, house consumption. A field the system cannot measure (no
//! consumption CT, a disabled CT) is left out rather than published as 0. Pure.

use super::field::{Field, Flow, Measure, Subject};
use super::snapshot::{Ct, Snapshot};
use crate::envoy::api::Channel;

struct Fields(Vec<Field>);

impl Fields {
    fn add(&mut self, of: impl Into<Subject>, measure: Measure, value: f64) {
        self.0.push(Field::new(of, measure, value));
    }

    /// `wNow`, `voltage`, `current` of each phase: `{stem}_wNow_l1`, ...
    fn phases(&mut self, flow: Flow, phases: &[Channel], with_current: bool) {
        for p in phases {
            let mut add = |measure, value| {
                self.0.push(Field {
                    phase: Some(p.line),
                    ..Field::new(flow, measure, value)
                })
            };
            add(Measure::Power, p.power);
            add(Measure::Voltage, p.voltage);
            if with_current {
                add(Measure::Current, p.current);
            }
        }
    }

    fn energy(&mut self, of: impl Into<Subject> + Copy, wh: f64) {
        self.add(of, Measure::Lifetime, wh);
        self.add(of, Measure::LifetimeKwh, wh / 1000.0);
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
    storage(&mut f, s);
    f.0
}

/// The batteries' CT: power (> 0 discharging), and the energy they took in and gave out.
fn storage(f: &mut Fields, s: &Snapshot) {
    if let Some(b) = &s.storage {
        f.add(Subject::Battery, Measure::Power, b.power);
        f.energy(Flow::BatteryCharged, b.received);
        f.energy(Flow::BatteryDischarged, b.delivered);
    }
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
        f.add(Flow::Production, Measure::Power, power);
    }
    if let Some(p) = &s.production {
        f.add(Flow::Production, Measure::Voltage, p.voltage);
        f.add(Flow::Production, Measure::Current, p.current);
        f.add(Flow::Production, Measure::PowerFactor, p.pwr_factor);
    }
    if let Some(wh) = prod_energy {
        f.energy(Flow::Production, wh);
    }
    if let Some(power) = prod_power {
        // 5 W: the seed's threshold, above the CT's night-time noise.
        f.add(Flow::Production, Measure::Active, flag(power > 5.0));
    }
    if let Some(wh) = s.inverters.and_then(|i| i.wh_today) {
        f.add(Flow::Production, Measure::EnvoyToday, wh);
    }
    if let Some(p) = &s.production {
        f.phases(Flow::Production, &p.phases, true);
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
        f.add(Flow::Net, Measure::Power, n.power);
        f.add(Flow::Net, Measure::Voltage, n.voltage);
        f.add(Flow::Net, Measure::Current, n.current);
        f.add(Flow::Net, Measure::PowerFactor, n.pwr_factor);
        // Import minus export, as firmware 7.6.175 and later report it: it can decrease.
        f.energy(Flow::Net, n.delivered - n.received);
        f.phases(Flow::Net, &n.phases, true);
        if !s.net_counter_only {
            f.energy(Flow::Import, n.delivered);
            f.energy(Flow::Export, n.received);
        }
    } else if let (Some(t), Some(net)) = (&s.total, net_power) {
        f.add(Flow::Net, Measure::Power, net);
        f.add(Flow::Net, Measure::Voltage, t.voltage);
        if let Some(wh) = prod_energy {
            f.energy(Flow::Net, t.delivered - wh);
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
            f.phases(Flow::Net, &phases, false);
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
        f.add(Flow::Export, Measure::Power, (-net).max(0.0));
        // The seed's meaning: 1 while importing from the grid.
        f.add(Flow::Export, Measure::Active, flag(net > 0.0));
    }
    if let (Some(net), Some(prod)) = (net_power, prod_power) {
        f.add(
            Flow::SelfConsumption,
            Measure::Power,
            (prod + net.min(0.0)).clamp(0.0, prod.max(0.0)),
        );
    }
    if let (Some(n), Some(wh), false) = (&s.net, prod_energy, s.net_counter_only) {
        f.energy(Flow::SelfConsumption, (wh - n.received).max(0.0));
    }
}

/// House consumption: the total CT, else production plus net.
fn house_consumption(f: &mut Fields, s: &Snapshot, (prod_power, prod_energy): Production) {
    if let Some(t) = &s.total {
        f.add(Flow::Consumption, Measure::Power, t.power);
        f.add(Flow::Consumption, Measure::RmsCurrent, t.current);
        f.add(Flow::Consumption, Measure::RmsVoltage, t.voltage);
        f.energy(Flow::Consumption, t.delivered);
    } else if let (Some(n), Some(prod)) = (&s.net, prod_power) {
        f.add(Flow::Consumption, Measure::Power, prod + n.power);
        f.add(
            Flow::Consumption,
            Measure::RmsCurrent,
            house_current(s.production.as_ref(), n, prod),
        );
        f.add(Flow::Consumption, Measure::RmsVoltage, n.voltage);
        if let Some(wh) = prod_energy {
            f.energy(Flow::Consumption, wh + n.delivered - n.received);
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
