//! The configuration: every setting of docs/settings.md, read once from the command line, the
//! environment, a `--config` file and the defaults (highest first), and validated into a
//! typed [`Config`].
//!
//! A bad value is an [`Error::Config`] that names the setting, the problem and the fix.
//! Secrets (`ENVOY_TOKEN`, `ENPHASE_PASSWORD`, `MQTT_PASSWORD`) are refused on the command
//! line, where any user could read them, and are kept in [`Secret`], whose `Debug` hides them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::setting::{ALIASES, SETTINGS, Setting, closest, flag_name, is_ours, setting};
use crate::tariff;
use crate::value::{
    envoy_url, host, https_url, interval, parse_bool, parse_fingerprint, topic_level, unquote,
};
use crate::zone::Zone;

/// A secret value: shown as `***` by `Debug`, reachable only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How the Envoy's self-signed certificate is checked .
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVerify {
    Warn,
    Pin,
    None,
}

/// How payloads are written (docs/topics.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Simple,
    Json,
}

/// Where the Envoy is and how to get in.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvoyConfig {
    /// `https://host[:port]` (or `http://` for old firmware), no trailing slash.
    pub url: String,
    pub serial: Option<String>,
    pub token: Option<Secret>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub tls_verify: TlsVerify,
    pub cert_sha256: Option<[u8; 32]>,
    pub login_url: String,
    pub token_url: String,
    pub cloud_ca: Option<PathBuf>,
}

/// The broker and how messages are written.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub client_id: Option<String>,
    pub prefix: String,
    pub qos: u8,
    pub retain: bool,
    pub format: Format,
    pub tls: bool,
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub tls_insecure: bool,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub envoy: EnvoyConfig,
    pub mqtt: MqttConfig,
    /// `None` when the raw topics are disabled.
    pub raw_interval: Option<Duration>,
    pub data_interval: Duration,
    pub ha_discovery: bool,
    pub ha_prefix: String,
    pub offpeak: Vec<tariff::Window>,
    pub state_dir: PathBuf,
    /// The zone of day boundaries, parsed once.
    pub zone: Zone,
    /// `TZ` as given, for reports.
    pub tz: Option<String>,
    pub log_level: log::LevelFilter,
}

/// Where a value came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env,
    File(String, usize),
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("command line"),
            Origin::Env => f.write_str("environment"),
            Origin::File(path, line) => write!(f, "{path} line {line}"),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// The raw values, before validation: each setting's text and where it came from.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    values: BTreeMap<&'static str, (String, Origin)>,
}

impl Sources {
    /// Sets `name` from `origin` unless a higher source already set it.
    fn offer(&mut self, setting: &'static Setting, value: String, origin: Origin) {
        let rank = |o: &Origin| match o {
            Origin::Flag => 3,
            Origin::Env => 2,
            Origin::File(..) => 1,
            Origin::Default => 0,
        };
        match self.values.get(setting.name) {
            Some((_, old)) if rank(old) >= rank(&origin) => {}
            _ => {
                self.values.insert(setting.name, (value, origin));
            }
        }
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
            let value = unquote(value.trim());
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

    fn get(&self, name: &str) -> Option<&str> {
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

    /// Validates every value into a [`Config`], group by group.
    pub fn validate(&self) -> Result<Config> {
        let v = Values(self);
        let envoy = envoy(&v)?;
        let mqtt = mqtt(&v)?;
        let (raw_interval, data_interval) = intervals(&v)?;
        Ok(Config {
            envoy,
            mqtt,
            raw_interval,
            data_interval,
            ha_discovery: v.boolean("HA_DISCOVERY")?,
            ha_prefix: topic_level("HA_DISCOVERY_PREFIX", &v.text("HA_DISCOVERY_PREFIX"))?,
            offpeak: offpeak(&v)?,
            state_dir: PathBuf::from(v.text("STATE_DIR")),
            // Parsed once, here: `TZ`, else the system's zone (`/etc/TZ`, `/etc/localtime`).
            zone: Zone::system(v.get("TZ"))?,
            tz: v.get("TZ").map(str::to_string),
            log_level: log_level(&v)?,
        })
    }
}

/// The values of [`Sources`] with the defaults of the table, read by the checks of each group.
struct Values<'a>(&'a Sources);

impl Values<'_> {
    /// The value given, if not empty.
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name)
    }

    /// The value given, else the default; empty when neither.
    fn text(&self, name: &str) -> String {
        self.optional(name).unwrap_or_default()
    }

    /// The value given, else the default; `None` when neither.
    fn optional(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_string).or_else(|| {
            let d = setting(name).expect("known setting").default;
            (!d.is_empty()).then(|| d.to_string())
        })
    }

    fn secret(&self, name: &str) -> Option<Secret> {
        self.get(name).map(Secret::new)
    }

    fn boolean(&self, name: &str) -> Result<bool> {
        parse_bool(name, &self.text(name))
    }

    /// A PEM file's path, checked to be readable now rather than at the first connect.
    fn file(&self, name: &str) -> Result<Option<PathBuf>> {
        let Some(p) = self.get(name) else {
            return Ok(None);
        };
        let path = PathBuf::from(p);
        std::fs::File::open(&path).map_err(|e| {
            Error::config(
                name,
                format!("names {p}, which cannot be read ({e})"),
                "give the path of a readable PEM file",
            )
        })?;
        Ok(Some(path))
    }

    /// One of `choices` (`(text, value)`), else an error with `fix`.
    fn choice<T: Copy>(&self, name: &str, choices: &[(&str, T)], fix: &str) -> Result<T> {
        let given = self.text(name);
        let lower = given.to_lowercase();
        choices
            .iter()
            .find(|(text, _)| *text == lower)
            .map(|(_, value)| *value)
            .ok_or_else(|| Error::config(name, format!("is '{given}'"), fix))
    }
}

