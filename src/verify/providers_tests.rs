//! Every provider against its published vector (or, where none is published, the algorithm
//! its documentation describes), and the ways a request goes wrong.

use super::*;
use crate::config::Secret;
use std::time::{Duration, UNIX_EPOCH};

const BODY: &[u8] = br#"{"id":"evt_test_1","type":"test.event"}"#;
const T: u64 = 1_700_000_000;
const ED_PUB_HEX: &str = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn spec(p: Provider, secrets: &[&str]) -> ProviderSpec {
    ProviderSpec {
        provider: p,
        secrets: secrets
            .iter()
            .map(|s| Secret::new((*s).to_owned()))
            .collect(),
        public_keys: vec![],
        enforce: true,
        tolerance: p.default_tolerance().unwrap_or_default(),
        public_url: None,
        verify_token: None,
        username: None,
    }
}

fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::post(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn check(
    s: &ProviderSpec,
    uri: &str,
    h: &[(&str, &str)],
    body: &[u8],
    now: SystemTime,
) -> Result<usize, Rejection> {
    ProviderVerifier::new(s).check(&parts(uri, h), body, now, true)
}

fn kind(r: Result<usize, Rejection>) -> &'static str {
    r.err().map(|e| e.kind).unwrap_or("ok")
}

#[test]
fn github_published_vector_and_failures() {
    let s = spec(Provider::Github, &["It's a Secret to Everybody"]);
    let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let now = SystemTime::now();
    assert_eq!(
        check(
            &s,
            "/",
            &[("x-hub-signature-256", sig)],
            b"Hello, World!",
            now
        ),
        Ok(0)
    );
    assert_eq!(
        kind(check(
            &s,
            "/",
            &[("x-hub-signature-256", sig)],
            b"Hello, World?",
            now
        )),
        "no_match"
    );
    assert_eq!(
        kind(check(&s, "/", &[], b"Hello, World!", now)),
        "missing_header"
    );
    assert_eq!(
        kind(check(
            &s,
            "/",
            &[("x-hub-signature-256", "sha256=757107")],
            b"x",
            now
        )),
        "malformed"
    );
    // Upper-case hex decodes to the same MAC: accepted.
    let upper = format!("sha256={}", sig[7..].to_ascii_uppercase());
    assert_eq!(
        check(
            &s,
            "/",
            &[("x-hub-signature-256", &upper)],
            b"Hello, World!",
            now
        ),
        Ok(0)
    );
    // Rotation: the second secret matches.
    let rot = spec(Provider::Github, &["old", "It's a Secret to Everybody"]);
    assert_eq!(
        check(
            &rot,
            "/",
            &[("x-hub-signature-256", sig)],
            b"Hello, World!",
            now
        ),
        Ok(1)
    );
}

#[test]
fn meta_vector() {
    let s = spec(Provider::Meta, &["meta_app_secret"]);
    let sig = "sha256=1827f7bd1aae6d25447e1d64ede132ee5d687b7d47ceaff9ac2e19e79c5ccb88";
    assert_eq!(
        check(&s, "/", &[("x-hub-signature-256", sig)], BODY, at(T)),
        Ok(0)
    );
}

#[test]
fn stripe_vector_several_v1_and_tolerance() {
    let s = spec(Provider::Stripe, &["whsec_test_secret"]);
    let good = "b56d8d3c94e44b9589adbfff3bbbf3f06503bb5521f34fe7fbb949637cdff25f";
    let h = format!("t={T},v1={good}");
    assert_eq!(
        check(&s, "/", &[("stripe-signature", &h)], BODY, at(T + 10)),
        Ok(0)
    );
    // Any v1 may match (Stripe sends several while a secret rolls).
    let two = format!("t={T},v1={},v1={good},v0=abc", "0".repeat(64));
    assert_eq!(
        check(&s, "/", &[("stripe-signature", &two)], BODY, at(T)),
        Ok(0)
    );
    assert_eq!(
        kind(check(
            &s,
            "/",
            &[("stripe-signature", &h)],
            BODY,
            at(T + 301)
        )),
        "timestamp"
    );
    assert_eq!(
        kind(check(
            &s,
            "/",
            &[("stripe-signature", &h)],
            BODY,
            at(T - 301)
        )),
        "timestamp"
    );
    assert_eq!(
        kind(check(
            &s,
            "/",
            &[("stripe-signature", &format!("v1={good}"))],
            BODY,
            at(T)
        )),
        "malformed"
    );
    assert_eq!(
        kind(check(
            &s,
            "/",
            &[("stripe-signature", &format!("t={T}"))],
            BODY,
            at(T)
        )),
        "malformed"
    );
    assert_eq!(
        kind(check(&s, "/", &[("stripe-signature", &h)], b"{}", at(T))),
        "no_match"
    );
    assert_eq!(
        delivery_id(Provider::Stripe, &http::HeaderMap::new(), BODY).as_deref(),
        Some("evt_test_1")
    );
}

