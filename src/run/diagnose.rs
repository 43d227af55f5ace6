//! `--diagnose DIR`: saves the Envoy's raw answers for a bug report, named and shaped like
//! the shared fixtures (`ivp_meters_readings` + `ivp_meters_readings_log.json`), so the
//! simulated Envoy can serve them back. The token and the session cookie are redacted.

use std::path::Path;

use crate::envoy::{Envoy, Reply};
use crate::error::{Error, Result};
use crate::settings::Config;
use serde_json::{Map, Value};

/// The endpoints saved, in order.
pub const ENDPOINTS: &[&str] = &[
    "/ivp/meters",
    "/ivp/meters/readings",
    "/api/v1/production",
    "/api/v1/production/inverters",
    "/production.json?details=1",
    "/ivp/meters/reports/consumption",
];

/// The fixture file name of an endpoint: `/ivp/meters` is `ivp_meters`.
pub fn file_name(path: &str) -> String {
    path.trim_start_matches('/').replace(['/', '?', '='], "_")
}

fn redact(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| s.len() >= 8)
        .fold(text.to_string(), |t, s| t.replace(s.as_str(), "REDACTED"))
}

fn save(dir: &Path, name: &str, reply: &Reply, secrets: &[String]) -> Result<()> {
    let headers: Vec<(String, String)> = reply
        .headers
        .iter()
        .map(|(k, v)| {
            let v = if k.eq_ignore_ascii_case("set-cookie") {
                "REDACTED".to_string()
            } else {
                redact(v, secrets)
            };
            (k.clone(), v)
        })
        .collect();
    let write = |file: &str, data: String| {
        let path = dir.join(file);
        std::fs::write(&path, data).map_err(|e| Error::file("write", &path, &e))
    };
    write(name, redact(&reply.body, secrets))?;
    write(
        &format!("{name}_log.json"),
        reply_log(reply.status, &headers),
    )
}

/// Saves every endpoint's answer into `dir`; an endpoint that fails is noted and skipped.
pub fn run(config: &Config, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file("create the folder", dir, &e))?;
    let mut envoy = Envoy::connect(config)?;
    envoy.keep_headers = true;
    let info = envoy.request("/info", None)?;
    let mut secrets: Vec<String> = config
        .envoy
        .token
        .iter()
        .map(|t| t.expose().to_string())
        .collect();
    if let Some(t) = envoy.token() {
        secrets.push(t.jwt.expose().to_string());
    }
    save(dir, "info", &info, &secrets)?;
    for path in ENDPOINTS {
        match envoy.get(path) {
            Ok(reply) => {
                if let Some(t) = envoy.token() {
                    secrets.push(t.jwt.expose().to_string());
                }
                save(dir, &file_name(path), &reply, &secrets)?;
                eprintln!("saved {path}: HTTP {}", reply.status);
            }
            Err(e) => eprintln!("skipped {path}: {e}"),
        }
    }
    eprintln!(
        "answers saved in {} (token and session cookie redacted)",
        dir.display()
    );
    Ok(())
}

/// The `_log.json` of a `--diagnose` capture, in the fixtures' format: `{"headers", "code"}`.
pub fn reply_log(status: u16, headers: &[(String, String)]) -> String {
    let headers: Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    let log = serde_json::json!({"headers": headers, "code": status});
    serde_json::to_string_pretty(&log).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_redaction() {
        assert_eq!(file_name("/ivp/meters/readings"), "ivp_meters_readings");
        assert_eq!(
            file_name("/production.json?details=1"),
            "production.json_details_1"
        );
        let secrets = ["eyJhbGciOiJFUzI1NiJ9.x.y".to_string(), "short".to_string()];
        assert_eq!(
            redact("a eyJhbGciOiJFUzI1NiJ9.x.y b short", &secrets),
            "a REDACTED b short"
        );
    }
}