/// Both or neither: `a` and `b` go together (`fix` says how).
fn paired(a: (&str, bool), b: (&str, bool), fix: &str) -> Result<()> {
    match (a.1, b.1) {
        (true, false) => Err(Error::config(
            b.0,
            format!("is missing while {} is set", a.0),
            fix,
        )),
        (false, true) => Err(Error::config(
            a.0,
            format!("is missing while {} is set", b.0),
            fix,
        )),
        _ => Ok(()),
    }
}

/// The Envoy group: address, serial, token or account, certificate, the cloud's URLs.
fn envoy(v: &Values) -> Result<EnvoyConfig> {
    let username = v.optional("ENPHASE_USERNAME");
    let password = v.secret("ENPHASE_PASSWORD");
    paired(
        ("ENPHASE_USERNAME", username.is_some()),
        ("ENPHASE_PASSWORD", password.is_some()),
        "set both, or neither and give ENVOY_TOKEN",
    )?;
    let tls_verify = v.choice(
        "ENVOY_TLS_VERIFY",
        &[
            ("warn", TlsVerify::Warn),
            ("pin", TlsVerify::Pin),
            ("none", TlsVerify::None),
        ],
        "use warn (default), pin or none",
    )?;
    let cert_sha256 = match v.get("ENVOY_CERT_SHA256") {
        None => None,
        Some(hex) => Some(parse_fingerprint(hex).ok_or_else(|| {
            Error::config(
                "ENVOY_CERT_SHA256",
                format!("'{hex}' is not a SHA-256 fingerprint"),
                "give 64 hexadecimal digits (colons allowed), as envoy2mqtt --check prints",
            )
        })?),
    };
    let serial = match v.get("ENVOY_SERIAL") {
        Some(sn) if sn.len() <= 20 && sn.chars().all(|c| c.is_ascii_alphanumeric()) => {
            Some(sn.to_string())
        }
        Some(sn) => {
            return Err(Error::config(
                "ENVOY_SERIAL",
                format!("'{sn}' is not a serial number"),
                "give the digits on the Envoy's label, or leave it empty to read it from the Envoy",
            ));
        }
        None => None,
    };
    Ok(EnvoyConfig {
        url: envoy_url(&v.text("ENVOY_HOST"))?,
        serial,
        token: v.secret("ENVOY_TOKEN"),
        username,
        password,
        tls_verify,
        cert_sha256,
        login_url: https_url("ENPHASE_LOGIN_URL", &v.text("ENPHASE_LOGIN_URL"))?,
        token_url: https_url("ENPHASE_TOKEN_URL", &v.text("ENPHASE_TOKEN_URL"))?,
        cloud_ca: v.file("ENPHASE_CA_CERT")?,
    })
}