#[test]
fn slack_published_vector() {
    let s = spec(Provider::Slack, &["8f742231b10e8888abcd99yyyzzz85a5"]);
    let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let h = [
        ("x-slack-request-timestamp", "1531420618"),
        (
            "x-slack-signature",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        ),
    ];
    assert_eq!(check(&s, "/", &h, body, at(1531420618 + 5)), Ok(0));
    assert_eq!(
        kind(check(&s, "/", &h, body, at(1531420618 + 600))),
        "timestamp"
    );
    assert_eq!(
        kind(check(&s, "/", &h[..1], body, at(1531420618))),
        "missing_header"
    );
}

#[test]
fn zoom_vector_and_handshake() {
    let s = spec(Provider::Zoom, &["zoom_secret_token"]);
    let ts = T.to_string();
    let h = [
        ("x-zm-request-timestamp", ts.as_str()),
        (
            "x-zm-signature",
            "v0=1211d11144a0eac1638f6129af17c41c53ff174d4725e7c8bd5cd368edfdecb7",
        ),
    ];
    assert_eq!(check(&s, "/", &h, BODY, at(T)), Ok(0));
    let crc =
        br#"{"event":"endpoint.url_validation","payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"}}"#;
    let a = crate::verify::handshake::after_verification(&s, crc).unwrap();
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(
        v["encryptedToken"],
        "bd48235863f4a6323ccc4963c594908b7c97f88b4a6a95278f4f093690b12726"
    );
    assert_eq!(v["plainToken"], "qgg8vlvZRS6UYooatFL8Aw");
}

#[test]
fn shopify_both_headers() {
    let s = spec(Provider::Shopify, &["shpss_test_secret"]);
    let sig = "VEBH++5GMChMCicLR3HjrDgosa+zLlkb4I1YHhjWJZw=";
    assert_eq!(
        check(&s, "/", &[("x-shopify-hmac-sha256", sig)], BODY, at(T)),
        Ok(0)
    );
    assert_eq!(
        check(&s, "/", &[("shopify-hmac-sha256", sig)], BODY, at(T)),
        Ok(0)
    );
    assert_eq!(
        kind(check(
            &s,
            "/",
            &[("x-shopify-hmac-sha256", "not base64!")],
            BODY,
            at(T)
        )),
        "malformed"
    );
}

#[test]
fn paddle_vector_multiple_h1_and_5s_tolerance() {
    let s = spec(Provider::Paddle, &["pdl_ntfset_test_secret"]);
    let good = "dbfd7e895c64bb0a8f7ce073104132bcc91190df862e74bdf04ec5ea5e6ff910";
    let h = format!("ts={T};h1={};h1={good}", "1".repeat(64));
    assert_eq!(
        check(&s, "/", &[("paddle-signature", &h)], BODY, at(T + 4)),
        Ok(0)
    );
    assert_eq!(
        kind(check(&s, "/", &[("paddle-signature", &h)], BODY, at(T + 6))),
        "timestamp"
    );
}

