//! Where the ledger lives between runs (docs/topics.md, the energy ledger): the state file `STATE_DIR/ledger.json`
//! or the retained `P/S/ledger` topic, whichever is newer (the topic is published at every
//! poll, the file only rarely, so after a crash or a power cut the topic is usually newer);
//! else the original envoy2mqtt's retained `_00h` references; else a fresh start at the
//! first poll.
//!
//! The file is written atomically and rarely, for the flash of routers: when the service
//! starts, at each new day, on shutdown, and at every `--once` run (cron has no other
//! moment). `--dry-run` never writes it.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::book::{self, Counters, Ledger, Note};
use super::integrated::Integrated;
use super::messages;
use super::plausible;
use crate::error::Result;
use crate::mqtt::{Message, Output};
use crate::readings::{Field, Flow, Live, Measure, Subject};
use crate::settings::Config;
use crate::state_file;
use crate::time::offpeak::Window;
use crate::time::zone::{Date, Zone};
use crate::topics::{Composer, payload, tree};

const FILE: &str = "ledger.json";

/// The ledger with its time zone, windows and file.
pub struct Store {
    path: PathBuf,
    zone: Zone,
    windows: Vec<Window>,
    read_only: bool,
    ledger: Option<Ledger>,
    /// Retained messages found on the broker, used at the first poll if there is no file.
    retained: Vec<(String, Vec<u8>)>,
    /// Whether the file is behind the ledger in a way that matters (a new day, a restore).
    unsaved: bool,
    /// Whether the broker's retained state was read (or is not needed: a file, `--dry-run`).
    restored: bool,
    /// A clock behind the ledger's last poll was said, and has not caught up since.
    told_back: bool,
    /// Why the state file could not be written, while it cannot (said once; tried again at
    /// every data poll).
    write_error: Option<String>,
    /// The ledger came from the broker and is checked against the Envoy's counters at the
    /// next poll; if it fails, this one (the file's, or none) is taken instead.
    unchecked: Option<Option<Ledger>>,
}

use crate::time::guard::unix_ms as millis;

/// The lifetime counters among a poll's fields.
fn counters(fields: &[Field]) -> Counters {
    let mut c = Counters::default();
    for flow in Flow::ALL {
        c[flow] = fields
            .iter()
            .find(|f| f.is(flow, Measure::Lifetime))
            .map(|f| f.value);
    }
    c
}

/// Grid import power: the net consumption when positive.
pub fn import_power(fields: &[Field]) -> Option<f64> {
    fields
        .iter()
        .find(|f| f.is(Flow::Net, Measure::Power))
        .map(|f| f.value.max(0.0))
}

/// Says `notes`.
fn log(notes: &[Note], told_back: &mut bool) {
    for (level, line) in lines(notes, told_back) {
        log::log!(level, "{line}");
    }
}

/// What the log says of `notes`, at which level; a clock still behind the ledger's last
/// poll is a warning once, not at every poll (`told_back`: it was said and the clock has
/// not caught up since).
fn lines(notes: &[Note], told_back: &mut bool) -> Vec<(log::Level, String)> {
    if !notes.iter().any(|n| matches!(n, Note::ClockBack { .. })) {
        *told_back = false;
    }
    let mut out = Vec::new();
    for n in notes {
        let level = match n {
            Note::NewDay(_) => log::Level::Info,
            Note::Zero { .. } => log::Level::Debug,
            Note::ClockBack { .. } if *told_back => log::Level::Debug,
            Note::ClockBack { .. } => {
                *told_back = true;
                log::Level::Warn
            }
            _ => log::Level::Warn,
        };
        out.push((level, format!("ledger: {n}")));
    }
    out
}

