//! Where production comes from, layout by layout. Pure: the Envoy's `/info`, its meter list
//! and its `/api/v1/production` answer in, the source to read out.
//!
//! | layout | source | why |
//! | --- | --- | --- |
//! | an enabled production CT | the CT (`/ivp/meters/readings`) | measured, every second |
//! | metered (`<imeter>true`), firmware ≥ 8.2.4264, no enabled production CT | the microinverters (`/production.json`, `inverters`) | `/api/v1/production` reports the disabled CT's stale noise (4 W while 38 inverters make 5.5 kW) |
//! | `/api/v1/production` whose `wattHours*` counters are all 0 | the microinverters (`/production.json`) | the v1 summary is broken (disabled CTs on 7.x, non-metered 8.3.5422) |
//! | otherwise, `/api/v1/production` answers | `/api/v1/production` | the microinverters' own totals |
//! | no `/api/v1/production` (404, or 401 before firmware 7) | the microinverters (`/production.json`) | |
//! | none of these is JSON | nothing: an error | very old firmware serves only HTML pages |
//!
//! The microinverters are read from the `inverters` section of `/production.json` (power and
//! lifetime energy, ~0.3 KB without `?details=1`), as pyenphase does, rather than by summing
//! `/api/v1/production/inverters` (one entry per inverter, ~160 bytes each: 6 KB for 38
//! inverters, power only, and behind digest authentication before firmware 7). The
//! inverters report every 5 minutes, so this source is read at the data rate only, and a
//! raw tick carries only what a CT measures.

use crate::envoy::api::{Info, Meter, Role, V1};

/// The first firmware whose `/api/v1/production` is stale on a metered Envoy without an
/// enabled production CT (pyenphase's `METERED_NOCT_FALLBACK_TO_INVERTERS`).
const STALE_V1_FROM: [u32; 3] = [8, 2, 4264];

/// Where a poll's production comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The production CT.
    Ct,
    /// `/api/v1/production`.
    V1,
    /// The `inverters` section of `/production.json`.
    Inverters,
}

impl Source {
    /// How `--check` and the log name it.
    pub fn describe(self) -> &'static str {
        match self {
            Source::Ct => "the production CT (/ivp/meters/readings)",
            Source::V1 => "the microinverters' totals (/api/v1/production)",
            Source::Inverters => "the microinverters (/production.json, inverters section)",
        }
    }
}

/// `D8.2.4264` → `[8, 2, 4264]`; what cannot be read is 0.
pub fn version(firmware: &str) -> [u32; 3] {
    let mut parts = firmware
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .split('.')
        .map(|p| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap_or(0)
        });
    [0; 3].map(|_| parts.next().unwrap_or(0))
}

/// Whether an enabled production CT measures production.
pub fn has_production_ct(meters: &[Meter]) -> bool {
    meters
        .iter()
        .any(|m| m.enabled && m.role == Role::Production)
}

/// Whether `/api/v1/production` is worth asking for production on this Envoy: not on a
/// metered Envoy of firmware ≥ 8.2.4264 without an enabled production CT.
pub fn v1_is_trusted(info: &Info, meters: &[Meter]) -> bool {
    has_production_ct(meters) || !(info.metered && version(&info.firmware) >= STALE_V1_FROM)
}

/// The source without a production CT, given the v1 answer (`None`: not asked, or absent):
/// `/api/v1/production` if it is trusted and sound, else the microinverters.
pub fn without_ct(info: &Info, meters: &[Meter], v1: Option<&V1>) -> Source {
    match v1 {
        Some(v) if v1_is_trusted(info, meters) && !v.is_broken() => Source::V1,
        _ => Source::Inverters,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_names_its_endpoint() {
        for (source, want) in [
            (Source::Ct, "the production CT (/ivp/meters/readings)"),
            (
                Source::V1,
                "the microinverters' totals (/api/v1/production)",
            ),
            (
                Source::Inverters,
                "the microinverters (/production.json, inverters section)",
            ),
        ] {
            assert_eq!(source.describe(), want);
        }
    }

    fn info(firmware: &str, metered: bool) -> Info {
        Info {
            serial: "1".into(),
            firmware: firmware.into(),
            part_number: String::new(),
            metered,
            web_tokens: true,
        }
    }

    fn meter(role: Role, enabled: bool) -> Meter {
        Meter {
            eid: 1,
            kind: String::new(),
            role,
            enabled,
            phases: 1,
        }
    }

    #[test]
    fn versions() {
        for (text, want) in [
            ("D8.2.4264", [8, 2, 4264]),
            ("D8.2.4263", [8, 2, 4263]),
            ("R3.18.5 (88072d)", [3, 18, 5]),
            ("D7.6.175", [7, 6, 175]),
            ("8.3", [8, 3, 0]),
            ("unknown", [0, 0, 0]),
        ] {
            assert_eq!(version(text), want, "{text}");
        }
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table of cases
    fn source_by_layout() {
        let good = V1 {
            watts_now: 812.0,
            wh_today: 4321.0,
            wh_seven_days: 98_765.0,
            wh_lifetime: 12_345_678.0,
        };
        let stale = V1 {
            watts_now: 4.0,
            wh_today: 0.0,
            wh_seven_days: 0.0,
            wh_lifetime: 1600.0,
        };
        let zero = V1 {
            watts_now: 689.0,
            wh_today: 0.0,
            wh_seven_days: 0.0,
            wh_lifetime: 0.0,
        };
        let disabled = [
            meter(Role::Production, false),
            meter(Role::NetConsumption, false),
        ];
        let net_only = [meter(Role::NetConsumption, true)];
        #[rustfmt::skip]
        let cases: [(&str, Info, &[Meter], Option<&V1>, Source); 9] = [
            ("non-metered 7.6", info("D7.6.175", false), &[], Some(&good), Source::V1),
            ("metered no CT 8.2.4264: stale v1", info("D8.2.4264", true), &disabled, Some(&stale), Source::Inverters),
            ("metered no CT 8.3: stale v1", info("D8.3.5167", true), &[], Some(&stale), Source::Inverters),
            ("metered net CT only 8.3", info("D8.3.5167", true), &net_only, Some(&good), Source::Inverters),
            ("metered no CT 8.2.4263: v1 trusted", info("D8.2.4263", true), &disabled, Some(&stale), Source::V1),
            ("all-zero v1 on 7.3", info("D7.3.466", true), &disabled, Some(&zero), Source::Inverters),
            ("all-zero v1 non-metered 8.3.5422", info("D8.3.5422", false), &[], Some(&zero), Source::Inverters),
            ("no v1 (old firmware)", info("R3.18.5", false), &[], None, Source::Inverters),
            ("non-metered 8.3 sound v1", info("D8.3.5422", false), &[], Some(&good), Source::V1),
        ];
        for (name, info, meters, v1, want) in cases {
            assert_eq!(without_ct(&info, meters, v1), want, "{name}");
        }
        assert!(v1_is_trusted(
            &info("D8.3.5167", true),
            &[meter(Role::Production, true)]
        ));
    }
}