/// The broker group: address, login, topics, QoS, payloads, TLS.
fn mqtt(v: &Values) -> Result<MqttConfig> {
    let tls = v.boolean("MQTT_TLS")?;
    let client_cert = v.file("MQTT_CLIENT_CERT")?;
    let client_key = v.file("MQTT_CLIENT_KEY")?;
    paired(
        ("MQTT_CLIENT_CERT", client_cert.is_some()),
        ("MQTT_CLIENT_KEY", client_key.is_some()),
        "mutual TLS needs both the client certificate and its key",
    )?;
    let port = match v.get("MQTT_PORT") {
        None if tls => 8883,
        None => 1883,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
            Error::config(
                "MQTT_PORT",
                format!("'{p}' is not a port number"),
                "give a number from 1 to 65535 (1883, or 8883 with TLS)",
            )
        })?,
    };
    Ok(MqttConfig {
        host: host("MQTT_HOST", &v.text("MQTT_HOST"))?,
        port,
        username: v.optional("MQTT_USERNAME"),
        password: v.secret("MQTT_PASSWORD"),
        client_id: v.optional("MQTT_CLIENT_ID"),
        prefix: topic_level("MQTT_TOPIC_PREFIX", &v.text("MQTT_TOPIC_PREFIX"))?,
        qos: v.choice(
            "MQTT_QOS",
            &[("0", 0), ("1", 1), ("2", 2)],
            "use 0, 1 (default) or 2",
        )?,
        retain: v.boolean("MQTT_RETAIN")?,
        format: v.choice(
            "MQTT_FORMAT",
            &[("simple", Format::Simple), ("json", Format::Json)],
            "use simple (default) or json",
        )?,
        tls,
        ca_cert: v.file("MQTT_CA_CERT")?,
        client_cert,
        client_key,
        tls_insecure: v.boolean("MQTT_TLS_INSECURE")?,
    })
}

/// The two periods: raw (`None` when off) and data, the data poll never the faster one.
fn intervals(v: &Values) -> Result<(Option<Duration>, Duration)> {
    let min = Duration::from_millis(100);
    let raw = interval(
        "RAW_DATA_INTERVAL_SECONDS",
        &v.text("RAW_DATA_INTERVAL_SECONDS"),
        min,
        true,
    )?;
    let data = interval(
        "DATA_INTERVAL_SECONDS",
        &v.text("DATA_INTERVAL_SECONDS"),
        min,
        false,
    )?
    .expect("zero refused");
    if let Some(raw) = raw.filter(|raw| data < *raw) {
        return Err(Error::config(
            "DATA_INTERVAL_SECONDS",
            format!(
                "({}) is shorter than RAW_DATA_INTERVAL_SECONDS ({})",
                humantime::format_duration(data),
                humantime::format_duration(raw)
            ),
            "make the data poll the slower one (60 s and 1 s by default), or set RAW_DATA_INTERVAL_SECONDS=0",
        ));
    }
    Ok((raw, data))
}

fn offpeak(v: &Values) -> Result<Vec<tariff::Window>> {
    let Some(text) = v.get("OFFPEAK_HOURS") else {
        return Ok(Vec::new());
    };
    tariff::parse(text).map_err(|problem| {
        Error::config(
            "OFFPEAK_HOURS",
            problem,
            "write windows in local time as HH:MM-HH:MM, separated by commas (22:00-06:00,12:30-14:30)",
        )
    })
}

fn log_level(v: &Values) -> Result<log::LevelFilter> {
    use log::LevelFilter;
    v.choice(
        "LOG_LEVEL",
        &[
            ("error", LevelFilter::Error),
            ("warn", LevelFilter::Warn),
            ("warning", LevelFilter::Warn),
            ("info", LevelFilter::Info),
            ("debug", LevelFilter::Debug),
            ("trace", LevelFilter::Trace),
        ],
        "use error, warn, info (default), debug or trace",
    )
}

impl Config {
    /// The settings as `NAME=value` lines for reports, secrets shown only as `(set)`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        SETTINGS.iter().map(|s| (s.name, (s.show)(self))).collect()
    }
}

#[cfg(test)]
mod tests;
