//! Reading an Enphase JWT: its expiry and owner, decoded without checking the signature
//! (only the Envoy can check it; we only need to know when to renew).

use serde::Deserialize;

/// Decodes unpadded base64url (RFC 4648 §5), as JWT parts are written.
fn base64url(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().take_while(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The claims of `token`. The error never contains the token.
pub fn decode(token: &str) -> Result<Claims, String> {
    let mut parts = token.trim().split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("it is not a JWT (three base64url parts separated by dots)".into());
    };
    let bytes = base64url(payload).ok_or("its payload is not base64url")?;
    claims(&bytes)
}

/// The claims of an Enphase JWT that matter here.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// `owner` or `installer`.
    #[serde(rename = "enphaseUser", default)]
    pub enphase_user: String,
    /// The Enlighten account's e-mail address.
    #[serde(default)]
    pub username: String,
}

/// The decoded payload part of a JWT.
pub fn claims(payload: &[u8]) -> Result<Claims, String> {
    serde_json::from_slice(payload)
        .map_err(|e| format!("the token's claims are not JSON with an exp: {e}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An unsigned token that ends at `exp`, for tests.
    pub fn token_until(exp: i64) -> String {
        let payload =
            format!(r#"{{"exp":{exp},"enphaseUser":"owner","username":"o@example.com"}}"#);
        format!(
            "{}.{}.c2ln",
            encode(b"{\"alg\":\"ES256\"}"),
            encode(payload.as_bytes())
        )
    }

    /// Encodes like a JWT part, for tests.
    fn encode(bytes: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn decodes_claims() {
        let payload = r#"{"aud":"122238082763","iss":"Entrez","enphaseUser":"owner","exp":1893456000,"username":"me@example.com"}"#;
        let token = format!(
            "{}.{}.sig",
            encode(b"{\"alg\":\"ES256\"}"),
            encode(payload.as_bytes())
        );
        let c = decode(&token).unwrap();
        assert_eq!(c.exp, 1_893_456_000);
        assert_eq!(c.enphase_user, "owner");
        assert_eq!(c.username, "me@example.com");
    }

    #[test]
    fn base64url_round_trips() {
        for len in 0..40u8 {
            let bytes: Vec<u8> = (0..len)
                .map(|i| i.wrapping_mul(37).wrapping_add(250))
                .collect();
            assert_eq!(base64url(&encode(&bytes)), Some(bytes));
        }
    }

    #[test]
    fn bad_tokens() {
        let cases = [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "a.!!!.c",
            &format!("a.{}.c", encode(b"{\"no\":1}")),
        ];
        for t in cases {
            let e = decode(t).unwrap_err();
            assert!(!t.is_empty() && !e.contains(t) || t.is_empty(), "{e}");
        }
    }
}
