//! Each microinverter's fields, under `P/S/inverter/{serial}/`: power, highest power, last
//! report, and where the Envoy gives them (device data) DC and AC voltage and current,
//! frequency, temperature, lifetime and today's energy. Pure.

use std::collections::{BTreeMap, BTreeSet};

use super::device::DeviceKind;
use super::field::{Field, Measure, Subject, per_device};
use crate::envoy::api::inverters::Inverter;

/// The fields of `list`, and the serials left out for not being safe in a topic.
pub fn fields(list: &[Inverter]) -> (Vec<Field>, Vec<String>) {
    per_device(
        DeviceKind::Inverter,
        list,
        |i| &i.serial,
        |key, i| {
            let values = [
                (Measure::Power, Some(i.watts)),
                (Measure::MaxPower, Some(i.max_watts)),
                (Measure::LastReport, Some(i.last_report)),
                (Measure::DcVoltage, i.dc_voltage),
                (Measure::DcCurrent, i.dc_current),
                (Measure::AcVoltage, i.ac_voltage),
                (Measure::AcCurrent, i.ac_current),
                (Measure::Frequency, i.frequency),
                (Measure::Temperature, i.temperature),
                (Measure::Lifetime, i.wh_lifetime),
                (Measure::WhToday, i.wh_today),
            ];
            values
                .into_iter()
                .filter_map(|(measure, v)| {
                    Some(Field::of_device(key, Subject::Inverter, measure, v?))
                })
                .collect()
        },
    )
}

/// The fields of the inverters in `list` whose report is not the one in `reports` (serial →
/// last report time): the microinverters report every 5 minutes, and a report already
/// published is not published again.
pub fn changed(reports: &BTreeMap<String, f64>, list: &[Inverter], fields: &[Field]) -> Vec<Field> {
    let fresh: BTreeSet<&str> = list
        .iter()
        .filter(|i| reports.get(&i.serial) != Some(&i.last_report))
        .map(|i| i.serial.as_str())
        .collect();
    fields
        .iter()
        .filter(|f| {
            f.device
                .is_some_and(|d| d.kind == DeviceKind::Inverter && fresh.contains(d.serial()))
        })
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_reports_are_published_again() {
        let i = |serial: &str, at| Inverter {
            serial: serial.into(),
            last_report: at,
            ..Inverter::default()
        };
        let list = [i("1", 100.0), i("2", 200.0)];
        let (all, _) = fields(&list);
        let serials = |f: &[Field]| -> BTreeSet<String> {
            f.iter()
                .filter_map(|f| Some(f.device?.serial().to_string()))
                .collect()
        };
        let none = BTreeMap::new();
        assert_eq!(
            serials(&changed(&none, &list, &all)).len(),
            2,
            "a first poll: all"
        );
        let seen: BTreeMap<String, f64> =
            [("1".to_string(), 100.0), ("2".to_string(), 150.0)].into();
        assert_eq!(
            serials(&changed(&seen, &list, &all)),
            ["2".to_string()].into()
        );
        let all_seen: BTreeMap<String, f64> =
            [("1".to_string(), 100.0), ("2".to_string(), 200.0)].into();
        assert!(
            changed(&all_seen, &list, &all).is_empty(),
            "nothing new: nothing"
        );
    }

    #[test]
    fn names_units_and_unsafe_serials() {
        let i = |serial: &str| Inverter {
            serial: serial.into(),
            last_report: 1_785_592_409.0,
            watts: 116.0,
            max_watts: 297.0,
            frequency: Some(59.988),
            ..Inverter::default()
        };
        let (fields, bad) = fields(&[i("482208990001"), i("48/22")]);
        assert_eq!(bad, ["48/22"]);
        let got: Vec<(String, f64, Option<&str>)> = fields
            .iter()
            .map(|f| (f.path(), f.value, f.unit().symbol()))
            .collect();
        let want = [
            ("inverter/482208990001/wNow", 116.0, Some("W")),
            ("inverter/482208990001/wMax", 297.0, Some("W")),
            (
                "inverter/482208990001/last_report",
                1_785_592_409.0,
                Some("s"),
            ),
            ("inverter/482208990001/frequency", 59.988, Some("Hz")),
        ];
        let want: Vec<(String, f64, Option<&str>)> = want
            .iter()
            .map(|(p, v, u)| (p.to_string(), *v, *u))
            .collect();
        assert_eq!(got, want);
    }
}
