//! The side feeds of the service: the ensemble's inventory (and the grid status in it),
//! the batteries and the storage settings. Each backs off on its own when it fails (said
//! once in the log, then at `debug`), and none touches the Envoy's availability: meter
//! readings that work keep it online.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::feeds::{Feeds, SideRead};
use super::schedule::{Feed, INVENTORY_PERIOD, Table, backoff};
use crate::envoy::Envoy;
use crate::error::{Error, Result};
use crate::readings::Field;

/// The side feeds' failures in a row, and the last error each said.
#[derive(Debug, Default)]
pub struct Side {
    failures: BTreeMap<Feed, (u32, String)>,
}

impl Side {
    /// Runs `feed` (the inventory, the batteries, the storage settings, the
    /// microinverters); returns what it read, if it read its answers. The inventory comes
    /// every `data` period where a controller or a collar tells the grid status, else hourly.
    pub fn run(
        &mut self,
        feed: Feed,
        feeds: &mut Feeds,
        envoy: &mut Envoy,
        (table, data): (&mut Table, Duration),
    ) -> Result<Option<SideRead>> {
        let same = |fields: Vec<Field>| SideRead {
            changed: fields.clone(),
            all: fields,
        };
        let result = match feed {
            Feed::Battery => feeds.battery(envoy).map(same),
            Feed::Tariff => feeds.storage(envoy).map(same),
            Feed::BatteryPower => feeds.battery_power(envoy).map(same),
            Feed::Inverters => feeds.each_inverter(envoy),
            Feed::Generator => feeds.generator(envoy).map(same),
            Feed::Relays => feeds.relays(envoy).map(same),
            _ => feeds.inventory(envoy).map(same),
        };
        if feed == Feed::Inventory {
            let grid = feeds
                .ensemble()
                .is_some_and(|e| e.inventory.controller || e.inventory.collar);
            table.set_period(feed, if grid { data } else { INVENTORY_PERIOD });
        }
        let done = Instant::now();
        let fields = match result {
            Ok(fields) => {
                if self.failures.remove(&feed).is_some() {
                    log::info!("{feed:?} answers again");
                }
                Some(fields)
            }
            Err(e @ (Error::File(_) | Error::OutputClosed)) => return Err(e),
            Err(e) => {
                let (count, said) = self.failures.entry(feed).or_default();
                *count += 1;
                let pause = backoff(*count);
                let text = e.to_string();
                let when = humantime::format_duration(pause);
                if *said != text {
                    log::warn!("{text}; {feed:?} skipped, next try in {when}");
                    *said = text;
                } else {
                    log::debug!("{feed:?} failed {count} times in a row; next try in {when}");
                }
                table.pause_feed(feed, done + pause);
                None
            }
        };
        table.done(feed, done);
        Ok(fields)
    }
}
