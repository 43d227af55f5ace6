//! Running as a Home Assistant App: the Supervisor sets `SUPERVISOR_TOKEN` and writes the
//! owner's options to `/data/options.json` (`APP_DATA_DIR` names another folder, for
//! tests). The options are the settings under their snake_case names (`envoy_host` is
//! `ENVOY_HOST`), taken like a settings file's lines: the environment wins over them, and
//! they are validated the same way. The state goes to the data folder, which the
//! Supervisor keeps across updates and puts in Home Assistant's backups.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::sources::{Origin, Sources};
use super::table::{closest, setting};
use crate::error::{Error, Result};

/// The largest options file: a few hundred bytes; more is not the Supervisor's.
const MAX_OPTIONS: u64 = 64 * 1024;

/// The App's data folder, when the program runs as an App: `SUPERVISOR_TOKEN` set and an
/// options file in `APP_DATA_DIR` (default `/data`).
pub fn data_dir(env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env("SUPERVISOR_TOKEN").filter(|t| !t.trim().is_empty())?;
    let dir = PathBuf::from(env("APP_DATA_DIR").unwrap_or_else(|| "/data".into()));
    dir.join("options.json").is_file().then_some(dir)
}

impl Sources {
    /// Takes the App's options from `dir/options.json`, and `STATE_DIR` as `dir`.
    pub fn app(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join("options.json");
        let bad = |problem: String| {
            Error::config(
                "options.json",
                problem,
                "save the App's options again in Home Assistant (Settings → Apps → envoy2mqtt → Configuration)",
            )
        };
        let meta = std::fs::metadata(&path)
            .map_err(|e| bad(format!("{} cannot be read ({e})", path.display())))?;
        if meta.len() > MAX_OPTIONS {
            return Err(bad(format!("{} is larger than 64 KiB", path.display())));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| bad(format!("{} cannot be read ({e})", path.display())))?;
        self.app_options(&path.display().to_string(), &text)?;
        if let Some(state) = setting("STATE_DIR") {
            self.offer(state, dir.display().to_string(), Origin::App);
        }
        Ok(())
    }

    /// The broker the Supervisor offers, where nothing above names one.
    pub fn app_broker(&mut self, host: &str, port: u16, login: Option<(&str, &str)>, tls: bool) {
        let mut offer = |name: &str, value: String| {
            if let Some(s) = setting(name) {
                self.offer(s, value, Origin::App);
            }
        };
        offer("MQTT_HOST", host.to_string());
        offer("MQTT_PORT", port.to_string());
        offer("MQTT_TLS", tls.to_string());
        if let Some((user, password)) = login {
            offer("MQTT_USERNAME", user.to_string());
            offer("MQTT_PASSWORD", password.to_string());
        }
    }

    /// The options of an App (a JSON object of snake_case setting names): strings, numbers
    /// and booleans are a setting's text; an empty string or `null` is an option left unset.
    pub fn app_options(&mut self, path: &str, text: &str) -> Result<()> {
        let fix = "save the App's options again in Home Assistant (Settings → Apps → envoy2mqtt → Configuration)";
        let Ok(Value::Object(options)) = serde_json::from_str::<Value>(text) else {
            return Err(Error::config(
                "options.json",
                format!("{path} is not a JSON object of options"),
                fix,
            ));
        };
        for (key, value) in options {
            let name = key.to_ascii_uppercase();
            let Some(s) = setting(&name).filter(|_| key.bytes().all(|b| !b.is_ascii_uppercase()))
            else {
                let near =
                    closest(&name).map(|n| format!(" (did you mean {}?)", n.to_ascii_lowercase()));
                return Err(Error::config(
                    &key.chars().take(40).collect::<String>(),
                    format!("is not an option of envoy2mqtt{}", near.unwrap_or_default()),
                    "remove it from the App's options (docs: the App's Documentation tab)",
                ));
            };
            let text = match value {
                Value::Null => continue,
                Value::String(t) if t.trim().is_empty() => continue,
                Value::String(t) => t.trim().to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Array(_) | Value::Object(_) => {
                    return Err(Error::config(
                        &key,
                        "is a list or an object in the App's options, where a value is expected",
                        fix,
                    ));
                }
            };
            self.offer(s, text, Origin::App);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_settings_under_snake_case_names() {
        let mut s = Sources::default();
        s.app_options(
            "/data/options.json",
            r#"{"envoy_host":"192.168.1.20","envoy_token":"","mqtt_port":1884,"ha_discovery":false,
                "offpeak_hours":" 22:00-06:00 ","enphase_password":null,"envoy_timeout_seconds":2.5}"#,
        )
        .unwrap();
        for (name, want) in [
            ("ENVOY_HOST", Some("192.168.1.20")),
            ("ENVOY_TOKEN", None),
            ("MQTT_PORT", Some("1884")),
            ("HA_DISCOVERY", Some("false")),
            ("OFFPEAK_HOURS", Some("22:00-06:00")),
            ("ENPHASE_PASSWORD", None),
            ("ENVOY_TIMEOUT_SECONDS", Some("2.5")),
        ] {
            assert_eq!(s.get(name), want, "{name}");
        }
        assert_eq!(s.origin("ENVOY_HOST"), Origin::App);
        // The environment wins over the options, as over a settings file.
        s.environment(|k| (k == "ENVOY_HOST").then(|| "10.0.0.9".to_string()));
        assert_eq!(s.get("ENVOY_HOST"), Some("10.0.0.9"));
    }

    #[test]
    fn options_that_cannot_be_settings_are_refused_naming_them() {
        for (text, key, words) in [
            (
                r#"{"envoy_hots":"x"}"#,
                "envoy_hots",
                "did you mean envoy_host?",
            ),
            (r#"{"ENVOY_HOST":"x"}"#, "ENVOY_HOST", "is not an option"),
            (
                r#"{"mqtt_port":[1883]}"#,
                "mqtt_port",
                "is a list or an object",
            ),
            ("[1, 2]", "options.json", "is not a JSON object"),
            ("{", "options.json", "is not a JSON object"),
        ] {
            let e = Sources::default().app_options("o.json", text).unwrap_err();
            let Error::Config {
                setting, problem, ..
            } = &e
            else {
                panic!("{e}");
            };
            assert_eq!(setting, key, "{text}");
            assert!(problem.contains(words), "{text}: {e}");
        }
    }

    #[test]
    fn the_app_is_known_by_its_token_and_its_options_file() {
        let dir = std::env::temp_dir().join(format!("envoy2mqtt-app-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display().to_string();
        let env = |token: Option<&str>| {
            let d = d.clone();
            let token = token.map(str::to_string);
            move |k: &str| match k {
                "SUPERVISOR_TOKEN" => token.clone(),
                "APP_DATA_DIR" => Some(d.clone()),
                _ => None,
            }
        };
        assert_eq!(data_dir(env(Some("t"))), None, "no options file yet");
        std::fs::write(dir.join("options.json"), "{}").unwrap();
        assert_eq!(data_dir(env(Some("t"))), Some(dir.clone()));
        assert_eq!(data_dir(env(None)), None, "not under the Supervisor");
        assert_eq!(data_dir(env(Some(" "))), None);
        let mut s = Sources::default();
        s.app(&dir).unwrap();
        assert_eq!(s.get("STATE_DIR"), Some(d.as_str()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
