//! Production as the microinverters report it: `/api/v1/production` (their totals) and
//! the `inverters` section of `/production.json`. Which of them a poll trusts is the
//! production-source table's choice (`readings::source`). Pure.

use serde::Deserialize;

use super::parse;

/// What the microinverters report (`/api/v1/production` or `/production.json`; see
/// `readings::source` for which): production where no CT measures it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inverters {
    pub watts_now: f64,
    /// The Envoy's own energy today, where it is right (`/api/v1/production` only).
    pub wh_today: Option<f64>,
    /// `None` where the source has no sound lifetime counter.
    pub wh_lifetime: Option<f64>,
}

/// `/api/v1/production`, as the Envoy answered it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct V1 {
    pub watts_now: f64,
    pub wh_today: f64,
    pub wh_seven_days: f64,
    pub wh_lifetime: f64,
}

impl V1 {
    /// Every `wattHours*` counter is 0: the summary is broken, not a new system.
    pub fn is_broken(&self) -> bool {
        self.wh_today == 0.0 && self.wh_seven_days == 0.0 && self.wh_lifetime == 0.0
    }

    pub fn inverters(&self) -> Inverters {
        Inverters {
            watts_now: self.watts_now,
            wh_today: Some(self.wh_today),
            wh_lifetime: Some(self.wh_lifetime),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProductionJson {
    watt_hours_today: f64,
    #[serde(default)]
    watt_hours_seven_days: f64,
    watt_hours_lifetime: f64,
    watts_now: f64,
}

/// `/production.json`: only its `production` list matters here.
#[derive(Deserialize)]
struct ProductionListJson {
    production: Vec<ProductionEntryJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProductionEntryJson {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    active_count: u64,
    #[serde(default)]
    w_now: f64,
    #[serde(default)]
    wh_lifetime: f64,
}

/// `GET /api/v1/production`: the microinverters' totals.
pub fn production(body: &str) -> Result<V1, String> {
    let p: ProductionJson = parse("/api/v1/production", body)?;
    Ok(V1 {
        watts_now: p.watts_now,
        wh_today: p.watt_hours_today,
        wh_seven_days: p.watt_hours_seven_days,
        wh_lifetime: p.watt_hours_lifetime,
    })
}

/// `GET /production.json`: the `inverters` section (power, lifetime energy); `None` when
/// the section is missing or no inverter is active.
pub fn production_inverters(body: &str) -> Result<Option<Inverters>, String> {
    let p: ProductionListJson = parse("/production.json", body)?;
    Ok(p.production
        .into_iter()
        .find(|e| e.kind == "inverters" && e.active_count > 0)
        .map(|e| Inverters {
            watts_now: e.w_now,
            // The inverters' whToday is wrong on every firmware (pyenphase): not published.
            wh_today: None,
            wh_lifetime: (e.wh_lifetime > 0.0).then_some(e.wh_lifetime),
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for body in [
            "",
            "null",
            "[{\"eid\":\"x\"}]",
            "<html>",
            "{\"error\":\"404 - Not Found\"}",
        ] {
            assert!(production(body).is_err(), "{body}");
            assert!(production_inverters(body).is_err(), "{body}");
        }
    }
}
