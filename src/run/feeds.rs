//! The feeds: what each poll asks of the Envoy and turns into a snapshot. The data poll
//! reads the meter list, the readings and production from the source that fits this Envoy;
//! a raw tick reads only the readings' powers. The feeds keep what they learned between
//! polls (the meter list, read again hourly or after an unknown eid) and what they have
//! told the log once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::envoy::Envoy;
use crate::envoy::api::acb;
use crate::envoy::api::eim;
use crate::envoy::api::ensemble::{self, Inventory};
use crate::envoy::api::inverters;
use crate::envoy::api::tariff;
use crate::envoy::api::{Inverters, Meter, MeterReading, V1, meters, production, readings_scan};
use crate::error::{Error, Result};
use crate::readings::inverters as inverter_fields;
use crate::readings::{self, Field, Snapshot, Source, battery, source, system};

/// How long the meter list is trusted before it is read again.
const METERS_MAX_AGE: Duration = Duration::from_secs(3600);
/// An endpoint this Envoy does not have is tried again after this long.
const ABSENT_RETRY: Duration = Duration::from_secs(3600);

/// What the feeds keep between polls.
#[derive(Debug, Default)]
pub struct Feeds {
    meters: Option<(Vec<Meter>, Instant)>,
    unlisted: BTreeSet<u64>,
    told_unmetered: bool,
    told_source: Option<Source>,
    told_unwired: bool,
    /// The ensemble's inventory and the AC Batteries reporting, as last read.
    ensemble: Option<Ensemble>,
    /// Endpoints this Envoy does not have, and when to try each again.
    absent: BTreeMap<&'static str, Instant>,
    /// Serials not safe in a topic, said once.
    told_serials: BTreeSet<String>,
    /// Whether the last data poll read a storage CT (then the batteries' power is its).
    storage_ct: bool,
    /// Each microinverter's last report time, as last published.
    reports: BTreeMap<String, f64>,
    /// The AC Batteries reporting in `/production.json`, and when they were counted.
    acb: Option<(u64, Instant)>,
    /// Whether `/production.json` has an active consumption CT (an Envoy without enabled
    /// CTs in `/ivp/meters`), and when that was looked at.
    eim: Option<(bool, Instant)>,
}

/// What a side feed read: every field it has (the entities), and those to publish (for the
/// microinverters, only those whose report changed since the last poll).
#[derive(Debug, Default)]
pub struct SideRead {
    pub all: Vec<Field>,
    pub changed: Vec<Field>,
}

/// The batteries, controller and collar a system has.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ensemble {
    pub inventory: Inventory,
    /// AC Batteries reporting in `/production.json`.
    pub acb: u64,
}

impl Ensemble {
    fn has_batteries(&self) -> bool {
        self.inventory.batteries > 0 || self.acb > 0
    }

    /// How `--check` and the log say it.
    pub fn describe(&self) -> String {
        let i = &self.inventory;
        let mut parts = vec![
            format!("{} IQ Batteries", i.batteries),
            format!("{} AC Batteries", self.acb),
        ];
        if i.controller {
            parts.push("an IQ System Controller".into());
        }
        if i.collar {
            parts.push("an IQ Meter Collar".into());
        }
        parts.join(", ")
    }
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
        let from_eim = match meters.iter().any(|m| m.enabled) {
            true => None,
            false => self.eim(envoy)?,
        };
        let snap = match from_eim {
            Some(snap) => snap,
            None => {
                let readings = self.readings(envoy, &meters, false)?;
                let (inverters, source) = self.production(envoy, &meters)?;
                let mut snap = readings::snapshot(&meters, &readings, inverters);
                snap.source = source;
                snap
            }
        };
        let source = snap.source;
        self.storage_ct = snap.storage.is_some();
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

