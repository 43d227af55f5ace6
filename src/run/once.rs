//! `--once`, for cron: one data poll, published with the status and the discovery, then
//! a clean disconnect once every message is acknowledged.

use std::time::SystemTime;

use super::broker;
use super::cycle::{self, Announcer};
use super::feeds::Feeds;
use crate::envoy::Envoy;
use crate::error::Result;
use crate::ledger::store;
use crate::settings::Config;
use crate::topics::{Composer, Health};

/// `--once`: one data poll, published with the status and the discovery, then a clean
/// disconnect. An Envoy failure is still reported in `P/status` before the exit with 1.
pub fn run(config: &Config, dry_run: bool) -> Result<()> {
    let polled = Envoy::connect(config).and_then(|mut envoy| {
        let snap = Feeds::default().data(&mut envoy)?;
        Ok((envoy, snap))
    });
    let serial = match &polled {
        Ok((envoy, _)) => envoy.serial.clone(),
        Err(_) => config
            .envoy
            .serial
            .clone()
            .unwrap_or_else(|| "unknown".into()),
    };
    let mut out = broker::open_once(config, &serial, dry_run)?;
    let p = Composer::new(config, &serial);
    let messages = match &polled {
        Ok((envoy, snap)) => {
            let now = SystemTime::now();
            let mut store = store::load(config, &p, out.as_mut(), true, dry_run)?;
            // Cron: entities expire after three missed runs (at least 15 minutes).
            let expire = (3 * config.data_interval.as_secs()).max(900);
            let mut announcer = Announcer::new(config, envoy, Some(expire));
            let published = cycle::publish(snap, now, &p, &mut store, &mut announcer, true)?;
            let mut m = published.discovery;
            m.extend(published.values);
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
