//! How each kind of setting value is read and checked: booleans, hosts, the Envoy's URL,
//! topic levels, periods, fingerprints. Each error names the setting and the fix. Pure.

use std::time::Duration;

use crate::error::{Error, Result};

/// Lower-case hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hexadecimal digits, with optional `:` or spaces between bytes.
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let digits: String = text.chars().filter(|c| *c != ':' && *c != ' ').collect();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(digits.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// `value` as an error message may show it: at most 80 characters, the rest cut with `…`.
pub fn shown(value: &str) -> String {
    match value.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.to_string(),
    }
}

/// Whether `token` has a JWT's shape: three non-empty base64url parts joined by dots.
pub fn jwt_shaped(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
        })
}

pub fn unquote(value: &str) -> &str {
    for q in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(q) && value.ends_with(q) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

pub fn parse_bool(name: &str, value: &str) -> Result<bool> {
    match value.to_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(Error::config(
            name,
            format!("is '{value}'"),
            "use true or false",
        )),
    }
}

/// `MQTT_HOST`: a host name, an IPv4 address or an IPv6 address (bare or in brackets);
/// never a port (that is `MQTT_PORT`), a scheme or a path.
pub fn host(name: &str, value: &str) -> Result<String> {
    let v6 = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    if v6.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(v6.to_string());
    }
    if let Some((host, port)) = value.rsplit_once(':') {
        if is_host_name(host) && !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) {
            return Err(Error::config(
                name,
                format!("'{value}' has a port in it"),
                format!("set {name}={host} and MQTT_PORT={port}"),
            ));
        }
    }
    if !is_host_name(value) {
        return Err(Error::config(
            name,
            format!("'{value}' is not a host name or address"),
            "give a host name or IP address, without scheme, port or path (192.168.1.10, broker.lan)",
        ));
    }
    Ok(value.to_string())
}

/// Letters, digits, `-`, `_` and `.`: a DNS name or an IPv4 address, at most 253 bytes.
pub fn is_host_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Where `ENVOY_HOST` points: the URL requests are made to, and for an IPv6 address with a
/// zone (`[fe80::1%eth0]`), the zone's interface index, which the URL cannot carry.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvoyHost {
    pub url: String,
    pub scope: Option<u32>,
}

/// `ENVOY_HOST`: a host, an address or an `http(s)://host[:port]` URL, taken apart at start
/// so that a mistake is a configuration error rather than a failed request an hour later.
/// A link-local IPv6 address needs its zone, as with `ping`: `[fe80::1%eth0]` (in a URL,
/// RFC 6874's `%25eth0` is also taken); the interface must exist when the bridge starts.
pub fn envoy_url(value: &str) -> Result<EnvoyHost> {
    let bad = |problem: String, fix: &str| Err(Error::config("ENVOY_HOST", problem, fix));
    let trimmed = value.trim_end_matches('/');
    let scheme_given = trimmed.contains("://");
    let (scheme, rest) = match trimmed.split_once("://") {
        Some((s @ ("http" | "https"), rest)) => (s, rest),
        Some((other, _)) => {
            return bad(
                format!("has the scheme '{other}://'"),
                "use https:// (firmware 7 and later) or http:// (older firmware), or give just the host",
            );
        }
        None => ("https", trimmed),
    };
    if rest.contains('@') {
        // Never repeat the value: it holds a password.
        return bad(
            "has a user name or password in it".into(),
            "give only the host: the Envoy takes a token (ENVOY_TOKEN, or ENPHASE_USERNAME and ENPHASE_PASSWORD)",
        );
    }
    if rest.contains(|c: char| c.is_whitespace() || c == '/' || c == '?') {
        return bad(
            format!("'{value}' is not a host, address or https://host URL"),
            "give the Envoy's host name or IP address, such as 192.168.1.20",
        );
    }
    if rest.parse::<std::net::Ipv6Addr>().is_ok() {
        return bad(
            format!("'{value}' is an IPv6 address without brackets"),
            &format!("write it in brackets: ENVOY_HOST=[{rest}]"),
        );
    }
    // The port part, `:8443` or empty, after the host or the bracketed IPv6 address.
    let mut scope = None;
    let mut host = rest.to_string();
    let port = match rest.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, tail)) => {
                let (ip, zone) = match addr.split_once('%') {
                    // RFC 6874 writes the `%` of a zone as `%25` in a URL.
                    Some((ip, zone)) if scheme_given => {
                        (ip, zone.strip_prefix("25").unwrap_or(zone))
                    }
                    Some((ip, zone)) => (ip, zone),
                    None => (addr, ""),
                };
                let Ok(ip) = ip.parse::<std::net::Ipv6Addr>() else {
                    return bad(
                        format!("'{value}' is not an IPv6 address in brackets"),
                        "write an IPv6 address as [fd00::20]",
                    );
                };
                let link_local = ip.segments()[0] & 0xffc0 == 0xfe80;
                if zone.is_empty() && link_local {
                    return bad(
                        format!("'{value}' is a link-local IPv6 address without its zone"),
                        &format!(
                            "name the network interface that reaches the Envoy, as with ping: ENVOY_HOST=[{ip}%eth0] (`ip -6 addr` lists them)"
                        ),
                    );
                }
                if !zone.is_empty() {
                    scope = Some(interface_index(value, zone)?);
                }
                host = format!("[{ip}]{tail}");
                tail
            }
            None => {
                return bad(
                    format!("'{value}' is not an IPv6 address in brackets"),
                    "write an IPv6 address as [fd00::20]",
                );
            }
        },
        None => {
            let (host, port) = rest.split_at(rest.find(':').unwrap_or(rest.len()));
            if !is_host_name(host) {
                return bad(
                    format!("'{value}' is not a host name or address"),
                    "give the Envoy's host name or IP address, such as 192.168.1.20",
                );
            }
            port
        }
    };
    if let Some(p) = port.strip_prefix(':') {
        if !p.parse::<u16>().is_ok_and(|p| p > 0) {
            return bad(
                format!("has the port '{p}'"),
                "give a port from 1 to 65535, or none (443 for https://, 80 for http://)",
            );
        }
    } else if !port.is_empty() {
        return bad(
            format!("'{value}' is not a host, address or https://host URL"),
            "give the Envoy's host name or IP address, such as 192.168.1.20",
        );
    }
    Ok(EnvoyHost {
        url: format!("{scheme}://{host}"),
        scope,
    })
}

