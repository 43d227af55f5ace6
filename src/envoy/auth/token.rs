//! The Envoy token's life : `ENVOY_TOKEN`, else the cached token, else the
//! cloud; renewed 30 days before it expires; cached in `STATE_DIR` with mode 0600.
//!
//! Cloud logins are rate-limited across runs (the time of the last attempt is kept in
//! `STATE_DIR`), so neither a 401 storm nor cron every five minutes can hammer Enlighten.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::cloud::Cloud;
use super::jwt::{self, Claims};
use crate::error::{Error, Result};
use crate::settings::{EnvoyConfig, Secret};
use crate::state_file;
use crate::time::zone;

/// The cached token's file in `STATE_DIR`.
pub const FILE: &str = "token";
/// When the last cloud login was tried, in `STATE_DIR`.
const ATTEMPT_FILE: &str = "cloud-login";
/// Renew this long before the token expires.
const RENEW_BEFORE: i64 = 30 * 86_400;
/// At most one cloud login per this many seconds.
pub const CLOUD_BACKOFF: i64 = 600;

/// How the token was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Obtained {
    Setting,
    Cache,
    Cloud,
}

/// A token and what it says about itself.
#[derive(Debug, Clone)]
pub struct Token {
    pub jwt: Secret,
    pub claims: Claims,
    pub obtained: Obtained,
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `YYYY-MM-DD` of a time in seconds (UTC).
pub fn date(secs: i64) -> String {
    zone::utc(secs)[..10].to_string()
}

/// Whether a cloud login at `now` would come too soon after the one tried at `last`.
fn too_soon(last: i64, now: i64) -> bool {
    (0..CLOUD_BACKOFF).contains(&now.saturating_sub(last))
}

/// Obtains and keeps the token for one Envoy.
pub struct Keeper {
    cfg: EnvoyConfig,
    dir: PathBuf,
    serial: String,
    /// The last login this process tried: the rate limit holds in a run that writes no
    /// file (`--dry-run`) too.
    tried: Cell<Option<i64>>,
    /// Whether the cloud may be asked now: not during a raw tick, which must stay short.
    pub cloud_allowed: bool,
}

impl Keeper {
    pub fn new(cfg: &EnvoyConfig, state_dir: &Path, serial: &str) -> Keeper {
        Keeper {
            cfg: cfg.clone(),
            dir: state_dir.to_path_buf(),
            serial: serial.to_string(),
            tried: Cell::new(None),
            cloud_allowed: true,
        }
    }

    /// The token to use now: the setting, else the cache, else the cloud. A cached token
    /// within 30 days of its end is renewed when the cloud allows it.
    pub fn current(&self) -> Result<Token> {
        self.current_at(now())
    }

    /// [`Keeper::current`] at `now` (Unix seconds).
    fn current_at(&self, now: i64) -> Result<Token> {
        if let Some(jwt) = &self.cfg.token {
            let claims = jwt::decode(jwt.expose()).map_err(|e| {
                Error::Token(format!(
                    "ENVOY_TOKEN cannot be read: {e}; paste the whole token"
                ))
            })?;
            if claims.exp <= now {
                return Err(Error::Token(format!(
                    "ENVOY_TOKEN expired on {}; create a new one for serial {} and set it, or remove ENVOY_TOKEN and set ENPHASE_USERNAME and ENPHASE_PASSWORD",
                    date(claims.exp),
                    self.serial
                )));
            }
            if claims.exp.saturating_sub(now) < RENEW_BEFORE {
                log::warn!(
                    "ENVOY_TOKEN expires on {}: paste a new one before then",
                    date(claims.exp)
                );
            }
            return Ok(Token {
                jwt: jwt.clone(),
                claims,
                obtained: Obtained::Setting,
            });
        }
        let cached = self.cached();
        match cached {
            Some(t) if t.claims.exp.saturating_sub(now) >= RENEW_BEFORE => Ok(t),
            Some(t) if t.claims.exp > now => match self.cloud_token() {
                Ok(new) => Ok(new),
                Err(e) => {
                    log::warn!(
                        "the token expires on {} and could not be renewed yet: {e}",
                        date(t.claims.exp)
                    );
                    Ok(t)
                }
            },
            _ => self.cloud_token(),
        }
    }

    /// Whether a refused `token` can be replaced: not a pasted `ENVOY_TOKEN` without an
    /// Enlighten account to get another with.
    pub fn can_renew(&self, token: &Token) -> bool {
        token.obtained != Obtained::Setting || self.cfg.username.is_some()
    }

    /// A new token after the Envoy refused `refused`: from the cloud, if allowed.
    pub fn renew(&self, refused: &Token) -> Result<Token> {
        if !self.can_renew(refused) {
            return Err(Error::Token(format!(
                "the Envoy refuses ENVOY_TOKEN (valid until {}: made for another serial, or revoked), and without ENPHASE_USERNAME and ENPHASE_PASSWORD no new one can be fetched; create a token for serial {} at https://entrez.enphaseenergy.com and set ENVOY_TOKEN to it, or set the account so that envoy2mqtt gets its own",
                date(refused.claims.exp),
                self.serial
            )));
        }
        self.cloud_token()
    }

