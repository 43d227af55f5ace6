//! The validated configuration: the typed [`Config`] that every room is handed, built once
//! by [`validate`](super::validate). Secrets are kept in [`Secret`], whose `Debug` hides them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::time::offpeak;
use crate::time::zone::Zone;

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
    /// The interface index of an IPv6 address's zone (`[fe80::1%eth0]`), which URLs cannot carry.
    pub scope: Option<u32>,
    /// How long one request may take, from the name lookup to the last byte.
    pub timeout: Duration,
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
    /// What is accepted but worth a warning in the log (a key given twice, a long client id).
    pub warnings: Vec<String>,
    pub envoy: EnvoyConfig,
    pub mqtt: MqttConfig,
    /// `None` when the raw topics are disabled.
    pub raw_interval: Option<Duration>,
    pub data_interval: Duration,
    /// `None` when the microinverters are not read one by one.
    pub inverter_interval: Option<Duration>,
    pub ha_discovery: bool,
    pub ha_prefix: String,
    pub offpeak: Vec<offpeak::Window>,
    pub state_dir: PathBuf,
    /// The zone of day boundaries, parsed once.
    pub zone: Zone,
    /// `TZ` as given, for reports.
    pub tz: Option<String>,
    pub log_level: log::LevelFilter,
    /// A time on each log line; `None`: unless systemd's journal takes the output.
    pub log_timestamps: Option<bool>,
}
