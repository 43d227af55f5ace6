//! The raw settings before validation (ripgrep's "low-level arguments"): each setting's
//! text and where it came from, taken from the command line, the environment and a
//! `--config` file (highest first). Secrets (`ENVOY_TOKEN`, `ENPHASE_PASSWORD`,
//! `MQTT_PASSWORD`) are refused on the command line, where any user could read them.

use std::collections::BTreeMap;
use std::fmt;

use super::parsers::unquote;
use super::table::{ALIASES, SETTINGS, Setting, closest, flag_name, is_ours, setting};
use crate::error::{Error, Result};

/// Where a value came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env,
    File(String, usize),
    /// The options of the Home Assistant App, or the broker its Supervisor names.
    App,
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("command line"),
            Origin::Env => f.write_str("environment"),
            Origin::File(path, line) => write!(f, "{path} line {line}"),
            Origin::App => f.write_str("Home Assistant App"),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// The raw values, before validation: each setting's text and where it came from.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    values: BTreeMap<&'static str, (String, Origin)>,
    /// What the log should warn of once the logger runs (a key given twice).
    warnings: Vec<String>,
}

impl Sources {
    /// Sets `name` from `origin` unless a higher source already set it.
    pub(super) fn offer(&mut self, setting: &'static Setting, value: String, origin: Origin) {
        let rank = |o: &Origin| match o {
            Origin::Flag => 3,
            Origin::Env => 2,
            Origin::File(..) | Origin::App => 1,
            Origin::Default => 0,
        };
        match self.values.get(setting.name) {
            // Given twice in the file: the last wins, as with systemd's EnvironmentFile.
            Some((_, old @ Origin::File(..))) if matches!(origin, Origin::File(..)) => {
                self.warnings.push(format!(
                    "{} is given twice ({old} and {origin}): the last one is used, as systemd does",
                    setting.name
                ));
                self.values.insert(setting.name, (value, origin));
            }
            Some((_, old)) if rank(old) >= rank(&origin) => {}
            _ => {
                self.values.insert(setting.name, (value, origin));
            }
        }
    }

    /// What the log should warn of (a key given twice in the file).
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    /// A value given on the command line (`--mqtt-host x`). Secrets are refused.
    pub fn flag(&mut self, flag: &str, value: String) -> Result<()> {
        let setting = SETTINGS
            .iter()
            .find(|s| flag_name(s) == flag)
            .ok_or_else(|| Error::Usage(format!("unknown option --{flag}")))?;
        if setting.secret {
            return Err(Error::config(
                setting.name,
                "cannot be given on the command line (every user of the machine can read it there)",
                format!(
                    "set {} in the environment or in the --config file (mode 0600)",
                    setting.name
                ),
            ));
        }
        self.offer(setting, value, Origin::Flag);
        Ok(())
    }

    /// Takes every known setting from the environment, through `lookup`. Values are
    /// trimmed, as in the file: a stray space never becomes part of a host or a password.
    pub fn environment(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        for (name, setting) in SETTINGS.iter().map(|s| (s.name, s)).chain(
            ALIASES
                .iter()
                .map(|(a, r)| (*a, setting(r).expect("alias"))),
        ) {
            if let Some(value) = lookup(name) {
                self.offer(setting, value.trim().to_string(), Origin::Env);
            }
        }
    }

    /// Reads a `KEY=VALUE` file (systemd `EnvironmentFile` format) named `path`.
    /// Unknown keys that look like ours are errors (a typo would silently be ignored);
    /// other keys (`RUST_BACKTRACE`, ...) are left to whoever else reads the file.
    pub fn file(&mut self, path: &str, text: &str) -> Result<()> {
        // Some editors start a UTF-8 file with a byte-order mark: not part of the first key.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((key, value)) = line.split_once('=') else {
                return Err(Error::config(
                    "--config",
                    format!("{path} line {}: '{line}' is not KEY=VALUE", index + 1),
                    "write one setting per line as NAME=value, or comment the line out with #",
                ));
            };
            let key = key.trim();
            let at = || format!("{path} line {}", index + 1);
            if key.is_empty() {
                return Err(Error::config(
                    "--config",
                    format!("{}: no setting name before '='", at()),
                    "write NAME=value, or comment the line out with #",
                ));
            }
            let value = value.trim();
            let quoted = ['"', '\''].into_iter().find(|q| value.starts_with(*q));
            if let Some(q) = quoted.filter(|q| value.len() < 2 || !value.ends_with(*q)) {
                return Err(Error::config(
                    key,
                    format!(
                        "in {}: the value opens a quote ({q}) it does not close",
                        at()
                    ),
                    format!("end the value with {q}, or remove the quote"),
                ));
            }
            let value = unquote(value);
            match setting(key) {
                Some(setting) => {
                    self.offer(
                        setting,
                        value.to_string(),
                        Origin::File(path.to_string(), index + 1),
                    );
                }
                None if setting(&key.to_ascii_uppercase()).is_some() => {
                    return Err(Error::config(
                        key,
                        format!("in {path} line {} is in lower case", index + 1),
                        format!(
                            "write it {} (setting names are upper case)",
                            key.to_ascii_uppercase()
                        ),
                    ));
                }
                None if is_ours(&key.to_ascii_uppercase()) => {
                    return Err(Error::config(
                        key,
                        format!(
                            "in {path} line {} is not a setting of envoy2mqtt",
                            index + 1
                        ),
                        match closest(&key.to_ascii_uppercase()) {
                            Some(near) => {
                                format!("did you mean {near}? (envoy2mqtt --help lists them)")
                            }
                            None => "remove it; envoy2mqtt --help lists the settings".to_string(),
                        },
                    ));
                }
                None => log::debug!("{path} line {}: {key} is not ours, ignored", index + 1),
            }
        }
        Ok(())
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(|(v, _)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Where `name` came from.
    pub fn origin(&self, name: &str) -> Origin {
        self.values
            .get(name)
            .map_or(Origin::Default, |(_, o)| o.clone())
    }
}
