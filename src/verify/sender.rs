//! The headers a provider would send for a body — for `hookgate sign` (testing a route with
//! curl) and for tests. Timestamps and delivery ids are generated where the scheme has them.

use super::mac;
use super::providers::twilio_params;
use crate::config::{HmacAlgorithm, Provider};
use base64::Engine;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn hex_mac(key: &[u8], parts: &[&[u8]]) -> String {
    hex::encode(mac::compute(HmacAlgorithm::Sha256, key, parts))
}

/// Header lines (name, value) and an optional note for the user.
pub type Signed = (Vec<(String, String)>, Option<String>);

/// Headers for `body` signed as provider `p` at Unix time `now`, and a note for the user
/// (e.g. the URL to call). `url` is the public URL for URL-signed schemes.
pub fn headers(
    p: Provider,
    secret: &str,
    body: &[u8],
    url: Option<&str>,
    now: u64,
) -> Result<Signed, String> {
    let ts = now.to_string();
    let k = secret.as_bytes();
    let id = uuid::Uuid::now_v7().to_string();
    let one = |n: &str, v: String| Ok((vec![(n.to_owned(), v)], None));
    match p {
        Provider::Github | Provider::Meta => one(
            "X-Hub-Signature-256",
            format!("sha256={}", hex_mac(k, &[body])),
        ),
        Provider::Stripe => one(
            "Stripe-Signature",
            format!("t={ts},v1={}", hex_mac(k, &[ts.as_bytes(), b".", body])),
        ),
        Provider::Slack => Ok((
            vec![
                ("X-Slack-Request-Timestamp".into(), ts.clone()),
                (
                    "X-Slack-Signature".into(),
                    format!("v0={}", hex_mac(k, &[b"v0:", ts.as_bytes(), b":", body])),
                ),
            ],
            None,
        )),
        Provider::Zoom => Ok((
            vec![
                ("x-zm-request-timestamp".into(), ts.clone()),
                (
                    "x-zm-signature".into(),
                    format!("v0={}", hex_mac(k, &[b"v0:", ts.as_bytes(), b":", body])),
                ),
            ],
            None,
        )),
        Provider::Paddle => one(
            "Paddle-Signature",
            format!("ts={ts};h1={}", hex_mac(k, &[ts.as_bytes(), b":", body])),
        ),
        Provider::Shopify => Ok((
            vec![
                (
                    "X-Shopify-Hmac-Sha256".into(),
                    B64.encode(mac::compute(HmacAlgorithm::Sha256, k, &[body])),
                ),
                ("X-Shopify-Webhook-Id".into(), id),
            ],
            None,
        )),
        Provider::Square => {
            let url = url.ok_or("square signs the notification URL: pass --url")?;
            one(
                "x-square-hmacsha256-signature",
                B64.encode(mac::compute(
                    HmacAlgorithm::Sha256,
                    k,
                    &[url.as_bytes(), body],
                )),
            )
        }
        Provider::Linear => Ok((
            vec![
                ("Linear-Signature".into(), hex_mac(k, &[body])),
                ("Linear-Delivery".into(), id),
            ],
            Some(
                "Linear also checks the body's `webhookTimestamp` (milliseconds) against the clock"
                    .into(),
            ),
        )),
        Provider::Gitlab => Ok((
            vec![
                ("X-Gitlab-Token".into(), secret.to_owned()),
                ("X-Gitlab-Event-UUID".into(), id),
            ],
            None,
        )),
        Provider::Bearer => one("Authorization", format!("Bearer {secret}")),
        Provider::Basic => {
            if !secret.contains(':') {
                return Err("basic: pass --secret user:password".into());
            }
            one("Authorization", format!("Basic {}", B64.encode(secret)))
        }
        Provider::Standard => {
            let key = crate::deliver::sign::decode_secret(secret)?;
            let msg_id = format!("msg_{}", id.replace('-', ""));
            let sig = crate::deliver::sign::signature(&key, &msg_id, now, body);
            Ok((
                vec![
                    ("webhook-id".into(), msg_id),
                    ("webhook-timestamp".into(), ts),
                    ("webhook-signature".into(), sig),
                ],
                None,
            ))
        }
        Provider::Twilio => {
            let url = url.ok_or("twilio signs the URL it calls: pass --url")?;
            let form = !body.is_empty()
                && std::str::from_utf8(body).is_ok_and(|b| !b.trim_start().starts_with('{'));
            let (signed_url, params, note) = if form || body.is_empty() {
                (url.to_owned(), twilio_params(body), None)
            } else {
                use sha2::Digest;
                let h = hex::encode(sha2::Sha256::digest(body));
                let sep = if url.contains('?') { '&' } else { '?' };
                let u = format!("{url}{sep}bodySHA256={h}");
                (
                    u.clone(),
                    String::new(),
                    Some(format!("JSON body: call {u}")),
                )
            };
            let sig = B64.encode(mac::compute(
                HmacAlgorithm::Sha1,
                k,
                &[signed_url.as_bytes(), params.as_bytes()],
            ));
            Ok((vec![("X-Twilio-Signature".into(), sig)], note))
        }
        Provider::Discord | Provider::Sendgrid => Err(format!(
            "{} signs with its private key, which only the provider holds",
            p.name()
        )),
    }
}
