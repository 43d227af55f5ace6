//! A field: one published value, typed. Its flow (whose energy), its measure (what is
//! measured) and its phase decide its topic name, unit and [`Quantity`]; Home Assistant's
//! classes and names and the ledger's counters are read from these, never from the name.
//! A new quantity is one [`Measure`] here. Pure.

/// Whose energy a field is about: the flows the Envoy measures or envoy2mqtt derives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flow {
    Production,
    /// House consumption: measured on a total-consumption CT, derived on a net one.
    Consumption,
    Import,
    Export,
    /// Production less export: always derived.
    SelfConsumption,
    /// Import less export: the one lifetime counter that may go down.
    Net,
}

impl Flow {
    /// Every flow, in the order of the state file's arrays.
    pub const ALL: [Flow; 6] = [
        Flow::Production,
        Flow::Consumption,
        Flow::Import,
        Flow::Export,
        Flow::SelfConsumption,
        Flow::Net,
    ];

    /// The stem of its topics (`prod_eim` → `data/prod_eim_whLifetime`).
    pub const fn stem(self) -> &'static str {
        match self {
            Flow::Production => "prod_eim",
            Flow::Consumption => "conso_all_eim",
            Flow::Import => "import_eim",
            Flow::Export => "grid_eim",
            Flow::SelfConsumption => "eco_eim",
            Flow::Net => "conso_net_eim",
        }
    }

    /// Its word in the energy tree (`production/daily`); `None`: not in the tree.
    pub const fn tree(self) -> Option<&'static str> {
        match self {
            Flow::Production => Some("production"),
            Flow::Consumption => Some("consumption"),
            Flow::Import => Some("import"),
            Flow::Export => Some("export"),
            Flow::SelfConsumption | Flow::Net => None,
        }
    }
}

/// The off-peak (HC) or peak (HP) part of a day's energy, with `OFFPEAK_HOURS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    OffPeak,
    Peak,
}

/// What a field measures: its topic suffix, unit and quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// `_wNow`, W.
    Power,
    /// `_voltage`, V: a CT's (mean) voltage.
    Voltage,
    /// `_rmsVoltage`, V: the house's.
    RmsVoltage,
    /// `_current`, A.
    Current,
    /// `_rmsCurrent`, A: the house's.
    RmsCurrent,
    /// `_pwrFactor`.
    PowerFactor,
    /// `_wNow_binary`: 1 or 0 (producing; importing).
    Active,
    /// `_whLifetime`, Wh.
    Lifetime,
    /// `_kwhLifetime`, kWh.
    LifetimeKwh,
    /// `_wattHoursToday`, Wh: the Envoy's own energy today.
    EnvoyToday,
    /// `_whLifetime_00h`, Wh: the lifetime counter at midnight (the ledger's).
    Midnight,
    /// `_today`, Wh (the ledger's).
    Today,
    /// `_yesterday`, Wh (the ledger's).
    Yesterday,
    /// `{tree}/daily`, and its off-peak and peak parts, kWh.
    Daily(Option<Part>),
    /// `{tree}/month`, kWh.
    Month,
    /// `{tree}/year`, kWh.
    Year,
    /// `max_power`, W: the day's peak (grid import).
    Peak,
}

/// The unit of a field, for JSON payloads and discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Watt,
    Volt,
    Ampere,
    WattHour,
    KiloWattHour,
    /// Power factor, on/off flags, times.
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

/// How a value behaves over time: what Home Assistant's device and state classes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    Power,
    Voltage,
    Current,
    PowerFactor,
    /// On or off.
    Flag,
    /// Energy that only grows, or starts again from 0 (a new day).
    EnergyIncreasing,
    /// Energy that may also go down (import less export).
    EnergyTotal,
    /// The energy of a closed period (yesterday).
    EnergyClosed,
    /// A reference kept for the ledger's users, not a value to show.
    Reference,
}

/// One value, as published under `P/S/`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Field {
    pub flow: Flow,
    pub measure: Measure,
    /// The phase (1-3) of a per-phase value.
    pub phase: Option<u8>,
    pub value: f64,
}

impl Field {
    pub fn new(flow: Flow, measure: Measure, value: f64) -> Field {
        Field {
            flow,
            measure,
            phase: None,
            value,
        }
    }

    /// Whether this is `flow`'s `measure` over all phases.
    pub fn is(&self, flow: Flow, measure: Measure) -> bool {
        self.flow == flow && self.measure == measure && self.phase.is_none()
    }

    /// Whether it belongs to the energy tree (`P/S/production/daily`, `P/S/max_power`)
    /// rather than under `P/S/data/`.
    pub fn in_tree(&self) -> bool {
        matches!(
            self.measure,
            Measure::Daily(_) | Measure::Month | Measure::Year | Measure::Peak
        )
    }

    /// Its name: `prod_eim_wNow_l1` under `data/`, or its path in the energy tree
    /// (`import/daily/hc`, `max_power`).
    pub fn name(&self) -> String {
        let tree = self.flow.tree().unwrap_or_default();
        let period = match self.measure {
            Measure::Daily(None) => "daily",
            Measure::Daily(Some(Part::OffPeak)) => "daily/hc",
            Measure::Daily(Some(Part::Peak)) => "daily/hp",
            Measure::Month => "month",
            Measure::Year => "year",
            Measure::Peak => return "max_power".into(),
            _ => {
                let stem = self.flow.stem();
                let suffix = self.suffix();
                return match self.phase {
                    Some(n) => format!("{stem}_{suffix}_l{n}"),
                    None => format!("{stem}_{suffix}"),
                };
            }
        };
        format!("{tree}/{period}")
    }

