//! The generic HMAC verifier for senders without a dedicated one: which header, algorithm,
//! encoding and prefix, and a `signed` template over `{body}`, `{timestamp}`, `{id}`, `{url}`.
//! The header may carry several signatures separated by commas or spaces (rotation on the
//! sender's side); any one matching passes.

use super::{mac, Rejection};
use crate::config::{Encoding, HmacSpec};
use base64::Engine;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(Vec<u8>),
    Body,
    Timestamp,
    Id,
    Url,
}

#[derive(Debug)]
pub struct GenericHmac {
    spec: HmacSpec,
    template: Vec<Piece>,
}

impl GenericHmac {
    /// The header that carries the signature.
    pub fn header_name(&self) -> &http::HeaderName {
        &self.spec.header
    }
}

fn compile(t: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut rest = t;
    while !rest.is_empty() {
        let next = ["{body}", "{timestamp}", "{id}", "{url}"]
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (i, *p)))
            .min_by_key(|(i, _)| *i);
        match next {
            None => {
                out.push(Piece::Lit(rest.as_bytes().to_vec()));
                break;
            }
            Some((i, p)) => {
                if i > 0 {
                    out.push(Piece::Lit(rest.as_bytes()[..i].to_vec()));
                }
                out.push(match p {
                    "{body}" => Piece::Body,
                    "{timestamp}" => Piece::Timestamp,
                    "{id}" => Piece::Id,
                    _ => Piece::Url,
                });
                rest = &rest[i + p.len()..];
            }
        }
    }
    out
}

/// Seconds since the epoch; values above 10^12 are taken as milliseconds.
pub fn check_timestamp(raw: &str, now: SystemTime, tolerance: Duration) -> Result<(), Rejection> {
    let ts: u64 = raw
        .trim()
        .parse()
        .map_err(|_| Rejection::malformed("timestamp", "not a whole number of seconds"))?;
    let ts = if ts > 1_000_000_000_000 {
        ts / 1000
    } else {
        ts
    };
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let tol = tolerance.as_secs();
    if now > ts && now - ts > tol {
        return Err(Rejection {
            kind: "timestamp",
            detail: format!("timestamp {}s old, tolerance {tol}s", now - ts),
        });
    }
    if ts > now && ts - now > tol {
        return Err(Rejection {
            kind: "timestamp",
            detail: format!("timestamp {}s in the future, tolerance {tol}s", ts - now),
        });
    }
    Ok(())
}

impl GenericHmac {
    pub fn new(spec: &HmacSpec) -> Self {
        GenericHmac {
            template: compile(&spec.signed),
            spec: spec.clone(),
        }
    }

