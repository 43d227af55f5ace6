//! The service: the feed table's deadlines, one request at a time, back-off after
//! failures, commands, reloads, signals, and what each poll publishes.
//!
//! When both feeds are due, the data poll runs and its readings also feed the raw topics,
//! so the Envoy sees one readings request per tick. Between deadlines the loop waits in
//! the output (one broker read until the next deadline, or a sleep with `--dry-run`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::broker;
use super::broker::MqttConfigKey;
use super::cycle::{self, Announcer, Group};
use super::feeds::Feeds;
use super::repeats::{BIRTH, Repeats, SIGN_OF_LIFE, Stats, UNKNOWN, more, tell_jump};
use super::schedule::periods;
use super::schedule::{Feed, Table, backoff};
use super::side::Side;
use crate::envoy::Envoy;
use crate::error::{Error, Result};
use crate::ledger::{Store, store};
use crate::mqtt::{Message, Output};
use crate::readings::{self, Field, Snapshot};
use crate::settings::Config;
use crate::signal::{SIGNAL_CHECK, Signals};
use crate::time::guard::{Guard, unix_ms};
use crate::topics::{Command, Composer, LiveMessages, commands};

/// After this many failed polls in a row, `P/S/envoy` says `offline` and the Envoy's
/// entities show as unavailable in Home Assistant.
const ENVOY_DOWN_POLLS: u32 = 3;
/// The most the loop wakes before a deadline (see `Service::early`).
const MAX_EARLY: Duration = Duration::from_millis(50);
/// At most one poll asked by `P/command/sync` per this period.
const SYNC_PERIOD: Duration = Duration::from_secs(10);

/// The running service.
struct Service<'a> {
    config: Config,
    envoy: Envoy,
    feeds: Feeds,
    side: Side,
    out: Box<dyn Output>,
    store: Store,
    dry_run: bool,
    reload: &'a dyn Fn() -> Result<Config>,
    table: Table,
    failures: u32,
    errors: Vec<String>,
    last_sync: Option<SystemTime>,
    announcer: Announcer,
    discovery_at: Option<Instant>,
    last_forced: Option<Instant>,
    /// The next data poll was asked for by `P/command/sync`.
    forced: bool,
    /// Log lines the LAN can repeat at will, counted.
    repeats: Repeats,
    stats: Stats,
    /// When the last sign of life was logged, and the broker's connection count then.
    told_alive: Instant,
    connects_told: u32,
    /// The broker's connection count last seen: a new connection gets the discovery again.
    connects_seen: u32,
    /// When a reload asked for is due, and when the last one ran.
    reload_at: Option<Instant>,
    last_reload: Option<Instant>,
    /// What `P/S/envoy` last said.
    envoy_online: Option<bool>,
    /// The wall clock checked against the monotonic one, from `started`.
    clock: Guard,
    started: Instant,
    /// What every message shares (prefix, serial, format, retain), and a raw tick's
    /// messages, kept from one tick to the next.
    composer: Composer,
    live: LiveMessages,
    /// How late the wait usually ends: a socket's receive timeout is counted in the
    /// kernel's ticks, 4 to 25 ms late here (measured). The loop asks to wake this much
    /// before a deadline and runs what is due within it, so ticks land on time without a
    /// second wake-up.
    early: Duration,
}

