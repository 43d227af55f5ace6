//! The settings table (docs/settings.md): every setting's name, default, help line and how
//! `--check` shows its value. The parser, `validate`, `describe`, `--help`, and the tests
//! that keep the shipped settings file, the UCI file and the OpenWrt init script in step
//! all read it: a new setting is one row here plus its validation in `validate`. Pure.

use std::path::PathBuf;
use std::time::Duration;

use super::config::{Config, Secret};
use super::parsers::hex;

/// One setting the program knows.
pub struct Setting {
    pub name: &'static str,
    pub default: &'static str,
    pub secret: bool,
    pub help: &'static str,
    /// The effective value, as `--check` shows it (a secret only as `(set)`).
    pub show: fn(&Config) -> String,
}

const fn s(
    name: &'static str,
    default: &'static str,
    help: &'static str,
    show: fn(&Config) -> String,
) -> Setting {
    Setting {
        name,
        default,
        secret: false,
        help,
        show,
    }
}

const fn secret(name: &'static str, help: &'static str, show: fn(&Config) -> String) -> Setting {
    Setting {
        name,
        default: "",
        secret: true,
        help,
        show,
    }
}

/// Every setting, in the order `--help` and `--check` show them. An empty default means none.
pub const SETTINGS: &[Setting] = &[
    s(
        "ENVOY_HOST",
        "envoy.local",
        "Envoy address: host, IP or URL (https:// assumed)",
        |c| c.envoy.url.clone(),
    ),
    s(
        "ENVOY_SERIAL",
        "",
        "gateway serial (read from /info when empty)",
        |c| or_none(&c.envoy.serial),
    ),
    secret(
        "ENVOY_TOKEN",
        "a JWT pasted by the user; wins over the cloud login",
        |c| set(&c.envoy.token),
    ),
    s(
        "ENPHASE_USERNAME",
        "",
        "Enlighten account e-mail, for obtaining tokens",
        |c| or_none(&c.envoy.username),
    ),
    secret("ENPHASE_PASSWORD", "Enlighten account password", |c| {
        set(&c.envoy.password)
    }),
    s(
        "ENVOY_TLS_VERIFY",
        "warn",
        "Envoy certificate: warn, pin or none",
        |c| format!("{:?}", c.envoy.tls_verify).to_lowercase(),
    ),
    s(
        "ENVOY_CERT_SHA256",
        "",
        "SHA-256 fingerprint of the Envoy certificate, for pin",
        |c| c.envoy.cert_sha256.map_or("(none)".into(), |f| hex(&f)),
    ),
    s(
        "ENVOY_TIMEOUT_SECONDS",
        "10",
        "how long one Envoy request may take (2 to 10)",
        |c| secs(c.envoy.timeout),
    ),
    s("MQTT_HOST", "localhost", "broker host", |c| {
        c.mqtt.host.clone()
    }),
    s(
        "MQTT_PORT",
        "",
        "broker port (1883, or 8883 with MQTT_TLS)",
        |c| c.mqtt.port.to_string(),
    ),
    s("MQTT_USERNAME", "", "broker user", |c| {
        or_none(&c.mqtt.username)
    }),
    secret("MQTT_PASSWORD", "broker password", |c| {
        set(&c.mqtt.password)
    }),
    s(
        "MQTT_CLIENT_ID",
        "",
        "MQTT client id (envoy2mqtt-<serial>)",
        |c| or_none(&c.mqtt.client_id),
    ),
    s(
        "MQTT_TOPIC_PREFIX",
        "envoy",
        "first topic level (alias MQTT_BASE_TOPIC)",
        |c| c.mqtt.prefix.clone(),
    ),
    s("MQTT_QOS", "1", "QoS of state messages: 0, 1 or 2", |c| {
        c.mqtt.qos.to_string()
    }),
    s("MQTT_RETAIN", "true", "retain state messages", |c| {
        c.mqtt.retain.to_string()
    }),
    s(
        "MQTT_FORMAT",
        "simple",
        "payloads: simple (bare value) or json",
        |c| format!("{:?}", c.mqtt.format).to_lowercase(),
    ),
    s("MQTT_TLS", "false", "TLS to the broker", |c| {
        c.mqtt.tls.to_string()
    }),
    s(
        "MQTT_CA_CERT",
        "",
        "PEM file of the CA that signed the broker certificate",
        |c| path(&c.mqtt.ca_cert),
    ),
    s(
        "MQTT_CLIENT_CERT",
        "",
        "PEM client certificate, for mutual TLS",
        |c| path(&c.mqtt.client_cert),
    ),
    s(
        "MQTT_CLIENT_KEY",
        "",
        "PEM client key, for mutual TLS",
        |c| path(&c.mqtt.client_key),
    ),
    s(
        "MQTT_TLS_INSECURE",
        "false",
        "accept any broker certificate",
        |c| c.mqtt.tls_insecure.to_string(),
    ),
    s(
        "RAW_DATA_INTERVAL_SECONDS",
        "1",
        "fast poll period; 0 disables the raw topics",
        |c| c.raw_interval.map_or("0 (raw topics off)".into(), secs),
    ),
    s("DATA_INTERVAL_SECONDS", "60", "full poll period", |c| {
        secs(c.data_interval)
    }),
    s(
        "INVERTER_INTERVAL_SECONDS",
        "300",
        "how often each microinverter is read (at least 60); 0 turns it off",
        |c| c.inverter_interval.map_or("0 (off)".into(), secs),
    ),
    s(
        "HA_DISCOVERY",
        "true",
        "Home Assistant MQTT discovery",
        |c| c.ha_discovery.to_string(),
    ),
    s(
        "HA_DISCOVERY_PREFIX",
        "homeassistant",
        "Home Assistant discovery prefix",
        |c| c.ha_prefix.clone(),
    ),
    s(
        "OFFPEAK_HOURS",
        "",
        "off-peak windows, local time: 22:00-06:00[,...]",
        windows,
    ),
    s(
        "STATE_DIR",
        "/var/lib/envoy2mqtt",
        "token cache, certificate, ledger state",
        |c| c.state_dir.display().to_string(),
    ),
    s(
        "TZ",
        "",
        "time zone for day boundaries (POSIX string or IANA name)",
        |c| or_none(&c.tz),
    ),
    s(
        "LOG_LEVEL",
        "info",
        "error, warn, info, debug or trace",
        |c| c.log_level.to_string().to_lowercase(),
    ),
    s(
        "LOG_TIMESTAMPS",
        "auto",
        "a time on each log line: auto (unless systemd's journal adds its own), true or false",
        |c| match c.log_timestamps {
            None => "auto".into(),
            Some(on) => on.to_string(),
        },
    ),
    s(
        "ENPHASE_LOGIN_URL",
        "https://enlighten.enphaseenergy.com",
        "for tests only",
        |c| c.envoy.login_url.clone(),
    ),
    s(
        "ENPHASE_TOKEN_URL",
        "https://entrez.enphaseenergy.com",
        "for tests only",
        |c| c.envoy.token_url.clone(),
    ),
    s(
        "ENPHASE_CA_CERT",
        "",
        "for tests only: the CA trusted for the cloud instead of the web roots",
        |c| path(&c.envoy.cloud_ca),
    ),
];

