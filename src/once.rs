//! `--once`, for cron: one data poll, published with the status and the discovery, then
//! a clean disconnect once every message is acknowledged.

use std::time::SystemTime;

use crate::archive;
use crate::config::Config;
use crate::envoy::Envoy;
use crate::error::Result;
use crate::inventory;
use crate::message::Health;
use crate::mqtt::Session;
use crate::output::{self, Broker, Output, Stdout};
use crate::reading;

/// `--once`: one data poll, published with the status and the discovery, then a clean
/// disconnect. An Envoy failure is still reported in `P/status` before the exit with 1.
pub fn run(config: &Config, dry_run: bool) -> Result<()> {
    let polled =
        Envoy::connect(config).and_then(|mut envoy| envoy.data().map(|snap| (envoy, snap)));
    let serial = match &polled {
        Ok((envoy, _)) => envoy.serial.clone(),
        Err(_) => config
            .envoy
            .serial
            .clone()
            .unwrap_or_else(|| "unknown".into()),
    };
    let mut out: Box<dyn Output> = if dry_run {
        Box::new(Stdout)
    } else {
        let mut session = Session::new(
            &config.mqtt,
            &output::client_id(config, &serial, true),
            None,
            Vec::new(),
        )?;
        session.connect()?;
        Box::new(Broker::new(session))
    };
    let p = output::composer(config, &serial);
    let messages = match &polled {
        Ok((envoy, snap)) => {
            let mut fields = reading::data_fields(snap);
            let now = SystemTime::now();
            let mut archive = archive::load(config, &p, out.as_mut(), true, dry_run)?;
            archive.hold(&mut fields);
            archive.update(&p, now, &fields);
            archive.save(true)?;
            // Cron: entities expire after three missed runs (at least 15 minutes).
            let expire = (3 * config.data_interval.as_secs()).max(900);
            let mut entities = fields.clone();
            entities.extend(archive.fields());
            // Discovery first: Home Assistant must know how to read a value before it comes.
            let mut m = inventory::announce(config, envoy, &entities, Some(expire));
            m.extend(p.data(&fields, now));
            m.extend(archive.messages(&p, now));
            m.push(p.status(true, &envoy.health(&[], Some(now), None)));
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