impl Store {
    /// Reads the state file; a file that cannot be read is set aside as `ledger.json.bad`.
    pub fn open(config: &Config, read_only: bool) -> Result<Store> {
        let path = config.state_dir.join(FILE);
        let ledger = match state_file::read(&path)? {
            None => None,
            Some(text) => match book::parse(&text) {
                Ok(l) => Some(l),
                Err(e) => {
                    let bad = path.with_extension("json.bad");
                    log::error!(
                        "{}: {e}; kept as {} and restoring from the broker instead",
                        path.display(),
                        bad.display()
                    );
                    if !read_only {
                        let _ = std::fs::rename(&path, &bad);
                    }
                    None
                }
            },
        };
        let mut store = Store {
            path,
            zone: Zone::system(None)?,
            windows: Vec::new(),
            read_only,
            ledger,
            retained: Vec::new(),
            unsaved: false,
            restored: false,
            unchecked: None,
            write_error: None,
            told_back: false,
        };
        store.configure(config)?;
        let read = store.ledger.take();
        store.ledger = read.clone().and_then(|l| l.restored(&store.zone));
        if read.is_some() && store.ledger.is_none() {
            log::error!(
                "{}: the ledger in it is not one envoy2mqtt writes; restoring from the broker instead",
                store.path.display()
            );
            store.ledger = None;
        }
        Ok(store)
    }

    /// Whether the state file held a ledger.
    pub fn has_file(&self) -> bool {
        self.ledger.is_some()
    }

    /// Takes the time zone, the off-peak windows and the folder of `config` (at a reload
    /// too: the ledger goes on, and is written to the new folder).
    pub fn configure(&mut self, config: &Config) -> Result<()> {
        // TZ was checked with the configuration.
        self.zone = config.zone.clone();
        log::debug!("ledger: local days in {}", self.zone.name);
        self.windows = config.offpeak.clone();
        let path = config.state_dir.join(FILE);
        if path != self.path {
            self.path = path;
            self.save(true)?;
        }
        Ok(())
    }

    /// The retained topics a restore reads (`P/S/ledger` first, then the original
    /// envoy2mqtt's `_00h` and `_yesterday` references, and nothing else), and the probe
    /// topic that marks the end of them.
    pub fn restore_topics(p: &Composer) -> (Vec<String>, String) {
        let (prefix, serial) = (&p.prefix, &p.serial);
        let mut topics = vec![tree::ledger(prefix, serial)];
        for flow in Flow::ALL {
            for measure in [Measure::Midnight, Measure::Yesterday] {
                let name = Field::new(flow, measure, 0.0).name();
                topics.push(tree::data(prefix, serial, &name));
            }
        }
        (topics, tree::probe(prefix, serial))
    }

    /// Whether there is no ledger yet and the broker's retained state, which may hold it,
    /// could not be read yet: nothing starts fresh meanwhile.
    pub fn waiting(&self) -> bool {
        self.ledger.is_none() && !self.restored
    }

    /// Takes the retained ledger if it is newer than the file's; keeps the rest of what
    /// the broker had for the first poll. `None`: the broker could not be read.
    pub fn adopt(&mut self, p: &Composer, retained: Option<Vec<(String, Vec<u8>)>>) {
        let Some(retained) = retained else {
            if self.ledger.is_none() {
                log::warn!(
                    "ledger: the broker's retained state cannot be read yet; energy totals wait for it rather than start from zero"
                );
            }
            return;
        };
        self.restored = true;
        let topic = Store::restore_topics(p).0.remove(0);
        let kept = retained
            .iter()
            .find(|(t, _)| *t == topic)
            .and_then(|(_, payload)| book::parse(&String::from_utf8_lossy(payload)).ok())
            .and_then(|l| l.restored(&self.zone));
        // Anyone on the LAN can publish a retained ledger: one that cannot be true is refused.
        let kept = kept.filter(|k| match plausible::problem(k, millis(SystemTime::now())) {
            None => true,
            Some(problem) => {
                log::warn!(
                    "ledger: the retained {topic} is refused: {problem}; keeping the local one"
                );
                false
            }
        });
        match (kept, &self.ledger) {
            (Some(k), Some(file)) if k.at_ms > file.at_ms => {
                log::info!(
                    "ledger: the retained {topic} is newer than {}: using it",
                    self.path.display()
                );
                self.unchecked = Some(self.ledger.replace(k));
                self.unsaved = true;
            }
            (Some(k), None) => {
                log::info!("ledger restored from the retained {topic}");
                self.ledger = Some(k);
                self.unchecked = Some(None);
                self.unsaved = true;
            }
            _ => {}
        }
        self.retained = retained;
    }

