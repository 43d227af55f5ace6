//! The Envoy client: one ureq agent keeping one keep-alive HTTPS connection,
//! the certificate checked by fingerprint, the token turned into a `sessionId` cookie once
//! by `/auth/check_jwt` and the cookie reused; on 401 the token is checked again before the
//! cloud is asked (rate-limited). Redirects are not followed; timeouts are short.

use std::path::PathBuf;
use std::sync::Arc;

use super::api::info::{self, Info};
use super::auth::token::{self, Keeper, Token};
use super::certificate;
use super::transport::{agent, transport_error};
use crate::error::{Error, Result};
use crate::settings::{Config, EnvoyConfig, TlsVerify};
use crate::tls::{self, Verifier};

/// The largest answer read from the Envoy, by endpoint: the lists of every device (up to
/// a few hundred microinverters, 1 to 2 KB each) get 4 MB, every other answer (a few KB
/// on every Envoy seen) 1 MB. A bigger one is not read: it is reported and dropped.
fn max_body(path: &str) -> usize {
    let lists = [
        "/ivp/pdm/device_data",
        "/api/v1/production/inverters",
        "/inventory.json",
    ];
    if lists.iter().any(|l| path.starts_with(l)) {
        4 * 1024 * 1024
    } else {
        1024 * 1024
    }
}

/// The largest answer buffer kept for the next answer: bigger ones go back to the system.
const KEPT_BUFFER: usize = 256 * 1024;

/// One answer, as received.
pub struct Reply {
    pub status: u16,
    /// Only for `/auth/check_jwt` and with [`Envoy::keep_headers`].
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// How requests are authenticated.
enum Auth {
    /// Firmware before 7: no token.
    Open,
    /// Token known, not yet exchanged for a cookie.
    Token(Token),
    /// `sessionId` cookie from `/auth/check_jwt` (the token kept for renewal).
    Cookie(Token, String),
    /// Token known but the Envoy gave no cookie: bearer on every request.
    Bearer(Token),
}

/// A connection to one Envoy.
pub struct Envoy {
    agent: ureq::Agent,
    url: String,
    verifier: Arc<Verifier>,
    cfg: EnvoyConfig,
    state_dir: PathBuf,
    known_cert: Option<[u8; 32]>,
    pub info: Info,
    pub serial: String,
    keeper: Keeper,
    session: Option<Auth>,
    /// Keep every answer's headers (`--diagnose`); otherwise only the session's.
    pub keep_headers: bool,
    /// The buffer answers are read into, given back after a readings answer is parsed: a
    /// raw tick allocates no new one (musl mapped and unmapped one every tick).
    spare: String,
    /// Called before every request: the service's broker session is tended through a long
    /// poll (the session's `tend`, see docs/design.md).
    tend: Option<Box<dyn FnMut()>>,
    /// Requests answered so far (any status): a raw tick that asked nothing tells nothing.
    answered: u64,
}

impl Envoy {
    /// Builds the agent and reads `/info`.
    pub fn connect(config: &Config) -> Result<Envoy> {
        let cfg = &config.envoy;
        let remembered = certificate::remembered(&config.state_dir);
        let pinned = cfg.cert_sha256.or(remembered);
        let verifier = Arc::new(Verifier::new(cfg.tls_verify, pinned, tls::provider()));
        let mut envoy = Envoy {
            agent: agent(verifier.clone(), cfg.scope, cfg.timeout),
            url: cfg.url.clone(),
            verifier,
            cfg: cfg.clone(),
            state_dir: config.state_dir.clone(),
            known_cert: remembered,
            info: Info {
                serial: String::new(),
                firmware: String::new(),
                part_number: String::new(),
                metered: false,
                web_tokens: false,
            },
            serial: String::new(),
            keeper: Keeper::new(cfg, &config.state_dir, ""),
            session: None,
            keep_headers: false,
            answered: 0,
            spare: String::new(),
            tend: None,
        };
        envoy.read_info()?;
        log::info!(
            "Envoy {} at {}: firmware {}, {}",
            envoy.serial,
            envoy.url,
            envoy.info.firmware,
            envoy.info.model()
        );
        Ok(envoy)
    }

