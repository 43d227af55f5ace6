//! The Enphase cloud, used only to obtain an Envoy token : the Enlighten
//! login gives a `session_id`, entrez turns it into a JWT for one gateway serial.
//!
//! Verified TLS, with the bundled web roots (or, in tests only, `ENPHASE_CA_CERT`).
//! Nothing secret ever appears in an error.

use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{PemItem, RootCerts, TlsConfig};

use crate::error::{Error, Result};
use crate::settings::{EnvoyConfig, Secret};
use serde_json::Value;

/// One cloud request, from the name lookup to the last byte: a login (two requests) stalls
/// the loop at most 20 s (see the broker session's keep-alive, docs/design.md).
const REQUEST_BUDGET: Duration = Duration::from_secs(10);

/// A client for the two cloud endpoints.
pub struct Cloud {
    agent: ureq::Agent,
    login_url: String,
    token_url: String,
}

fn read(response: ureq::http::Response<ureq::Body>, what: &str) -> Result<(u16, String)> {
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .map_err(|e| Error::Token(format!("{what}: the answer could not be read ({e})")))?;
    Ok((status, body))
}

impl Cloud {
    pub fn new(cfg: &EnvoyConfig) -> Result<Cloud> {
        let roots = match &cfg.cloud_ca {
            None => RootCerts::WebPki,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| Error::file("read", path, &e))?;
                let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                RootCerts::Specific(Arc::new(certs))
            }
        };
        let agent = ureq::Agent::config_builder()
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .http_status_as_error(false)
            .max_redirects(0)
            .https_only(true)
            .timeout_global(Some(REQUEST_BUDGET))
            .user_agent(concat!("envoy2mqtt/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Cloud {
            agent,
            login_url: cfg.login_url.clone(),
            token_url: cfg.token_url.clone(),
        })
    }

    /// Logs in and asks for a token for `serial`.
    pub fn token(&self, username: &str, password: &Secret, serial: &str) -> Result<String> {
        let unreachable = |what: &str, e: ureq::Error| {
            Error::Token(format!(
                "{what} failed ({e}); check the network, or set ENVOY_TOKEN to do without the cloud"
            ))
        };
        let response = self
            .agent
            .post(format!("{}/login/login.json", self.login_url))
            .send_form([
                ("user[email]", username),
                ("user[password]", password.expose()),
            ])
            .map_err(|e| unreachable("the Enlighten login", e))?;
        let (status, body) = read(response, "the Enlighten login")?;
        if status == 401 || status == 403 {
            return Err(Error::Token(format!(
                "Enlighten refused the login (HTTP {status}); check ENPHASE_USERNAME and ENPHASE_PASSWORD"
            )));
        }
        if status != 200 {
            return Err(Error::Token(format!(
                "the Enlighten login answered HTTP {status}; try again later, or set ENVOY_TOKEN"
            )));
        }
        let session = session_id(&body)
            .map_err(Error::Token)?
            .ok_or_else(|| {
                Error::Token(format!(
                    "the Enlighten account (ENPHASE_USERNAME) asks for a second factor (MFA), which envoy2mqtt \
                     cannot answer; create a token at https://entrez.enphaseenergy.com for serial {serial} \
                     and set it as ENVOY_TOKEN"
                ))
            })?;
        let response = self
            .agent
            .post(format!("{}/tokens", self.token_url))
            .header("Content-Type", "application/json")
            .send(token_request(&session, serial, username))
            .map_err(|e| unreachable("the token request", e))?;
        let (status, body) = read(response, "the token request")?;
        if status != 200 {
            return Err(Error::Token(format!(
                "entrez answered HTTP {status} to the token request for serial {serial}; check that \
                 ENVOY_SERIAL is right and that the account owns this Envoy"
            )));
        }
        Ok(body.trim().to_string())
    }
}

/// The Enlighten login answer: `Ok(Some(session_id))`, or `Ok(None)` when the account
/// needs a second factor (no `session_id`).
pub fn session_id(body: &str) -> Result<Option<String>, String> {
    let v: Value = serde_json::from_str(body)
        .map_err(|e| format!("the Enlighten login answer is not the JSON expected: {e}"))?;
    Ok(v.get("session_id")
        .and_then(Value::as_str)
        .map(str::to_string))
}

/// The JSON body of the entrez token request.
pub fn token_request(session_id: &str, serial: &str, username: &str) -> String {
    serde_json::json!({"session_id": session_id, "serial_num": serial, "username": username})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_answers() {
        assert_eq!(
            session_id(r#"{"message":"success","session_id":"abc"}"#),
            Ok(Some("abc".into()))
        );
        assert_eq!(
            session_id(r#"{"message":"success","isBlocked":false}"#),
            Ok(None)
        );
        assert!(session_id("<html>").is_err());
    }
}
