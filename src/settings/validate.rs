//! Validation (ripgrep's "high-level arguments"): the raw [`Sources`] checked group by
//! group into a typed [`Config`]. A bad value is an [`Error::Config`] that names the
//! setting, the problem and the fix.

use std::path::PathBuf;
use std::time::Duration;

use super::config::{Config, EnvoyConfig, Format, MqttConfig, Secret, TlsVerify};
use super::parsers::{
    envoy_url, host, https_url, interval, jwt_shaped, parse_bool, parse_fingerprint, shown,
    topic_level,
};
use super::sources::Sources;
use super::table::setting;
use crate::error::{Error, Result};
use crate::time::offpeak;
use crate::time::zone::Zone;

impl Sources {
    /// Validates every value into a [`Config`], group by group.
    pub fn validate(&self) -> Result<Config> {
        let v = Values(self);
        let envoy = envoy(&v)?;
        let mqtt = mqtt(&v)?;
        let (raw_interval, data_interval) = intervals(&v)?;
        let inverter_interval = interval(
            "INVERTER_INTERVAL_SECONDS",
            &v.text("INVERTER_INTERVAL_SECONDS"),
            // The microinverters report every 5 minutes: faster only loads the Envoy.
            Duration::from_secs(60),
            Some("the per-inverter topics"),
        )?;
        let mut warnings = self.warnings();
        if let Some(id) = mqtt.client_id.as_ref().filter(|id| id.len() > 23) {
            warnings.push(format!(
                "MQTT_CLIENT_ID is {} bytes long: brokers that keep to MQTT 3.1.1's 23-byte limit refuse it (mosquitto takes it)",
                id.len()
            ));
        }
        Ok(Config {
            warnings,
            envoy,
            mqtt,
            raw_interval,
            data_interval,
            inverter_interval,
            ha_discovery: v.boolean("HA_DISCOVERY")?,
            ha_prefix: topic_level("HA_DISCOVERY_PREFIX", &v.text("HA_DISCOVERY_PREFIX"))?,
            offpeak: offpeak(&v)?,
            state_dir: state_dir(&v)?,
            // Parsed once, here: `TZ`, else the system's zone (`/etc/TZ`, `/etc/localtime`).
            zone: Zone::system(v.get("TZ"))?,
            tz: v.get("TZ").map(str::to_string),
            log_level: log_level(&v)?,
            log_timestamps: match v.text("LOG_TIMESTAMPS").to_lowercase().as_str() {
                "auto" => None,
                _ => Some(v.boolean("LOG_TIMESTAMPS")?),
            },
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

    /// A PEM file's path, checked now rather than at the first connect: readable, and
    /// holding a PEM block whose label ends with `label` (`CERTIFICATE`, `PRIVATE KEY`).
    fn file(&self, name: &str, label: &str) -> Result<Option<PathBuf>> {
        use std::io::Read;
        let Some(p) = self.get(name) else {
            return Ok(None);
        };
        let path = PathBuf::from(p);
        let mut text = String::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(1 << 20).read_to_string(&mut text))
            .map_err(|e| {
                Error::config(
                    name,
                    format!("names {}, which cannot be read as text ({e})", shown(p)),
                    "give the path of a readable PEM file",
                )
            })?;
        let pem = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("-----BEGIN "))
            .any(|l| l.trim_end_matches('-').ends_with(label));
        if !pem {
            return Err(Error::config(
                name,
                format!("names {}, which holds no PEM {label}", shown(p)),
                format!("give a PEM file with a -----BEGIN ...{label}----- block"),
            ));
        }
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
            .ok_or_else(|| Error::config(name, format!("is '{}'", shown(&given)), fix))
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
    if let Some(token) = v.get("ENVOY_TOKEN").filter(|t| !jwt_shaped(t)) {
        return Err(Error::config(
            "ENVOY_TOKEN",
            format!(
                "is not a token: {} characters that are not three base64url parts joined by dots",
                token.len()
            ),
            "paste the whole token from https://entrez.enphaseenergy.com (it starts with eyJ), or set ENPHASE_USERNAME and ENPHASE_PASSWORD instead",
        ));
    }
    let at = envoy_url(&v.text("ENVOY_HOST"))?;
    Ok(EnvoyConfig {
        url: at.url,
        scope: at.scope,
        timeout: envoy_timeout(v)?,
        serial,
        token: v.secret("ENVOY_TOKEN"),
        username,
        password,
        tls_verify,
        cert_sha256,
        login_url: https_url("ENPHASE_LOGIN_URL", &v.text("ENPHASE_LOGIN_URL"))?,
        token_url: https_url("ENPHASE_TOKEN_URL", &v.text("ENPHASE_TOKEN_URL"))?,
        cloud_ca: v.file("ENPHASE_CA_CERT", "CERTIFICATE")?,
    })
}

/// The broker group: address, login, topics, QoS, payloads, TLS.
fn mqtt(v: &Values) -> Result<MqttConfig> {
    let tls = v.boolean("MQTT_TLS")?;
    paired(
        ("MQTT_CLIENT_CERT", v.get("MQTT_CLIENT_CERT").is_some()),
        ("MQTT_CLIENT_KEY", v.get("MQTT_CLIENT_KEY").is_some()),
        "mutual TLS needs both the client certificate and its key",
    )?;
    let client_cert = v.file("MQTT_CLIENT_CERT", "CERTIFICATE")?;
    let client_key = v.file("MQTT_CLIENT_KEY", "PRIVATE KEY")?;
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
        client_id: client_id(v)?,
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
        ca_cert: v.file("MQTT_CA_CERT", "CERTIFICATE")?,
        client_cert,
        client_key,
        tls_insecure: v.boolean("MQTT_TLS_INSECURE")?,
    })
}

