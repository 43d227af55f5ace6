//! The AC Batteries (ACB, the older Enphase batteries): as a group in `/production.json`'s
//! `storage` section (how many report, their power, stored energy, charge and state), and
//! one by one in `/inventory.json?deleted=1` (charge, cell temperature, charge status) and
//! `/api/v1/production/inverters` (`devType` 11: power and last report, read with the
//! microinverters). Read as pyenphase 4 reads them. Pure.

use serde::Deserialize;
use serde_json::Value;

use super::ensemble::GroupJson;
use super::parse;

/// The AC Batteries as a group, from `/production.json`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Storage {
    /// How many report (`activeCount`).
    pub count: u64,
    /// W, > 0 discharging.
    pub watts: Option<f64>,
    /// Wh stored now.
    pub wh: Option<f64>,
    pub soc: Option<f64>,
}

#[derive(Deserialize)]
struct ProductionJson {
    #[serde(default)]
    storage: Vec<Value>,
}

/// `GET /production.json`: its AC Batteries; `None` where it lists none. As pyenphase: the
/// first `storage` entry, with an `activeCount` above 0 and a `percentFull` (some Envoys
/// report a count without it, and then nothing else that can be trusted).
pub fn storage(body: &str) -> Result<Option<Storage>, String> {
    let p: ProductionJson = parse("/production.json", body)?;
    let Some(Value::Object(acb)) = p.storage.first() else {
        return Ok(None);
    };
    let number = |key: &str| {
        acb.get(key)
            .and_then(Value::as_f64)
            .filter(|v| v.is_finite())
    };
    let count = number("activeCount").unwrap_or(0.0);
    if count < 1.0 || !acb.contains_key("percentFull") {
        return Ok(None);
    }
    Ok(Some(Storage {
        count: count as u64,
        watts: number("wNow"),
        wh: number("whNow"),
        soc: number("percentFull"),
    }))
}

/// One AC Battery, from the inventory.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Unit {
    pub serial: String,
    pub soc: Option<f64>,
    /// °C: the hottest cell's.
    pub temperature: Option<f64>,
    /// `charging`, `discharging` or `idle`; `None` for anything else.
    pub status: Option<&'static str>,
}

/// `GET /inventory.json?deleted=1`: the AC Batteries in service (an `admin_state` of 0 is
/// a decommissioned one). An entry without a serial is passed over.
pub fn inventory(body: &str) -> Result<Vec<Unit>, String> {
    let groups: Vec<GroupJson> = parse("/inventory.json", body)?;
    Ok(groups
        .iter()
        .filter(|g| g.kind == "ACB")
        .flat_map(|g| &g.devices)
        .filter_map(Value::as_object)
        .filter(|d| d.get("admin_state").and_then(Value::as_i64) != Some(0))
        .filter_map(|d| {
            let serial = match d.get("serial_num")? {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return None,
            };
            let number = |key: &str| d.get(key).and_then(Value::as_f64).filter(|v| v.is_finite());
            let status = d
                .get("charge_status")
                .and_then(Value::as_str)
                .and_then(|s| {
                    ["charging", "discharging", "idle"]
                        .into_iter()
                        .find(|w| w.eq_ignore_ascii_case(s))
                });
            Some(Unit {
                serial,
                soc: number("percentFull"),
                temperature: number("maxCellTemp"),
                status,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy::api::fixture;

    #[test]
    fn the_group_of_the_captures_as_pyenphase_reads_it() {
        // 8.2.4382_ACB: three ACB, 260 W discharging, 930 Wh, 25 %.
        let want = Storage {
            count: 3,
            watts: Some(260.0),
            wh: Some(930.0),
            soc: Some(25.0),
        };
        let acb = fixture("8.2.4382_ACB", "production.json");
        assert_eq!(storage(&acb), Ok(Some(want)));
        let none = fixture("8.2.127_with_3cts_and_battery_split", "production.json");
        assert_eq!(storage(&none), Ok(None));
        #[rustfmt::skip]
        let cases = [
            (r#"{"production":[]}"#, None),
            (r#"{"storage":[{"type":"acb","activeCount":0,"wNow":0,"percentFull":0}]}"#, None),
            (r#"{"storage":[{"type":"acb","activeCount":2,"wNow":-400}]}"#, None),
            (r#"{"storage":[{"type":"acb","activeCount":2,"wNow":-400,"percentFull":80}]}"#, Some(Storage { count: 2, watts: Some(-400.0), wh: None, soc: Some(80.0) })),
            (r#"{"storage":[{"type":"acb","activeCount":1,"wNow":"x","percentFull":80}]}"#, Some(Storage { count: 1, watts: None, wh: None, soc: Some(80.0) })),
            (r#"{"storage":[7]}"#, None),
        ];
        for (body, want) in cases {
            assert_eq!(storage(body), Ok(want), "{body}");
        }
        for body in ["", "null", "7", "<html>", r#"{"storage":{}}"#] {
            assert!(storage(body).is_err(), "{body}");
        }
    }

    #[test]
    fn each_unit_of_the_inventory() {
        let body = fixture("8.2.4382_ACB", "inventory.json_deleted_1");
        let units = inventory(&body).unwrap();
        assert_eq!(units.len(), 3);
        assert_eq!(
            units[0],
            Unit {
                serial: "122122013879".into(),
                soc: Some(24.0),
                temperature: Some(18.0),
                status: Some("discharging"),
            }
        );
        #[rustfmt::skip]
        let cases: [(&str, &[&str]); 4] = [
            (r#"[{"type":"PCU","devices":[{"serial_num":"1"}]}]"#, &[]),
            (r#"[{"type":"ACB","devices":[{"serial_num":"1","admin_state":0},{"serial_num":2},{"percentFull":3},"x"]}]"#, &["2"]),
            (r#"[{"type":"ACB"}]"#, &[]),
            (r#"[{"type":"ACB","devices":[{"serial_num":"9","charge_status":"sleeping"}]}]"#, &["9"]),
        ];
        for (body, serials) in cases {
            let got: Vec<String> = inventory(body)
                .unwrap()
                .into_iter()
                .map(|u| u.serial)
                .collect();
            assert_eq!(got, serials, "{body}");
        }
        for body in ["", "{}", "<html>", "[1]"] {
            assert!(inventory(body).is_err(), "{body}");
        }
    }
}
