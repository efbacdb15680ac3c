//! Secrets in a type that never prints them: `Debug` and `Serialize` show `[redacted]`.

use serde::{Serialize, Serializer};
use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }

    /// The only way to reach the value: call sites are greppable.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }
}

/// Whether a header of this name carries a credential, so that its value is shown only as
/// `[redacted]` wherever hookgate prints headers (`check --sample`, the events API):
/// `Authorization`, cookies, and any name that speaks of a signature, token, key, secret,
/// password, HMAC or auth.
pub fn is_credential_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || [
        "signature",
        "token",
        "hmac",
        "key",
        "secret",
        "password",
        "auth",
        "session",
    ]
    .iter()
    .any(|w| n.contains(w))
}

#[cfg(test)]
mod credential_tests {
    use super::is_credential_header;

    #[test]
    fn credential_headers_are_known_by_name() {
        for n in [
            "Authorization",
            "X-Api-Key",
            "x-auth-token",
            "Cookie",
            "X-Hub-Signature-256",
            "X-Shopify-Hmac-Sha256",
            "x-client-secret",
            "Proxy-Authorization",
        ] {
            assert!(is_credential_header(n), "{n}");
        }
        for n in ["content-type", "x-github-event", "x-source", "user-agent"] {
            assert!(!is_credential_header(n), "{n}");
        }
    }
}
