//! The dedicated verifiers (docs/configuration.md: verify), one function per sender, each on the exact bytes
//! received and with constant-time comparisons (`verify_slice`, `subtle`, or the signature
//! library's own check). Each returns which secret or key matched (for rotation metrics), or
//! a precise [`Rejection`] for the operator.

use super::hmac::check_timestamp;
use super::{mac, Rejection};
use crate::config::{HmacAlgorithm, Provider, ProviderSpec};
use base64::Engine;
use http::request::Parts;
use std::time::SystemTime;
use subtle::ConstantTimeEq;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug)]
pub struct ProviderVerifier {
    pub spec: ProviderSpec,
    /// Secret bytes as each provider uses them (Standard Webhooks: base64-decoded `whsec_`).
    keys: Vec<Vec<u8>>,
    /// The headers that carry the provider's signature, parsed once.
    signature_names: Vec<http::HeaderName>,
}

fn header<'a>(parts: &'a Parts, name: &str) -> Result<&'a str, Rejection> {
    parts
        .headers
        .get(name)
        .ok_or_else(|| Rejection::missing_header(name))?
        .to_str()
        .map_err(|_| Rejection::malformed(name, "not visible ASCII"))
}

/// The first of `names` present, as (index into `names`, value).
fn first_header<'a>(parts: &'a Parts, names: &[&str]) -> Result<(usize, &'a str), Rejection> {
    for (i, n) in names.iter().enumerate() {
        if let Some(v) = parts.headers.get(*n) {
            let v = v
                .to_str()
                .map_err(|_| Rejection::malformed(n, "not visible ASCII"))?;
            return Ok((i, v));
        }
    }
    Err(Rejection::missing_header(names[0]))
}

impl ProviderVerifier {
    pub fn new(spec: &ProviderSpec) -> Self {
        let keys = spec
            .secrets
            .iter()
            .map(|s| match spec.provider {
                Provider::Standard => {
                    crate::deliver::sign::decode_secret(s.expose()).unwrap_or_default()
                }
                _ => s.expose().as_bytes().to_vec(),
            })
            .collect();
        ProviderVerifier {
            spec: spec.clone(),
            keys,
            signature_names: spec
                .provider
                .signature_headers()
                .iter()
                .map(|n| http::HeaderName::from_static(n))
                .collect(),
        }
    }

    /// The headers that carry the provider's signature.
    pub fn signature_names(&self) -> &[http::HeaderName] {
        &self.signature_names
    }

    /// Index of the first secret whose HMAC of `signed` equals any candidate.
    fn hmac_any(
        &self,
        alg: HmacAlgorithm,
        signed: &[&[u8]],
        candidates: &[Vec<u8>],
        body_len: usize,
    ) -> Result<usize, Rejection> {
        self.keys
            .iter()
            .position(|k| candidates.iter().any(|c| mac::verify(alg, k, signed, c)))
            .ok_or_else(|| Rejection::no_match(self.keys.len(), body_len))
    }

    fn tolerance_check(&self, ts: &str, now: SystemTime) -> Result<(), Rejection> {
        check_timestamp(ts, now, self.spec.tolerance)
    }