/// The index of the network interface a zone names (`eth0`, or already a number), read from
/// `/sys/class/net`, as `ip` does: the zone is looked up once, at start.
fn interface_index(value: &str, zone: &str) -> Result<u32> {
    if let Ok(n) = zone.parse::<u32>() {
        return Ok(n);
    }
    // An interface name as Linux allows it: 1 to 15 bytes, no `/`, not `.` or `..`.
    let named = !matches!(zone, "" | "." | "..")
        && zone.len() < 16
        && zone
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != '%');
    let index = named
        .then(|| std::fs::read_to_string(format!("/sys/class/net/{zone}/ifindex")).ok())
        .flatten()
        .and_then(|t| t.trim().parse::<u32>().ok());
    index.ok_or_else(|| {
        Error::config(
            "ENVOY_HOST",
            format!("'{}' names the network interface '{}', which this machine does not have", shown(value), shown(zone)),
            "name the interface that reaches the Envoy (`ip -6 addr` lists them), or give the Envoy's IPv4 address",
        )
    })
}

pub fn https_url(name: &str, value: &str) -> Result<String> {
    match value.strip_prefix("https://") {
        Some(rest) if !rest.is_empty() => Ok(value.trim_end_matches('/').to_string()),
        _ => Err(Error::config(
            name,
            format!("'{value}' is not an https:// URL"),
            "leave it unset: it exists for tests",
        )),
    }
}

/// The longest topic prefix: topics are built under it, and brokers and Home Assistant
/// handle long topics poorly.
const MAX_PREFIX: usize = 64;

/// `MQTT_TOPIC_PREFIX`, `HA_DISCOVERY_PREFIX`: one or more topic levels that can start a
/// topic: no wildcards, no empty level, no `$` (the broker's own topics), at most 64 bytes.
pub fn topic_level(name: &str, value: &str) -> Result<String> {
    let problem = if value.is_empty() {
        Some("is empty".to_string())
    } else if value.len() > MAX_PREFIX {
        Some(format!("is {} bytes long", value.len()))
    } else if value.contains(['+', '#']) {
        Some(format!("'{value}' has an MQTT wildcard (+ or #) in it"))
    } else if value.split('/').any(str::is_empty) {
        Some(format!(
            "'{value}' has an empty topic level (a leading, trailing or double /)"
        ))
    } else if value.starts_with('$') || value.contains(|c: char| c.is_control()) {
        Some(format!(
            "'{}' cannot start MQTT topics",
            value.escape_debug()
        ))
    } else {
        value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')))
            .map(|c| {
                format!(
                    "'{}' has {c:?} in it (spaces and non-ASCII letters break topic filters and entity ids)",
                    value.escape_debug()
                )
            })
    };
    match problem {
        Some(problem) => Err(Error::config(
            name,
            problem,
            "use ASCII letters, digits, -, _ or . (levels separated by /), at most 64 characters, such as envoy",
        )),
        None => Ok(value.to_string()),
    }
}

/// A period: seconds (`60`, `0.5`) or a humantime duration (`90s`, `5m`, `500ms`).
/// Zero gives `None` where `zero_disables`, an error elsewhere.
pub fn interval(
    name: &str,
    value: &str,
    min: Duration,
    zero_disables: Option<&str>,
) -> Result<Option<Duration>> {
    let parsed = match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=86_400.0).contains(&secs) => {
            Some(Duration::from_secs_f64(secs))
        }
        // A number, but far too large (1e9) or negative: out of range, not "not a duration".
        Ok(secs) if !secs.is_nan() => Some(Duration::MAX),
        Ok(_) => None,
        Err(_) => humantime::parse_duration(value).ok(),
    };
    let fix = match zero_disables {
        Some(what) => format!("give seconds (1) or a duration (500ms, 5s); 0 disables {what}"),
        None => "give seconds (60) or a duration (90s, 5m)".to_string(),
    };
    match parsed {
        Some(d) if d.is_zero() && zero_disables.is_some() => Ok(None),
        Some(d) if d >= min && d <= Duration::from_secs(86_400) => Ok(Some(d)),
        Some(_) => Err(Error::config(
            name,
            format!(
                "'{value}' is out of range ({} to 1 day)",
                humantime::format_duration(min)
            ),
            fix,
        )),
        None => Err(Error::config(
            name,
            format!("'{value}' is not a duration"),
            fix,
        )),
    }
}