impl Service<'_> {
    fn publish(&mut self, messages: &[Message]) -> Result<()> {
        self.stats.messages += messages.len();
        self.out.publish(messages)
    }

    fn poll_data(&mut self, with_raw: bool) -> Result<()> {
        self.envoy.renew_if_due();
        let result = self.feeds.data(&mut self.envoy);
        let p = self.composer.clone();
        let envoy_time = result.as_ref().ok().and_then(|s| s.envoy_time);
        let now = self.now_told(envoy_time);
        let snap: Snapshot = match result {
            Ok(s) => s,
            Err(e) => {
                // The loop records the error; the status already carries it.
                let mut errors = self.errors.clone();
                let text = e.to_string();
                if errors.last() != Some(&text) {
                    errors.push(text);
                }
                let h = cycle::health(&self.envoy, &errors, self.last_sync, Some(self.next_sync()));
                self.publish(&[p.status(false, &h)])?;
                return Err(e);
            }
        };
        if self.store.waiting() && self.out.is_connected() {
            store::restore(&mut self.store, &p, self.out.as_mut());
        }
        self.last_sync = Some(now);
        let published =
            cycle::publish(&snap, now, &p, &mut self.store, &mut self.announcer, false)?;
        let mut messages = published.discovery;
        messages.extend(self.envoy_state(&p, true));
        messages.extend(published.values);
        if with_raw {
            let live = readings::live(&snap);
            if !live.is_empty() {
                messages.extend_from_slice(p.live(&live, now, &mut self.live));
            }
        }
        // `ok` after every data poll: the error of an earlier poll is over.
        let mut table = self.table.clone();
        table.done(Feed::Data, Instant::now());
        let next = table.next(Feed::Data).unwrap_or_else(Instant::now);
        let next = now + next.saturating_duration_since(Instant::now());
        let problems: Vec<String> = self
            .store
            .problem()
            .map(str::to_string)
            .into_iter()
            .collect();
        let health = cycle::health(&self.envoy, &problems, Some(now), Some(next));
        messages.push(p.status(true, &health));
        self.publish(&messages)
    }

    /// A raw tick; `Ok(false)` when it had nothing to ask the Envoy (no CT).
    fn poll_raw(&mut self) -> Result<bool> {
        let before = self.envoy.requests();
        let snap = self.feeds.raw(&mut self.envoy)?;
        let asked = self.envoy.requests() != before;
        let live = readings::live(&snap);
        if live.is_empty() {
            return Ok(asked);
        }
        let now = self.now();
        self.store.peak(now, &live);
        let messages = self.composer.live(&live, now, &mut self.live);
        self.stats.messages += messages.len();
        self.out.publish(messages)?;
        Ok(asked)
    }

    /// A side feed's `values`, after the discovery if its `entities` changed.
    fn publish_values(&mut self, group: Group, entities: &[Field], values: &[Field]) -> Result<()> {
        let gone = self.announcer.gone(group, entities);
        if !gone.is_empty() {
            let devices: std::collections::BTreeSet<String> = gone
                .iter()
                .filter_map(|f| f.name().rsplit_once('/').map(|(d, _)| d.to_string()))
                .collect();
            let devices: Vec<String> = devices.into_iter().collect();
            log::info!(
                "{} left the system: their topics are cleared",
                devices.join(", ")
            );
        }
        let mut messages = self.announcer.announce(group, entities);
        let now = self.now();
        messages.extend(self.composer.values(values, now));
        messages.extend(self.composer.cleared(&gone));
        self.publish(&messages)
    }

    /// `P/S/envoy` when it changes: `online` at a poll that worked, `offline` after
    /// [`ENVOY_DOWN_POLLS`] failed polls in a row.
    fn envoy_state(&mut self, p: &Composer, answered: bool) -> Option<Message> {
        let online = answered || self.failures < ENVOY_DOWN_POLLS;
        if self.envoy_online == Some(online) {
            return None;
        }
        self.envoy_online = Some(online);
        if !online {
            log::warn!(
                "the Envoy failed {ENVOY_DOWN_POLLS} polls in a row: its values show as unavailable"
            );
        }
        Some(p.envoy(online))
    }

    /// The time now: the wall clock, a jump of it held (see `time::guard`), said once.
    fn now(&mut self) -> SystemTime {
        self.now_told(None)
    }

    /// [`Service::now`], with the Envoy's clock as an answer just told it (Unix s).
    fn now_told(&mut self, envoy_time: Option<i64>) -> SystemTime {
        let wall = unix_ms(SystemTime::now());
        let mono = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let envoy = envoy_time.map(|s| s.saturating_mul(1000));
        let known = self.store.last_poll_ms();
        let (ms, jump) = self.clock.time(wall, mono, known, envoy);
        tell_jump(jump);
        UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    fn next_sync(&self) -> SystemTime {
        let next = self.table.next(Feed::Data).unwrap_or_else(Instant::now);
        SystemTime::now() + next.saturating_duration_since(Instant::now())
    }

    /// Remembers a distinct error for `P/status` (the five latest); returns whether it is new.
    fn note_error(&mut self, e: &Error) -> bool {
        let text = e.to_string();
        if self.errors.last() == Some(&text) {
            return false;
        }
        self.errors.push(text);
        if self.errors.len() > 5 {
            self.errors.remove(0);
        }
        true
    }

    /// Learns how late a wait that ended on its own woke: the largest lateness seen,
    /// forgotten slowly (a sixteenth a wait), capped at [`MAX_EARLY`]. Waking a little too
    /// early only runs a tick that much before its deadline; too late delays it.
    fn learn_overshoot(&mut self, late: Duration) {
        self.early = late.max(self.early * 15 / 16).min(MAX_EARLY);
    }

    /// After a reconnect (not the first connection), the discovery goes out again at once:
    /// the session does not keep its configs (`Session::not_kept`), and a broker that lost
    /// its retained messages lost them.
    fn reconnected(&mut self) {
        let connects = self.out.connects();
        if connects > self.connects_seen {
            if self.connects_seen > 0 {
                self.discovery_at.get_or_insert_with(Instant::now);
            }
            self.connects_seen = connects;
        }
    }

    /// Once an hour: what the service did, at `info`; and the count of repeated lines
    /// whose minute is over.
    fn sign_of_life(&mut self) {
        for (key, count) in self.repeats.due(Instant::now()) {
            log::info!("{key}: {count} more in the last minute");
        }
        if self.told_alive.elapsed() < SIGN_OF_LIFE {
            return;
        }
        let connects = self.out.connects();
        self.stats.reconnects = connects.saturating_sub(self.connects_told.max(1));
        log::info!("{}", self.stats.line(SIGN_OF_LIFE));
        self.stats = Stats::default();
        self.connects_told = connects;
        self.told_alive = Instant::now();
    }

    /// Runs what is due now; returns whether anything was.
    fn tick(&mut self) -> Result<bool> {
        let now = Instant::now();
        // Within the wait's usual overshoot of its deadline counts as due (see `early`).
        let soon = now + self.early;
        if self.discovery_at.is_some_and(|at| soon >= at) {
            self.discovery_at = None;
            self.announcer.again();
            self.table.bring_forward(Feed::Data, now);
            return Ok(true);
        }
        let Some(feed) = self.table.due(soon) else {
            return Ok(false);
        };
        let forced = feed == Feed::Data && std::mem::take(&mut self.forced);
        let result = match feed {
            Feed::Data => self
                .poll_data(self.config.raw_interval.is_some())
                .map(|()| true),
            Feed::Readings => self.poll_raw(),
            side => {
                let (feeds, envoy) = (&mut self.feeds, &mut self.envoy);
                let table = (&mut self.table, self.config.data_interval);
                if let Some(read) = self.side.run(side, feeds, envoy, table)? {
                    let now = self.now();
                    self.store.battery(now, &read.all);
                    self.publish_values(Group::Feed(side), &read.all, &read.changed)?;
                }
                return Ok(true);
            }
        };
        let done = Instant::now();
        self.stats.polls += 1;
        match result {
            // A raw tick that asked nothing (no CT) tells nothing of the Envoy.
            Ok(false) => {}
            Ok(true) => {
                if self.failures > 0 {
                    log::info!(
                        "the Envoy answers again after {} failed polls",
                        self.failures
                    );
                    self.errors.clear();
                    // Every feed back at its period, not at the end of the pause.
                    self.table.resume(done);
                }
                self.failures = 0;
                // Online at the first request that works, a raw tick's too.
                let p = self.composer.clone();
                if let Some(m) = self.envoy_state(&p, true) {
                    self.publish(&[m])?;
                }
            }
            Err(e @ (Error::File(_) | Error::OutputClosed)) => return Err(e),
            Err(e) if forced && self.table.paused(done).is_some() => {
                // A sync asked during the pause: said, but it neither lengthens the pause
                // nor stops the feeds for longer than it already does.
                let until = self.table.paused(done).unwrap_or(done);
                log::warn!("{e}; the Envoy still fails (polled because sync was asked)");
                self.note_error(&e);
                self.table.done(feed, done);
                self.table.pause_feed(Feed::Data, until);
                return Ok(true);
            }
            Err(e) => {
                let new = self.note_error(&e);
                self.failures += 1;
                self.stats.failed += 1;
                let p = self.composer.clone();
                if let Some(m) = self.envoy_state(&p, false) {
                    self.publish(&[m])?;
                }
                let pause = backoff(self.failures);
                let when = humantime::format_duration(pause);
                if new {
                    log::warn!("{e}; next poll in {when}");
                } else {
                    log::info!(
                        "the Envoy failed {} polls in a row, the same way; next poll in {when}",
                        self.failures
                    );
                }
                self.table.pause(done + pause);
            }
        }
        self.table.done(feed, done);
        Ok(true)
    }

    fn command(&mut self, topic: &str, payload: &[u8]) {
        let ha = self
            .config
            .ha_discovery
            .then_some(self.config.ha_prefix.as_str());
        match commands::parse(&self.config.mqtt.prefix, ha, topic, payload) {
            Command::Sync => {
                let now = Instant::now();
                let earliest = self.last_forced.map_or(now, |t| (t + SYNC_PERIOD).max(now));
                if self.table.bring_forward(Feed::Data, earliest) {
                    self.last_forced = Some(earliest);
                    self.forced = true;
                    log::info!("sync asked: polling the Envoy");
                } else {
                    log::debug!("sync asked: a poll is already due");
                }
            }
            Command::Reload => self.ask_reload(),
            Command::HomeAssistantOnline => {
                // 1 to 5 s, so that many bridges do not answer Home Assistant at once; a
                // flood of births neither postpones it nor sends it twice.
                let jitter = SystemTime::UNIX_EPOCH
                    .elapsed()
                    .map_or(0, |d| d.subsec_nanos())
                    % 4000;
                let delay = Duration::from_millis(1000 + u64::from(jitter));
                let at = *self.discovery_at.get_or_insert(Instant::now() + delay);
                if let Some(unsaid) = self.repeats.allow(BIRTH, Instant::now()) {
                    log::info!(
                        "Home Assistant is online: discovery again in {} ms{}",
                        at.saturating_duration_since(Instant::now()).as_millis(),
                        more(unsaid)
                    );
                }
            }
            Command::Unknown(what) => {
                if let Some(unsaid) = self.repeats.allow(UNKNOWN, Instant::now()) {
                    log::info!("ignored unknown command or message: {what}{}", more(unsaid));
                }
            }
        }
    }

    /// Reads the configuration again; reconnects what changed.
    fn reload(&mut self) {
        self.apply_reload();
        // The Envoy client, or the broker session, may be new.
        self.envoy.set_tend(self.out.tender());
    }

    fn apply_reload(&mut self) {
        let new = match (self.reload)() {
            Ok(c) => c,
            Err(e) => {
                log::error!("reload refused, the running configuration stays: {e}");
                return;
            }
        };
        let envoy_changed =
            new.envoy != self.config.envoy || new.state_dir != self.config.state_dir;
        // The payloads' format and retain flag are the composer's: the session stays.
        let session = |c: &Config| MqttConfigKey::of(c);
        let output_changed = session(&new) != session(&self.config);
        let payloads_changed = new.mqtt != self.config.mqtt;
        let periods_changed = periods(&new) != periods(&self.config);
        log::info!("configuration reloaded");
        if envoy_changed {
            match Envoy::connect(&new) {
                Ok(envoy) => {
                    self.envoy = envoy;
                    self.feeds = Feeds::default();
                }
                Err(e) => {
                    log::error!("reload: {e}; the running configuration stays");
                    return;
                }
            }
        }
        if output_changed {
            let old = self.composer.availability(false);
            if let Err(e) = self.out.close(&[old]) {
                log::warn!("{e}");
            }
            match broker::open(&new, &self.envoy.serial, self.dry_run) {
                Ok(out) => self.out = out,
                Err(e) => {
                    log::error!("reload: {e}; the running configuration stays");
                    if let Ok(out) = broker::open(&self.config, &self.envoy.serial, self.dry_run) {
                        self.out = out;
                    }
                    return;
                }
            }
        }
        if let Err(e) = self.store.configure(&new) {
            log::error!("reload: {e}");
        }
        self.config = new;
        self.composer = Composer::new(&self.config, &self.envoy.serial);
        self.announcer.configure(&self.config, &self.envoy);
        let now = Instant::now();
        let periods = periods(&self.config);
        if envoy_changed || output_changed || payloads_changed {
            // A new Envoy, new topics or new payloads: poll now, and send the discovery
            // again (its value templates follow the format).
            self.table = Table::new(now, periods, false);
            self.announcer.again();
        } else if periods_changed {
            self.table = Table::new(now, periods, true);
        }
    }

    /// `P/command/reload` or SIGHUP: at most one reload per [`SYNC_PERIOD`]; more asks in
    /// the period make one more reload at its end.
    fn ask_reload(&mut self) {
        let now = Instant::now();
        if self.reload_at.is_none() {
            let at = self.last_reload.map_or(now, |t| (t + SYNC_PERIOD).max(now));
            self.reload_at = Some(at);
        }
    }

    /// Runs a reload that is due.
    fn reload_if_due(&mut self) {
        if self.reload_at.is_some_and(|at| Instant::now() >= at) {
            self.reload_at = None;
            self.last_reload = Some(Instant::now());
            self.reload();
        }
    }
}

