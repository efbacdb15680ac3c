//! GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.

use super::{mac, Rejection};
use crate::config::{HmacAlgorithm, Secret};
use http::HeaderMap;

pub const HEADER: &str = "x-hub-signature-256";

#[derive(Debug)]
pub struct Github {
    secrets: Vec<Secret>,
}

impl Github {
    pub fn new(secrets: &[Secret]) -> Self {
        Github {
            secrets: secrets.to_vec(),
        }
    }

    pub fn check(&self, headers: &HeaderMap, body: &[u8]) -> Result<usize, Rejection> {
        let value = headers
            .get(HEADER)
            .ok_or_else(|| Rejection::missing_header("X-Hub-Signature-256"))?;
        let sig = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().strip_prefix("sha256="))
            .and_then(|h| hex::decode(h).ok())
            .filter(|b| b.len() == 32)
            .ok_or_else(|| {
                Rejection::malformed("X-Hub-Signature-256", "expected sha256=<64 hex digits>")
            })?;
        self.secrets
            .iter()
            .position(|s| mac::verify(HmacAlgorithm::Sha256, s.expose().as_bytes(), &[body], &sig))
            .ok_or_else(|| Rejection::no_match(self.secrets.len(), body.len()))
    }
}

/// The header value GitHub would send for `body`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac::compute(
            HmacAlgorithm::Sha256,
            secret.as_bytes(),
            &[body]
        ))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // GitHub's published example ("Validating webhook deliveries").
    const SECRET: &str = "It's a Secret to Everybody";
    const SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn headers(sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER, sig.parse().unwrap());
        h
    }

    #[test]
    fn published_vector() {
        assert_eq!(sign(SECRET, b"Hello, World!"), SIG);
        let v = Github::new(&[Secret::new(SECRET.into())]);
        assert_eq!(v.check(&headers(SIG), b"Hello, World!"), Ok(0));
    }

    #[test]
    fn rotation_reports_matching_index() {
        let v = Github::new(&[Secret::new("old".into()), Secret::new(SECRET.into())]);
        assert_eq!(v.check(&headers(SIG), b"Hello, World!"), Ok(1));
    }

    #[test]
    fn rejections_are_precise() {
        let v = Github::new(&[Secret::new(SECRET.into())]);
        assert_eq!(
            v.check(&headers(SIG), b"Hello, World?").unwrap_err().kind,
            "no_match"
        );
        assert_eq!(
            v.check(&HeaderMap::new(), b"x").unwrap_err().kind,
            "missing_header"
        );
        assert_eq!(
            v.check(&headers("sha1=abcd"), b"x").unwrap_err().kind,
            "malformed"
        );
        assert_eq!(
            v.check(&headers("sha256=zz"), b"x").unwrap_err().kind,
            "malformed"
        );
    }
}