    /// The suffix of a `data/` name.
    fn suffix(&self) -> &'static str {
        match self.measure {
            Measure::Power => "wNow",
            Measure::Voltage => "voltage",
            Measure::RmsVoltage => "rmsVoltage",
            Measure::Current => "current",
            Measure::RmsCurrent => "rmsCurrent",
            Measure::PowerFactor => "pwrFactor",
            Measure::Active => "wNow_binary",
            Measure::Lifetime => "whLifetime",
            Measure::LifetimeKwh => "kwhLifetime",
            Measure::EnvoyToday => "wattHoursToday",
            Measure::Midnight => "whLifetime_00h",
            Measure::Today => "today",
            Measure::Yesterday => "yesterday",
            Measure::Daily(_) | Measure::Month | Measure::Year | Measure::Peak => "",
        }
    }

    /// Where it is published under `P/S/`: `data/{name}`, or its path in the tree.
    pub fn path(&self) -> String {
        if self.in_tree() {
            self.name()
        } else {
            format!("data/{}", self.name())
        }
    }

    pub fn unit(&self) -> Unit {
        match self.measure {
            Measure::Power | Measure::Peak => Unit::Watt,
            Measure::Voltage | Measure::RmsVoltage => Unit::Volt,
            Measure::Current | Measure::RmsCurrent => Unit::Ampere,
            Measure::PowerFactor | Measure::Active => Unit::None,
            Measure::Lifetime
            | Measure::EnvoyToday
            | Measure::Midnight
            | Measure::Today
            | Measure::Yesterday => Unit::WattHour,
            Measure::LifetimeKwh | Measure::Daily(_) | Measure::Month | Measure::Year => {
                Unit::KiloWattHour
            }
        }
    }

    pub fn quantity(&self) -> Quantity {
        match self.measure {
            Measure::Power | Measure::Peak => Quantity::Power,
            Measure::Voltage | Measure::RmsVoltage => Quantity::Voltage,
            Measure::Current | Measure::RmsCurrent => Quantity::Current,
            Measure::PowerFactor => Quantity::PowerFactor,
            Measure::Active => Quantity::Flag,
            Measure::Midnight => Quantity::Reference,
            Measure::Yesterday => Quantity::EnergyClosed,
            // Import less export, and its share of today: they go down when exporting.
            Measure::Lifetime | Measure::LifetimeKwh | Measure::Today if self.flow == Flow::Net => {
                Quantity::EnergyTotal
            }
            Measure::Lifetime
            | Measure::LifetimeKwh
            | Measure::EnvoyToday
            | Measure::Today
            | Measure::Daily(_)
            | Measure::Month
            | Measure::Year => Quantity::EnergyIncreasing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_paths_units_and_quantities() {
        let phase = |flow, measure, n| Field {
            phase: Some(n),
            ..Field::new(flow, measure, 0.0)
        };
        #[rustfmt::skip]
        let cases = [
            (Field::new(Flow::Production, Measure::Power, 0.0), "data/prod_eim_wNow", Unit::Watt, Quantity::Power),
            (phase(Flow::Net, Measure::Voltage, 3), "data/conso_net_eim_voltage_l3", Unit::Volt, Quantity::Voltage),
            (Field::new(Flow::Consumption, Measure::RmsCurrent, 0.0), "data/conso_all_eim_rmsCurrent", Unit::Ampere, Quantity::Current),
            (Field::new(Flow::Export, Measure::Active, 0.0), "data/grid_eim_wNow_binary", Unit::None, Quantity::Flag),
            (Field::new(Flow::Net, Measure::LifetimeKwh, 0.0), "data/conso_net_eim_kwhLifetime", Unit::KiloWattHour, Quantity::EnergyTotal),
            (Field::new(Flow::Import, Measure::Lifetime, 0.0), "data/import_eim_whLifetime", Unit::WattHour, Quantity::EnergyIncreasing),
            (Field::new(Flow::Net, Measure::Today, 0.0), "data/conso_net_eim_today", Unit::WattHour, Quantity::EnergyTotal),
            (Field::new(Flow::SelfConsumption, Measure::Yesterday, 0.0), "data/eco_eim_yesterday", Unit::WattHour, Quantity::EnergyClosed),
            (Field::new(Flow::Production, Measure::Midnight, 0.0), "data/prod_eim_whLifetime_00h", Unit::WattHour, Quantity::Reference),
            (Field::new(Flow::Production, Measure::EnvoyToday, 0.0), "data/prod_eim_wattHoursToday", Unit::WattHour, Quantity::EnergyIncreasing),
            (Field::new(Flow::Import, Measure::Daily(Some(Part::OffPeak)), 0.0), "import/daily/hc", Unit::KiloWattHour, Quantity::EnergyIncreasing),
            (Field::new(Flow::Export, Measure::Month, 0.0), "export/month", Unit::KiloWattHour, Quantity::EnergyIncreasing),
            (Field::new(Flow::Import, Measure::Peak, 0.0), "max_power", Unit::Watt, Quantity::Power),
        ];
        for (field, path, unit, quantity) in cases {
            assert_eq!(
                (field.path().as_str(), field.unit(), field.quantity()),
                (path, unit, quantity)
            );
        }
    }
}