    /// Holds the derived lifetime counters among `fields` at their previous value where CT
    /// jitter made them step back (see [`book::hold`]), so that a published
    /// `total_increasing` counter never decreases, across restarts too.
    pub fn hold(&self, fields: &mut [Field]) {
        let Some(ledger) = &self.ledger else { return };
        let mut now = counters(fields);
        for i in book::hold(&ledger.counters, &mut now) {
            let Some(wh) = now[i] else { continue };
            for f in fields.iter_mut() {
                if f.is(i, Measure::Lifetime) {
                    f.value = wh;
                } else if f.is(i, Measure::LifetimeKwh) {
                    f.value = wh / 1000.0;
                }
            }
        }
    }

    /// Takes the batteries' power among a side feed's `fields` (the sum of the units, sent
    /// only where no storage CT measures it) into the integrated counters.
    pub fn battery(&mut self, at: SystemTime, fields: &[Field]) {
        let Some(l) = &mut self.ledger else { return };
        let Some(w) = fields
            .iter()
            .find(|f| f.is(Subject::Battery, Measure::Power))
        else {
            return;
        };
        let at = millis(at);
        match &mut l.integrated {
            Some(i) => i.add(at, w.value),
            None if w.value.is_finite() => l.integrated = Some(Integrated::start(at, w.value)),
            None => {}
        }
    }

    /// Adds the integrated battery counters to a data poll's `fields`, where no storage CT
    /// gave them.
    pub fn integrated(&self, fields: &mut Vec<Field>) {
        let Some(i) = self.ledger.as_ref().and_then(|l| l.integrated) else {
            return;
        };
        if fields
            .iter()
            .any(|f| f.is(Flow::BatteryCharged, Measure::Lifetime))
        {
            return;
        }
        for (flow, wh) in [
            (Flow::BatteryCharged, i.charged),
            (Flow::BatteryDischarged, i.discharged),
        ] {
            fields.push(Field::new(flow, Measure::Lifetime, wh));
            fields.push(Field::new(flow, Measure::LifetimeKwh, wh / 1000.0));
        }
    }

    /// Adds a data poll; returns whether the file should be written now (a new day, a
    /// first ledger, a restore).
    pub fn update(&mut self, p: &Composer, at: SystemTime, fields: &[Field]) -> bool {
        let (at, now) = (millis(at), counters(fields));
        if now.0.iter().all(Option::is_none) {
            return false;
        }
        self.check_restored(&now);
        let Some(ledger) = &mut self.ledger else {
            if !self.restored {
                return false;
            }
            let started = self.first(p, at, now);
            self.unsaved |= started;
            return self.unsaved;
        };
        self.retained.clear();
        let notes = ledger.advance(&self.zone, &self.windows, at, now, import_power(fields));
        log(&notes, &mut self.told_back);
        self.unsaved |= notes.iter().any(|n| matches!(n, Note::NewDay(_)));
        self.unsaved
    }

    /// A ledger taken from the broker, at the first poll: refused if it counted more than
    /// the Envoy's own counters ever did (the file's, or a fresh start, instead).
    fn check_restored(&mut self, now: &Counters) {
        let Some(fallback) = self.unchecked.take() else {
            return;
        };
        let problem = self
            .ledger
            .as_ref()
            .and_then(|l| plausible::against(l, now));
        if let Some(problem) = problem {
            log::warn!(
                "ledger: the retained ledger is refused: {problem}; {}",
                if fallback.is_some() {
                    "keeping the state file's"
                } else {
                    "starting today's values from now"
                }
            );
            self.ledger = fallback;
        }
    }

    /// The first ledger: a fresh one, with the original envoy2mqtt's `_00h` imported.
    fn first(&mut self, p: &Composer, at: i64, now: Counters) -> bool {
        let retained = std::mem::take(&mut self.retained);
        let mut l = match Ledger::start(&self.zone, at, now) {
            Ok(l) => l,
            Err(note) => {
                log(&[note], &mut self.told_back);
                return false;
            }
        };
        let today = l.today.date;
        let value = |flow, measure, date: Date| {
            let name = Field::new(flow, measure, 0.0).name();
            let topic = tree::data(&p.prefix, &p.serial, &name);
            let (_, payload) = retained.iter().find(|(t, _)| *t == topic)?;
            let (v, d) = payload::dated_number(&String::from_utf8_lossy(payload))?;
            // A dated value must be of the right day; a bare one (the original's) is checked
            // against the counters by the ledger.
            (d.is_none() || d == Some(date.to_string())).then_some(v)
        };
        let yesterday = Date::from_days(today.days() - 1);
        let refs: Vec<(Flow, Option<f64>, Option<f64>)> = Flow::ALL
            .into_iter()
            .map(|f| {
                (
                    f,
                    value(f, Measure::Midnight, today),
                    value(f, Measure::Yesterday, yesterday),
                )
            })
            .collect();
        let taken = l.import(&refs);
        if taken.is_empty() {
            log::info!("ledger: starting fresh; today's values count from now");
        } else {
            let names: Vec<&str> = taken.iter().map(|s| s.stem()).collect();
            log::info!(
                "ledger: today's references taken from the retained _00h topics of {}",
                names.join(", ")
            );
        }
        self.ledger = Some(l);
        true
    }

