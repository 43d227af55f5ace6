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
use crate::tariff;
use crate::zone::Zone;

/// One setting the program knows.
pub struct Setting {
    pub name: &'static str,
    pub default: &'static str,
    pub secret: bool,
    pub help: &'static str,
}

const fn s(name: &'static str, default: &'static str, help: &'static str) -> Setting {
    Setting {
        name,
        default,
        secret: false,
        help,
    }
}

const fn secret(name: &'static str, help: &'static str) -> Setting {
    Setting {
        name,
        default: "",
        secret: true,
        help,
    }
}

/// Every setting, in the order `--help` and `--check` show them. An empty default means none.
pub const SETTINGS: &[Setting] = &[
    s(
        "ENVOY_HOST",
        "envoy.local",
        "Envoy address: host, IP or URL (https:// assumed)",
    ),
    s(
        "ENVOY_SERIAL",
        "",
        "gateway serial (read from /info when empty)",
    ),
    secret(
        "ENVOY_TOKEN",
        "a JWT pasted by the user; wins over the cloud login",
    ),
    s(
        "ENPHASE_USERNAME",
        "",
        "Enlighten account e-mail, for obtaining tokens",
    ),
    secret("ENPHASE_PASSWORD", "Enlighten account password"),
    s(
        "ENVOY_TLS_VERIFY",
        "warn",
        "Envoy certificate: warn, pin or none",
    ),
    s(
        "ENVOY_CERT_SHA256",
        "",
        "SHA-256 fingerprint of the Envoy certificate, for pin",
    ),
    s("MQTT_HOST", "localhost", "broker host"),
    s("MQTT_PORT", "", "broker port (1883, or 8883 with MQTT_TLS)"),
    s("MQTT_USERNAME", "", "broker user"),
    secret("MQTT_PASSWORD", "broker password"),
    s("MQTT_CLIENT_ID", "", "MQTT client id (envoy2mqtt-<serial>)"),
    s(
        "MQTT_TOPIC_PREFIX",
        "envoy",
        "first topic level (alias MQTT_BASE_TOPIC)",
    ),
    s("MQTT_QOS", "1", "QoS of state messages: 0, 1 or 2"),
    s("MQTT_RETAIN", "true", "retain state messages"),
    s(
        "MQTT_FORMAT",
        "simple",
        "payloads: simple (bare value) or json",
    ),
    s("MQTT_TLS", "false", "TLS to the broker"),
    s(
        "MQTT_CA_CERT",
        "",
        "PEM file of the CA that signed the broker certificate",
    ),
    s(
        "MQTT_CLIENT_CERT",
        "",
        "PEM client certificate, for mutual TLS",
    ),
    s("MQTT_CLIENT_KEY", "", "PEM client key, for mutual TLS"),
    s(
        "MQTT_TLS_INSECURE",
        "false",
        "accept any broker certificate",
    ),
    s(
        "RAW_DATA_INTERVAL_SECONDS",
        "1",
        "fast poll period; 0 disables the raw topics",
    ),
    s("DATA_INTERVAL_SECONDS", "60", "full poll period"),
    s("HA_DISCOVERY", "true", "Home Assistant MQTT discovery"),
    s(
        "HA_DISCOVERY_PREFIX",
        "homeassistant",
        "Home Assistant discovery prefix",
    ),
    s(
        "OFFPEAK_HOURS",
        "",
        "off-peak windows, local time: 22:00-06:00[,...]",
    ),
    s(
        "STATE_DIR",
        "/var/lib/envoy2mqtt",
        "token cache, certificate, ledger state",
    ),
    s(
        "TZ",
        "",
        "time zone for day boundaries (POSIX string or IANA name)",
    ),
    s("LOG_LEVEL", "info", "error, warn, info, debug or trace"),
    s(
        "ENPHASE_LOGIN_URL",
        "https://enlighten.enphaseenergy.com",
        "for tests only",
    ),
    s(
        "ENPHASE_TOKEN_URL",
        "https://entrez.enphaseenergy.com",
        "for tests only",
    ),
    s(
        "ENPHASE_CA_CERT",
        "",
        "for tests only: the CA trusted for the cloud instead of the web roots",
    ),
];

/// Old names still accepted, with the setting they stand for.
const ALIASES: &[(&str, &str)] = &[("MQTT_BASE_TOPIC", "MQTT_TOPIC_PREFIX")];

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

/// Looks a setting up by its environment name, or by an alias.
pub fn setting(name: &str) -> Option<&'static Setting> {
    let name = ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, real)| real);
    SETTINGS.iter().find(|s| s.name == name)
}

