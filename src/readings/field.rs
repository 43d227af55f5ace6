//! A field: one published value, typed. What it is about (a [`Subject`]: an energy flow of
//! the house, or the battery), its measure (what is measured) and its phase decide its
//! topic name, unit and [`Quantity`]; Home Assistant's classes, names and devices and the
//! ledger's counters are read from these, never from the name. A new quantity is one
//! [`Measure`] here. Pure.

use super::device::{DeviceKey, DeviceKind};

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
    /// The energy the batteries took in: the storage CT's counter, else integrated from
    /// the batteries' power by the ledger.
    BatteryCharged,
    /// The energy the batteries gave out (as [`Flow::BatteryCharged`]).
    BatteryDischarged,
}

impl Flow {
    /// Every flow, in the order of the state file's arrays (the two battery flows came
    /// with version 2 of the file).
    pub const ALL: [Flow; 8] = [
        Flow::Production,
        Flow::Consumption,
        Flow::Import,
        Flow::Export,
        Flow::SelfConsumption,
        Flow::Net,
        Flow::BatteryCharged,
        Flow::BatteryDischarged,
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
            Flow::BatteryCharged => "battery_charged",
            Flow::BatteryDischarged => "battery_discharged",
        }
    }

    /// Its word in the energy tree (`production/daily`); `None`: not in the tree.
    pub const fn tree(self) -> Option<&'static str> {
        match self {
            Flow::Production => Some("production"),
            Flow::Consumption => Some("consumption"),
            Flow::Import => Some("import"),
            Flow::Export => Some("export"),
            Flow::BatteryCharged => Some("battery_charged"),
            Flow::BatteryDischarged => Some("battery_discharged"),
            Flow::SelfConsumption | Flow::Net => None,
        }
    }
}

/// What a field is about: one of the house's energy flows (the ledger's), or the battery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    Flow(Flow),
    /// The batteries as one: power (> 0 discharging), state of charge, stored energy.
    Battery,
    /// The system as a whole: its grid state and storage settings (names without a stem).
    System,
    /// A microinverter's values (always of one, by its [`DeviceKey`]).
    Inverter,
}

impl From<Flow> for Subject {
    fn from(flow: Flow) -> Subject {
        Subject::Flow(flow)
    }
}

impl Subject {
    /// The stem of its topics (`battery` → `data/battery_soc`).
    pub const fn stem(self) -> &'static str {
        match self {
            Subject::Flow(flow) => flow.stem(),
            Subject::Battery => "battery",
            Subject::System => "",
            Subject::Inverter => "inverter",
        }
    }

    /// Whether it is about the batteries (their own device in Home Assistant).
    pub const fn is_battery(self) -> bool {
        matches!(
            self,
            Subject::Battery | Subject::Flow(Flow::BatteryCharged | Flow::BatteryDischarged)
        )
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
    /// `_soc`, %: state of charge.
    Soc,
    /// `_available_wh`, Wh: the energy stored now.
    Available,
    /// `_capacity_wh`, Wh: the usable capacity.
    Capacity,
    /// `_reserve_soc`, %: the configured backup reserve.
    ReserveSoc,
    /// `_reserve_wh`, Wh: the energy the backup reserve holds.
    Reserve,
    /// `grid_status`: `on-grid` or `off-grid` (the value is the index in [`Measure::states`]).
    GridStatus,
    /// `storage_mode`: `backup`, `self-consumption` or `economy`.
    StorageMode,
    /// `charge_from_grid`: 1 or 0.
    ChargeFromGrid,
    /// `temperature`, °C.
    Temperature,
    /// `last_report`, Unix seconds: when a device last reported to the Envoy.
    LastReport,
    /// `wMax`, W: a microinverter's highest power.
    MaxPower,
    /// `dc_voltage`, `dc_current`, `ac_voltage`, `ac_current`: V and A.
    DcVoltage,
    DcCurrent,
    AcVoltage,
    AcCurrent,
    /// `frequency`, Hz.
    Frequency,
    /// `whToday`, Wh: a microinverter's energy today.
    WhToday,
    /// `generator_running`: 1 or 0.
    GeneratorRunning,
    /// A relay's `state`: `open` or `closed`.
    RelayState,
    /// A battery's `status`: `idle`, `charging` or `discharging`.
    ChargeStatus,
}

impl Measure {
    /// The words of a measure whose value is one of a few states; its value is their index.
    pub const fn states(self) -> Option<&'static [&'static str]> {
        match self {
            Measure::GridStatus => Some(&["off-grid", "on-grid"]),
            Measure::StorageMode => Some(&["backup", "self-consumption", "economy"]),
            Measure::RelayState => Some(&["open", "closed"]),
            Measure::ChargeStatus => Some(&["idle", "charging", "discharging"]),
            _ => None,
        }
    }
}