#[test]
fn linear_vector_and_body_timestamp() {
    let s = spec(Provider::Linear, &["lin_wh_test_secret"]);
    // The published vector's HMAC, over a body without webhookTimestamp.
    assert_eq!(
        hex::encode(mac::compute(
            HmacAlgorithm::Sha256,
            b"lin_wh_test_secret",
            &[BODY]
        )),
        "9bc552d586c51d26469b123bcf060ca605fa52c0f8ad7c6439a7b1b28181e653"
    );
    let body = format!(r#"{{"action":"create","webhookTimestamp":{}}}"#, T * 1000);
    let sig = hex::encode(mac::compute(
        HmacAlgorithm::Sha256,
        b"lin_wh_test_secret",
        &[body.as_bytes()],
    ));
    assert_eq!(
        check(
            &s,
            "/",
            &[("linear-signature", &sig)],
            body.as_bytes(),
            at(T + 30)
        ),
        Ok(0)
    );
    assert_eq!(
        kind(check(
            &s,
            "/",
            &[("linear-signature", &sig)],
            body.as_bytes(),
            at(T + 61)
        )),
        "timestamp"
    );
    let no_ts = "9bc552d586c51d26469b123bcf060ca605fa52c0f8ad7c6439a7b1b28181e653";
    assert_eq!(
        kind(check(&s, "/", &[("linear-signature", no_ts)], BODY, at(T))),
        "malformed"
    );
}

#[test]
fn square_signs_the_notification_url() {
    let mut s = spec(Provider::Square, &["square_sig_key"]);
    let sig = "vqdaKBslreG0oJFVLCF0fHsn3/NSQUCxXH7+pgIEMew=";
    s.public_url = Some("https://hooks.example.com/square".into());
    assert_eq!(
        check(
            &s,
            "/square",
            &[("x-square-hmacsha256-signature", sig)],
            BODY,
            at(T)
        ),
        Ok(0)
    );
    // Without public_url, the URL is rebuilt from the request (https, Host, path).
    s.public_url = None;
    let h = [
        ("x-square-hmacsha256-signature", sig),
        ("host", "hooks.example.com"),
    ];
    assert_eq!(check(&s, "/square", &h, BODY, at(T)), Ok(0));
    let h = [
        ("x-square-hmacsha256-signature", sig),
        ("host", "elsewhere.example.com"),
    ];
    assert_eq!(kind(check(&s, "/square", &h, BODY, at(T))), "no_match");
}

#[test]
fn gitlab_bearer_basic_tokens() {
    let g = spec(Provider::Gitlab, &["glpat-1", "glpat-2"]);
    assert_eq!(
        check(&g, "/", &[("x-gitlab-token", "glpat-2")], b"", at(T)),
        Ok(1)
    );
    assert_eq!(
        kind(check(&g, "/", &[("x-gitlab-token", "glpat-3")], b"", at(T))),
        "no_match"
    );
    let b = spec(Provider::Bearer, &["tok"]);
    assert_eq!(
        check(&b, "/", &[("authorization", "Bearer tok")], b"", at(T)),
        Ok(0)
    );
    assert_eq!(
        kind(check(
            &b,
            "/",
            &[("authorization", "Basic tok")],
            b"",
            at(T)
        )),
        "malformed"
    );
    let mut ba = spec(Provider::Basic, &["pw"]);
    ba.username = Some("user".into());
    assert_eq!(
        check(
            &ba,
            "/",
            &[("authorization", "Basic dXNlcjpwdw==")],
            b"",
            at(T)
        ),
        Ok(0)
    );
    assert_eq!(
        kind(check(
            &ba,
            "/",
            &[("authorization", "Basic dXNlcjpwdzI=")],
            b"",
            at(T)
        )),
        "no_match"
    );
}

#[test]
fn twilio_published_vectors() {
    let s = spec(Provider::Twilio, &["12345"]);
    let form = b"CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212";
    let uri = "/myapp.php?foo=1&bar=2";
    let host = ("host", "mycompany.com");
    for sig in [
        "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
        // The same URL written with its default port: accepted too.
        "kvajT1Ptam85bY51eRf/AJRuM3w=",
    ] {
        assert_eq!(
            check(&s, uri, &[("x-twilio-signature", sig), host], form, at(T)),
            Ok(0),
            "{sig}"
        );
    }
    assert_eq!(
        kind(check(
            &s,
            uri,
            &[("x-twilio-signature", "0ZXoZLH/DfblKGATFgpif+LLRf4="), host],
            form,
            at(T)
        )),
        "no_match"
    );
    // Duplicate keys: sorted by key, then value.
    let dup = b"Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234";
    let sig = "IK+Dwps556ElfBT0I3Rgjkr1wJU=";
    assert_eq!(
        check(&s, uri, &[("x-twilio-signature", sig), host], dup, at(T)),
        Ok(0)
    );
    // JSON body: the URL carries bodySHA256; the body must hash to it.
    let json = br#"{"property": "value", "boolean": true}"#;
    let juri = "/myapp.php?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    let h = [("x-twilio-signature", "a9nBmqA0ju/hNViExpshrM61xv4="), host];
    assert_eq!(check(&s, juri, &h, json, at(T)), Ok(0));
    assert_eq!(
        kind(check(&s, juri, &h, b"{\"property\": \"tampered\"}", at(T))),
        "no_match"
    );
    // Behind a proxy: public_url names what Twilio called.
    let mut p = s.clone();
    p.public_url = Some("https://mycompany.com/myapp.php".into());
    let h = [
        ("x-twilio-signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        ("host", "internal:8080"),
    ];
    assert_eq!(check(&p, "/twilio?foo=1&bar=2", &h, form, at(T)), Ok(0));
}

#[test]
fn standard_webhooks_published_vector_svix_headers_and_v1a() {
    let s = spec(
        Provider::Standard,
        &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    );
    let body = br#"{"test": 2432232314}"#;
    let h = [
        ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", "v1,bm9ldHRoZXJpZ2h0c2lnbmF0dXJlYXRhbGxub25v v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
    ];
    assert_eq!(check(&s, "/", &h, body, at(1614265330)), Ok(0));
    assert_eq!(
        kind(check(&s, "/", &h, body, at(1614265330 + 301))),
        "timestamp"
    );
    let ts = T.to_string();
    let svix = [
        ("svix-id", "msg_test_1"),
        ("svix-timestamp", ts.as_str()),
        (
            "svix-signature",
            "v1,YmsAxR8OyClXbmnahTd3DmzWghXhfWsf6S08SxEvVzc=",
        ),
    ];
    assert_eq!(check(&s, "/", &svix, BODY, at(T)), Ok(0));
    // v1a: Ed25519 with a whpk_ public key.
    let mut a = spec(Provider::Standard, &[]);
    use base64::Engine;
    a.public_keys = vec![B64
        .decode("A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=")
        .unwrap()];
    let v1a = [
        ("webhook-id", "msg_test_1"),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", "v1a,sIDuiW4wlNwpWOzsucsZMTXf3Zvvbpy2+VO3GkVUYEazP5PXSWE2QTY2Nxjc3YmpEJs0QDBY80Ig9CnIvo8iAw=="),
    ];
    assert_eq!(check(&a, "/", &v1a, BODY, at(T)), Ok(0));
    assert_eq!(kind(check(&a, "/", &v1a, b"{}", at(T))), "no_match");
    assert_eq!(
        kind(check(
            &a,
            "/",
            &[
                ("webhook-id", "x"),
                ("webhook-timestamp", &ts),
                ("webhook-signature", "v2,abc")
            ],
            BODY,
            at(T)
        )),
        "malformed"
    );
}

#[test]
fn discord_ed25519_and_ping() {
    let mut s = spec(Provider::Discord, &[]);
    s.public_keys = vec![hex::decode(ED_PUB_HEX).unwrap()];
    let ts = T.to_string();
    let sig = "b420a6416cfb00c85c7627d93a80ec456220e36f8353304660d10c279ba976c219d54b0ecc36c56cfd8f071de9f0b31e3b0ccc549bc02aafd9f2b0220fb45703";
    let h = [
        ("x-signature-ed25519", sig),
        ("x-signature-timestamp", ts.as_str()),
    ];
    assert_eq!(check(&s, "/", &h, BODY, at(T)), Ok(0));
    assert_eq!(
        kind(check(&s, "/", &h, b"{\"id\":\"evt_test_2\"}", at(T))),
        "no_match"
    );
    assert_eq!(
        kind(check(
            &s,
            "/",
            &[
                ("x-signature-ed25519", "abcd"),
                ("x-signature-timestamp", &ts)
            ],
            BODY,
            at(T)
        )),
        "malformed"
    );
    let ping = crate::verify::handshake::after_verification(&s, br#"{"type":1}"#).unwrap();
    assert_eq!(ping.body, r#"{"type":1}"#);
}

#[test]
fn sendgrid_published_vector() {
    use base64::Engine;
    let mut s = spec(Provider::Sendgrid, &[]);
    s.public_keys = vec![B64
        .decode("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==")
        .unwrap()];
    let body = br#"{"category":"example_payload","event":"test_event","message_id":"message_id"}"#;
    let h = [
        ("x-twilio-email-event-webhook-signature", "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0="),
        ("x-twilio-email-event-webhook-timestamp", "1588788367"),
    ];
    assert_eq!(check(&s, "/", &h, body, at(1588788367)), Ok(0));
    assert_eq!(
        kind(check(&s, "/", &h, b"{\"tampered\":true}", at(1588788367))),
        "no_match"
    );
}

#[test]
fn slack_and_meta_handshakes() {
    let s = spec(Provider::Slack, &["x"]);
    let a = crate::verify::handshake::after_verification(&s, br#"{"type":"url_verification","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}"#).unwrap();
    assert_eq!(
        a.body,
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    assert!(
        crate::verify::handshake::after_verification(&s, br#"{"type":"event_callback"}"#).is_none()
    );
    let mut m = spec(Provider::Meta, &["x"]);
    m.verify_token = Some(Secret::new("vt".into()));
    let ok = crate::verify::handshake::meta_subscribe(
        &m,
        Some("hub.mode=subscribe&hub.verify_token=vt&hub.challenge=1158201444"),
    );
    assert_eq!((ok.status.as_u16(), ok.body.as_str()), (200, "1158201444"));
    let bad = crate::verify::handshake::meta_subscribe(
        &m,
        Some("hub.mode=subscribe&hub.verify_token=no&hub.challenge=1"),
    );
    assert_eq!(bad.status.as_u16(), 403);
}

#[test]
fn sender_headers_verify_for_every_hmac_provider() {
    let now = T;
    for p in Provider::ALL {
        if p.asymmetric() {
            continue;
        }
        let secret = match p {
            Provider::Standard => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            Provider::Basic => "user:pw",
            _ => "s3cret",
        };
        let body: Vec<u8> = match p {
            Provider::Linear => format!(r#"{{"webhookTimestamp":{}}}"#, now * 1000).into_bytes(),
            _ => BODY.to_vec(),
        };
        let url = "https://hooks.example.com/in";
        let (headers, _) =
            crate::verify::sender::headers(p, secret, &body, Some(url), now).unwrap();
        let mut s = spec(p, &[if p == Provider::Basic { "pw" } else { secret }]);
        s.username = Some("user".into());
        let uri = match p {
            Provider::Twilio => {
                use sha2::Digest;
                format!(
                    "/in?bodySHA256={}",
                    hex::encode(sha2::Sha256::digest(&body))
                )
            }
            _ => "/in".to_owned(),
        };
        let mut h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        h.push(("host", "hooks.example.com"));
        assert_eq!(check(&s, &uri, &h, &body, at(now)), Ok(0), "{}", p.name());
    }
}

#[test]
fn header_parsers_never_panic_and_never_accept_noise() {
    let mut rng = fastrand::Rng::with_seed(7);
    let alphabet: Vec<char> = "0123456789abcdefABCDEF=,;: .tv1hsa+/-_\u{e9}"
        .chars()
        .collect();
    let names = [
        "x-hub-signature-256",
        "stripe-signature",
        "x-slack-signature",
        "x-slack-request-timestamp",
        "x-shopify-hmac-sha256",
        "x-twilio-signature",
        "x-gitlab-token",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "paddle-signature",
        "linear-signature",
        "x-zm-signature",
        "x-zm-request-timestamp",
        "x-square-hmacsha256-signature",
        "x-signature-ed25519",
        "x-signature-timestamp",
        "x-twilio-email-event-webhook-signature",
        "x-twilio-email-event-webhook-timestamp",
        "authorization",
    ];
    for p in Provider::ALL {
        let mut s = spec(p, &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]);
        s.public_keys = vec![hex::decode(ED_PUB_HEX).unwrap()];
        s.username = Some("u".into());
        for _ in 0..300 {
            let values: Vec<String> = names
                .iter()
                .map(|_| {
                    (0..rng.usize(0..80))
                        .map(|_| alphabet[rng.usize(0..alphabet.len())])
                        .collect()
                })
                .collect();
            let mut b = http::Request::post("/x?bodySHA256=00");
            for (n, v) in names.iter().zip(&values) {
                if let Ok(hv) = http::HeaderValue::from_str(v) {
                    b = b.header(*n, hv);
                }
            }
            let parts = b.body(()).unwrap().into_parts().0;
            let r = ProviderVerifier::new(&s).check(
                &parts,
                b"{\"webhookTimestamp\":1}",
                SystemTime::now(),
                true,
            );
            assert!(r.is_err(), "{}: accepted random headers", p.name());
        }
    }
}