/// The command-line flag of a setting: `MQTT_HOST` is `--mqtt-host`.
pub fn flag_name(setting: &Setting) -> String {
    setting.name.to_lowercase().replace('_', "-")
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

    /// Validates every value into a [`Config`].
    pub fn validate(&self) -> Result<Config> {
        let text = |name: &str| -> Option<String> {
            self.get(name).map(str::to_string).or_else(|| {
                let d = setting(name).expect("known setting").default;
                (!d.is_empty()).then(|| d.to_string())
            })
        };
        let secret = |name: &str| self.get(name).map(Secret::new);
        let boolean = |name: &str| parse_bool(name, &text(name).unwrap_or_default());
        let file = |name: &str| -> Result<Option<PathBuf>> {
            match self.get(name) {
                None => Ok(None),
                Some(p) => {
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
            }
        };

        let username = text("ENPHASE_USERNAME");
        let password = secret("ENPHASE_PASSWORD");
        match (&username, &password) {
            (Some(_), None) => {
                return Err(Error::config(
                    "ENPHASE_PASSWORD",
                    "is missing while ENPHASE_USERNAME is set",
                    "set both, or neither and give ENVOY_TOKEN",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::config(
                    "ENPHASE_USERNAME",
                    "is missing while ENPHASE_PASSWORD is set",
                    "set both, or neither and give ENVOY_TOKEN",
                ));
            }
            _ => {}
        }

        let tls_verify = match text("ENVOY_TLS_VERIFY").unwrap_or_default().as_str() {
            "warn" => TlsVerify::Warn,
            "pin" => TlsVerify::Pin,
            "none" => TlsVerify::None,
            other => {
                return Err(Error::config(
                    "ENVOY_TLS_VERIFY",
                    format!("is '{other}'"),
                    "use warn (default), pin or none",
                ));
            }
        };
        let cert_sha256 = match self.get("ENVOY_CERT_SHA256") {
            None => None,
            Some(hex) => Some(parse_fingerprint(hex).ok_or_else(|| {
                Error::config(
                    "ENVOY_CERT_SHA256",
                    format!("'{hex}' is not a SHA-256 fingerprint"),
                    "give 64 hexadecimal digits (colons allowed), as envoy2mqtt --check prints",
                )
            })?),
        };

        let mqtt_tls = boolean("MQTT_TLS")?;
        let client_cert = file("MQTT_CLIENT_CERT")?;
        let client_key = file("MQTT_CLIENT_KEY")?;
        if client_cert.is_some() != client_key.is_some() {
            let (missing, given) = if client_cert.is_some() {
                ("MQTT_CLIENT_KEY", "MQTT_CLIENT_CERT")
            } else {
                ("MQTT_CLIENT_CERT", "MQTT_CLIENT_KEY")
            };
            return Err(Error::config(
                missing,
                format!("is missing while {given} is set"),
                "mutual TLS needs both the client certificate and its key",
            ));
        }

        let envoy = EnvoyConfig {
            url: envoy_url(&text("ENVOY_HOST").unwrap_or_default())?,
            serial: match self.get("ENVOY_SERIAL") {
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
            },
            token: secret("ENVOY_TOKEN"),
            username,
            password,
            tls_verify,
            cert_sha256,
            login_url: https_url(
                "ENPHASE_LOGIN_URL",
                &text("ENPHASE_LOGIN_URL").unwrap_or_default(),
            )?,
            token_url: https_url(
                "ENPHASE_TOKEN_URL",
                &text("ENPHASE_TOKEN_URL").unwrap_or_default(),
            )?,
            cloud_ca: file("ENPHASE_CA_CERT")?,
        };

        let mqtt = MqttConfig {
            host: host("MQTT_HOST", &text("MQTT_HOST").unwrap_or_default())?,
            port: match self.get("MQTT_PORT") {
                None if mqtt_tls => 8883,
                None => 1883,
                Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    Error::config(
                        "MQTT_PORT",
                        format!("'{p}' is not a port number"),
                        "give a number from 1 to 65535 (1883, or 8883 with TLS)",
                    )
                })?,
            },
            username: text("MQTT_USERNAME"),
            password: secret("MQTT_PASSWORD"),
            client_id: text("MQTT_CLIENT_ID"),
            prefix: topic_level(
                "MQTT_TOPIC_PREFIX",
                &text("MQTT_TOPIC_PREFIX").unwrap_or_default(),
            )?,
            qos: match text("MQTT_QOS").as_deref() {
                Some("0") => 0,
                Some("1") => 1,
                Some("2") => 2,
                other => {
                    return Err(Error::config(
                        "MQTT_QOS",
                        format!("is '{}'", other.unwrap_or_default()),
                        "use 0, 1 (default) or 2",
                    ));
                }
            },
            retain: boolean("MQTT_RETAIN")?,
            format: match text("MQTT_FORMAT").as_deref() {
                Some("simple") => Format::Simple,
                Some("json") => Format::Json,
                other => {
                    return Err(Error::config(
                        "MQTT_FORMAT",
                        format!("is '{}'", other.unwrap_or_default()),
                        "use simple (default) or json",
                    ));
                }
            },
            tls: mqtt_tls,
            ca_cert: file("MQTT_CA_CERT")?,
            client_cert,
            client_key,
            tls_insecure: boolean("MQTT_TLS_INSECURE")?,
        };

        let raw_interval = interval(
            "RAW_DATA_INTERVAL_SECONDS",
            &text("RAW_DATA_INTERVAL_SECONDS").unwrap_or_default(),
            Duration::from_millis(100),
            true,
        )?;
        let data_interval = interval(
            "DATA_INTERVAL_SECONDS",
            &text("DATA_INTERVAL_SECONDS").unwrap_or_default(),
            Duration::from_millis(100),
            false,
        )?
        .expect("zero refused");
        if raw_interval.is_some_and(|raw| data_interval < raw) {
            return Err(Error::config(
                "DATA_INTERVAL_SECONDS",
                format!(
                    "({}) is shorter than RAW_DATA_INTERVAL_SECONDS ({})",
                    humantime::format_duration(data_interval),
                    humantime::format_duration(raw_interval.unwrap_or_default())
                ),
                "make the data poll the slower one (60 s and 1 s by default), or set RAW_DATA_INTERVAL_SECONDS=0",
            ));
        }

        let offpeak = match self.get("OFFPEAK_HOURS") {
            None => Vec::new(),
            Some(t) => tariff::parse(t).map_err(|problem| {
                Error::config(
                    "OFFPEAK_HOURS",
                    problem,
                    "write windows in local time as HH:MM-HH:MM, separated by commas (22:00-06:00,12:30-14:30)",
                )
            })?,
        };

        let log_level = match text("LOG_LEVEL")
            .unwrap_or_default()
            .to_lowercase()
            .as_str()
        {
            "error" => log::LevelFilter::Error,
            "warn" | "warning" => log::LevelFilter::Warn,
            "info" => log::LevelFilter::Info,
            "debug" => log::LevelFilter::Debug,
            "trace" => log::LevelFilter::Trace,
            other => {
                return Err(Error::config(
                    "LOG_LEVEL",
                    format!("is '{other}'"),
                    "use error, warn, info (default), debug or trace",
                ));
            }
        };

        Ok(Config {
            envoy,
            mqtt,
            raw_interval,
            data_interval,
            ha_discovery: boolean("HA_DISCOVERY")?,
            ha_prefix: topic_level(
                "HA_DISCOVERY_PREFIX",
                &text("HA_DISCOVERY_PREFIX").unwrap_or_default(),
            )?,
            offpeak,
            state_dir: PathBuf::from(text("STATE_DIR").unwrap_or_default()),
            tz: match text("TZ") {
                Some(t) => Some(Zone::system(Some(&t))?.name),
                None => None,
            },
            log_level,
        })
    }
}

