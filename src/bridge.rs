//! The main loop: deadline timers for the raw and the data poll, one request at a time,
//! back-off after failures, and what each poll publishes.
//!
//! Tick n of a period is due at start + n × period: a slow answer makes the loop skip
//! ticks, never bunch them. When both polls are due, the data poll runs and its readings
//! also feed the raw topics, so the Envoy sees one readings request per tick.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

use crate::config::Config;
use crate::envoy::Envoy;
use crate::error::{Error, Result};
use crate::message::{Message, Publisher};
use crate::reading;

/// The longest pause after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Where messages go: stdout for `--dry-run`.
pub trait Sink {
    fn publish(&mut self, messages: &[Message]) -> Result<()>;
}

/// Prints `topic [retained] payload` lines.
pub struct Stdout;

impl Sink for Stdout {
    fn publish(&mut self, messages: &[Message]) -> Result<()> {
        let mut out = std::io::stdout().lock();
        for m in messages {
            // A closed stdout (`| head`) ends the run like a broker that went away.
            writeln!(out, "{m}")
                .map_err(|e| Error::File(format!("cannot write to standard output: {e}")))?;
        }
        out.flush()
            .map_err(|e| Error::File(format!("cannot write to standard output: {e}")))
    }
}

/// The first tick of `period` after `now`, counted from `start`.
pub fn next_tick(start: Instant, period: Duration, now: Instant) -> Instant {
    let elapsed = now.saturating_duration_since(start).as_nanos();
    let n = elapsed / period.as_nanos() + 1;
    start + period * u32::try_from(n).unwrap_or(u32::MAX)
}

/// The pause after `failures` failures in a row: 1 s, 2 s, 4 s... up to 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(9)).min(MAX_BACKOFF)
}

fn publisher(config: &Config, envoy: &Envoy) -> Publisher {
    Publisher {
        prefix: config.mqtt.prefix.clone(),
        serial: envoy.serial.clone(),
        format: config.mqtt.format,
        retain: config.mqtt.retain,
    }
}

/// One data poll: data messages, and raw ones from the same readings when `with_raw`.
fn data_poll(
    config: &Config,
    envoy: &mut Envoy,
    sink: &mut dyn Sink,
    with_raw: bool,
) -> Result<()> {
    let snap = envoy.data()?;
    let p = publisher(config, envoy);
    let now = SystemTime::now();
    let mut messages = p.data(&reading::data_fields(&snap), now);
    if with_raw {
        let raw = reading::raw_fields(&snap);
        if !raw.is_empty() {
            messages.extend(p.raw(&raw, now));
        }
    }
    sink.publish(&messages)
}

fn raw_poll(config: &Config, envoy: &mut Envoy, sink: &mut dyn Sink) -> Result<()> {
    let snap = envoy.raw()?;
    let raw = reading::raw_fields(&snap);
    if raw.is_empty() {
        return Ok(());
    }
    sink.publish(&publisher(config, envoy).raw(&raw, SystemTime::now()))
}

/// `--once`: one data poll, published (no raw topics: live values are for the service).
pub fn once(config: &Config, sink: &mut dyn Sink) -> Result<()> {
    let mut envoy = Envoy::connect(config)?;
    data_poll(config, &mut envoy, sink, false)
}

/// The service: polls for ever (until the process is stopped).
pub fn run(config: &Config, sink: &mut dyn Sink) -> Result<()> {
    let mut envoy = connect_with_backoff(config);
    let start = Instant::now();
    let (mut next_data, mut next_raw) = (start, start);
    let mut failures = 0u32;
    let mut last_error = String::new();
    loop {
        let now = Instant::now();
        let data_due = now >= next_data;
        let raw_due = config.raw_interval.is_some() && now >= next_raw;
        if data_due || raw_due {
            let result = if data_due {
                data_poll(config, &mut envoy, sink, config.raw_interval.is_some())
            } else {
                raw_poll(config, &mut envoy, sink)
            };
            let done = Instant::now();
            match result {
                Ok(()) => {
                    if failures > 0 {
                        log::info!("the Envoy answers again after {failures} failed polls");
                    }
                    failures = 0;
                    last_error.clear();
                }
                Err(e @ Error::File(_)) => return Err(e),
                Err(e) => {
                    failures += 1;
                    let pause = backoff(failures);
                    // Each different error once at warn level: a 1 Hz poll must not flood the log.
                    let text = e.to_string();
                    if text != last_error {
                        log::warn!("{text}");
                        last_error = text;
                    } else {
                        log::debug!("{text} ({failures} failures in a row)");
                    }
                    log::debug!("pausing polls for {}", humantime::format_duration(pause));
                    // Ticks inside the pause are skipped, not queued.
                    next_raw = next_raw.max(done + pause);
                    next_data = next_data.max(done + pause);
                }
            }
            if data_due {
                next_data = next_tick(
                    start,
                    config.data_interval,
                    done.max(next_data - Duration::from_nanos(1)),
                );
            }
            if let Some(period) = config.raw_interval {
                if raw_due || data_due {
                    next_raw =
                        next_tick(start, period, done.max(next_raw - Duration::from_nanos(1)));
                }
            }
            continue;
        }
        let wake = match config.raw_interval {
            Some(_) => next_data.min(next_raw),
            None => next_data,
        };
        std::thread::sleep(wake.saturating_duration_since(now));
    }
}

/// Reaches the Envoy, retrying with back-off: a service starts before the Envoy does.
fn connect_with_backoff(config: &Config) -> Envoy {
    let mut failures = 0;
    loop {
        match Envoy::connect(config) {
            Ok(envoy) => return envoy,
            Err(e) => {
                failures += 1;
                let pause = backoff(failures);
                log::warn!("{e}; trying again in {}", humantime::format_duration(pause));
                std::thread::sleep(pause);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_do_not_drift_or_bunch() {
        let start = Instant::now();
        let s = Duration::from_secs(1);
        let cases = [
            (Duration::from_millis(0), 1000),
            (Duration::from_millis(999), 1000),
            (Duration::from_millis(1000), 2000),
            (Duration::from_millis(1003), 2000),
            // A 3.5 s answer skips ticks 2 and 3.
            (Duration::from_millis(4500), 5000),
        ];
        for (elapsed, want) in cases {
            let next = next_tick(start, s, start + elapsed);
            assert_eq!(next - start, Duration::from_millis(want), "{elapsed:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let got: Vec<u64> = [1, 2, 3, 4, 9, 10, 30]
            .iter()
            .map(|f| backoff(*f).as_secs())
            .collect();
        assert_eq!(got, [1, 2, 4, 8, 256, 300, 300]);
    }
}