    /// `tls` and the request head give the URL the sender called, for URL-signed schemes.
    pub fn check(
        &self,
        parts: &Parts,
        body: &[u8],
        now: SystemTime,
        tls: bool,
    ) -> Result<usize, Rejection> {
        use HmacAlgorithm::*;
        let n = body.len();
        match self.spec.provider {
            Provider::Github | Provider::Meta => {
                let v = header(parts, "x-hub-signature-256")?;
                let sig = v
                    .trim()
                    .strip_prefix("sha256=")
                    .and_then(|h| hex::decode(h).ok())
                    .filter(|b| b.len() == 32)
                    .ok_or_else(|| {
                        Rejection::malformed(
                            "X-Hub-Signature-256",
                            "expected sha256=<64 hex digits>",
                        )
                    })?;
                self.hmac_any(Sha256, &[body], &[sig], n)
            }
            Provider::Stripe => {
                let v = header(parts, "stripe-signature")?;
                let mut t = None;
                let mut sigs = Vec::new();
                for item in v.split(',') {
                    match item.trim().split_once('=') {
                        Some(("t", ts)) => t = Some(ts),
                        Some(("v1", s)) => {
                            sigs.extend(hex::decode(s).ok().filter(|b| b.len() == 32))
                        }
                        _ => {}
                    }
                }
                let t =
                    t.ok_or_else(|| Rejection::malformed("Stripe-Signature", "no t= timestamp"))?;
                if sigs.is_empty() {
                    return Err(Rejection::malformed("Stripe-Signature", "no v1= signature"));
                }
                self.tolerance_check(t, now)?;
                self.hmac_any(Sha256, &[t.as_bytes(), b".", body], &sigs, n)
            }
            Provider::Slack | Provider::Zoom => {
                let (ts_h, sig_h) = match self.spec.provider {
                    Provider::Slack => ("x-slack-request-timestamp", "x-slack-signature"),
                    _ => ("x-zm-request-timestamp", "x-zm-signature"),
                };
                let ts = header(parts, ts_h)?;
                let sig = header(parts, sig_h)?
                    .trim()
                    .strip_prefix("v0=")
                    .and_then(|h| hex::decode(h).ok())
                    .filter(|b| b.len() == 32)
                    .ok_or_else(|| Rejection::malformed(sig_h, "expected v0=<64 hex digits>"))?;
                self.tolerance_check(ts, now)?;
                self.hmac_any(Sha256, &[b"v0:", ts.as_bytes(), b":", body], &[sig], n)
            }
            Provider::Paddle => {
                let v = header(parts, "paddle-signature")?;
                let mut ts = None;
                let mut sigs = Vec::new();
                for item in v.split(';') {
                    match item.trim().split_once('=') {
                        Some(("ts", t)) => ts = Some(t),
                        Some(("h1", s)) => {
                            sigs.extend(hex::decode(s).ok().filter(|b| b.len() == 32))
                        }
                        _ => {}
                    }
                }
                let ts =
                    ts.ok_or_else(|| Rejection::malformed("Paddle-Signature", "no ts= timestamp"))?;
                if sigs.is_empty() {
                    return Err(Rejection::malformed("Paddle-Signature", "no h1= signature"));
                }
                self.tolerance_check(ts, now)?;
                self.hmac_any(Sha256, &[ts.as_bytes(), b":", body], &sigs, n)
            }
            Provider::Shopify => {
                let names = ["x-shopify-hmac-sha256", "shopify-hmac-sha256"];
                let (i, v) = first_header(parts, &names)?;
                let sig = B64
                    .decode(v.trim())
                    .ok()
                    .filter(|b| b.len() == 32)
                    .ok_or_else(|| Rejection::malformed(names[i], "expected base64 of 32 bytes"))?;
                self.hmac_any(Sha256, &[body], &[sig], n)
            }
            Provider::Square => {
                let v = header(parts, "x-square-hmacsha256-signature")?;
                let sig = B64
                    .decode(v.trim())
                    .ok()
                    .filter(|b| b.len() == 32)
                    .ok_or_else(|| {
                        Rejection::malformed(
                            "x-square-hmacsha256-signature",
                            "expected base64 of 32 bytes",
                        )
                    })?;
                let url = match &self.spec.public_url {
                    Some(u) => u.clone(),
                    None => request_url(parts, tls),
                };
                self.hmac_any(Sha256, &[url.as_bytes(), body], &[sig], n)
            }
            Provider::Linear => {
                let sig = hex::decode(header(parts, "linear-signature")?.trim())
                    .ok()
                    .filter(|b| b.len() == 32)
                    .ok_or_else(|| {
                        Rejection::malformed("Linear-Signature", "expected 64 hex digits")
                    })?;
                let i = self.hmac_any(Sha256, &[body], &[sig], n)?;
                let ts = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.get("webhookTimestamp").and_then(|t| t.as_u64()))
                    .ok_or_else(|| Rejection {
                        kind: "malformed",
                        detail: "body has no numeric webhookTimestamp".into(),
                    })?;
                self.tolerance_check(&ts.to_string(), now)?;
                Ok(i)
            }
            Provider::Gitlab => {
                let token = header(parts, "x-gitlab-token")?;
                self.token_match(token.as_bytes(), n)
            }
            Provider::Bearer => {
                let v = header(parts, "authorization")?;
                let token = v
                    .strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
                    .ok_or_else(|| {
                        Rejection::malformed("Authorization", "expected `Bearer <token>`")
                    })?;
                self.token_match(token.trim().as_bytes(), n)
            }
            Provider::Basic => {
                let v = header(parts, "authorization")?;
                let decoded = v
                    .strip_prefix("Basic ")
                    .and_then(|b| B64.decode(b.trim()).ok())
                    .ok_or_else(|| {
                        Rejection::malformed("Authorization", "expected `Basic <base64>`")
                    })?;
                let (user, pass) = match decoded.iter().position(|b| *b == b':') {
                    Some(i) => (&decoded[..i], &decoded[i + 1..]),
                    None => {
                        return Err(Rejection::malformed(
                            "Authorization",
                            "credentials without `:`",
                        ))
                    }
                };
                let want_user = self.spec.username.as_deref().unwrap_or("").as_bytes();
                let user_ok: bool = user.ct_eq(want_user).into();
                let i = self.token_match(pass, n);
                match (user_ok, i) {
                    (true, Ok(i)) => Ok(i),
                    _ => Err(Rejection {
                        kind: "no_match",
                        detail: format!(
                            "user name or password wrong ({} password(s) configured)",
                            self.keys.len()
                        ),
                    }),
                }
            }
            Provider::Twilio => self.twilio(parts, body, tls),
            Provider::Standard => self.standard(parts, body, now),
            Provider::Discord => {
                let sig = hex::decode(header(parts, "x-signature-ed25519")?.trim())
                    .ok()
                    .filter(|b| b.len() == 64)
                    .ok_or_else(|| {
                        Rejection::malformed("X-Signature-Ed25519", "expected 128 hex digits")
                    })?;
                let ts = header(parts, "x-signature-timestamp")?;
                self.tolerance_check(ts, now)?;
                let msg = [ts.as_bytes(), body].concat();
                self.asymmetric(&aws_lc_rs::signature::ED25519, &msg, &sig, n)
            }
            Provider::Sendgrid => {
                let sig = B64
                    .decode(header(parts, "x-twilio-email-event-webhook-signature")?.trim())
                    .map_err(|_| {
                        Rejection::malformed("X-Twilio-Email-Event-Webhook-Signature", "not base64")
                    })?;
                let ts = header(parts, "x-twilio-email-event-webhook-timestamp")?;
                self.tolerance_check(ts, now)?;
                let msg = [ts.as_bytes(), body].concat();
                self.asymmetric(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1, &msg, &sig, n)
            }
        }
    }

    fn token_match(&self, presented: &[u8], n: usize) -> Result<usize, Rejection> {
        self.keys
            .iter()
            .position(|k| bool::from(presented.ct_eq(k)))
            .ok_or_else(|| Rejection {
                kind: "no_match",
                detail: format!(
                    "token matched none of {} secret(s); body was {n} bytes",
                    self.keys.len()
                ),
            })
    }

    fn asymmetric(
        &self,
        alg: &'static dyn aws_lc_rs::signature::VerificationAlgorithm,
        msg: &[u8],
        sig: &[u8],
        n: usize,
    ) -> Result<usize, Rejection> {
        self.spec
            .public_keys
            .iter()
            .position(|k| {
                aws_lc_rs::signature::UnparsedPublicKey::new(alg, k)
                    .verify(msg, sig)
                    .is_ok()
            })
            .ok_or_else(|| Rejection {
                kind: "no_match",
                detail: format!(
                    "signature verified with none of {} public key(s); body was {n} bytes",
                    self.spec.public_keys.len()
                ),
            })
    }

    fn standard(&self, parts: &Parts, body: &[u8], now: SystemTime) -> Result<usize, Rejection> {
        let (i, id) = first_header(parts, &["webhook-id", "svix-id"])?;
        let prefix = ["webhook", "svix"][i];
        let ts = header(parts, &format!("{prefix}-timestamp"))?;
        let sigs = header(parts, &format!("{prefix}-signature"))?;
        self.tolerance_check(ts, now)?;
        let mut v1 = Vec::new();
        let mut v1a = Vec::new();
        for s in sigs.split(' ').filter(|s| !s.is_empty()) {
            match s.split_once(',') {
                Some(("v1", b)) => v1.extend(B64.decode(b).ok()),
                Some(("v1a", b)) => v1a.extend(B64.decode(b).ok()),
                _ => {}
            }
        }
        if v1.is_empty() && v1a.is_empty() {
            return Err(Rejection::malformed(
                &format!("{prefix}-signature"),
                "no v1,<base64> or v1a,<base64> signature",
            ));
        }
        let signed: [&[u8]; 5] = [id.as_bytes(), b".", ts.as_bytes(), b".", body];
        if let Ok(i) = self.hmac_any(HmacAlgorithm::Sha256, &signed, &v1, body.len()) {
            if !self.keys.is_empty() {
                return Ok(i);
            }
        }
        let msg = signed.concat();
        for (i, k) in self.spec.public_keys.iter().enumerate() {
            let pk =
                aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, k);
            if v1a.iter().any(|s| pk.verify(&msg, s).is_ok()) {
                return Ok(self.keys.len() + i);
            }
        }
        Err(Rejection::no_match(
            self.keys.len() + self.spec.public_keys.len(),
            body.len(),
        ))
    }

    fn twilio(&self, parts: &Parts, body: &[u8], tls: bool) -> Result<usize, Rejection> {
        let sig = B64
            .decode(header(parts, "x-twilio-signature")?.trim())
            .ok()
            .filter(|b| b.len() == 20)
            .ok_or_else(|| {
                Rejection::malformed("X-Twilio-Signature", "expected base64 of 20 bytes")
            })?;
        let url = match &self.spec.public_url {
            Some(u) if u.contains('?') => u.clone(),
            Some(u) => match parts.uri.query() {
                Some(q) => format!("{u}?{q}"),
                None => u.clone(),
            },
            None => request_url(parts, tls),
        };
        let body_hash = parts.uri.query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "bodySHA256")
                .map(|(_, v)| v.into_owned())
        });
        let params = match &body_hash {
            // JSON body: the URL alone is signed, and the body is bound by its hash.
            Some(expected) => {
                use sha2::Digest;
                let actual = hex::encode(sha2::Sha256::digest(body));
                if !bool::from(
                    actual
                        .as_bytes()
                        .ct_eq(expected.to_ascii_lowercase().as_bytes()),
                ) {
                    return Err(Rejection {
                        kind: "no_match",
                        detail: format!(
                            "bodySHA256 does not match the body ({} bytes)",
                            body.len()
                        ),
                    });
                }
                String::new()
            }
            None => twilio_params(body),
        };
        let mut last = Err(Rejection::no_match(self.keys.len(), body.len()));
        for u in port_variants(&url) {
            let r = self.hmac_any(
                HmacAlgorithm::Sha1,
                &[u.as_bytes(), params.as_bytes()],
                std::slice::from_ref(&sig),
                body.len(),
            );
            if r.is_ok() {
                return r;
            }
            last = r;
        }
        last
    }
}