impl Config {
    /// The settings as `NAME=value` lines for reports, secrets shown only as `(set)`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        let set = |v: &Option<Secret>| if v.is_some() { "(set)" } else { "(none)" }.to_string();
        let path = |v: &Option<PathBuf>| {
            v.as_ref()
                .map_or("(none)".into(), |p| p.display().to_string())
        };
        let (e, m) = (&self.envoy, &self.mqtt);
        let secs = |d: Duration| humantime::format_duration(d).to_string();
        vec![
            ("ENVOY_HOST", e.url.clone()),
            ("ENVOY_SERIAL", opt(&e.serial)),
            ("ENVOY_TOKEN", set(&e.token)),
            ("ENPHASE_USERNAME", opt(&e.username)),
            ("ENPHASE_PASSWORD", set(&e.password)),
            (
                "ENVOY_TLS_VERIFY",
                format!("{:?}", e.tls_verify).to_lowercase(),
            ),
            (
                "ENVOY_CERT_SHA256",
                e.cert_sha256.map_or("(none)".into(), |f| hex(&f)),
            ),
            ("MQTT_HOST", m.host.clone()),
            ("MQTT_PORT", m.port.to_string()),
            ("MQTT_USERNAME", opt(&m.username)),
            ("MQTT_PASSWORD", set(&m.password)),
            ("MQTT_CLIENT_ID", opt(&m.client_id)),
            ("MQTT_TOPIC_PREFIX", m.prefix.clone()),
            ("MQTT_QOS", m.qos.to_string()),
            ("MQTT_RETAIN", m.retain.to_string()),
            ("MQTT_FORMAT", format!("{:?}", m.format).to_lowercase()),
            ("MQTT_TLS", m.tls.to_string()),
            ("MQTT_CA_CERT", path(&m.ca_cert)),
            ("MQTT_CLIENT_CERT", path(&m.client_cert)),
            ("MQTT_CLIENT_KEY", path(&m.client_key)),
            ("MQTT_TLS_INSECURE", m.tls_insecure.to_string()),
            (
                "RAW_DATA_INTERVAL_SECONDS",
                self.raw_interval.map_or("0 (raw topics off)".into(), secs),
            ),
            ("DATA_INTERVAL_SECONDS", secs(self.data_interval)),
            ("HA_DISCOVERY", self.ha_discovery.to_string()),
            ("HA_DISCOVERY_PREFIX", self.ha_prefix.clone()),
            (
                "OFFPEAK_HOURS",
                if self.offpeak.is_empty() {
                    "(none)".into()
                } else {
                    self.offpeak
                        .iter()
                        .map(|w| w.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                },
            ),
            ("STATE_DIR", self.state_dir.display().to_string()),
            ("TZ", opt(&self.tz)),
            ("LOG_LEVEL", self.log_level.to_string().to_lowercase()),
        ]
    }
}