/// `ENVOY_TIMEOUT_SECONDS`: at most 10 s, so that one request never outlasts half the
/// broker's 30 s keep-alive (the session is tended between requests); at least 2 s, which a
/// busy Envoy needs.
fn envoy_timeout(v: &Values) -> Result<Duration> {
    let name = "ENVOY_TIMEOUT_SECONDS";
    let value = v.text(name);
    let t = interval(name, &value, Duration::from_secs(2), None)?.expect("zero refused");
    if t > Duration::from_secs(10) {
        return Err(Error::config(
            name,
            format!("'{}' is out of range (2 to 10 s)", shown(&value)),
            "give 2 to 10 seconds: a longer request would outlast the broker's keep-alive",
        ));
    }
    Ok(t)
}

/// The two periods: raw (`None` when off) and data, the data poll never the faster one.
fn intervals(v: &Values) -> Result<(Option<Duration>, Duration)> {
    let min = Duration::from_millis(100);
    let raw = interval(
        "RAW_DATA_INTERVAL_SECONDS",
        &v.text("RAW_DATA_INTERVAL_SECONDS"),
        min,
        Some("the raw topics"),
    )?;
    let data = interval(
        "DATA_INTERVAL_SECONDS",
        &v.text("DATA_INTERVAL_SECONDS"),
        min,
        None,
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

/// `MQTT_CLIENT_ID`: at most 65,535 bytes, MQTT's limit for a string (more than 23 is a
/// warning, for old brokers).
fn client_id(v: &Values) -> Result<Option<String>> {
    let id = v.optional("MQTT_CLIENT_ID");
    if let Some(id) = id.as_ref().filter(|id| id.len() > usize::from(u16::MAX)) {
        return Err(Error::config(
            "MQTT_CLIENT_ID",
            format!("is {} bytes long", id.len()),
            "use at most 65,535 bytes (at most 23 letters and digits for every broker), or leave it empty for envoy2mqtt_{serial}",
        ));
    }
    Ok(id)
}

/// `STATE_DIR`: an absolute path (a relative one would move with the working directory).
fn state_dir(v: &Values) -> Result<PathBuf> {
    let dir = PathBuf::from(v.text("STATE_DIR"));
    if !dir.is_absolute() {
        return Err(Error::config(
            "STATE_DIR",
            format!("'{}' is not an absolute path", shown(&v.text("STATE_DIR"))),
            "give the folder from / (such as /var/lib/envoy2mqtt)",
        ));
    }
    Ok(dir)
}

fn offpeak(v: &Values) -> Result<Vec<offpeak::Window>> {
    let Some(text) = v.get("OFFPEAK_HOURS") else {
        return Ok(Vec::new());
    };
    offpeak::parse(text).map_err(|problem| {
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