/// Old names still accepted, with the setting they stand for.
pub const ALIASES: &[(&str, &str)] = &[("MQTT_BASE_TOPIC", "MQTT_TOPIC_PREFIX")];

fn or_none(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "(none)".into())
}

fn set(v: &Option<Secret>) -> String {
    if v.is_some() { "(set)" } else { "(none)" }.to_string()
}

fn path(v: &Option<PathBuf>) -> String {
    v.as_ref()
        .map_or("(none)".into(), |p| p.display().to_string())
}

fn windows(c: &Config) -> String {
    if c.offpeak.is_empty() {
        return "(none)".into();
    }
    let text: Vec<String> = c.offpeak.iter().map(|w| w.to_string()).collect();
    text.join(",")
}

fn secs(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Config {
    /// The settings as `NAME=value` lines for reports, secrets shown only as `(set)`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        SETTINGS.iter().map(|s| (s.name, (s.show)(self))).collect()
    }
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

pub fn is_ours(key: &str) -> bool {
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
        "LOG_TIMESTAMPS",
    ]
    .iter()
    .any(|p| key.starts_with(p))
}

/// The known setting nearest to a mistyped `key` (at most two edits away).
pub fn closest(key: &str) -> Option<&'static str> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Sources;

    fn defaults() -> Config {
        Sources::default().validate().unwrap()
    }

    #[test]
    fn shipped_settings_file_uncommented_gives_the_defaults_it_documents() {
        let shipped = include_str!("../../packaging/envoy2mqtt.default");
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
        assert_eq!(c.describe(), defaults().describe());
        let set = uncommented
            .lines()
            .filter(|l| l.contains('=') && !l.starts_with('#'));
        // Every setting but STATE_DIR (the unit sets it) and the three for tests only.
        let set = set.count();
        assert_eq!(set, SETTINGS.len() - 4, "every setting is in the file");
    }

    #[test]
    fn every_setting_is_documented_and_in_the_shipped_files() {
        let docs = include_str!("../../docs/settings.md");
        let default = include_str!("../../packaging/envoy2mqtt.default");
        let uci = include_str!("../../openwrt/envoy2mqtt/files/envoy2mqtt.config");
        let init = include_str!("../../openwrt/envoy2mqtt/files/envoy2mqtt.init");
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
}
