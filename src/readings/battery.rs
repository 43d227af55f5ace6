//! The batteries as one, from `/ivp/ensemble/secctrl`, as the Envoy's own app shows them:
//! with AC Batteries (ACB) beside the IQ Batteries, the combined figures (`agg_soc`,
//! `Max_energy`, the two stored energies added); with IQ Batteries alone, theirs. The backup
//! reserve is the IQ Batteries'. A system without batteries publishes none of these (its
//! secctrl answers zeros). And each unit, IQ Battery or ACB, by its serial; and the power
//! of all of them where no storage CT measures it. Pure.

use super::device::DeviceKind;
use super::field::{Field, Measure, Subject, per_device};
use crate::envoy::api::acb;
use crate::envoy::api::ensemble::{BatteryPower, BatteryUnit, Secctrl};
use crate::envoy::api::inverters::Inverter;

/// Below this power (W, either way) a battery is `idle`: the Envoy's own charge status
/// for an ACB, derived from the power for an IQ Battery.
const IDLE_W: f64 = 5.0;

/// `idle`, `charging` or `discharging`, from a battery's power (> 0 discharging).
fn status(watts: f64) -> &'static str {
    if watts > IDLE_W {
        "discharging"
    } else if watts < -IDLE_W {
        "charging"
    } else {
        "idle"
    }
}

/// The aggregate battery fields of a system with `batteries` IQ Batteries and `acb` AC
/// Batteries, from its secctrl answer.
pub fn aggregate(batteries: usize, acb: u64, s: &Secctrl) -> Vec<Field> {
    let (soc, available, capacity) = match (batteries > 0, acb > 0) {
        (_, true) => {
            let stored = s.enc_available.unwrap_or(0.0) + s.acb_energy.unwrap_or(0.0);
            let stored = (s.enc_available.is_some() || s.acb_energy.is_some()).then_some(stored);
            (s.agg_soc, stored, s.max_energy)
        }
        (true, false) => (s.enc_soc, s.enc_available, s.enc_capacity),
        (false, false) => return Vec::new(),
    };
    let reserve = if batteries > 0 {
        [
            (Measure::ReserveSoc, s.configured_backup_soc),
            (Measure::Reserve, s.enc_backup),
        ]
    } else {
        [(Measure::ReserveSoc, None), (Measure::Reserve, None)]
    };
    [
        (Measure::Soc, soc),
        (Measure::Available, available),
        (Measure::Capacity, capacity),
    ]
    .into_iter()
    .chain(reserve)
    .filter_map(|(measure, v)| v.map(|v| Field::new(Subject::Battery, measure, v)))
    .collect()
}

/// What the inventory says of each IQ Battery: temperature (°C), usable capacity (Wh),
/// last report (Unix s). Returns the fields, and the serials left out for not being safe
/// in a topic (1 to 24 letters and digits).
pub fn units(units: &[BatteryUnit]) -> (Vec<Field>, Vec<String>) {
    per_device(
        DeviceKind::Battery,
        units,
        |u| &u.serial,
        |key, u| {
            let values = [
                (Measure::Temperature, u.temperature),
                (Measure::Capacity, u.capacity_wh),
                (Measure::LastReport, u.last_report),
            ];
            values
                .into_iter()
                .filter_map(|(measure, v)| {
                    let v = v.filter(|v| v.is_finite())?;
                    Some(Field::of_device(key, Subject::Battery, measure, v))
                })
                .collect()
        },
    )
}

/// Each IQ Battery's power (W, > 0 discharging), state of charge and status (from its
/// power) and, where no storage CT measures the batteries (`storage_ct` false), the power
/// of all of them as `battery_wNow`: the IQ Batteries' sum, plus the AC Batteries' power
/// (`acb_watts`, from `/production.json`). Returns the fields and the serials left out.
pub fn power(
    units: &[BatteryPower],
    acb_watts: Option<f64>,
    storage_ct: bool,
) -> (Vec<Field>, Vec<String>) {
    let (mut fields, unsafe_serials) = per_device(
        DeviceKind::Battery,
        units,
        |u| &u.serial,
        |key, u| {
            let power = Field::of_device(key, Subject::Battery, Measure::Power, u.watts);
            let soc = u
                .soc
                .map(|soc| Field::of_device(key, Subject::Battery, Measure::Soc, soc));
            let status = Field::state(Subject::Battery, Measure::ChargeStatus, status(u.watts))
                .map(|f| Field {
                    device: Some(key),
                    ..f
                });
            [power].into_iter().chain(soc).chain(status).collect()
        },
    );
    if !storage_ct && (!units.is_empty() || acb_watts.is_some()) {
        let sum = units.iter().map(|u| u.watts).sum::<f64>() + acb_watts.unwrap_or(0.0);
        fields.insert(0, Field::new(Subject::Battery, Measure::Power, sum));
    }
    (fields, unsafe_serials)
}

