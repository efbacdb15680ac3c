//! Signature verification: the gate between a received request and everything that acts on
//! it. Forwarding takes a [`Verified`], and the only way to make one is [`Verifier::verify`]:
//! an unverified request cannot reach a target by construction, not by convention.
//! Verification runs on the exact bytes received, before any parsing.

pub mod github;
pub mod handshake;
pub mod hmac;
pub mod mac;
pub mod providers;
pub mod sender;

use crate::config::{Route, VerifySpec};
use bytes::Bytes;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

/// A request as received: head, exact body bytes, the matched route and the client address.
#[derive(Debug)]
pub struct Unverified {
    pub parts: http::request::Parts,
    pub body: Bytes,
    pub route: Arc<Route>,
    pub client_ip: IpAddr,
    /// Arrived over TLS (URL-signed schemes rebuild the URL the sender called).
    pub tls: bool,
}

/// A request whose signature checked out (or whose route verifies nothing, or runs in shadow
/// mode). Fields are private: only this module constructs it.
#[derive(Debug)]
pub struct Verified {
    req: Unverified,
    shadow_failure: Option<Rejection>,
}

impl Verified {
    pub fn parts(&self) -> &http::request::Parts {
        &self.req.parts
    }
    pub fn body(&self) -> &Bytes {
        &self.req.body
    }
    pub fn route(&self) -> &Arc<Route> {
        &self.req.route
    }
    pub fn client_ip(&self) -> IpAddr {
        self.req.client_ip
    }
    /// The verified head and body, taken apart to be forwarded (sync mode: no copy).
    pub fn into_parts(self) -> (http::request::Parts, Bytes) {
        (self.req.parts, self.req.body)
    }
    /// Set when the verifier is in shadow mode (`enforce: false`) and the check failed.
    pub fn shadow_failure(&self) -> Option<&Rejection> {
        self.shadow_failure.as_ref()
    }
}

/// Why a request was refused, precisely, for the operator; the sender only ever sees a fixed
/// 401 body. `kind` is a short, bounded label for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: &'static str,
    pub detail: String,
}

impl Rejection {
    pub fn missing_header(name: &str) -> Self {
        Rejection {
            kind: "missing_header",
            detail: format!("header {name} missing"),
        }
    }
    pub fn malformed(name: &str, why: &str) -> Self {
        Rejection {
            kind: "malformed",
            detail: format!("header {name} malformed: {why}"),
        }
    }
    pub fn repeated_header(name: &str) -> Self {
        Rejection {
            kind: "repeated_header",
            detail: format!("header {name} sent more than once"),
        }
    }
    pub fn no_match(secrets: usize, body_len: usize) -> Self {
        Rejection {
            kind: "no_match",
            detail: format!(
                "no signature matched any of {secrets} secret(s); body was {body_len} bytes"
            ),
        }
    }
}

/// A verifier built once per config load from its [`VerifySpec`].
#[derive(Debug)]
pub enum Verifier {
    Provider(Box<providers::ProviderVerifier>),
    Hmac(Box<hmac::GenericHmac>),
    None,
}

/// Which secret matched (0-based index into `secrets`), for rotation metrics.
pub type Matched = Option<usize>;

impl Verifier {
    pub fn new(spec: &VerifySpec) -> Self {
        match spec {
            VerifySpec::Provider(p) => {
                Verifier::Provider(Box::new(providers::ProviderVerifier::new(p)))
            }
            VerifySpec::Hmac(h) => Verifier::Hmac(Box::new(hmac::GenericHmac::new(h))),
            VerifySpec::None => Verifier::None,
        }
    }

    fn check(&self, req: &Unverified, now: SystemTime) -> Result<Matched, Rejection> {
        self.refuse_repeated_signatures(&req.parts.headers)?;
        match self {
            Verifier::Provider(v) => v.check(&req.parts, &req.body, now, req.tls).map(Some),
            Verifier::Hmac(v) => v.check(&req.parts, &req.body, now).map(Some),
            Verifier::None => Ok(None),
        }
    }

    /// A signature header sent twice is ambiguous: which one counts would depend on the
    /// order, so the request fails whatever the order. (Several signatures inside one
    /// header, where a scheme allows it, are the scheme's business.)
    fn refuse_repeated_signatures(&self, headers: &http::HeaderMap) -> Result<(), Rejection> {
        let repeated = |name: &http::HeaderName| headers.get_all(name).iter().nth(1).is_some();
        let found = match self {
            Verifier::Provider(v) => v.signature_names().iter().find(|n| repeated(n)),
            Verifier::Hmac(v) => Some(v.header_name()).filter(|n| repeated(n)),
            Verifier::None => None,
        };
        match found {
            Some(name) => Err(Rejection::repeated_header(name.as_str())),
            None => Ok(()),
        }
    }

    /// The one way from [`Unverified`] to [`Verified`]. In shadow mode a failure is recorded on
    /// the result and the request proceeds.
    pub fn verify(
        &self,
        req: Unverified,
        now: SystemTime,
    ) -> Result<(Verified, Matched), Rejection> {
        match self.check(&req, now) {
            Ok(m) => Ok((
                Verified {
                    req,
                    shadow_failure: None,
                },
                m,
            )),
            Err(r) if !req.route.verify.enforce() => Ok((
                Verified {
                    req,
                    shadow_failure: Some(r),
                },
                None,
            )),
            Err(r) => Err(r),
        }
    }
}