/// Lower-case hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hexadecimal digits, with optional `:` or spaces between bytes.
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let digits: String = text.chars().filter(|c| *c != ':' && *c != ' ').collect();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(digits.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn unquote(value: &str) -> &str {
    for q in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(q) && value.ends_with(q) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

fn is_ours(key: &str) -> bool {
    [
        "ENVOY_",
        "ENPHASE_",
        "MQTT_",
        "HA_",
        "OFFPEAK",
        "RAW_DATA",
        "DATA_INTERVAL",
        "STATE_DIR",
        "LOG_LEVEL",
    ]
    .iter()
    .any(|p| key.starts_with(p))
}

/// The known setting nearest to a mistyped `key` (at most two edits away).
fn closest(key: &str) -> Option<&'static str> {
    SETTINGS
        .iter()
        .map(|s| (edit_distance(key, s.name), s.name))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn parse_bool(name: &str, value: &str) -> Result<bool> {
    match value.to_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(Error::config(
            name,
            format!("is '{value}'"),
            "use true or false",
        )),
    }
}

/// `MQTT_HOST`: a host name, an IPv4 address or an IPv6 address (bare or in brackets);
/// never a port (that is `MQTT_PORT`), a scheme or a path.
fn host(name: &str, value: &str) -> Result<String> {
    let v6 = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    if v6.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(v6.to_string());
    }
    if let Some((host, port)) = value.rsplit_once(':') {
        if is_host_name(host) && !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) {
            return Err(Error::config(
                name,
                format!("'{value}' has a port in it"),
                format!("set {name}={host} and MQTT_PORT={port}"),
            ));
        }
    }
    if !is_host_name(value) {
        return Err(Error::config(
            name,
            format!("'{value}' is not a host name or address"),
            "give a host name or IP address, without scheme, port or path (192.168.1.10, broker.lan)",
        ));
    }
    Ok(value.to_string())
}

/// Letters, digits, `-`, `_` and `.`: a DNS name or an IPv4 address, at most 253 bytes.
fn is_host_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `ENVOY_HOST`: a host, an address or an `http(s)://host[:port]` URL, taken apart at start
/// so that a mistake is a configuration error rather than a failed request an hour later.
fn envoy_url(value: &str) -> Result<String> {
    let bad = |problem: String, fix: &str| Err(Error::config("ENVOY_HOST", problem, fix));
    let trimmed = value.trim_end_matches('/');
    let (scheme, rest) = match trimmed.split_once("://") {
        Some((s @ ("http" | "https"), rest)) => (s, rest),
        Some((other, _)) => {
            return bad(
                format!("has the scheme '{other}://'"),
                "use https:// (firmware 7 and later) or http:// (older firmware), or give just the host",
            );
        }
        None => ("https", trimmed),
    };
    if rest.contains('@') {
        // Never repeat the value: it holds a password.
        return bad(
            "has a user name or password in it".into(),
            "give only the host: the Envoy takes a token (ENVOY_TOKEN, or ENPHASE_USERNAME and ENPHASE_PASSWORD)",
        );
    }
    if rest.contains(|c: char| c.is_whitespace() || c == '/' || c == '?') {
        return bad(
            format!("'{value}' is not a host, address or https://host URL"),
            "give the Envoy's host name or IP address, such as 192.168.1.20",
        );
    }
    if rest.parse::<std::net::Ipv6Addr>().is_ok() {
        return bad(
            format!("'{value}' is an IPv6 address without brackets"),
            &format!("write it in brackets: ENVOY_HOST=[{rest}]"),
        );
    }
    // The port part, `:8443` or empty, after the host or the bracketed IPv6 address.
    let port = match rest.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, tail)) if addr.parse::<std::net::Ipv6Addr>().is_ok() => tail,
            _ => {
                return bad(
                    format!("'{value}' is not an IPv6 address in brackets"),
                    "write an IPv6 address as [fd00::20]",
                );
            }
        },
        None => {
            let (host, port) = rest.split_at(rest.find(':').unwrap_or(rest.len()));
            if !is_host_name(host) {
                return bad(
                    format!("'{value}' is not a host name or address"),
                    "give the Envoy's host name or IP address, such as 192.168.1.20",
                );
            }
            port
        }
    };
    if let Some(p) = port.strip_prefix(':') {
        if !p.parse::<u16>().is_ok_and(|p| p > 0) {
            return bad(
                format!("has the port '{p}'"),
                "give a port from 1 to 65535, or none (443 for https://, 80 for http://)",
            );
        }
    } else if !port.is_empty() {
        return bad(
            format!("'{value}' is not a host, address or https://host URL"),
            "give the Envoy's host name or IP address, such as 192.168.1.20",
        );
    }
    Ok(format!("{scheme}://{rest}"))
}

fn https_url(name: &str, value: &str) -> Result<String> {
    match value.strip_prefix("https://") {
        Some(rest) if !rest.is_empty() => Ok(value.trim_end_matches('/').to_string()),
        _ => Err(Error::config(
            name,
            format!("'{value}' is not an https:// URL"),
            "leave it unset: it exists for tests",
        )),
    }
}

/// The longest topic prefix: topics are built under it, and brokers and Home Assistant
/// handle long topics poorly.
const MAX_PREFIX: usize = 64;

/// `MQTT_TOPIC_PREFIX`, `HA_DISCOVERY_PREFIX`: one or more topic levels that can start a
/// topic: no wildcards, no empty level, no `$` (the broker's own topics), at most 64 bytes.
fn topic_level(name: &str, value: &str) -> Result<String> {
    let problem = if value.is_empty() {
        Some("is empty".to_string())
    } else if value.len() > MAX_PREFIX {
        Some(format!("is {} bytes long", value.len()))
    } else if value.contains(['+', '#']) {
        Some(format!("'{value}' has an MQTT wildcard (+ or #) in it"))
    } else if value.split('/').any(str::is_empty) {
        Some(format!(
            "'{value}' has an empty topic level (a leading, trailing or double /)"
        ))
    } else if value.starts_with('$') || value.contains(|c: char| c.is_control()) {
        Some(format!(
            "'{}' cannot start MQTT topics",
            value.escape_debug()
        ))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(Error::config(
            name,
            problem,
            "use letters, digits, - or _ (levels separated by /), at most 64 characters, such as envoy",
        )),
        None => Ok(value.to_string()),
    }
}