    /// The CTs of `/production.json` on an Envoy without enabled CTs in `/ivp/meters`
    /// (older metered firmware): looked for hourly, then read at every data poll while a
    /// consumption CT is active there. `None`: none is.
    fn eim(&mut self, envoy: &mut Envoy) -> Result<Option<Snapshot>> {
        if self
            .eim
            .is_some_and(|(active, at)| !active && at.elapsed() < ABSENT_RETRY)
        {
            return Ok(None);
        }
        let body = self.optional(envoy, "/production.json")?;
        let found = body.as_deref().map(eim::eim).transpose();
        let found = found.unwrap_or_else(|e| {
            log::debug!("{e}");
            None
        });
        let active = found.is_some_and(|e| e.has_consumption());
        if active && !self.eim.is_some_and(|(was, _)| was) {
            log::info!(
                "no enabled CT in /ivp/meters, but /production.json reports consumption CTs: consumption from there, at every data poll"
            );
        }
        self.eim = Some((active, Instant::now()));
        let (Some(e), Some(body), true) = (found, body, active) else {
            return Ok(None);
        };
        let inverters = match e.production {
            Some(_) => None,
            None => production::production_inverters(&body).ok().flatten(),
        };
        let mut snap = readings::snapshot::from_eim(&e, inverters);
        snap.source = match (e.production, inverters) {
            (Some(_), _) => Some(Source::Ct),
            (None, Some(_)) => Some(Source::Inverters),
            (None, None) => None,
        };
        Ok(Some(snap))
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

    /// The body of `path` if this Envoy has the endpoint: one it does not have (404, 401 to
    /// an owner token, an HTML page) is dropped after its first answer, with one log line,
    /// and tried again hourly. It never fails the poll.
    fn optional(&mut self, envoy: &mut Envoy, path: &'static str) -> Result<Option<String>> {
        if self.absent.get(path).is_some_and(|at| Instant::now() < *at) {
            return Ok(None);
        }
        let absent = match envoy.get(path) {
            Ok(reply) if reply.status == 200 && !reply.body.trim_start().starts_with('<') => {
                self.absent.remove(path);
                return Ok(Some(reply.body));
            }
            Ok(reply) if matches!(reply.status, 200 | 401 | 403 | 404) => {
                format!("answered HTTP {}", reply.status)
            }
            Ok(reply) => {
                return Err(Error::Envoy(format!(
                    "GET {}{path} answered HTTP {}; trying again later",
                    envoy.url(),
                    reply.status
                )));
            }
            Err(Error::Token(e)) => e,
            Err(e) => return Err(e),
        };
        if !self.absent.contains_key(path) {
            log::info!("{path} {absent}: this Envoy does not serve it; asking again every hour");
        }
        self.absent.insert(path, Instant::now() + ABSENT_RETRY);
        Ok(None)
    }

    /// Reads the ensemble's inventory and the AC Batteries reporting (firmware 7 and
    /// later); returns the grid status, where a controller or collar tells it. Says in the
    /// log what it found when that changes.
    pub fn inventory(&mut self, envoy: &mut Envoy) -> Result<Vec<Field>> {
        if envoy.info.major() < 7 {
            return Ok(Vec::new());
        }
        let inventory = match self.optional(envoy, "/ivp/ensemble/inventory")? {
            Some(body) => ensemble::inventory(&body).map_err(Error::Envoy)?,
            None => Inventory::default(),
        };
        // AC Batteries are counted hourly, even where the inventory is read every minute.
        let acb = match self.acb {
            Some((count, at)) if at.elapsed() < ABSENT_RETRY => count,
            _ => {
                let count = match self.optional(envoy, "/production.json")? {
                    Some(body) => acb::storage(&body).map_err(Error::Envoy)?,
                    None => None,
                };
                let count = count.map_or(0, |s| s.count);
                self.acb = Some((count, Instant::now()));
                count
            }
        };
        let found = Ensemble { inventory, acb };
        let mut fields = system::grid(&found.inventory);
        let (units, unsafe_serials) = battery::units(&found.inventory.units);
        self.tell_unsafe(unsafe_serials);
        fields.extend(units);
        if acb > 0 {
            if let Some(body) = self.optional(envoy, "/inventory.json?deleted=1")? {
                let list = acb::inventory(&body).map_err(Error::Envoy)?;
                let (units, unsafe_serials) = battery::acb_units(&list);
                self.tell_unsafe(unsafe_serials);
                fields.extend(units);
            }
        }
        // The grid status changes; what the ensemble has does not: said when it changes.
        let what = |e: &Ensemble| (e.describe(), e.inventory.batteries, e.acb);
        if self.ensemble.as_ref().map(what) != Some(what(&found)) {
            log::info!("ensemble: {}", found.describe());
        }
        self.ensemble = Some(found);
        Ok(fields)
    }

    /// Says once that a device's serial is left out for not being safe in a topic.
    fn tell_unsafe(&mut self, serials: Vec<String>) {
        for serial in serials {
            if self.told_serials.insert(serial.clone()) {
                log::warn!(
                    "a device's serial {serial:?} is not 1 to 24 letters and digits: not safe in a topic, left out"
                );
            }
        }
    }

    /// Each IQ Battery's power and state of charge (`/ivp/ensemble/power`), the AC
    /// Batteries' power (`/production.json`), and the power of all of them where no storage
    /// CT measures it; nothing, and no request, without batteries.
    pub fn battery_power(&mut self, envoy: &mut Envoy) -> Result<Vec<Field>> {
        let Some(e) = self.ensemble.clone().filter(Ensemble::has_batteries) else {
            return Ok(Vec::new());
        };
        let units = match e.inventory.batteries {
            0 => Vec::new(),
            _ => match self.optional(envoy, "/ivp/ensemble/power")? {
                Some(body) => ensemble::power(&body).map_err(Error::Envoy)?,
                None => Vec::new(),
            },
        };
        let acb_watts = match e.acb {
            0 => None,
            _ => match self.optional(envoy, "/production.json")? {
                Some(body) => acb::storage(&body)
                    .map_err(Error::Envoy)?
                    .and_then(|s| s.watts),
                None => None,
            },
        };
        let (fields, unsafe_serials) = battery::power(&units, acb_watts, self.storage_ct);
        self.tell_unsafe(unsafe_serials);
        Ok(fields)
    }

    /// The storage settings (`/admin/lib/tariff`); nothing, and no request, on a system
    /// without batteries.
    pub fn storage(&mut self, envoy: &mut Envoy) -> Result<Vec<Field>> {
        if !self.ensemble.as_ref().is_some_and(Ensemble::has_batteries) {
            return Ok(Vec::new());
        }
        let Some(body) = self.optional(envoy, "/admin/lib/tariff")? else {
            return Ok(Vec::new());
        };
        let settings = tariff::storage_settings(&body).map_err(Error::Envoy)?;
        Ok(settings.map_or_else(Vec::new, |s| system::storage(&s)))
    }

    /// The endpoints this Envoy answered as not having, for `--check`.
    pub fn absent_endpoints(&self) -> Vec<&'static str> {
        self.absent.keys().copied().collect()
    }