    fn header<'a>(
        parts: &'a http::request::Parts,
        name: &http::HeaderName,
    ) -> Result<&'a str, Rejection> {
        parts
            .headers
            .get(name)
            .ok_or_else(|| Rejection::missing_header(name.as_str()))?
            .to_str()
            .map_err(|_| Rejection::malformed(name.as_str(), "not visible ASCII"))
    }

    pub fn check(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        now: SystemTime,
    ) -> Result<usize, Rejection> {
        let s = &self.spec;
        let value = Self::header(parts, &s.header)?;
        let timestamp = match &s.timestamp_header {
            Some(h) => {
                let t = Self::header(parts, h)?;
                check_timestamp(t, now, s.tolerance)?;
                Some(t)
            }
            None => None,
        };
        let id = match &s.id_header {
            Some(h) => Some(Self::header(parts, h)?),
            None => None,
        };
        let url = s.public_url.as_deref().unwrap_or("");
        let signed: Vec<&[u8]> = self
            .template
            .iter()
            .map(|p| match p {
                Piece::Lit(b) => b.as_slice(),
                Piece::Body => body,
                Piece::Timestamp => timestamp.unwrap_or("").as_bytes(),
                Piece::Id => id.unwrap_or("").as_bytes(),
                Piece::Url => url.as_bytes(),
            })
            .collect();
        let mut candidates = Vec::new();
        for token in value.split([',', ' ']).filter(|t| !t.is_empty()) {
            let Some(enc) = token.strip_prefix(s.prefix.as_str()) else {
                continue;
            };
            let decoded = match s.encoding {
                Encoding::Hex => hex::decode(enc).ok(),
                Encoding::Base64 => base64::engine::general_purpose::STANDARD.decode(enc).ok(),
            };
            candidates.extend(decoded);
        }
        if candidates.is_empty() {
            let why = format!(
                "no `{}`-prefixed {:?} signature found",
                s.prefix, s.encoding
            );
            return Err(Rejection::malformed(s.header.as_str(), &why));
        }
        s.secrets
            .iter()
            .position(|k| {
                candidates
                    .iter()
                    .any(|c| mac::verify(s.algorithm, k.expose().as_bytes(), &signed, c))
            })
            .ok_or_else(|| Rejection::no_match(s.secrets.len(), body.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HmacAlgorithm, Secret};

    fn spec() -> HmacSpec {
        HmacSpec {
            secrets: vec![Secret::new("secret".into())],
            enforce: true,
            header: http::HeaderName::from_static("x-signature"),
            algorithm: HmacAlgorithm::Sha256,
            encoding: Encoding::Hex,
            prefix: "v0=".into(),
            signed: "v0:{timestamp}:{body}".into(),
            timestamp_header: Some(http::HeaderName::from_static("x-timestamp")),
            id_header: None,
            tolerance: Duration::from_secs(300),
            public_url: None,
        }
    }

    fn parts(sig: &str, ts: &str) -> http::request::Parts {
        let (p, _) = http::Request::builder()
            .header("x-signature", sig)
            .header("x-timestamp", ts)
            .body(())
            .unwrap()
            .into_parts();
        p
    }

    #[test]
    fn template_compiles() {
        assert_eq!(
            compile("v0:{timestamp}:{body}"),
            vec![
                Piece::Lit(b"v0:".to_vec()),
                Piece::Timestamp,
                Piece::Lit(b":".to_vec()),
                Piece::Body
            ]
        );
    }

    #[test]
    fn hook0_published_vector() {
        // Hook0's worker tests: secret `secret`, t 1636936200, body `hello !`.
        let v = GenericHmac::new(&HmacSpec {
            signed: "{timestamp}.{body}".into(),
            ..spec()
        });
        let now = UNIX_EPOCH + Duration::from_secs(1636936200);
        let sig = "v0=1b3d69df55f1e52f05224ba94a5162abeb17ef52cd7f4948c390f810d6a87e98";
        assert_eq!(v.check(&parts(sig, "1636936200"), b"hello !", now), Ok(0));
    }

    #[test]
    fn slack_style_and_tolerance() {
        // Slack's published example, through the generic verifier.
        let v = GenericHmac::new(&HmacSpec {
            secrets: vec![Secret::new("8f742231b10e8888abcd99yyyzzz85a5".into())],
            ..spec()
        });
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        let at = UNIX_EPOCH + Duration::from_secs(1531420618 + 10);
        assert_eq!(v.check(&parts(sig, "1531420618"), body, at), Ok(0));
        let late = UNIX_EPOCH + Duration::from_secs(1531420618 + 412);
        let err = v.check(&parts(sig, "1531420618"), body, late).unwrap_err();
        assert_eq!(err.detail, "timestamp 412s old, tolerance 300s");
        let early = UNIX_EPOCH + Duration::from_secs(1531420618 - 400);
        assert!(v
            .check(&parts(sig, "1531420618"), body, early)
            .unwrap_err()
            .detail
            .contains("future"));
        assert_eq!(
            v.check(&parts(sig, "1531420618"), b"tampered", at)
                .unwrap_err()
                .kind,
            "no_match"
        );
    }

    #[test]
    fn base64_sha1_no_prefix_multiple_signatures() {
        let key = "k";
        let sig = base64::engine::general_purpose::STANDARD.encode(mac::compute(
            HmacAlgorithm::Sha1,
            key.as_bytes(),
            &[b"body"],
        ));
        let v = GenericHmac::new(&HmacSpec {
            secrets: vec![Secret::new("other".into()), Secret::new(key.into())],
            algorithm: HmacAlgorithm::Sha1,
            encoding: Encoding::Base64,
            prefix: String::new(),
            signed: "{body}".into(),
            timestamp_header: None,
            ..spec()
        });
        let p = parts(&format!("AAAA {sig}"), "");
        assert_eq!(v.check(&p, b"body", SystemTime::now()), Ok(1));
    }
}