/// A period: seconds (`60`, `0.5`) or a humantime duration (`90s`, `5m`, `500ms`).
/// Zero gives `None` where `zero_disables`, an error elsewhere.
fn interval(
    name: &str,
    value: &str,
    min: Duration,
    zero_disables: bool,
) -> Result<Option<Duration>> {
    let parsed = match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=86_400.0).contains(&secs) => {
            Some(Duration::from_secs_f64(secs))
        }
        // A number, but far too large (1e9) or negative: out of range, not "not a duration".
        Ok(secs) if !secs.is_nan() => Some(Duration::MAX),
        Ok(_) => None,
        Err(_) => humantime::parse_duration(value).ok(),
    };
    let fix = if zero_disables {
        "give seconds (1) or a duration (500ms, 5s); 0 disables the raw topics"
    } else {
        "give seconds (60) or a duration (90s, 5m)"
    };
    match parsed {
        Some(d) if d.is_zero() && zero_disables => Ok(None),
        Some(d) if d >= min && d <= Duration::from_secs(86_400) => Ok(Some(d)),
        Some(_) => Err(Error::config(
            name,
            format!("'{value}' is out of range (100ms to 1 day)"),
            fix,
        )),
        None => Err(Error::config(
            name,
            format!("'{value}' is not a duration"),
            fix,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(env: &[(&str, &str)]) -> Sources {
        let mut s = Sources::default();
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        s.environment(|k| env.get(k).cloned());
        s
    }

    fn config(env: &[(&str, &str)]) -> Result<Config> {
        sources(env).validate()
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.envoy.url, "https://envoy.local");
        assert_eq!(c.envoy.tls_verify, TlsVerify::Warn);
        assert_eq!((c.mqtt.host.as_str(), c.mqtt.port), ("localhost", 1883));
        assert_eq!(c.mqtt.prefix, "envoy");
        assert_eq!(
            (c.mqtt.qos, c.mqtt.retain, c.mqtt.format),
            (1, true, Format::Simple)
        );
        assert_eq!(c.raw_interval, Some(Duration::from_secs(1)));
        assert_eq!(c.data_interval, Duration::from_secs(60));
        assert!(c.ha_discovery);
        assert_eq!(c.ha_prefix, "homeassistant");
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/envoy2mqtt"));
        assert_eq!(c.log_level, log::LevelFilter::Info);
        assert_eq!(c.envoy.login_url, "https://enlighten.enphaseenergy.com");
        assert!(c.offpeak.is_empty() && c.tz.is_none() && c.envoy.serial.is_none());
    }

    #[test]
    fn each_setting_is_read() {
        let c = config(&[
            ("ENVOY_HOST", "http://192.168.1.20/"),
            ("ENVOY_SERIAL", "122238082763"),
            ("ENVOY_TOKEN", "ey.x.y"),
            ("ENPHASE_USERNAME", "me@example.com"),
            ("ENPHASE_PASSWORD", "pw"),
            ("ENVOY_TLS_VERIFY", "pin"),
            ("ENVOY_CERT_SHA256", &format!("{}cd", "ab:".repeat(31))),
            ("MQTT_HOST", "broker"),
            ("MQTT_TLS", "yes"),
            ("MQTT_USERNAME", "u"),
            ("MQTT_PASSWORD", "p"),
            ("MQTT_CLIENT_ID", "cid"),
            ("MQTT_BASE_TOPIC", "solar"),
            ("MQTT_QOS", "2"),
            ("MQTT_RETAIN", "false"),
            ("MQTT_FORMAT", "json"),
            ("MQTT_TLS_INSECURE", "on"),
            ("RAW_DATA_INTERVAL_SECONDS", "0"),
            ("DATA_INTERVAL_SECONDS", "5m"),
            ("HA_DISCOVERY", "0"),
            ("HA_DISCOVERY_PREFIX", "ha"),
            ("OFFPEAK_HOURS", "22:00-06:00"),
            ("STATE_DIR", "/tmp/x"),
            ("TZ", "Europe/Paris"),
            ("LOG_LEVEL", "DEBUG"),
        ])
        .unwrap();
        assert_eq!(c.envoy.url, "http://192.168.1.20");
        assert_eq!(c.envoy.serial.as_deref(), Some("122238082763"));
        assert_eq!(c.envoy.token.as_ref().map(Secret::expose), Some("ey.x.y"));
        assert_eq!(c.envoy.username.as_deref(), Some("me@example.com"));
        assert_eq!(c.envoy.tls_verify, TlsVerify::Pin);
        let fp = c.envoy.cert_sha256.unwrap();
        assert_eq!((fp[0], fp[31]), (0xab, 0xcd));
        assert_eq!(
            (c.mqtt.host.as_str(), c.mqtt.port, c.mqtt.tls),
            ("broker", 8883, true)
        );
        assert_eq!(c.mqtt.password, Some(Secret::new("p")));
        assert_eq!(c.mqtt.client_id.as_deref(), Some("cid"));
        assert_eq!(c.mqtt.prefix, "solar");
        assert_eq!(
            (c.mqtt.qos, c.mqtt.retain, c.mqtt.format),
            (2, false, Format::Json)
        );
        assert!(c.mqtt.tls_insecure);
        assert_eq!(c.raw_interval, None);
        assert_eq!(c.data_interval, Duration::from_secs(300));
        assert!(!c.ha_discovery);
        assert_eq!(c.ha_prefix, "ha");
        assert_eq!(c.offpeak.len(), 1);
        assert_eq!(c.state_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.tz.as_deref(), Some("Europe/Paris"));
        assert_eq!(c.log_level, log::LevelFilter::Debug);
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table of cases
    fn each_error_names_the_setting() {
        let cases: &[(&[(&str, &str)], &str, &str)] = &[
            (&[("ENVOY_HOST", "ftp://x")], "ENVOY_HOST", "scheme"),
            (&[("ENVOY_HOST", "a b")], "ENVOY_HOST", "not a host"),
            (
                &[("ENVOY_HOST", "https://x/path")],
                "ENVOY_HOST",
                "not a host",
            ),
            (&[("ENVOY_SERIAL", "12-34")], "ENVOY_SERIAL", "not a serial"),
            (&[("ENPHASE_USERNAME", "u")], "ENPHASE_PASSWORD", "missing"),
            (&[("ENPHASE_PASSWORD", "p")], "ENPHASE_USERNAME", "missing"),
            (
                &[("ENVOY_TLS_VERIFY", "yes")],
                "ENVOY_TLS_VERIFY",
                "use warn",
            ),
            (
                &[("ENVOY_CERT_SHA256", "abc")],
                "ENVOY_CERT_SHA256",
                "64 hexadecimal",
            ),
            (
                &[("ENVOY_HOST", "192.168.1.20:abc")],
                "ENVOY_HOST",
                "port 'abc'",
            ),
            (
                &[("ENVOY_HOST", "192.168.1.20:99999")],
                "ENVOY_HOST",
                "port '99999'",
            ),
            (
                &[("ENVOY_HOST", "192.168.1.20:0")],
                "ENVOY_HOST",
                "1 to 65535",
            ),
            (&[("ENVOY_HOST", "::1")], "ENVOY_HOST", "[::1]"),
            (&[("ENVOY_HOST", "[::1")], "ENVOY_HOST", "in brackets"),
            (
                &[("ENVOY_HOST", "https://user:pass@10.0.0.2")],
                "ENVOY_HOST",
                "user name or password",
            ),
            (
                &[("ENVOY_HOST", "envoy!local")],
                "ENVOY_HOST",
                "not a host name",
            ),
            (&[("MQTT_HOST", "")], "", ""),
            (&[("MQTT_HOST", "mqtt://b")], "MQTT_HOST", "not a host"),
            (
                &[("MQTT_HOST", "broker.lan:1884")],
                "MQTT_HOST",
                "MQTT_HOST=broker.lan and MQTT_PORT=1884",
            ),
            (
                &[("MQTT_TOPIC_PREFIX", "#")],
                "MQTT_TOPIC_PREFIX",
                "wildcard",
            ),
            (
                &[("MQTT_TOPIC_PREFIX", "a/+/b")],
                "MQTT_TOPIC_PREFIX",
                "wildcard",
            ),
            (
                &[("MQTT_TOPIC_PREFIX", "a//b")],
                "MQTT_TOPIC_PREFIX",
                "empty topic level",
            ),
            (
                &[("MQTT_TOPIC_PREFIX", "/envoy")],
                "MQTT_TOPIC_PREFIX",
                "empty topic level",
            ),
            (
                &[("MQTT_TOPIC_PREFIX", "$SYS")],
                "MQTT_TOPIC_PREFIX",
                "cannot start",
            ),
            (
                &[("MQTT_TOPIC_PREFIX", &"x".repeat(70_000))],
                "MQTT_TOPIC_PREFIX",
                "70000 bytes",
            ),
            (
                &[("HA_DISCOVERY_PREFIX", "home/#")],
                "HA_DISCOVERY_PREFIX",
                "wildcard",
            ),
            (
                &[
                    ("DATA_INTERVAL_SECONDS", "1"),
                    ("RAW_DATA_INTERVAL_SECONDS", "5"),
                ],
                "DATA_INTERVAL_SECONDS",
                "shorter than RAW_DATA_INTERVAL_SECONDS",
            ),
            (&[("MQTT_PORT", "0")], "MQTT_PORT", "1 to 65535"),
            (&[("MQTT_PORT", "70000")], "MQTT_PORT", "1 to 65535"),
            (&[("MQTT_QOS", "3")], "MQTT_QOS", "0, 1"),
            (&[("MQTT_RETAIN", "maybe")], "MQTT_RETAIN", "true or false"),
            (&[("MQTT_FORMAT", "xml")], "MQTT_FORMAT", "simple"),
            (&[("MQTT_TLS", "2")], "MQTT_TLS", "true or false"),
            (
                &[("MQTT_TLS_INSECURE", "x")],
                "MQTT_TLS_INSECURE",
                "true or false",
            ),
            (
                &[("MQTT_TOPIC_PREFIX", "a/#")],
                "MQTT_TOPIC_PREFIX",
                "wildcard",
            ),
            (
                &[("MQTT_BASE_TOPIC", "/a")],
                "MQTT_TOPIC_PREFIX",
                "empty topic level",
            ),
            (
                &[("MQTT_CA_CERT", "/nonexistent/ca.pem")],
                "MQTT_CA_CERT",
                "readable PEM",
            ),
            (
                &[("MQTT_CLIENT_CERT", "/nonexistent/c.pem")],
                "MQTT_CLIENT_CERT",
                "readable",
            ),
            (
                &[("MQTT_CLIENT_CERT", "Cargo.toml")],
                "MQTT_CLIENT_KEY",
                "both",
            ),
            (
                &[("MQTT_CLIENT_KEY", "Cargo.toml")],
                "MQTT_CLIENT_CERT",
                "both",
            ),
            (
                &[("RAW_DATA_INTERVAL_SECONDS", "fast")],
                "RAW_DATA_INTERVAL_SECONDS",
                "0 disables",
            ),
            (
                &[("RAW_DATA_INTERVAL_SECONDS", "10ms")],
                "RAW_DATA_INTERVAL_SECONDS",
                "out of range",
            ),
            (
                &[("DATA_INTERVAL_SECONDS", "0")],
                "DATA_INTERVAL_SECONDS",
                "out of range",
            ),
            (
                &[("DATA_INTERVAL_SECONDS", "-5")],
                "DATA_INTERVAL_SECONDS",
                "out of range",
            ),
            (&[("HA_DISCOVERY", "nope")], "HA_DISCOVERY", "true or false"),
            (
                &[("HA_DISCOVERY_PREFIX", "ha/")],
                "HA_DISCOVERY_PREFIX",
                "empty topic level",
            ),
            (
                &[("OFFPEAK_HOURS", "22h-6h")],
                "OFFPEAK_HOURS",
                "HH:MM-HH:MM",
            ),
            (&[("LOG_LEVEL", "loud")], "LOG_LEVEL", "info (default)"),
            (
                &[("ENPHASE_LOGIN_URL", "http://x")],
                "ENPHASE_LOGIN_URL",
                "https://",
            ),
            (
                &[("ENPHASE_TOKEN_URL", "x")],
                "ENPHASE_TOKEN_URL",
                "https://",
            ),
            (
                &[("ENPHASE_CA_CERT", "/nonexistent")],
                "ENPHASE_CA_CERT",
                "readable",
            ),
        ];
        for (env, name, words) in cases {
            match config(env) {
                Ok(_) if name.is_empty() => {}
                Ok(_) => panic!("{env:?} was accepted"),
                Err(e) => {
                    assert_eq!(e.exit_code(), 2, "{e}");
                    let msg = e.to_string();
                    assert!(msg.starts_with(&format!("configuration: {name} ")), "{msg}");
                    assert!(msg.contains(words), "{msg} lacks {words}");
                    assert!(!msg.contains('\n'), "{msg}");
                }
            }
        }
    }

    #[test]
    fn hosts_that_work() {
        for (value, want) in [
            ("192.168.1.20", "https://192.168.1.20"),
            ("envoy.local", "https://envoy.local"),
            ("https://envoy.lan:8443/", "https://envoy.lan:8443"),
            ("http://10.0.0.2", "http://10.0.0.2"),
            ("[fd00::20]", "https://[fd00::20]"),
            ("https://[::1]:4443", "https://[::1]:4443"),
        ] {
            assert_eq!(config(&[("ENVOY_HOST", value)]).unwrap().envoy.url, want);
        }
        for (value, want) in [
            ("::1", "::1"),
            ("[fd00::1]", "fd00::1"),
            ("broker.lan", "broker.lan"),
        ] {
            assert_eq!(config(&[("MQTT_HOST", value)]).unwrap().mqtt.host, want);
        }
        assert_eq!(
            config(&[("MQTT_TOPIC_PREFIX", "home/solar")])
                .unwrap()
                .mqtt
                .prefix,
            "home/solar"
        );
        // The password of a URL never appears in the message.
        let e = config(&[("ENVOY_HOST", "https://me:hunter2@10.0.0.2")]).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn shipped_settings_file_uncommented_gives_the_defaults_it_documents() {
        let shipped = include_str!("../packaging/envoy2mqtt.default");
        let uncommented: String = shipped
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest)
                    if rest.starts_with(|c: char| c.is_ascii_uppercase()) && rest.contains('=') =>
                {
                    rest
                }
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let mut s = Sources::default();
        s.file("envoy2mqtt.default", &uncommented).unwrap();
        let c = s.validate().unwrap();
        assert_eq!(c.describe(), config(&[]).unwrap().describe());
        let set = uncommented
            .lines()
            .filter(|l| l.contains('=') && !l.starts_with('#'));
        // Every setting but STATE_DIR (the unit sets it) and the three for tests only.
        let set = set.count();
        assert_eq!(set, SETTINGS.len() - 4, "every setting is in the file");
    }

    #[test]
    fn every_setting_is_documented_and_in_the_shipped_files() {
        let docs = include_str!("../docs/settings.md");
        let default = include_str!("../packaging/envoy2mqtt.default");
        let uci = include_str!("../openwrt/envoy2mqtt/files/envoy2mqtt.config");
        let init = include_str!("../openwrt/envoy2mqtt/files/envoy2mqtt.init");
        for s in SETTINGS {
            assert!(
                docs.contains(&format!("| `{}` |", s.name)),
                "docs/settings.md: {}",
                s.name
            );
            if s.help == "for tests only" || s.name.starts_with("ENPHASE_CA") {
                continue;
            }
            if s.name != "STATE_DIR" {
                assert!(
                    default.contains(&format!("{}=", s.name)),
                    "envoy2mqtt.default: {}",
                    s.name
                );
            }
            // OpenWrt keeps the zone in /etc/TZ, which the bridge reads itself.
            if s.name == "TZ" {
                continue;
            }
            let option = s.name.to_lowercase();
            assert!(
                uci.contains(&format!("option {option} ")),
                "UCI file: {option}"
            );
            assert!(init.contains(&option), "init script: {option}");
        }
    }

    #[test]
    fn file_and_environment_alike() {
        // A byte-order mark does not swallow the first setting; values are trimmed in both.
        let mut s = Sources::default();
        s.file("f", "\u{feff}ENVOY_HOST=10.0.0.7 \nMQTT_PORT= 1884\n")
            .unwrap();
        s.environment(|k| (k == "MQTT_HOST").then(|| " broker.lan ".to_string()));
        let c = s.validate().unwrap();
        assert_eq!(c.envoy.url, "https://10.0.0.7");
        assert_eq!((c.mqtt.host.as_str(), c.mqtt.port), ("broker.lan", 1884));
    }

    #[test]
    fn precedence_is_flag_env_file_default() {
        let mut s = Sources::default();
        s.flag("mqtt-host", "from-flag".into()).unwrap();
        s.environment(|k| match k {
            "MQTT_HOST" | "MQTT_PORT" => Some("1884".into()),
            _ => None,
        });
        s.file(
            "f.env",
            "# comment\nMQTT_HOST=from-file\nMQTT_PORT=1999\nexport MQTT_USERNAME=\"bob\"\nMQTT_TOPIC_PREFIX='solar'\nOTHER_THING=1\n",
        )
        .unwrap();
        let c = s.validate().unwrap();
        assert_eq!(c.mqtt.host, "from-flag");
        assert_eq!(c.mqtt.port, 1884);
        assert_eq!(c.mqtt.username.as_deref(), Some("bob"));
        assert_eq!(c.mqtt.prefix, "solar");
        assert_eq!(s.origin("MQTT_HOST"), Origin::Flag);
        assert_eq!(s.origin("MQTT_PORT"), Origin::Env);
        assert_eq!(s.origin("MQTT_USERNAME"), Origin::File("f.env".into(), 4));
        assert_eq!(s.origin("LOG_LEVEL"), Origin::Default);
    }

    #[test]
    fn file_errors() {
        let cases = [
            (
                "MQTT_HOTS=x\n",
                "MQTT_HOTS in f line 1",
                "did you mean MQTT_HOST?",
            ),
            (
                "ENVOY_WHATEVER_ELSE=x\n",
                "ENVOY_WHATEVER_ELSE",
                "remove it",
            ),
            ("just words\n", "--config f line 1", "NAME=value"),
            (
                "mqtt_host=x\n",
                "mqtt_host in f line 1 is in lower case",
                "write it MQTT_HOST",
            ),
            (
                "mqtt_hots=x\n",
                "mqtt_hots in f line 1",
                "did you mean MQTT_HOST?",
            ),
        ];
        for (text, problem, fix) in cases {
            let e = Sources::default().file("f", text).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(problem) && msg.contains(fix), "{msg}");
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn secrets_are_refused_as_flags_and_hidden() {
        for flag in ["envoy-token", "enphase-password", "mqtt-password"] {
            let e = Sources::default().flag(flag, "hunter2".into()).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(!e.to_string().contains("hunter2"));
            assert!(e.to_string().contains("environment"), "{e}");
        }
        let e = Sources::default().flag("no-such", "x".into()).unwrap_err();
        assert!(e.to_string().contains("unknown option --no-such"));
        let c = config(&[("MQTT_PASSWORD", "hunter2"), ("ENVOY_TOKEN", "tok")]).unwrap();
        let shown = format!("{c:?} {:?}", c.describe());
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok\""),
            "{shown}"
        );
    }

    #[test]
    fn intervals() {
        let cases = [
            ("1", Some(1000)),
            ("0.5", Some(500)),
            ("90s", Some(90_000)),
            ("5m", Some(300_000)),
            ("250ms", Some(250)),
            ("0", None),
        ];
        for (text, want) in cases {
            let got = interval("X", text, Duration::from_millis(100), true).unwrap();
            assert_eq!(got.map(|d| d.as_millis() as u64), want, "{text}");
        }
        for (text, words) in [
            ("1e9", "out of range"),
            ("-5", "out of range"),
            ("2d", "out of range"),
            ("50ms", "out of range"),
            ("often", "not a duration"),
            ("NaN", "not a duration"),
        ] {
            let e = interval("X", text, Duration::from_millis(100), true).unwrap_err();
            assert!(e.to_string().contains(words), "{text}: {e}");
        }
        let e = config(&[("TZ", "Europe/Pariss")]).unwrap_err().to_string();
        assert!(
            e.contains("neither a POSIX TZ string") && !e.contains("integer"),
            "{e}"
        );
    }
}
