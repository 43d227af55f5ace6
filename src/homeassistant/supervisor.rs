//! The Home Assistant Supervisor, for an App: which MQTT broker it offers
//! (`GET {SUPERVISOR_URL}/services/mqtt`, the App's token as a bearer), read once at start
//! and at each reload. The answer's parsing is pure ([`broker`]); [`mqtt_service`] asks.

use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};

/// The broker the Supervisor offers: the Mosquitto broker App's, usually
/// `core-mosquitto:1883` with a user made for this App.
#[derive(Debug, Clone, PartialEq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ssl: bool,
}

/// The `/services/mqtt` answer: `{"result":"ok","data":{"host":…,"port":…,…}}`, the port a
/// number or a string. `None`: the answer holds no broker.
pub fn broker(body: &str) -> Option<Broker> {
    let v: Value = serde_json::from_str(body).ok()?;
    let data = v
        .get("data")
        .filter(|_| v.get("result").is_some_and(|r| r == "ok"))?;
    let text = |k: &str| {
        data.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let port = match data.get("port") {
        Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|p| *p > 0)?;
    Some(Broker {
        host: text("host")?,
        port,
        username: text("username"),
        password: text("password"),
        ssl: data.get("ssl").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// Asks the Supervisor at `url` (`http://supervisor`) for its MQTT service.
pub fn mqtt_service(url: &str, token: &str) -> Result<Broker> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .user_agent(concat!("envoy2mqtt/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent();
    let url = format!("{}/services/mqtt", url.trim_end_matches('/'));
    let response = agent
        .get(&url)
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .map_err(|e| {
            Error::Broker(format!(
                "cannot ask the Supervisor at {url} for the MQTT broker ({e}); restart the App, or set mqtt_host in its options"
            ))
        })?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default();
    match status {
        401 | 403 => Err(Error::config(
            "SUPERVISOR_TOKEN",
            format!("was refused by the Supervisor (HTTP {status} from {url})"),
            "restart the App: the Supervisor gives it a new token at each start",
        )),
        200 => broker(&body).ok_or_else(no_service),
        _ => Err(no_service()),
    }
}

fn no_service() -> Error {
    Error::config(
        "mqtt_host",
        "is not set, and the Supervisor offers no MQTT broker",
        "install the Mosquitto broker App or set mqtt_host",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_supervisors_answer() {
        let mosquitto = Broker {
            host: "core-mosquitto".into(),
            port: 1883,
            username: Some("addons".into()),
            password: Some("Ahq1".into()),
            ssl: false,
        };
        let tls = Broker {
            port: 8883,
            ssl: true,
            ..mosquitto.clone()
        };
        #[rustfmt::skip]
        let cases = [
            (r#"{"result":"ok","data":{"host":"core-mosquitto","port":1883,"ssl":false,"protocol":"3.1.1","username":"addons","password":"Ahq1"}}"#, Some(mosquitto.clone())),
            (r#"{"result":"ok","data":{"host":"core-mosquitto","port":"8883","ssl":true,"username":"addons","password":"Ahq1"}}"#, Some(tls)),
            (r#"{"result":"ok","data":{"host":"core-mosquitto","port":1883}}"#, Some(Broker { username: None, password: None, ..mosquitto.clone() })),
            (r#"{"result":"error","message":"No available service","data":{}}"#, None),
            (r#"{"result":"ok","data":{"host":"","port":1883}}"#, None),
            (r#"{"result":"ok","data":{"host":"h","port":70000}}"#, None),
            (r#"{"result":"ok","data":{"host":"h","port":"x"}}"#, None),
            (r#"{"result":"ok","data":{"host":"h","port":0}}"#, None),
            ("<html>", None),
        ];
        for (body, want) in cases {
            assert_eq!(broker(body), want, "{body}");
        }
    }
}
