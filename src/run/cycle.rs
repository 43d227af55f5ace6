//! One data poll, published: the cycle that the service and `--once` share. The poll's
//! fields go through the ledger (held monotone, counted, saved when due); Home Assistant
//! is told of the entities first, when they changed; then come the data and the ledger's
//! messages. Each run adds what only it sends (the Envoy's availability, the live values,
//! the status with its next poll).

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::schedule::Feed;
use crate::envoy::Envoy;
use crate::error::Result;
use crate::homeassistant::{self, Device};
use crate::ledger::Store;
use crate::mqtt::Message;
use crate::readings::{self, Field, Snapshot};
use crate::settings::Config;
use crate::topics::{Composer, Health};

/// The feeds whose fields are entities, each announced with the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    /// The data poll's fields and the ledger's.
    Data,
    /// A side feed's (the inventory, the batteries, the microinverters…).
    Feed(Feed),
    /// Every side feed of a `--once` run.
    Side,
}

/// Home Assistant's discovery as the runs send it: at the first poll, then again only when
/// the entities change or it is asked for. Every feed's entities go out together, so that
/// the record of what was announced stays whole.
pub struct Announcer {
    /// `None` with `HA_DISCOVERY=false`.
    device: Option<Device>,
    state_dir: std::path::PathBuf,
    /// Each group's latest fields.
    groups: BTreeMap<Group, Vec<Field>>,
    /// The names of the entities last announced; `None`: announce at the next poll.
    announced: Option<Vec<String>>,
    /// A hash of each config last sent, by a hash of its topic: when a feed adds entities,
    /// only theirs go out (and the removals), not every config again after the data. Hashes,
    /// not the texts: with 30 microinverters the configs weigh about 250 KB.
    sent: BTreeMap<u64, u64>,
}

impl Announcer {
    /// For the Envoy `envoy` under `config`; `expire_after` from cron.
    pub fn new(config: &Config, envoy: &Envoy, expire_after: Option<u64>) -> Announcer {
        let device = config.ha_discovery.then(|| {
            let (model, firmware) = (envoy.info.model(), &envoy.info.firmware);
            Device::new(config, &envoy.serial, model, firmware, expire_after)
        });
        Announcer {
            device,
            state_dir: config.state_dir.clone(),
            groups: BTreeMap::new(),
            announced: None,
            sent: BTreeMap::new(),
        }
    }

    /// Takes a reloaded `config` (and the Envoy, which may be new): what was announced is
    /// still known.
    pub fn configure(&mut self, config: &Config, envoy: &Envoy) {
        let (announced, groups) = (self.announced.take(), std::mem::take(&mut self.groups));
        let sent = std::mem::take(&mut self.sent);
        *self = Announcer {
            announced,
            groups,
            sent,
            ..Announcer::new(config, envoy, None)
        };
    }

    /// Takes `group`'s fields, to be announced with the next announcement.
    pub fn set(&mut self, group: Group, fields: &[Field]) {
        self.groups.insert(group, fields.to_vec());
    }

    /// The discovery goes out again, every config of it, at the next poll.
    pub fn again(&mut self) {
        self.announced = None;
        self.sent.clear();
    }

    /// The fields of a device behind the Envoy (a battery, an inverter, a relay) that
    /// `group` had and no longer has: the device left the system.
    pub fn gone(&self, group: Group, fields: &[Field]) -> Vec<Field> {
        let now: std::collections::BTreeSet<String> = fields.iter().map(Field::name).collect();
        self.groups
            .get(&group)
            .into_iter()
            .flatten()
            .filter(|f| f.device.is_some() && !now.contains(&f.name()))
            .copied()
            .collect()
    }

    /// Takes `group`'s fields; the configs of every group's entities if they are not the
    /// ones last announced.
    pub fn announce(&mut self, group: Group, fields: &[Field]) -> Vec<Message> {
        self.set(group, fields);
        let entities: Vec<Field> = self.groups.values().flatten().copied().collect();
        let names: Vec<String> = entities.iter().map(Field::name).collect();
        if self.announced.as_ref() == Some(&names) {
            return Vec::new();
        }
        self.announced = Some(names);
        let Some(device) = &self.device else {
            return Vec::new();
        };
        let all = homeassistant::announce(device, &self.state_dir, &entities);
        let new: Vec<Message> = all
            .into_iter()
            .filter(|m| self.sent.get(&hash(&m.topic)) != Some(&hash(&m.payload)))
            .collect();
        for m in &new {
            self.sent.insert(hash(&m.topic), hash(&m.payload));
        }
        new
    }
}

/// A text's 64-bit hash (a collision would only keep one config from being sent again).
fn hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// A data poll's messages.
pub struct Published {
    /// Home Assistant's configs: they go first, so that it knows how to read a value
    /// before the value comes.
    pub discovery: Vec<Message>,
    /// The data and the ledger's messages.
    pub values: Vec<Message>,
}

/// Runs the snapshot `snap`, taken at `now`, through the ledger in `store` and composes
/// its messages. `save` says when the state file is written: `true` at every poll (cron),
/// `false` only when something that matters changed.
pub fn publish(
    snap: &Snapshot,
    now: SystemTime,
    p: &Composer,
    store: &mut Store,
    announcer: &mut Announcer,
    save: bool,
) -> Result<Published> {
    let mut fields = readings::data_fields(snap);
    store.integrated(&mut fields);
    store.hold(&mut fields);
    if store.update(p, now, &fields) || save {
        store.save(save)?;
    }
    let mut entities = fields.clone();
    entities.extend(store.fields());
    let discovery = announcer.announce(Group::Data, &entities);
    let mut values = p.data(&fields, now);
    values.extend(store.messages(p, now));
    Ok(Published { discovery, values })
}

/// What `P/status` says about `envoy`, with the recent `errors`.
pub fn health(
    envoy: &Envoy,
    errors: &[String],
    last_sync: Option<SystemTime>,
    next_sync: Option<SystemTime>,
) -> Health {
    Health {
        last_sync,
        next_sync,
        errors: errors.to_vec(),
        firmware: Some(envoy.info.firmware.clone()),
        token_expires: envoy.token().map(|t| t.claims.exp),
    }
}
