//! The Envoy client : one ureq agent keeping one keep-alive HTTPS connection,
//! the certificate checked by fingerprint, the token turned into a `sessionId` cookie once
//! by `/auth/check_jwt` and the cookie reused; on 401 the token is checked again before the
//! cloud is asked (rate-limited). Redirects are not followed; timeouts are short.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::answer;
use crate::certificate::{self, Verifier};
use crate::config::{Config, EnvoyConfig, TlsVerify};
use crate::connector::{agent, transport_error};
use crate::error::{Error, Result};
use crate::info::{self, Info};
use crate::message::Health;
use crate::reading::{self, Inverters, Meter, Snapshot};
use crate::scan;
use crate::source::{self, Source, V1};
use crate::token::{self, Keeper, Token};

/// How long the meter list is trusted before it is read again.
const METERS_MAX_AGE: Duration = Duration::from_secs(3600);
/// The largest answer read from the Envoy.
const MAX_BODY: u64 = 4 * 1024 * 1024;
/// One request, from the name lookup to the last byte of the answer. With the cloud's two
/// requests of [`crate::cloud`]'s budget in between, the loop never goes more than 30 s
/// between two tends of the broker session (see [`crate::mqtt::KEEP_ALIVE`]).
pub const REQUEST_BUDGET: Duration = Duration::from_secs(10);

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
    meters: Option<(Vec<Meter>, Instant)>,
    unlisted: BTreeSet<u64>,
    told_unmetered: bool,
    told_source: Option<Source>,
    told_unwired: bool,
    /// Keep every answer's headers (`--diagnose`); otherwise only the session's.
    pub keep_headers: bool,
    /// The buffer answers are read into, given back after a readings answer is parsed: a
    /// raw tick allocates no new one (musl mapped and unmapped one every tick).
    spare: String,
    /// Called before every request: the service's broker session is tended through a long
    /// poll (see [`crate::mqtt::Session::tend`]).
    tend: Option<Box<dyn FnMut()>>,
}