/// Form parameters sorted by name, then value, each name followed by its value.
pub fn twilio_params(body: &[u8]) -> String {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    pairs.sort();
    pairs.into_iter().map(|(k, v)| k + &v).collect()
}

/// The URL as written, plus the same with the default port added or removed: Twilio's own
/// validators accept either.
pub fn port_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let Ok(uri) = url.parse::<http::Uri>() else {
        return out;
    };
    let (Some(scheme), Some(host), Some(authority)) =
        (uri.scheme_str(), uri.host(), uri.authority())
    else {
        return out;
    };
    let rest = url
        .split_once(authority.as_str())
        .map(|(_, r)| r)
        .unwrap_or("");
    let default = if scheme == "https" { 443 } else { 80 };
    match uri.port_u16() {
        Some(p) if p == default => out.push(format!("{scheme}://{host}{rest}")),
        None => out.push(format!("{scheme}://{host}:{default}{rest}")),
        _ => {}
    }
    out
}

/// `scheme://host/path?query` as the sender called it (behind a proxy, set `public_url`).
pub fn request_url(parts: &Parts, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    format!("{scheme}://{host}{pq}")
}

/// The provider's own delivery id, for deduplication.
pub fn delivery_id(p: Provider, headers: &http::HeaderMap, body: &[u8]) -> Option<String> {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_owned())
    };
    let body_field = |f: &str| {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()?
            .get(f)?
            .as_str()
            .map(str::to_owned)
    };
    match p {
        Provider::Github => h("x-github-delivery"),
        Provider::Stripe => body_field("id"),
        Provider::Shopify => h("x-shopify-webhook-id").or_else(|| h("shopify-webhook-id")),
        Provider::Standard => h("webhook-id").or_else(|| h("svix-id")),
        Provider::Linear => h("linear-delivery"),
        Provider::Gitlab => h("x-gitlab-event-uuid"),
        Provider::Twilio => h("i-twilio-idempotency-token"),
        Provider::Square => body_field("event_id"),
        _ => None,
    }
    .filter(|s| !s.is_empty())
}

#[cfg(test)]
#[path = "providers_tests.rs"]
mod tests;
