//! The broker as the runs open it: the client id, and for the service the last will, the
//! availability sent at every connect and the command subscriptions, and what of the
//! settings a reload must reconnect for; `--dry-run` prints.

use crate::error::Result;
use crate::mqtt::{Broker, Output, Session, Stdout};
use crate::settings::Config;
use crate::topics::{Composer, commands};

/// `MQTT_CLIENT_ID`, else `envoy2mqtt-<serial>` for the service and
/// `envoy2mqtt-<serial>-once` for `--once`: a broker lets one client per id in, so the two
/// must differ or each would throw the other out.
pub fn client_id(config: &Config, serial: &str, once: bool) -> String {
    let suffix = if once { "-once" } else { "" };
    config
        .mqtt
        .client_id
        .clone()
        .unwrap_or_else(|| format!("envoy2mqtt-{serial}{suffix}"))
}

/// The service's output: stdout with `--dry-run`, else a broker session with the last
/// will, the availability sent at every connect, and the command subscriptions.
pub fn open(config: &Config, serial: &str, dry_run: bool) -> Result<Box<dyn Output>> {
    if dry_run {
        return Ok(Box::new(Stdout));
    }
    if config.mqtt.tls_insecure {
        log::warn!("MQTT_TLS_INSECURE=true: any broker certificate is accepted");
    }
    let p = Composer::new(config, serial);
    let mut session = Session::new(
        &config.mqtt,
        &client_id(config, serial, false),
        Some(&p.availability(false)),
        vec![p.availability(true)],
    )?;
    session.subscribe(commands::subscriptions(
        &config.mqtt.prefix,
        config.ha_discovery.then_some(config.ha_prefix.as_str()),
    ));
    // The service sends the discovery again after a reconnect (`Service::reconnected`).
    if config.ha_discovery {
        session.not_kept(format!("{}/", config.ha_prefix));
    }
    Ok(Box::new(Broker::new(session)))
}

/// `--once`'s output: stdout with `--dry-run`, else a connected session of its own id,
/// without a last will (cron's entities expire instead).
pub fn open_once(config: &Config, serial: &str, dry_run: bool) -> Result<Box<dyn Output>> {
    if dry_run {
        return Ok(Box::new(Stdout));
    }
    let mut session = Session::new(
        &config.mqtt,
        &client_id(config, serial, true),
        None,
        Vec::new(),
    )?;
    session.connect()?;
    Ok(Box::new(Broker::new(session)))
}

/// What the broker session is opened with: a change reconnects (the payloads' format and
/// retain flag are not in it).
#[derive(PartialEq)]
pub struct MqttConfigKey {
    mqtt: crate::settings::MqttConfig,
    ha_discovery: bool,
    ha_prefix: String,
}

impl MqttConfigKey {
    pub fn of(c: &Config) -> MqttConfigKey {
        let mut mqtt = c.mqtt.clone();
        mqtt.format = crate::settings::Format::Simple;
        mqtt.retain = true;
        MqttConfigKey {
            mqtt,
            ha_discovery: c.ha_discovery,
            ha_prefix: c.ha_prefix.clone(),
        }
    }
}