/// Reaches the Envoy, retrying with back-off (a service starts before the Envoy does);
/// `None` when asked to stop meanwhile.
fn connect_with_backoff(config: &Config, signals: &Signals) -> Option<Envoy> {
    let mut failures = 0;
    loop {
        match Envoy::connect(config) {
            Ok(envoy) => return Some(envoy),
            Err(e) => {
                failures += 1;
                let pause = backoff(failures);
                log::warn!("{e}; trying again in {}", humantime::format_duration(pause));
                let until = Instant::now() + pause;
                while Instant::now() < until {
                    if signals.stop.load(Ordering::Relaxed) {
                        return None;
                    }
                    let left = until.saturating_duration_since(Instant::now());
                    std::thread::sleep(SIGNAL_CHECK.min(left));
                }
            }
        }
    }
}

/// The service: polls and publishes until SIGTERM or SIGINT; SIGHUP and
/// `P/command/reload` call `reload` and apply the new configuration.
pub fn run(config: Config, dry_run: bool, reload: &dyn Fn() -> Result<Config>) -> Result<()> {
    let signals = Signals::register()?;
    let Some(mut envoy) = connect_with_backoff(&config, &signals) else {
        return Ok(());
    };
    let mut out = broker::open(&config, &envoy.serial, dry_run)?;
    envoy.set_tend(out.tender());
    let composer = Composer::new(&config, &envoy.serial);
    let store = store::load(&config, &composer, out.as_mut(), false, dry_run)?;
    let start = Instant::now();
    let mut service = Service {
        table: Table::new(start, periods(&config), false),
        announcer: Announcer::new(&config, &envoy, None),
        composer,
        live: LiveMessages::default(),
        config,
        envoy,
        feeds: Feeds::default(),
        side: Side::default(),
        out,
        store,
        dry_run,
        reload,
        failures: 0,
        errors: Vec::new(),
        last_sync: None,
        discovery_at: None,
        last_forced: None,
        forced: false,
        repeats: Repeats::default(),
        stats: Stats::default(),
        told_alive: start,
        connects_told: 0,
        connects_seen: 0,
        reload_at: None,
        last_reload: None,
        envoy_online: None,
        clock: Guard::default(),
        started: start,
        early: Duration::ZERO,
    };
    loop {
        if signals.stop.swap(false, Ordering::Relaxed) {
            log::info!("stopping");
            service.store.save(true)?;
            let offline = service.composer.availability(false);
            return service.out.close(&[offline]);
        }
        if signals.reload.swap(false, Ordering::Relaxed) {
            service.ask_reload();
        }
        service.reload_if_due();
        service.reconnected();
        service.sign_of_life();
        if service.tick()? {
            continue;
        }
        let mut wake = service.table.wake();
        for at in [service.discovery_at, service.reload_at]
            .into_iter()
            .flatten()
        {
            wake = wake.min(at);
        }
        let until = wake.checked_sub(service.early).unwrap_or(wake);
        let arrived = service.out.wait(until);
        if arrived.is_empty() {
            service.learn_overshoot(Instant::now().saturating_duration_since(until));
        }
        for (topic, payload) in arrived {
            service.command(&topic, &payload);
        }
    }
}