impl Envoy {
    /// Builds the agent and reads `/info`.
    pub fn connect(config: &Config) -> Result<Envoy> {
        let cfg = &config.envoy;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let remembered = certificate::remembered(&config.state_dir);
        let pinned = cfg.cert_sha256.or(remembered);
        let verifier = Arc::new(Verifier::new(cfg.tls_verify, pinned, provider.clone()));
        let mut envoy = Envoy {
            agent: agent(verifier.clone(), provider),
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
            meters: None,
            unlisted: BTreeSet::new(),
            told_unmetered: false,
            told_source: None,
            told_unwired: false,
            keep_headers: false,
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

    /// What to call before every request (the service tends its broker session with it).
    pub fn set_tend(&mut self, tend: Option<Box<dyn FnMut()>>) {
        self.tend = tend;
    }

    /// One request with the given `Authorization` / `Cookie` header, no retry, within
    /// [`REQUEST_BUDGET`] from name lookup to the last byte.
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
        let mut reader = response
            .into_body()
            .into_with_config()
            .limit(MAX_BODY)
            .reader();
        std::io::Read::read_to_string(&mut reader, &mut body)
            .map_err(|e| transport_error(&self.url, path, ureq::Error::Io(e)))?;
        Ok(Reply {
            status,
            headers,
            body,
        })
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
            log::warn!(
                "the Envoy refused the token (valid until {}); asking for a new one",
                token::date(token.claims.exp)
            );
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
        // Without a token there is nothing to renew: old firmware answers 401 to some
        // endpoints it does not serve to anyone (D3.18 to /ivp/meters).
        if reply.status != 401 || matches!(self.session, Some(Auth::Open)) {
            return Ok(reply);
        }
        log::warn!("the Envoy answered 401 to {path}: opening a new session");
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
    fn body(&mut self, path: &str) -> Result<Option<String>> {
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

    /// The meter list, read again hourly or after an unknown eid.
    pub fn meters(&mut self) -> Result<Vec<Meter>> {
        if let Some((m, at)) = &self.meters {
            if at.elapsed() < METERS_MAX_AGE {
                return Ok(m.clone());
            }
        }
        let meters = match self.body("/ivp/meters")? {
            None => Vec::new(),
            Some(body) => answer::meters(&body).map_err(Error::Envoy)?,
        };
        if !meters.iter().any(|m| m.enabled) && !self.told_unmetered {
            log::info!(
                "this Envoy has no enabled CT: consumption is not measured, production comes from the microinverters"
            );
            self.told_unmetered = true;
        }
        self.meters = Some((meters.clone(), Instant::now()));
        Ok(meters)
    }

    /// The readings of the enabled CTs: all of them, or (`raw`) only the powers.
    fn readings(&mut self, meters: &[Meter], raw: bool) -> Result<Vec<reading::MeterReading>> {
        if !meters.iter().any(|m| m.enabled) {
            return Ok(Vec::new());
        }
        let parse = if raw {
            scan::raw_readings
        } else {
            answer::readings
        };
        match self.body("/ivp/meters/readings")? {
            None => Ok(Vec::new()),
            Some(body) => {
                let parsed = parse(&body).map_err(Error::Envoy);
                self.spare = body;
                parsed
            }
        }
    }

    /// Says once which phases are left out for carrying no mains voltage.
    fn note_unwired(&mut self, snap: &Snapshot) {
        let cts = [
            ("production", &snap.production),
            ("net-consumption", &snap.net),
            ("total-consumption", &snap.total),
        ];
        let unwired: Vec<String> = cts
            .iter()
            .filter_map(|(name, ct)| {
                let lines = &ct.as_ref()?.unwired;
                (!lines.is_empty()).then(|| format!("{name} CT L{lines:?}"))
            })
            .collect();
        if !unwired.is_empty() && !self.told_unwired {
            log::info!(
                "phases without mains voltage (under {} V), left out of means, sums and per-phase topics: {}",
                reading::MAINS_MIN_VOLTS,
                unwired.join(", ")
            );
            self.told_unwired = true;
        }
    }

    fn note_unknown(&mut self, snap: &Snapshot) {
        let new: Vec<u64> = snap
            .unknown_eids
            .iter()
            .copied()
            .filter(|e| !self.unlisted.contains(e))
            .collect();
        if !new.is_empty() {
            log::info!(
                "readings name meters {new:?} that /ivp/meters did not list: reading the meter list again"
            );
            self.unlisted.extend(new);
            self.meters = None;
        }
    }

    /// `/api/v1/production`, `None` where this firmware has none.
    fn v1(&mut self) -> Result<Option<V1>> {
        match self.body("/api/v1/production")? {
            None => Ok(None),
            Some(body) => answer::production(&body).map(Some).map_err(Error::Envoy),
        }
    }

    /// The `inverters` section of `/production.json`; `None` where it is absent or not
    /// JSON (old firmware serves an HTML page there).
    fn inverters(&mut self) -> Result<Option<Inverters>> {
        let Some(body) = self.body("/production.json")? else {
            return Ok(None);
        };
        Ok(answer::production_inverters(&body).unwrap_or_else(|e| {
            log::debug!("{e}");
            None
        }))
    }

    /// Production where no CT measures it, from the source [`source`] picks.
    fn production(&mut self, meters: &[Meter]) -> Result<(Option<Inverters>, Option<Source>)> {
        let with_ct = source::has_production_ct(meters);
        let v1 = if source::v1_is_trusted(&self.info, meters) {
            self.v1()?
        } else {
            None
        };
        if with_ct {
            // The CT measures; v1 still gives the Envoy's own energy today.
            return Ok((v1.map(|v| v.inverters()), Some(Source::Ct)));
        }
        match source::without_ct(&self.info, meters, v1.as_ref()) {
            Source::V1 => Ok((v1.map(|v| v.inverters()), Some(Source::V1))),
            _ => match self.inverters()? {
                Some(inv) => Ok((Some(inv), Some(Source::Inverters))),
                // A broken v1 still tells the power, without its zero counters.
                None => Ok(match v1 {
                    Some(v) => (
                        Some(Inverters {
                            watts_now: v.watts_now,
                            wh_today: None,
                            wh_lifetime: None,
                        }),
                        Some(Source::V1),
                    ),
                    None => (None, None),
                }),
            },
        }
    }

    /// The full poll: meters, readings and production from the source that fits this
    /// Envoy. An Envoy that exposes no production as JSON is an error, not an empty poll.
    pub fn data(&mut self) -> Result<Snapshot> {
        let meters = self.meters()?;
        let readings = self.readings(&meters, false)?;
        let (inverters, source) = self.production(&meters)?;
        let mut snap = reading::snapshot(&meters, &readings, inverters);
        snap.source = source;
        self.note_unknown(&snap);
        self.note_unwired(&snap);
        if snap.production.is_none() && snap.inverters.is_none() {
            return Err(Error::Envoy(format!(
                "the Envoy at {} (firmware {}) exposes no production as JSON: no enabled CT, and neither /api/v1/production nor /production.json answers; envoy2mqtt cannot read this firmware",
                self.url, self.info.firmware
            )));
        }
        if source != self.told_source {
            if let Some(s) = source {
                log::info!("production from {}", s.describe());
            }
            self.told_source = source;
        }
        Ok(snap)
    }

    /// The fast poll: one readings request (none on an Envoy without CTs). A token that
    /// must come from the cloud waits for the next data poll: a raw tick stays short.
    pub fn raw(&mut self) -> Result<Snapshot> {
        self.keeper.cloud_allowed = false;
        let meters = self.meters();
        let readings = meters.and_then(|m| Ok((self.readings(&m, true)?, m)));
        self.keeper.cloud_allowed = true;
        let (readings, meters) = readings?;
        let snap = reading::snapshot(&meters, &readings, None);
        self.note_unknown(&snap);
        Ok(snap)
    }

    /// What `P/status` says about this Envoy, with the recent `errors`.
    pub fn health(
        &self,
        errors: &[String],
        last_sync: Option<SystemTime>,
        next_sync: Option<SystemTime>,
    ) -> Health {
        Health {
            last_sync,
            next_sync,
            errors: errors.to_vec(),
            firmware: Some(self.info.firmware.clone()),
            token_expires: self.token().map(|t| t.claims.exp),
        }
    }

    /// The fingerprint of the certificate the Envoy presented, for reports.
    pub fn certificate(&self) -> Option<[u8; 32]> {
        self.verifier.seen()
    }
}