/// The unit of a field, for JSON payloads and discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Watt,
    Volt,
    Ampere,
    WattHour,
    KiloWattHour,
    Percent,
    Celsius,
    Second,
    Hertz,
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
            Unit::Percent => Some("%"),
            Unit::Celsius => Some("°C"),
            Unit::Second => Some("s"),
            Unit::Hertz => Some("Hz"),
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
    /// A battery's state of charge.
    Charge,
    /// Energy held in storage now.
    EnergyStored,
    /// One of the measure's [`Measure::states`].
    State,
    Temperature,
    /// A time, in Unix seconds.
    Time,
    Frequency,
}

/// One value, as published under `P/S/`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Field {
    pub of: Subject,
    pub measure: Measure,
    /// The phase (1-3) of a per-phase value.
    pub phase: Option<u8>,
    /// The device behind the Envoy it is about, if one (`P/S/battery/{serial}/soc`).
    pub device: Option<DeviceKey>,
    pub value: f64,
}

impl Field {
    pub fn new(of: impl Into<Subject>, measure: Measure, value: f64) -> Field {
        Field {
            of: of.into(),
            measure,
            phase: None,
            device: None,
            value,
        }
    }

    /// A state of `measure` (one of its [`Measure::states`]), by its word; `None` for a word
    /// it does not have.
    pub fn state(of: Subject, measure: Measure, word: &str) -> Option<Field> {
        let index = measure.states()?.iter().position(|s| *s == word)?;
        Some(Field::new(of, measure, index as f64))
    }

