//! The CTs as `/production.json` reports them (its `eim` sections: production, total and
//! net consumption), for metered Envoys without a usable `/ivp/meters` (older metered
//! firmware): a section counts only with an `activeCount` above 0, as pyenphase reads it.
//! Pure.

use serde::Deserialize;
use serde_json::Value;

use super::parse;

/// One CT's values in `/production.json`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Section {
    pub watts: f64,
    /// The lifetime counter, Wh (import less export for the net CT).
    pub wh_lifetime: f64,
    /// V: the mean of the phases that carry mains voltage (`lines`), else `rmsVoltage`.
    pub voltage: f64,
    pub current: f64,
    pub pwr_factor: f64,
}

/// The active `eim` sections.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Eim {
    pub production: Option<Section>,
    pub total: Option<Section>,
    pub net: Option<Section>,
}

impl Eim {
    /// Whether a consumption CT is active.
    pub fn has_consumption(&self) -> bool {
        self.total.is_some() || self.net.is_some()
    }
}

#[derive(Deserialize)]
struct ProductionJson {
    #[serde(default)]
    production: Vec<Value>,
    #[serde(default)]
    consumption: Vec<Value>,
}

/// A phase under this many volts carries no mains voltage.
const MAINS_MIN_VOLTS: f64 = 50.0;

fn section(v: &Value, measurement: &str) -> Option<Section> {
    let o = v.as_object()?;
    let number = |o: &serde_json::Map<String, Value>, key: &str| {
        o.get(key).and_then(Value::as_f64).filter(|v| v.is_finite())
    };
    let kind = o.get("type").and_then(Value::as_str);
    let measured = o.get("measurementType").and_then(Value::as_str);
    let active = number(o, "activeCount").unwrap_or(0.0) >= 1.0;
    if kind != Some("eim") || measured != Some(measurement) || !active {
        return None;
    }
    let lines: Vec<f64> = o
        .get("lines")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_object().and_then(|l| number(l, "rmsVoltage")))
        .filter(|v| *v >= MAINS_MIN_VOLTS)
        .collect();
    let voltage = match lines.len() {
        0 | 1 => number(o, "rmsVoltage").unwrap_or(0.0),
        n => lines.iter().sum::<f64>() / n as f64,
    };
    Some(Section {
        watts: number(o, "wNow")?,
        wh_lifetime: number(o, "whLifetime")?,
        voltage,
        current: number(o, "rmsCurrent").unwrap_or(0.0).abs(),
        pwr_factor: number(o, "pwrFactor").unwrap_or(0.0),
    })
}

/// `GET /production.json`: its active `eim` sections. Firmware 8.3.5433 and later may copy
/// the net section into the total one: total and net alike, with production, are read as
/// pyenphase repairs them (total = net + production).
pub fn eim(body: &str) -> Result<Eim, String> {
    let p: ProductionJson = parse("/production.json", body)?;
    let find = |list: &[Value], m: &str| list.iter().find_map(|v| section(v, m));
    let mut out = Eim {
        production: find(&p.production, "production"),
        total: find(&p.consumption, "total-consumption"),
        net: find(&p.consumption, "net-consumption"),
    };
    if let (Some(t), Some(n), Some(prod)) = (&mut out.total, out.net, out.production) {
        if t.watts == n.watts && t.wh_lifetime == n.wh_lifetime {
            t.watts = n.watts + prod.watts;
            t.wh_lifetime = n.wh_lifetime + prod.wh_lifetime;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy::api::fixture;

    #[test]
    fn the_sections_of_the_captures_as_pyenphase_reads_them() {
        let e = eim(&fixture("7.6.175_with_cts", "production.json")).unwrap();
        assert_eq!(
            (
                e.production.unwrap().watts,
                e.production.unwrap().wh_lifetime
            ),
            (488.154, 3_183_793.303)
        );
        assert_eq!(
            (e.total.unwrap().watts, e.total.unwrap().wh_lifetime),
            (476.686, 5_145_153.621)
        );
        assert_eq!(
            (e.net.unwrap().watts, e.net.unwrap().wh_lifetime),
            (-11.468, 1_961_512.786)
        );
        assert_eq!(e.total.unwrap().voltage, 235.743);
        // Three phases: the mean of the lines, not the Envoy's sum.
        let three = eim(&fixture("7.6.175_with_cts_3phase", "production.json")).unwrap();
        let v = three.total.unwrap().voltage;
        assert!((200.0..260.0).contains(&v), "{v}");
        // Inactive sections (activeCount 0) are not CTs.
        for variant in [
            "7.3.466_metered_disabled_cts",
            "8.2.4264_metered_no_ct",
            "5.0.62",
        ] {
            let e = eim(&fixture(variant, "production.json")).unwrap();
            assert!(!e.has_consumption() && e.production.is_none(), "{variant}");
        }
        let net_only = eim(&fixture("7.3.130_no_consumption", "production.json")).unwrap();
        assert!(net_only.production.is_some() && !net_only.has_consumption());
        // 8.3.5433: total equal to net is repaired as net + production.
        let bug = eim(&fixture("8.3.5433_tot_is_net_cons", "production.json")).unwrap();
        let want = 5_649_402.426 + 14_405_465.109;
        assert!((bug.total.unwrap().wh_lifetime - want).abs() < 1e-6);
        for bad in ["", "[1]", "<html>", "null"] {
            assert!(eim(bad).is_err(), "{bad}");
        }
        let partial = r#"{"consumption":[{"type":"eim","activeCount":1,"measurementType":"net-consumption","wNow":"x","whLifetime":1}]}"#;
        assert_eq!(eim(partial), Ok(Eim::default()));
    }
}