    /// Reads `/info`: the serial (unless `ENVOY_SERIAL` says otherwise), firmware, model.
    fn read_info(&mut self) -> Result<()> {
        let cfg = self.cfg.clone();
        let reply = self.request("/info", None)?;
        if reply.status == 400 && self.url.starts_with("http://") {
            return Err(Error::Envoy(format!(
                "GET {}/info answered HTTP 400: the Envoy wants HTTPS there; write ENVOY_HOST=https://...",
                self.url
            )));
        }
        if reply.status != 200 {
            return Err(Error::Envoy(format!(
                "GET {}/info answered HTTP {}; check that ENVOY_HOST is an Envoy",
                self.url, reply.status
            )));
        }
        self.info = info::parse(&reply.body)
            .map_err(|e| Error::Envoy(format!("{e}; check that ENVOY_HOST is an Envoy")))?;
        self.serial = match &cfg.serial {
            Some(sn) if *sn != self.info.serial => {
                log::warn!(
                    "ENVOY_SERIAL is {sn} but the Envoy says {}; using ENVOY_SERIAL",
                    self.info.serial
                );
                sn.clone()
            }
            _ => self.info.serial.clone(),
        };
        self.keeper = Keeper::new(&cfg, &self.state_dir, &self.serial);
        Ok(())
    }

    /// The Envoy's base URL (`https://host`), for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether a token may be fetched from the cloud now: not in a raw tick, which stays
    /// short (a token that must come from the cloud waits for the next data poll).
    pub fn allow_cloud(&mut self, allowed: bool) {
        self.keeper.cloud_allowed = allowed;
    }

    /// What to call before every request (the service tends its broker session with it).
    pub fn set_tend(&mut self, tend: Option<Box<dyn FnMut()>>) {
        self.tend = tend;
    }

    /// One request with the given `Authorization` / `Cookie` header, no retry, within
    /// `ENVOY_TIMEOUT_SECONDS` from name lookup to the last byte.
    pub fn request(&mut self, path: &str, auth: Option<(&str, String)>) -> Result<Reply> {
        if let Some(tend) = self.tend.as_mut() {
            tend();
        }
        let url = format!("{}{path}", self.url);
        let mut req = self.agent.get(&url).header("Accept", "application/json");
        if let Some((name, value)) = auth {
            req = req.header(name, value);
        }
        let result = req.call();
        let seen = self.verifier.seen();
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                if let (TlsVerify::Pin, Some(pinned)) =
                    (self.cfg.tls_verify, self.verifier.pinned())
                {
                    if matches!(e, ureq::Error::Rustls(_) | ureq::Error::Io(_))
                        && seen != Some(pinned)
                    {
                        return Err(certificate::refused(&self.state_dir, pinned, seen));
                    }
                }
                return Err(transport_error(&self.url, path, e));
            }
        };
        if let Some(seen) = seen.filter(|s| Some(*s) != self.known_cert) {
            // Not remembered is no failed request: the next answer tries again.
            match certificate::remember(&self.state_dir, self.cfg.tls_verify, seen) {
                Ok(_) => self.known_cert = Some(seen),
                Err(e) => log::warn!("{e}"),
            }
        }
        let status = response.status().as_u16();
        // Copied only where read: two allocations a header, at every raw tick otherwise.
        let headers = if self.keep_headers || path == "/auth/check_jwt" {
            response
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect()
        } else {
            Vec::new()
        };
        let mut body = std::mem::take(&mut self.spare);
        body.clear();
        let cap = max_body(path);
        let reader = response
            .into_body()
            .into_with_config()
            .limit(u64::MAX)
            .reader();
        let mut reader = std::io::Read::take(reader, cap as u64 + 1);
        std::io::Read::read_to_string(&mut reader, &mut body)
            .map_err(|e| transport_error(&self.url, path, ureq::Error::Io(e)))?;
        if body.len() > cap {
            // Dropped here, memory and all (the connection, left unread, is not reused).
            drop(body);
            return Err(Error::Envoy(format!(
                "GET {}{path} answered more than {} KB, far more than an Envoy sends there: not read",
                self.url,
                cap / 1024
            )));
        }
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// Gives an answer's buffer back, for the next answer to be read into (a raw tick then
    /// allocates no new one: musl mapped and unmapped one every tick).
    pub fn give_back(&mut self, body: String) {
        if body.capacity() <= KEPT_BUFFER {
            self.spare = body;
        }
    }

    fn needs_token(&self) -> bool {
        self.info.web_tokens || self.info.major() >= 7
    }

    /// The token in use, if any (for reports).
    pub fn token(&self) -> Option<&Token> {
        match self.session.as_ref()? {
            Auth::Open => None,
            Auth::Token(t) | Auth::Cookie(t, _) | Auth::Bearer(t) => Some(t),
        }
    }

    /// At a data poll of the service: a token within 30 days of its end is renewed now,
    /// while it still works, rather than after the Envoy refuses it (an Enlighten outage that
    /// day would stop the data). A failure is a warning; the current token stays.
    pub fn renew_if_due(&mut self) {
        let Some(token) = self.token().cloned() else {
            return;
        };
        if !self.keeper.due(&token, token::now()) {
            return;
        }
        log::info!(
            "the token expires on {}: renewing it now",
            token::date(token.claims.exp)
        );
        match self.keeper.renew_early() {
            // The next request checks the new token with the Envoy.
            Ok(new) => self.session = Some(Auth::Token(new)),
            Err(e) => log::warn!(
                "{e}; the current token stays (valid until {})",
                token::date(token.claims.exp)
            ),
        }
    }

