//! Handshakes a provider requires before it sends events, answered by hookgate itself on
//! the route, in either mode, and never forwarded: Slack `url_verification`, Zoom
//! `endpoint.url_validation`, Discord PING, and Meta's GET `hub.challenge` (which carries no
//! signature, only the route's `verify_token`). The signed ones are answered only after
//! their signature verified.

use super::mac;
use crate::config::{HmacAlgorithm, Provider, ProviderSpec};
use http::StatusCode;
use subtle::ConstantTimeEq;

/// The answer to a handshake: status, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
}

fn json(v: serde_json::Value) -> Answer {
    Answer {
        status: StatusCode::OK,
        content_type: "application/json",
        body: v.to_string(),
    }
}

/// A verified request that is a handshake, answered.
pub fn after_verification(spec: &ProviderSpec, body: &[u8]) -> Option<Answer> {
    if !matches!(
        spec.provider,
        Provider::Slack | Provider::Zoom | Provider::Discord
    ) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    match spec.provider {
        Provider::Slack if v.get("type")? == "url_verification" => Some(Answer {
            status: StatusCode::OK,
            content_type: "text/plain",
            body: v.get("challenge")?.as_str()?.to_owned(),
        }),
        Provider::Zoom if v.get("event")? == "endpoint.url_validation" => {
            let plain = v.get("payload")?.get("plainToken")?.as_str()?;
            let secret = spec.secrets.first()?;
            let enc = hex::encode(mac::compute(
                HmacAlgorithm::Sha256,
                secret.expose().as_bytes(),
                &[plain.as_bytes()],
            ));
            Some(json(
                serde_json::json!({ "plainToken": plain, "encryptedToken": enc }),
            ))
        }
        Provider::Discord if v.get("type")? == 1 => Some(json(serde_json::json!({ "type": 1 }))),
        _ => None,
    }
}

/// Meta's subscription check: `GET ?hub.mode=subscribe&hub.verify_token=..&hub.challenge=..`.
pub fn meta_subscribe(spec: &ProviderSpec, query: Option<&str>) -> Answer {
    let q: std::collections::HashMap<String, String> =
        form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let token_ok = match (&spec.verify_token, q.get("hub.verify_token")) {
        (Some(want), Some(got)) => bool::from(got.as_bytes().ct_eq(want.expose().as_bytes())),
        _ => false,
    };
    match (
        q.get("hub.mode").map(String::as_str),
        q.get("hub.challenge"),
    ) {
        (Some("subscribe"), Some(challenge)) if token_ok => Answer {
            status: StatusCode::OK,
            content_type: "text/plain",
            body: challenge.clone(),
        },
        _ => Answer {
            status: StatusCode::FORBIDDEN,
            content_type: "application/json",
            body: r#"{"error":"verification failed"}"#.to_owned(),
        },
    }
}