    /// Whether `token`, in use by a running service, should be renewed now: it comes from
    /// the cache or the cloud (not `ENVOY_TOKEN`), it is within 30 days of its end, there
    /// is an account to log in with, and the cloud's rate limit allows a login.
    pub fn due(&self, token: &Token, now: i64) -> bool {
        token.obtained != Obtained::Setting
            && self.cfg.username.is_some()
            && token.claims.exp.saturating_sub(now) < RENEW_BEFORE
            && self.last_login().is_none_or(|last| !too_soon(last, now))
    }

    /// A new token from the cloud before `token` ends.
    pub fn renew_early(&self) -> Result<Token> {
        self.cloud_token()
    }

    /// When the last cloud login was tried, by this process or, per `STATE_DIR`, another.
    fn last_login(&self) -> Option<i64> {
        let file = state_file::read(&self.dir.join(ATTEMPT_FILE))
            .ok()
            .flatten()
            .and_then(|t| t.trim().parse::<i64>().ok());
        file.max(self.tried.get())
    }

    fn cached(&self) -> Option<Token> {
        let path = self.dir.join(FILE);
        let text = match state_file::read(&path) {
            Ok(t) => t?,
            Err(e) => {
                log::warn!("{e}");
                return None;
            }
        };
        match jwt::decode(&text) {
            Ok(claims) => Some(Token {
                jwt: Secret::new(text.trim()),
                claims,
                obtained: Obtained::Cache,
            }),
            Err(e) => {
                log::warn!(
                    "the cached token in {} is unusable ({e}); getting a new one",
                    path.display()
                );
                None
            }
        }
    }