/// Each AC Battery's charge, cell temperature and charge status, from the inventory.
/// Returns the fields and the serials left out.
pub fn acb_units(units: &[acb::Unit]) -> (Vec<Field>, Vec<String>) {
    per_device(
        DeviceKind::AcBattery,
        units,
        |u| &u.serial,
        |key, u| {
            let values = [(Measure::Soc, u.soc), (Measure::Temperature, u.temperature)];
            let status = u
                .status
                .and_then(|w| Field::state(Subject::Battery, Measure::ChargeStatus, w));
            values
                .into_iter()
                .filter_map(|(m, v)| Some(Field::of_device(key, Subject::Battery, m, v?)))
                .chain(status.map(|f| Field {
                    device: Some(key),
                    ..f
                }))
                .collect()
        },
    )
}

/// Each AC Battery's power and last report, from the microinverters' list (`devType` 11).
/// Returns the fields and the serials left out.
pub fn acb_reports(list: &[Inverter]) -> (Vec<Field>, Vec<String>) {
    per_device(
        DeviceKind::AcBattery,
        list,
        |u| &u.serial,
        |key, u| {
            [
                (Measure::Power, u.watts),
                (Measure::LastReport, u.last_report),
            ]
            .into_iter()
            .map(|(m, v)| Field::of_device(key, Subject::Battery, m, v))
            .collect()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_battery_and_the_serials_that_are_not_safe_in_a_topic() {
        let unit = |serial: &str| BatteryUnit {
            serial: serial.into(),
            percent_full: Some(21.0),
            temperature: Some(12.0),
            capacity_wh: Some(5000.0),
            last_report: None,
        };
        let (fields, bad) = units(&[unit("122311091641"), unit("a/b#")]);
        assert_eq!(bad, ["a/b#"]);
        assert_eq!(
            values(&fields),
            [
                ("battery/122311091641/temperature".to_string(), 12.0),
                ("battery/122311091641/capacity_wh".to_string(), 5000.0)
            ]
        );
        let p = |serial: &str, watts| BatteryPower {
            serial: serial.into(),
            watts,
            soc: Some(54.0),
        };
        let both = [p("1", -136.0), p("2", 105.0)];
        let (fields, bad) = power(&both, None, false);
        assert!(bad.is_empty());
        assert_eq!(
            values(&fields),
            [
                ("battery_wNow".to_string(), -31.0),
                ("battery/1/wNow".to_string(), -136.0),
                ("battery/1/soc".to_string(), 54.0),
                ("battery/1/status".to_string(), 1.0),
                ("battery/2/wNow".to_string(), 105.0),
                ("battery/2/soc".to_string(), 54.0),
                ("battery/2/status".to_string(), 2.0)
            ]
        );
        let words: Vec<_> = fields.iter().filter_map(Field::word).collect();
        assert_eq!(words, ["charging", "discharging"]);
        // A storage CT measures the batteries: no sum of the units beside it.
        assert_eq!(power(&both, Some(260.0), true).0.len(), 6);
        assert!(power(&[], None, false).0.is_empty());
        // AC Batteries alone, and beside IQ Batteries: their power is in the sum.
        assert_eq!(
            values(&power(&[], Some(260.0), false).0),
            [("battery_wNow".to_string(), 260.0)]
        );
        assert_eq!(power(&both, Some(260.0), false).0[0].value, 229.0);
        let idle = [p("3", 4.0)];
        assert_eq!(power(&idle, None, true).0[2].word(), Some("idle"));
    }

    fn values(fields: &[Field]) -> Vec<(String, f64)> {
        fields.iter().map(|f| (f.name(), f.value)).collect()
    }

    #[test]
    fn iq_batteries_alone_with_ac_batteries_and_none() {
        // 8.2.4382_ACB: one IQ Battery (54 %, 1,890 of 3,500 Wh) and three ACB (930 Wh);
        // together 39 % of 7,220 Wh.
        let s = Secctrl {
            agg_soc: Some(39.0),
            max_energy: Some(7220.0),
            enc_soc: Some(54.0),
            enc_available: Some(1890.0),
            enc_capacity: Some(3500.0),
            enc_backup: Some(0.0),
            configured_backup_soc: Some(0.0),
            acb_energy: Some(930.0),
        };
        let want = |v: &[(&str, f64)]| -> Vec<(String, f64)> {
            v.iter().map(|(n, x)| (n.to_string(), *x)).collect()
        };
        #[rustfmt::skip]
        let cases = [
            (1, 3, want(&[("battery_soc", 39.0), ("battery_available_wh", 2820.0), ("battery_capacity_wh", 7220.0), ("battery_reserve_soc", 0.0), ("battery_reserve_wh", 0.0)])),
            (1, 0, want(&[("battery_soc", 54.0), ("battery_available_wh", 1890.0), ("battery_capacity_wh", 3500.0), ("battery_reserve_soc", 0.0), ("battery_reserve_wh", 0.0)])),
            (0, 3, want(&[("battery_soc", 39.0), ("battery_available_wh", 2820.0), ("battery_capacity_wh", 7220.0)])),
            (0, 0, want(&[])),
        ];
        for (batteries, acb, want) in cases {
            assert_eq!(
                values(&aggregate(batteries, acb, &s)),
                want,
                "{batteries} {acb}"
            );
        }
        // An answer without the fields publishes nothing rather than zeros.
        assert!(aggregate(2, 0, &Secctrl::default()).is_empty());
    }
}