    /// What the last inventory found, if one was read.
    pub fn ensemble(&self) -> Option<&Ensemble> {
        self.ensemble.as_ref()
    }

    /// The batteries as one (`/ivp/ensemble/secctrl`); nothing, and no request, on a
    /// system without batteries.
    pub fn battery(&mut self, envoy: &mut Envoy) -> Result<Vec<Field>> {
        let Some(e) = self.ensemble.clone().filter(Ensemble::has_batteries) else {
            return Ok(Vec::new());
        };
        let Some(body) = self.optional(envoy, "/ivp/ensemble/secctrl")? else {
            return Ok(Vec::new());
        };
        let s = ensemble::secctrl(&body).map_err(Error::Envoy)?;
        Ok(battery::aggregate(e.inventory.batteries, e.acb, &s))
    }

    /// Each microinverter: `/ivp/pdm/device_data` where it answers with all of them, else
    /// `/api/v1/production/inverters`. The inverters report every 5 minutes; those whose
    /// report did not change are not published again. The AC Batteries' power and last
    /// report come from the v1 list (`devType` 11), read for them where device data served
    /// the inverters.
    pub fn each_inverter(&mut self, envoy: &mut Envoy) -> Result<SideRead> {
        let detailed = match self.optional(envoy, "/ivp/pdm/device_data")? {
            Some(body) => inverters::device_data(&body).map_err(Error::Envoy)?,
            None => None,
        };
        let with_acb = self.ensemble.as_ref().is_some_and(|e| e.acb > 0);
        let v1 = match (&detailed, with_acb) {
            (Some(_), false) => None,
            _ => match self.optional(envoy, "/api/v1/production/inverters")? {
                Some(body) => Some(inverters::v1(&body).map_err(Error::Envoy)?),
                None => None,
            },
        };
        let (list, acbs) = match (detailed, v1) {
            (Some(list), v1) => (list, v1.map(|v| v.acb).unwrap_or_default()),
            (None, Some(v1)) => (v1.inverters, v1.acb),
            (None, None) => return Ok(SideRead::default()),
        };
        let (mut all, unsafe_serials) = inverter_fields::fields(&list);
        self.tell_unsafe(unsafe_serials);
        let mut changed = inverter_fields::changed(&self.reports, &list, &all);
        let (batteries, unsafe_serials) = battery::acb_reports(&acbs);
        self.tell_unsafe(unsafe_serials);
        all.extend(batteries.iter().copied());
        changed.extend(batteries);
        self.reports = list
            .iter()
            .map(|i| (i.serial.clone(), i.last_report))
            .collect();
        Ok(SideRead { all, changed })
    }

    /// Whether the last inventory listed an IQ System Controller.
    fn has_controller(&self) -> bool {
        self.ensemble
            .as_ref()
            .is_some_and(|e| e.inventory.controller)
    }

    /// `generator_running` (`/ivp/ensemble/generator`), where an IQ System Controller has a
    /// generator; nothing, and no request, without a controller.
    pub fn generator(&mut self, envoy: &mut Envoy) -> Result<Vec<Field>> {
        if !self.has_controller() {
            return Ok(Vec::new());
        }
        let Some(body) = self.optional(envoy, "/ivp/ensemble/generator")? else {
            return Ok(Vec::new());
        };
        let running = ensemble::generator(&body).map_err(Error::Envoy)?;
        Ok(system::generator(running))
    }

    /// Each dry-contact relay's state (`/ivp/ensemble/dry_contacts`); nothing, and no
    /// request, without an IQ System Controller.
    pub fn relays(&mut self, envoy: &mut Envoy) -> Result<Vec<Field>> {
        if !self.has_controller() {
            return Ok(Vec::new());
        }
        let Some(body) = self.optional(envoy, "/ivp/ensemble/dry_contacts")? else {
            return Ok(Vec::new());
        };
        let relays = ensemble::dry_contacts(&body).map_err(Error::Envoy)?;
        let (fields, unsafe_ids) = system::relays(&relays);
        self.tell_unsafe(unsafe_ids);
        Ok(fields)
    }
}