    fn cloud_token(&self) -> Result<Token> {
        let (Some(user), Some(password)) = (&self.cfg.username, &self.cfg.password) else {
            return Err(Error::Token(format!(
                "no valid token: set ENVOY_TOKEN (a token for serial {}), or ENPHASE_USERNAME and ENPHASE_PASSWORD",
                self.serial
            )));
        };
        if !self.cloud_allowed {
            return Err(Error::Token(
                "a new token is needed: it is asked for at the next data poll".into(),
            ));
        }
        let attempt = self.dir.join(ATTEMPT_FILE);
        let now = now();
        if let Some(last) = self.last_login().filter(|&l| too_soon(l, now)) {
            return Err(Error::Token(format!(
                "no valid token, and Enlighten was asked less than {} minutes ago: the next login is allowed at {} (set ENVOY_TOKEN to do without the cloud)",
                CLOUD_BACKOFF / 60,
                zone::utc(last.saturating_add(CLOUD_BACKOFF))
            )));
        }
        self.tried.set(Some(now));
        // Not stamped (STATE_DIR read-only or full): the rate limit holds in memory.
        if let Err(e) = state_file::write(&attempt, format!("{now}\n").as_bytes()) {
            log::warn!("{e}");
        }
        log::info!(
            "asking the Enphase cloud for a token for serial {} (ENPHASE_USERNAME)",
            self.serial
        );
        let text = Cloud::new(&self.cfg)?.token(user, password, &self.serial)?;
        let claims = jwt::decode(&text).map_err(|e| {
            Error::Token(format!(
                "entrez answered something that is not a token: {e}"
            ))
        })?;
        // Not cached is no lost token: it serves this run, and the next run asks again.
        if let Err(e) = state_file::write(&self.dir.join(FILE), text.as_bytes()) {
            log::warn!("{e}");
        }
        log::info!(
            "new token for serial {}, valid until {}",
            self.serial,
            date(claims.exp)
        );
        Ok(Token {
            jwt: Secret::new(text),
            claims,
            obtained: Obtained::Cloud,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::TlsVerify;

    fn keeper(dir: &Path, username: Option<&str>) -> Keeper {
        keeper_with(dir, username, None)
    }

    /// A keeper whose cloud is a closed port on loopback: a login is tried (and stamped in
    /// `STATE_DIR`) and fails at once.
    fn keeper_with(dir: &Path, username: Option<&str>, pasted: Option<String>) -> Keeper {
        let cfg = EnvoyConfig {
            url: "https://127.0.0.1".into(),
            scope: None,
            timeout: std::time::Duration::from_secs(10),
            serial: None,
            token: pasted.map(Secret::new),
            username: username.map(str::to_string),
            password: username.map(|_| Secret::new("pw")),
            tls_verify: TlsVerify::Warn,
            cert_sha256: None,
            login_url: "https://127.0.0.1:1".into(),
            token_url: "https://127.0.0.1:1".into(),
            cloud_ca: None,
        };
        Keeper::new(&cfg, dir, "1")
    }

    fn token(obtained: Obtained, exp: i64) -> Token {
        Token {
            jwt: Secret::new("x"),
            claims: Claims {
                exp,
                enphase_user: String::new(),
                username: String::new(),
            },
            obtained,
        }
    }

    #[test]
    fn renewal_while_running_is_due_within_30_days_when_the_cloud_allows() {
        let dir = std::env::temp_dir().join(format!("envoy2mqtt-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let now = 1_800_000_000;
        let day = 86_400;
        let with_account = keeper(&dir, Some("owner@example.com"));
        let cases = [
            (
                "cached, 20 days left",
                &with_account,
                token(Obtained::Cache, now + 20 * day),
                true,
            ),
            (
                "from the cloud, 29 days left",
                &with_account,
                token(Obtained::Cloud, now + 29 * day),
                true,
            ),
            (
                "cached, 40 days left",
                &with_account,
                token(Obtained::Cache, now + 40 * day),
                false,
            ),
            (
                "ENVOY_TOKEN: never renewed",
                &with_account,
                token(Obtained::Setting, now + day),
                false,
            ),
            (
                "exp past 9999",
                &with_account,
                token(Obtained::Cache, i64::MAX),
                false,
            ),
        ];
        for (what, k, t, want) in cases {
            assert_eq!(k.due(&t, now), want, "{what}");
        }
        let t = token(Obtained::Cache, now + 20 * day);
        assert!(!keeper(&dir, None).due(&t, now), "no account");
        state_file::write(
            &dir.join(ATTEMPT_FILE),
            format!("{}\n", now - 60).as_bytes(),
        )
        .unwrap();
        assert!(!with_account.due(&t, now), "a login a minute ago");
        assert!(
            with_account.due(&t, now + CLOUD_BACKOFF),
            "ten minutes later"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("envoy2mqtt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_pasted_token_is_used_until_its_last_second() {
        let dir = folder("token-pasted");
        let now = 1_800_000_000;
        let k = |exp: i64| keeper_with(&dir, None, Some(jwt::tests::token_until(exp)));
        let t = k(now + 1).current_at(now).unwrap();
        assert_eq!((t.obtained, t.claims.exp), (Obtained::Setting, now + 1));
        let e = k(now).current_at(now).unwrap_err().to_string();
        assert!(e.contains("ENVOY_TOKEN expired on 2027-01-15"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_cached_token_is_renewed_within_30_days_of_its_end_and_kept_if_that_fails() {
        let now = 1_800_000_000;
        let day = 86_400;
        // (days left, login tried, token kept)
        for (left, tried, kept) in [
            (30 * day, false, true),
            (30 * day - 1, true, true),
            (1, true, true),
            (0, true, false),
        ] {
            let dir = folder("token-cached");
            state_file::write(
                &dir.join(FILE),
                jwt::tests::token_until(now + left).as_bytes(),
            )
            .unwrap();
            let got = keeper(&dir, Some("owner@example.com")).current_at(now);
            assert_eq!(dir.join(ATTEMPT_FILE).exists(), tried, "{left} s left");
            match got {
                Ok(t) => {
                    assert!(kept, "{left} s left");
                    assert_eq!((t.obtained, t.claims.exp), (Obtained::Cache, now + left));
                }
                Err(e) => assert!(!kept, "{left} s left: {e}"),
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn a_refused_token_is_replaced_only_with_an_account_and_when_the_cloud_may_be_asked() {
        let dir = folder("token-renew");
        let (pasted, cached) = (token(Obtained::Setting, 1), token(Obtained::Cache, 1));
        let (alone, with_account) = (keeper(&dir, None), keeper(&dir, Some("o@example.com")));
        assert!(!alone.can_renew(&pasted));
        assert!(with_account.can_renew(&pasted));
        assert!(alone.can_renew(&cached) && with_account.can_renew(&cached));
        let e = alone.renew(&pasted).unwrap_err().to_string();
        assert!(e.contains("the Envoy refuses ENVOY_TOKEN"), "{e}");
        let e = alone.renew(&cached).unwrap_err().to_string();
        assert!(e.contains("no valid token: set ENVOY_TOKEN"), "{e}");
        // During a raw tick the cloud is not asked (and no login is stamped).
        let mut quiet = keeper(&dir, Some("o@example.com"));
        quiet.cloud_allowed = false;
        let e = quiet.renew(&cached).unwrap_err().to_string();
        assert!(e.contains("asked for at the next data poll"), "{e}");
        assert!(!dir.join(ATTEMPT_FILE).exists());
        assert!(
            with_account.renew(&cached).is_err(),
            "the cloud is a closed port"
        );
        assert!(dir.join(ATTEMPT_FILE).exists(), "the login was tried");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn renewal_is_due_below_30_days_not_at_them() {
        let dir = folder("token-due");
        let now = 1_800_000_000;
        let k = keeper(&dir, Some("o@example.com"));
        assert!(!k.due(&token(Obtained::Cache, now + RENEW_BEFORE), now));
        assert!(k.due(&token(Obtained::Cache, now + RENEW_BEFORE - 1), now));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_clock_and_dates_of_tokens() {
        // The wall clock, after 2024 (not 0, 1 or -1).
        assert!(now() > 1_704_067_200);
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_800_000_000), "2027-01-15");
    }
}
