//! Every MQTT topic of the product, in one place (docs/topics.md): `P` is
//! `MQTT_TOPIC_PREFIX`, `S` the Envoy's serial, `H` Home Assistant's discovery prefix.
//! Changing the topic scheme means changing this file only. Pure.

/// `P/S/{path}`: a value (`data/…`, `raw/…`, `production/daily`, …) or a state topic.
pub fn device(prefix: &str, serial: &str, path: &str) -> String {
    format!("{prefix}/{serial}/{path}")
}

/// `P/S/{group}/{name}`, or `P/S/{name}` without a group.
pub fn value(prefix: &str, serial: &str, group: &str, name: &str) -> String {
    if group.is_empty() {
        device(prefix, serial, name)
    } else {
        format!("{prefix}/{serial}/{group}/{name}")
    }
}

/// `P/S/data/{name}`.
pub fn data(prefix: &str, serial: &str, name: &str) -> String {
    value(prefix, serial, "data", name)
}

/// `P/S/status`: whether the bridge runs (its last will says `offline`).
pub fn availability(prefix: &str, serial: &str) -> String {
    device(prefix, serial, "status")
}

/// `P/S/envoy`: whether the Envoy answers.
pub fn envoy(prefix: &str, serial: &str) -> String {
    device(prefix, serial, "envoy")
}

/// `P/S/ledger`: the ledger's state, retained.
pub fn ledger(prefix: &str, serial: &str) -> String {
    device(prefix, serial, "ledger")
}

/// `P/S/ledger/probe`: marks the end of the retained messages at a restore.
pub fn probe(prefix: &str, serial: &str) -> String {
    device(prefix, serial, "ledger/probe")
}

/// `P/status`: the bridge's JSON status.
pub fn status(prefix: &str) -> String {
    format!("{prefix}/status")
}

/// `P/command/+`: what the bridge subscribes to for commands.
pub fn commands(prefix: &str) -> String {
    format!("{prefix}/command/+")
}

/// The command's name when `topic` is `P/command/{name}`.
pub fn command<'t>(prefix: &str, topic: &'t str) -> Option<&'t str> {
    topic.strip_prefix(prefix)?.strip_prefix("/command/")
}

/// `H/status`: Home Assistant's birth and will.
pub fn home_assistant(ha_prefix: &str) -> String {
    format!("{ha_prefix}/status")
}

/// `H/{component}/{node}/{field}/config`: an entity's discovery config.
pub fn discovery(ha_prefix: &str, component: &str, node: &str, field: &str) -> String {
    format!("{ha_prefix}/{component}/{node}/{field}/config")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_of_the_scheme() {
        let (p, s) = ("envoy", "122238082763");
        let cases = [
            (
                value(p, s, "raw", "prod_eim_wNow"),
                "envoy/122238082763/raw/prod_eim_wNow",
            ),
            (value(p, s, "", "max_power"), "envoy/122238082763/max_power"),
            (data(p, s, "timestamp"), "envoy/122238082763/data/timestamp"),
            (availability(p, s), "envoy/122238082763/status"),
            (envoy(p, s), "envoy/122238082763/envoy"),
            (ledger(p, s), "envoy/122238082763/ledger"),
            (probe(p, s), "envoy/122238082763/ledger/probe"),
            (status(p), "envoy/status"),
            (commands("home/solar"), "home/solar/command/+"),
            (home_assistant("homeassistant"), "homeassistant/status"),
            (
                discovery("ha", "sensor", "envoy2mqtt_1", "prod_eim_wNow"),
                "ha/sensor/envoy2mqtt_1/prod_eim_wNow/config",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
        assert_eq!(command("envoy", "envoy/command/sync"), Some("sync"));
        assert_eq!(command("envoy", "envoyx/command/sync"), None);
        assert_eq!(command("envoy", "other/command/sync"), None);
    }
}
