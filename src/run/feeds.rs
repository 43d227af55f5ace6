//! The feeds: what each poll asks of the Envoy and turns into a snapshot. The data poll
//! reads the meter list, the readings and production from the source that fits this Envoy;
//! a raw tick reads only the readings' powers. The feeds keep what they learned between
//! polls (the meter list, read again hourly or after an unknown eid) and what they have
//! told the log once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::envoy::Envoy;
use crate::envoy::api::{Inverters, Meter, MeterReading, V1, meters, production, readings_scan};
use crate::error::{Error, Result};
use crate::readings::{self, Snapshot, Source, source};

/// How long the meter list is trusted before it is read again.
const METERS_MAX_AGE: Duration = Duration::from_secs(3600);

/// What the feeds keep between polls.
#[derive(Debug, Default)]
pub struct Feeds {
    meters: Option<(Vec<Meter>, Instant)>,
    unlisted: BTreeSet<u64>,
    told_unmetered: bool,
    told_source: Option<Source>,
    told_unwired: bool,
}

impl Feeds {
    /// The meter list, read again hourly or after an unknown eid.
    pub fn meters(&mut self, envoy: &mut Envoy) -> Result<Vec<Meter>> {
        if let Some((m, at)) = &self.meters {
            if at.elapsed() < METERS_MAX_AGE {
                return Ok(m.clone());
            }
        }
        let meters = match envoy.body("/ivp/meters")? {
            None => Vec::new(),
            Some(body) => meters::meters(&body).map_err(Error::Envoy)?,
        };
        if !meters.iter().any(|m| m.enabled) && !self.told_unmetered {
            log::info!(
                "this Envoy has no enabled CT: consumption is not measured, production comes from the microinverters"
            );
            self.told_unmetered = true;
        }
        self.meters = Some((meters.clone(), Instant::now()));
        Ok(meters)
    }

    /// The readings of the enabled CTs: all of them, or (`raw`) only the powers.
    fn readings(
        &mut self,
        envoy: &mut Envoy,
        meters: &[Meter],
        raw: bool,
    ) -> Result<Vec<MeterReading>> {
        if !meters.iter().any(|m| m.enabled) {
            return Ok(Vec::new());
        }
        let parse = if raw {
            readings_scan::raw_readings
        } else {
            meters::readings
        };
        match envoy.body("/ivp/meters/readings")? {
            None => Ok(Vec::new()),
            Some(body) => {
                let parsed = parse(&body).map_err(Error::Envoy);
                envoy.give_back(body);
                parsed
            }
        }
    }

    /// Says once which phases are left out for carrying no mains voltage.
    fn note_unwired(&mut self, snap: &Snapshot) {
        let cts = [
            ("production", &snap.production),
            ("net-consumption", &snap.net),
            ("total-consumption", &snap.total),
        ];
        let unwired: Vec<String> = cts
            .iter()
            .filter_map(|(name, ct)| {
                let lines = &ct.as_ref()?.unwired;
                (!lines.is_empty()).then(|| format!("{name} CT L{lines:?}"))
            })
            .collect();
        if !unwired.is_empty() && !self.told_unwired {
            log::info!(
                "phases without mains voltage (under {} V), left out of means, sums and per-phase topics: {}",
                readings::MAINS_MIN_VOLTS,
                unwired.join(", ")
            );
            self.told_unwired = true;
        }
    }

    fn note_unknown(&mut self, snap: &Snapshot) {
        let new: Vec<u64> = snap
            .unknown_eids
            .iter()
            .copied()
            .filter(|e| !self.unlisted.contains(e))
            .collect();
        if !new.is_empty() {
            log::info!(
                "readings name meters {new:?} that /ivp/meters did not list: reading the meter list again"
            );
            self.unlisted.extend(new);
            self.meters = None;
        }
    }

    /// `/api/v1/production`, `None` where this firmware has none.
    fn v1(&mut self, envoy: &mut Envoy) -> Result<Option<V1>> {
        match envoy.body("/api/v1/production")? {
            None => Ok(None),
            Some(body) => production::production(&body)
                .map(Some)
                .map_err(Error::Envoy),
        }
    }

    /// The `inverters` section of `/production.json`; `None` where it is absent or not
    /// JSON (old firmware serves an HTML page there).
    fn inverters(&mut self, envoy: &mut Envoy) -> Result<Option<Inverters>> {
        let Some(body) = envoy.body("/production.json")? else {
            return Ok(None);
        };
        Ok(production::production_inverters(&body).unwrap_or_else(|e| {
            log::debug!("{e}");
            None
        }))
    }

    /// Production where no CT measures it, from the source [`source`] picks.
    fn production(
        &mut self,
        envoy: &mut Envoy,
        meters: &[Meter],
    ) -> Result<(Option<Inverters>, Option<Source>)> {
        let with_ct = source::has_production_ct(meters);
        let v1 = if source::v1_is_trusted(&envoy.info, meters) {
            self.v1(envoy)?
        } else {
            None
        };
        if with_ct {
            // The CT measures; v1 still gives the Envoy's own energy today.
            return Ok((v1.map(|v| v.inverters()), Some(Source::Ct)));
        }
        match source::without_ct(&envoy.info, meters, v1.as_ref()) {
            Source::V1 => Ok((v1.map(|v| v.inverters()), Some(Source::V1))),
            _ => match self.inverters(envoy)? {
                Some(inv) => Ok((Some(inv), Some(Source::Inverters))),
                // A broken v1 still tells the power, without its zero counters.
                None => Ok(match v1 {
                    Some(v) => (
                        Some(Inverters {
                            watts_now: v.watts_now,
                            wh_today: None,
                            wh_lifetime: None,
                        }),
                        Some(Source::V1),
                    ),
                    None => (None, None),
                }),
            },
        }
    }

    /// The full poll: meters, readings and production from the source that fits this
    /// Envoy. An Envoy that exposes no production as JSON is an error, not an empty poll.
    pub fn data(&mut self, envoy: &mut Envoy) -> Result<Snapshot> {
        let meters = self.meters(envoy)?;
        let readings = self.readings(envoy, &meters, false)?;
        let (inverters, source) = self.production(envoy, &meters)?;
        let mut snap = readings::snapshot(&meters, &readings, inverters);
        snap.source = source;
        self.note_unknown(&snap);
        self.note_unwired(&snap);
        if snap.production.is_none() && snap.inverters.is_none() {
            return Err(Error::Envoy(format!(
                "the Envoy at {} (firmware {}) exposes no production as JSON: no enabled CT, and neither /api/v1/production nor /production.json answers; envoy2mqtt cannot read this firmware",
                envoy.url(),
                envoy.info.firmware
            )));
        }
        if source != self.told_source {
            if let Some(s) = source {
                log::info!("production from {}", s.describe());
            }
            self.told_source = source;
        }
        Ok(snap)
    }

    /// The fast poll: one readings request (none on an Envoy without CTs). A token that
    /// must come from the cloud waits for the next data poll: a raw tick stays short.
    pub fn raw(&mut self, envoy: &mut Envoy) -> Result<Snapshot> {
        envoy.allow_cloud(false);
        let meters = self.meters(envoy);
        let readings = meters.and_then(|m| Ok((self.readings(envoy, &m, true)?, m)));
        envoy.allow_cloud(true);
        let (readings, meters) = readings?;
        let snap = readings::snapshot(&meters, &readings, None);
        self.note_unknown(&snap);
        Ok(snap)
    }
}