    /// The word of a state field.
    pub fn word(&self) -> Option<&'static str> {
        let states = self.measure.states()?;
        states.get(self.value as usize).copied()
    }

    /// `measure` of the device `key`.
    pub fn of_device(
        key: DeviceKey,
        of: impl Into<Subject>,
        measure: Measure,
        value: f64,
    ) -> Field {
        Field {
            device: Some(key),
            ..Field::new(of, measure, value)
        }
    }

    /// Whether this is the `measure` of `of` over all phases, for the whole system.
    pub fn is(&self, of: impl Into<Subject>, measure: Measure) -> bool {
        self.of == of.into()
            && self.measure == measure
            && self.phase.is_none()
            && self.device.is_none()
    }

    /// The house's flow it is about, if it is about one.
    pub fn flow(&self) -> Option<Flow> {
        match self.of {
            Subject::Flow(flow) => Some(flow),
            _ => None,
        }
    }

    /// Whether it belongs to the energy tree (`P/S/production/daily`, `P/S/max_power`)
    /// rather than under `P/S/data/`.
    pub fn in_tree(&self) -> bool {
        self.device.is_some()
            || matches!(
                self.measure,
                Measure::Daily(_) | Measure::Month | Measure::Year | Measure::Peak
            )
    }

    /// Its name: `prod_eim_wNow_l1` under `data/`, or its path in the energy tree
    /// (`import/daily/hc`, `max_power`).
    pub fn name(&self) -> String {
        if let Some(d) = self.device {
            return format!("{}/{}/{}", d.kind.word(), d.serial(), self.suffix());
        }
        let tree = self.flow().and_then(Flow::tree).unwrap_or_default();
        let period = match self.measure {
            Measure::Daily(None) => "daily",
            Measure::Daily(Some(Part::OffPeak)) => "daily/hc",
            Measure::Daily(Some(Part::Peak)) => "daily/hp",
            Measure::Month => "month",
            Measure::Year => "year",
            Measure::Peak => return "max_power".into(),
            _ => {
                let (stem, suffix) = (self.of.stem(), self.suffix());
                let name = if stem.is_empty() {
                    suffix.to_string()
                } else {
                    format!("{stem}_{suffix}")
                };
                return match self.phase {
                    Some(n) => format!("{name}_l{n}"),
                    None => name,
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
            Measure::Soc => "soc",
            Measure::Available => "available_wh",
            Measure::Capacity => "capacity_wh",
            Measure::ReserveSoc => "reserve_soc",
            Measure::Reserve => "reserve_wh",
            Measure::GridStatus => "grid_status",
            Measure::StorageMode => "storage_mode",
            Measure::ChargeFromGrid => "charge_from_grid",
            Measure::Temperature => "temperature",
            Measure::LastReport => "last_report",
            Measure::MaxPower => "wMax",
            Measure::DcVoltage => "dc_voltage",
            Measure::DcCurrent => "dc_current",
            Measure::AcVoltage => "ac_voltage",
            Measure::AcCurrent => "ac_current",
            Measure::Frequency => "frequency",
            Measure::WhToday => "whToday",
            Measure::GeneratorRunning => "generator_running",
            Measure::RelayState => "state",
            Measure::ChargeStatus => "status",
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
            Measure::PowerFactor
            | Measure::Active
            | Measure::GridStatus
            | Measure::StorageMode
            | Measure::ChargeFromGrid
            | Measure::GeneratorRunning
            | Measure::RelayState
            | Measure::ChargeStatus => Unit::None,
            Measure::Lifetime
            | Measure::EnvoyToday
            | Measure::Midnight
            | Measure::Today
            | Measure::Yesterday
            | Measure::Available
            | Measure::Capacity
            | Measure::Reserve => Unit::WattHour,
            Measure::Soc | Measure::ReserveSoc => Unit::Percent,
            Measure::Temperature => Unit::Celsius,
            Measure::LastReport => Unit::Second,
            Measure::MaxPower => Unit::Watt,
            Measure::DcVoltage | Measure::AcVoltage => Unit::Volt,
            Measure::DcCurrent | Measure::AcCurrent => Unit::Ampere,
            Measure::Frequency => Unit::Hertz,
            Measure::WhToday => Unit::WattHour,
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
            Measure::Active | Measure::ChargeFromGrid | Measure::GeneratorRunning => Quantity::Flag,
            Measure::GridStatus
            | Measure::StorageMode
            | Measure::RelayState
            | Measure::ChargeStatus => Quantity::State,
            Measure::Temperature => Quantity::Temperature,
            Measure::LastReport => Quantity::Time,
            Measure::MaxPower => Quantity::Power,
            Measure::DcVoltage | Measure::AcVoltage => Quantity::Voltage,
            Measure::DcCurrent | Measure::AcCurrent => Quantity::Current,
            Measure::Frequency => Quantity::Frequency,
            Measure::WhToday => Quantity::EnergyIncreasing,
            Measure::Midnight => Quantity::Reference,
            Measure::Yesterday => Quantity::EnergyClosed,
            // Import less export, and its share of today: they go down when exporting.
            Measure::Soc | Measure::ReserveSoc => Quantity::Charge,
            Measure::Available | Measure::Capacity | Measure::Reserve => Quantity::EnergyStored,
            Measure::Lifetime | Measure::LifetimeKwh | Measure::Today
                if self.of == Subject::Flow(Flow::Net) =>
            {
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

/// The fields of each device in `items` (`fields` of its key and the item), and the serials
/// left out for not being safe in a topic.
pub fn per_device<T>(
    kind: DeviceKind,
    items: &[T],
    serial: impl Fn(&T) -> &str,
    fields: impl Fn(DeviceKey, &T) -> Vec<Field>,
) -> (Vec<Field>, Vec<String>) {
    let mut out = Vec::new();
    let mut unsafe_serials = Vec::new();
    for item in items {
        match DeviceKey::new(kind, serial(item)) {
            Some(key) => out.extend(fields(key, item)),
            None => unsafe_serials.push(serial(item).to_string()),
        }
    }
    (out, unsafe_serials)
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
            (Field::new(Subject::Battery, Measure::Power, 0.0), "data/battery_wNow", Unit::Watt, Quantity::Power),
            (Field::new(Subject::Battery, Measure::Soc, 0.0), "data/battery_soc", Unit::Percent, Quantity::Charge),
            (Field::new(Subject::Battery, Measure::Available, 0.0), "data/battery_available_wh", Unit::WattHour, Quantity::EnergyStored),
            (Field::new(Subject::Battery, Measure::ReserveSoc, 0.0), "data/battery_reserve_soc", Unit::Percent, Quantity::Charge),
            (Field::new(Flow::BatteryCharged, Measure::LifetimeKwh, 0.0), "data/battery_charged_kwhLifetime", Unit::KiloWattHour, Quantity::EnergyIncreasing),
            (Field::new(Subject::System, Measure::GridStatus, 1.0), "data/grid_status", Unit::None, Quantity::State),
            (Field::new(Subject::System, Measure::ChargeFromGrid, 0.0), "data/charge_from_grid", Unit::None, Quantity::Flag),
        ];
        for (field, path, unit, quantity) in cases {
            assert_eq!(
                (field.path().as_str(), field.unit(), field.quantity()),
                (path, unit, quantity)
            );
        }
        let unit = DeviceKey::new(DeviceKind::Battery, "12345678901006").unwrap();
        let soc = Field::of_device(unit, Subject::Battery, Measure::Soc, 21.0);
        assert_eq!(
            (soc.path().as_str(), soc.unit()),
            ("battery/12345678901006/soc", Unit::Percent)
        );
        let t = Field::of_device(unit, Subject::Battery, Measure::Temperature, 12.0);
        assert_eq!(
            (t.name().as_str(), t.unit().symbol()),
            ("battery/12345678901006/temperature", Some("°C"))
        );
        for bad in ["", "12/34", "a+b", "#", "x".repeat(25).as_str(), "sérial"] {
            assert_eq!(DeviceKey::new(DeviceKind::Battery, bad), None, "{bad}");
        }
        let mode = Field::state(Subject::System, Measure::StorageMode, "economy").unwrap();
        assert_eq!(
            (mode.name().as_str(), mode.word()),
            ("storage_mode", Some("economy"))
        );
        assert_eq!(
            Field::state(Subject::System, Measure::StorageMode, "savings"),
            None
        );
    }
}