    /// A raw tick's grid import power, for the day's peak (kept in memory only).
    pub fn peak(&mut self, at: SystemTime, live: &Live) {
        if let (Some(l), Some(w)) = (&mut self.ledger, live.import()) {
            l.peak(&self.zone, millis(at), w);
        }
    }

    /// Writes the state file if anything changed since the last write (never with `--dry-run`).
    /// A `STATE_DIR` that is read-only or full stops nothing: the ledger goes on (the
    /// retained `P/S/ledger` keeps it meanwhile), the problem is said once and in
    /// [`Store::problem`], and the write is tried again at the next poll. The file is never
    /// left half-written (`state_file::write` replaces it whole or not at all).
    pub fn save(&mut self, always: bool) -> Result<()> {
        let Some(l) = &self.ledger else { return Ok(()) };
        if self.read_only || !(always || self.unsaved) {
            return Ok(());
        }
        match state_file::write(&self.path, book::text(l).as_bytes()) {
            Ok(()) => {
                if self.write_error.take().is_some() {
                    log::info!("ledger: {} is written again", self.path.display());
                }
                self.unsaved = false;
            }
            Err(e) => {
                let text =
                    format!("{e}; the ledger goes on and the file is written as soon as it can be");
                if self.write_error.is_none() {
                    log::warn!("ledger: {text}");
                }
                self.write_error = Some(text);
                self.unsaved = true;
            }
        }
        Ok(())
    }

    /// The time of the ledger's last poll, Unix ms (0 without a ledger).
    pub fn last_poll_ms(&self) -> i64 {
        self.ledger.as_ref().map_or(0, |l| l.at_ms)
    }

    /// Why the state file cannot be written, while it cannot (for `P/status`).
    pub fn problem(&self) -> Option<&str> {
        self.write_error.as_deref()
    }

    /// The ledger's messages, when it has started.
    pub fn messages(&self, p: &Composer, now: SystemTime) -> Vec<Message> {
        self.ledger.as_ref().map_or_else(Vec::new, |l| {
            messages::messages(p, l, &self.zone, !self.windows.is_empty(), now)
        })
    }

    /// The ledger's fields, for Home Assistant discovery.
    pub fn fields(&self) -> Vec<Field> {
        self.ledger.as_ref().map_or_else(Vec::new, |l| {
            let mut f = l.daily_fields();
            f.extend(l.totals(!self.windows.is_empty()));
            f
        })
    }
}

/// The longest wait for the broker's retained ledger at start (the probe usually ends it
/// within milliseconds).
const RESTORE_WAIT: Duration = Duration::from_secs(3);

/// Opens the ledger: the state file, or the broker's retained copy if that is newer.
/// `--once` writes the file before it publishes, so with a file it skips the broker.
pub fn load(
    config: &Config,
    p: &Composer,
    out: &mut dyn Output,
    once: bool,
    dry_run: bool,
) -> Result<Store> {
    let mut store = Store::open(config, dry_run)?;
    if !(once && store.has_file()) {
        restore(&mut store, p, out);
    }
    Ok(store)
}

/// Reads the broker's retained ledger (and the original envoy2mqtt's references) into
/// `store`; until that worked once, a ledger without a file waits rather than starting
/// fresh over what the broker keeps.
pub fn restore(store: &mut Store, p: &Composer, out: &mut dyn Output) {
    let (topics, probe) = Store::restore_topics(p);
    store.adopt(p, out.retained(&topics, &probe, RESTORE_WAIT));
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