    /// Makes sure requests can be authenticated: token, then `sessionId` cookie.
    fn open_session(&mut self) -> Result<()> {
        let token = match self.session.take() {
            Some(Auth::Token(t)) => t,
            Some(s) => {
                self.session = Some(s);
                return Ok(());
            }
            None if !self.needs_token() => {
                self.session = Some(Auth::Open);
                return Ok(());
            }
            None => self.keeper.current()?,
        };
        let token = if token.claims.exp <= token::now() {
            self.keeper.renew(&token)?
        } else {
            token
        };
        let mut reply = self.check(&token)?;
        let mut token = token;
        if reply.status == 401 {
            if self.keeper.can_renew(&token) {
                log::warn!(
                    "the Envoy refused the token (valid until {}); asking Enlighten for a new one",
                    token::date(token.claims.exp)
                );
            }
            token = self.keeper.renew(&token)?;
            reply = self.check(&token)?;
        }
        if reply.status != 200 {
            self.session = Some(Auth::Token(token));
            return Err(Error::Token(format!(
                "the Envoy answered HTTP {} to /auth/check_jwt; check that the token was made for serial {}",
                reply.status, self.serial
            )));
        }
        let cookie = reply
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .find_map(|(_, v)| {
                v.split(';')
                    .next()?
                    .trim()
                    .strip_prefix("sessionId=")
                    .map(str::to_string)
            });
        self.session = Some(match cookie {
            Some(c) => Auth::Cookie(token, c),
            None => Auth::Bearer(token),
        });
        Ok(())
    }

    fn check(&mut self, token: &Token) -> Result<Reply> {
        self.request(
            "/auth/check_jwt",
            Some(("Authorization", format!("Bearer {}", token.jwt.expose()))),
        )
    }

    fn auth_header(&self) -> Option<(&'static str, String)> {
        match self.session.as_ref()? {
            Auth::Open | Auth::Token(_) => None,
            Auth::Cookie(_, c) => Some(("Cookie", format!("sessionId={c}"))),
            Auth::Bearer(t) => Some(("Authorization", format!("Bearer {}", t.jwt.expose()))),
        }
    }

    /// An authenticated GET. On 401 the session is opened again once (token checked
    /// locally, then by the Envoy, then renewed from the cloud if allowed).
    pub fn get(&mut self, path: &str) -> Result<Reply> {
        self.open_session()?;
        let auth = self.auth_header();
        let reply = self.request(path, auth)?;
        self.answered += 1;
        // Without a token there is nothing to renew: old firmware answers 401 to some
        // endpoints it does not serve to anyone (D3.18 to /ivp/meters).
        if reply.status != 401 || matches!(self.session, Some(Auth::Open)) {
            return Ok(reply);
        }
        // Envoys end sessions after a while: expected, said at info.
        log::info!("the Envoy answered 401 to {path}: opening a new session");
        self.session = match self.session.take() {
            Some(Auth::Cookie(t, _) | Auth::Bearer(t) | Auth::Token(t)) => Some(Auth::Token(t)),
            other => other,
        };
        self.open_session()?;
        let auth = self.auth_header();
        let reply = self.request(path, auth)?;
        if reply.status == 401 {
            self.session = None;
            return Err(Error::Token(format!(
                "the Envoy still answers 401 to {path} with a fresh session; check the token's serial ({})",
                self.serial
            )));
        }
        Ok(reply)
    }

    /// The body of a 200 answer to `path`; `None` for 404, and for 401 from firmware that
    /// needs no token (the endpoint is absent, or closed to everyone, on this firmware).
    /// How many requests the Envoy answered so far.
    pub fn requests(&self) -> u64 {
        self.answered
    }

    pub fn body(&mut self, path: &str) -> Result<Option<String>> {
        let reply = self.get(path)?;
        match reply.status {
            200 => Ok(Some(reply.body)),
            404 => Ok(None),
            401 if !self.needs_token() => {
                log::debug!(
                    "{path} answered 401 on firmware {}: not used",
                    self.info.firmware
                );
                Ok(None)
            }
            s => Err(Error::Envoy(format!(
                "GET {}{path} answered HTTP {s}; the Envoy may be busy or restarting, retrying later",
                self.url
            ))),
        }
    }

    /// The fingerprint of the certificate the Envoy presented, for reports.
    pub fn certificate(&self) -> Option<[u8; 32]> {
        self.verifier.seen()
    }
}
