//! `--once`, for cron: one data poll, published with the status and the discovery, then
//! a clean disconnect once every message is acknowledged.

use std::time::SystemTime;

use super::broker;
use super::cycle::{self, Announcer, Group};
use super::feeds::Feeds;
use crate::envoy::Envoy;
use crate::error::Result;
use crate::ledger::store;
use crate::readings::Field;
use crate::settings::Config;
use crate::topics::{Composer, Health};

/// `--once`: one data poll, published with the status and the discovery, then a clean
/// disconnect. An Envoy failure is still reported in `P/status` before the exit with 1.
pub fn run(config: &Config, dry_run: bool) -> Result<()> {
    let polled = Envoy::connect(config).and_then(|mut envoy| {
        let mut feeds = Feeds::default();
        let snap = feeds.data(&mut envoy)?;
        let side = side_feeds(&mut feeds, &mut envoy, config.inverter_interval.is_some());
        Ok((envoy, snap, side))
    });
    let serial = match &polled {
        Ok((envoy, ..)) => envoy.serial.clone(),
        Err(_) => config
            .envoy
            .serial
            .clone()
            .unwrap_or_else(|| "unknown".into()),
    };
    let mut out = broker::open_once(config, &serial, dry_run)?;
    let p = Composer::new(config, &serial);
    let messages = match &polled {
        Ok((envoy, snap, side)) => {
            let now = SystemTime::now();
            let mut store = store::load(config, &p, out.as_mut(), true, dry_run)?;
            // Cron: entities expire after three missed runs (at least 15 minutes).
            let expire = (3 * config.data_interval.as_secs()).max(900);
            let mut announcer = Announcer::new(config, envoy, Some(expire));
            announcer.set(Group::Side, side);
            store.battery(now, side);
            let published = cycle::publish(snap, now, &p, &mut store, &mut announcer, true)?;
            let mut m = published.discovery;
            m.extend(published.values);
            m.extend(p.values(side, now));
            m.push(p.status(true, &cycle::health(envoy, &[], Some(now), None)));
            m
        }
        Err(e) => vec![p.status(
            false,
            &Health {
                errors: vec![e.to_string()],
                ..Health::default()
            },
        )],
    };
    out.publish(&messages)?;
    out.close(&[])?;
    polled.map(|_| ())
}

/// One poll of each side feed: the inventory (with the grid status), the batteries as one
/// and each, the storage settings, the generator and the relays, and the microinverters
/// unless `INVERTER_INTERVAL_SECONDS` is 0. A failure is said and leaves the others' messages to go out.
fn side_feeds(feeds: &mut Feeds, envoy: &mut Envoy, inverters: bool) -> Vec<Field> {
    let mut fields = Vec::new();
    type Poll = fn(&mut Feeds, &mut Envoy) -> Result<Vec<Field>>;
    let polls: [Poll; 6] = [
        Feeds::inventory,
        Feeds::battery,
        Feeds::battery_power,
        Feeds::storage,
        Feeds::generator,
        Feeds::relays,
    ];
    for poll in polls {
        match poll(feeds, envoy) {
            Ok(f) => fields.extend(f),
            Err(e) => log::warn!("{e}; left out of this run"),
        }
    }
    if inverters {
        match feeds.each_inverter(envoy) {
            Ok(read) => fields.extend(read.all),
            Err(e) => log::warn!("{e}; left out of this run"),
        }
    }
    fields
}
