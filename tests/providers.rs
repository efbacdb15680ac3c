//! Every verifier through the real gateway (async mode, the default): a correctly signed
//! request is accepted and delivered byte-exact; a tampered one gets 401 and nothing is
//! delivered; a repeated provider delivery id gets 200 and is delivered once; handshakes are
//! answered by hookgate and never delivered; the operator sees why requests were refused.

mod common;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use common::*;
use hookgate::config::Provider;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn ed_key() -> Ed25519KeyPair {
    let seed: Vec<u8> = (0u8..32).collect();
    Ed25519KeyPair::from_seed_unchecked(&seed).unwrap()
}

fn verifier(p: Provider) -> String {
    match p {
        Provider::Standard => format!("{{ standard: {{ secret: \"{WHSEC}\" }} }}"),
        Provider::Basic => "{ basic: { username: user, password: pw } }".into(),
        Provider::Discord => format!(
            "{{ discord: {{ public_key: \"{}\" }} }}",
            hex::encode(ed_key().public_key().as_ref())
        ),
        Provider::Square | Provider::Twilio => format!(
            "{{ {}: {{ secret: s3cret, public_url: \"https://hooks.example.com/p/{}\" }} }}",
            p.name(),
            p.name()
        ),
        _ => format!("{{ {}: {{ secret: s3cret }} }}", p.name()),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Headers a real sender would attach to `body`.
fn signed(p: Provider, body: &[u8]) -> Vec<(String, String)> {
    let t = now();
    match p {
        Provider::Discord => {
            let ts = t.to_string();
            let sig = ed_key().sign(&[ts.as_bytes(), body].concat());
            vec![
                ("x-signature-ed25519".into(), hex::encode(sig.as_ref())),
                ("x-signature-timestamp".into(), ts),
            ]
        }
        Provider::Sendgrid => unreachable!(),
        _ => {
            let secret = match p {
                Provider::Standard => WHSEC,
                Provider::Basic => "user:pw",
                _ => "s3cret",
            };
            let url = format!("https://hooks.example.com/p/{}", p.name());
            hookgate::verify::sender::headers(p, secret, body, Some(&url), t)
                .unwrap()
                .0
        }
    }
}

fn body_for(p: Provider, n: u32) -> Vec<u8> {
    match p {
        Provider::Linear => {
            format!(r#"{{"n":{n},"webhookTimestamp":{}}}"#, now() * 1000).into_bytes()
        }
        Provider::Twilio => format!("CallSid=CA{n}&From=%2B14158675309").into_bytes(),
        Provider::Stripe => format!(r#"{{"id":"evt_{n}","type":"charge.succeeded"}}"#).into_bytes(),
        Provider::Square => format!(r#"{{"event_id":"sq-{n}"}}"#).into_bytes(),
        _ => format!(r#"{{"n":{n}}}"#).into_bytes(),
    }
}

fn catalogue() -> Vec<Provider> {
    Provider::ALL
        .into_iter()
        .filter(|p| *p != Provider::Sendgrid)
        .collect()
}

async fn send(
    addr: std::net::SocketAddr,
    p: Provider,
    headers: &[(String, String)],
    body: &[u8],
) -> Answer {
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let ct = if p == Provider::Twilio {
        "application/x-www-form-urlencoded"
    } else {
        "application/json"
    };
    let mut h = h;
    h.push(("content-type", ct));
    plain(addr, post(&format!("/p/{}", p.name()), &h, body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_through_the_gateway() {
    let rx = TestReceiver::start().await;
    let mut yaml = String::from("server: { listen: [\"127.0.0.1:0\"] }\nadmin: { listen: \"127.0.0.1:0\" }\nstorage: { path: data }\nroutes:\n");
    for p in catalogue() {
        yaml += &format!(
            "  - name: {n}\n    path: /p/{n}\n    verify: {v}\n    targets: [{{ name: t, url: \"{u}\" }}]\n",
            n = p.name(),
            v = verifier(p),
            u = rx.url(&format!("/got/{}", p.name())),
        );
    }
    let gw = start_gateway(&yaml, |_| {}).await;
    let mut expected = 0;
    // Made once: Linear's body carries the clock.
    let bodies: std::collections::HashMap<Provider, Vec<u8>> = catalogue()
        .into_iter()
        .map(|p| (p, body_for(p, 1)))
        .collect();
    for p in catalogue() {
        let body = bodies[&p].clone();
        let headers = signed(p, &body);
        let a = send(gw.addr, p, &headers, &body).await;
        assert_eq!(
            a.status,
            202,
            "{}: {}",
            p.name(),
            String::from_utf8_lossy(&a.body)
        );
        expected += 1;
        if matches!(p, Provider::Gitlab | Provider::Bearer | Provider::Basic) {
            // Token schemes sign nothing: a wrong token is what must fail.
            let wrong: Vec<(String, String)> = headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.clone(),
                        if n.eq_ignore_ascii_case("x-gitlab-event-uuid") {
                            v.clone()
                        } else {
                            format!("{v}x")
                        },
                    )
                })
                .collect();
            assert_eq!(
                send(gw.addr, p, &wrong, &body).await.status,
                401,
                "{}",
                p.name()
            );
        } else {
            // Tampered: one byte changed after signing.
            let mut bad = body.clone();
            bad[2] ^= 1;
            let a = send(gw.addr, p, &headers, &bad).await;
            assert_eq!(a.status, 401, "{} accepted a tampered body", p.name());
            assert_eq!(&a.body[..], br#"{"error":"unauthorized"}"#);
        }
        // Nothing at all.
        assert_eq!(
            send(gw.addr, p, &[], &body).await.status,
            401,
            "{}",
            p.name()
        );
        // The provider's delivery id again: 200, not delivered twice.
        if hookgate::verify::providers::delivery_id(p, &to_map(&headers), &body).is_some() {
            let again = send(gw.addr, p, &headers, &body).await;
            assert_eq!(again.status, 200, "{}: duplicate", p.name());
        }
    }
    rx.wait_for(expected, 15).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = rx.all();
    assert_eq!(
        got.len(),
        expected,
        "a duplicate or tampered request was delivered"
    );
    for p in catalogue() {
        let r = got
            .iter()
            .find(|r| r.uri.path() == format!("/got/{}", p.name()))
            .unwrap();
        assert_eq!(
            &r.body[..],
            &bodies[&p][..],
            "{}: body not byte-exact",
            p.name()
        );
        for h in p.signature_headers() {
            assert!(
                !r.headers.contains_key(*h),
                "{}: {h} was passed on",
                p.name()
            );
        }
    }
    // The operator sees why: precise reasons, never shown to the sender.
    let (st, v) = admin_get(gw.admin, "/api/v1/rejections?route=stripe").await;
    assert_eq!(st, 200);
    let reasons: Vec<&str> = v["rejections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("no signature matched any of 1 secret(s)")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("header stripe-signature missing")),
        "{reasons:?}"
    );
    gw.gw.drain().await;
}

fn to_map(h: &[(String, String)]) -> http::HeaderMap {
    let mut m = http::HeaderMap::new();
    for (n, v) in h {
        m.insert(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_are_answered_not_forwarded() {
    let rx = TestReceiver::start().await;
    let pk = hex::encode(ed_key().public_key().as_ref());
    let yaml = format!(
        r#"server: {{ listen: ["127.0.0.1:0"] }}
admin: {{ listen: "127.0.0.1:0" }}
storage: {{ path: data }}
routes:
  - {{ name: slack, path: /slack, verify: {{ slack: {{ secret: s3cret }} }}, targets: [{{ name: t, url: "{u}" }}] }}
  - {{ name: zoom, path: /zoom, mode: sync, verify: {{ zoom: {{ secret: zoom_secret_token }} }}, targets: [{{ name: t, url: "{u}" }}] }}
  - {{ name: discord, path: /discord, verify: {{ discord: {{ public_key: "{pk}" }} }}, targets: [{{ name: t, url: "{u}" }}] }}
  - {{ name: meta, path: /meta, verify: {{ meta: {{ secret: s3cret }} }}, verify_token: vt-123, targets: [{{ name: t, url: "{u}" }}] }}
"#,
        u = rx.url("/x")
    );
    let gw = start_gateway(&yaml, |_| {}).await;
    let t = now();
    let send_signed = |path: &'static str, p: Provider, body: &'static [u8]| {
        let addr = gw.addr;
        let headers = match p {
            Provider::Discord => signed(p, body),
            Provider::Zoom => {
                hookgate::verify::sender::headers(p, "zoom_secret_token", body, None, t)
                    .unwrap()
                    .0
            }
            _ => {
                hookgate::verify::sender::headers(p, "s3cret", body, None, t)
                    .unwrap()
                    .0
            }
        };
        async move {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            plain(addr, post(path, &h, body)).await
        }
    };
    let a = send_signed(
        "/slack",
        Provider::Slack,
        br#"{"token":"x","challenge":"ch4ll3nge","type":"url_verification"}"#,
    )
    .await;
    assert_eq!((a.status.as_u16(), &a.body[..]), (200, &b"ch4ll3nge"[..]));
    let a = send_signed(
        "/zoom",
        Provider::Zoom,
        br#"{"event":"endpoint.url_validation","payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"}}"#,
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(
        v["encryptedToken"],
        "bd48235863f4a6323ccc4963c594908b7c97f88b4a6a95278f4f093690b12726"
    );
    let a = send_signed("/discord", Provider::Discord, br#"{"type":1}"#).await;
    assert_eq!(&a.body[..], br#"{"type":1}"#);
    // An unsigned PING is refused like anything else.
    assert_eq!(
        plain(gw.addr, post("/discord", &[], br#"{"type":1}"#))
            .await
            .status,
        401
    );
    let get = |q: &str| {
        http::Request::get(format!("/meta?{q}"))
            .header("host", "x")
            .body(Default::default())
            .unwrap()
    };
    let a = plain(
        gw.addr,
        get("hub.mode=subscribe&hub.verify_token=vt-123&hub.challenge=1158201444"),
    )
    .await;
    assert_eq!((a.status.as_u16(), &a.body[..]), (200, &b"1158201444"[..]));
    let a = plain(
        gw.addr,
        get("hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1"),
    )
    .await;
    assert_eq!(a.status, 403);
    // None of them reached the target.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(300) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rx.count(), 0);
    let m = plain(
        gw.admin,
        http::Request::get("/metrics")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert!(metrics_text(&m.body)
        .contains(r#"hookgate_handshakes_total{route="meta",provider="meta"} 2"#));
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_lets_failures_through_and_records_them() {
    let rx = TestReceiver::start().await;
    let yaml = format!(
        "server: {{ listen: [\"127.0.0.1:0\"] }}\nadmin: {{ listen: \"127.0.0.1:0\" }}\nroutes:\n  - {{ name: s, path: /s, mode: sync, verify: {{ stripe: {{ secret: new, enforce: false }} }}, targets: [{{ name: t, url: \"{}\" }}] }}\n",
        rx.url("/x")
    );
    let gw = start_gateway(&yaml, |_| {}).await;
    let body = br#"{"id":"evt_1"}"#;
    let (h, _) =
        hookgate::verify::sender::headers(Provider::Stripe, "old", body, None, now()).unwrap();
    let a = plain(
        gw.addr,
        post("/s", &[(h[0].0.as_str(), h[0].1.as_str())], body),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(rx.count(), 1);
    let (_, v) = admin_get(gw.admin, "/api/v1/rejections").await;
    assert_eq!(v["rejections"][0]["shadow"], true);
    let m = plain(
        gw.admin,
        http::Request::get("/metrics")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert!(metrics_text(&m.body)
        .contains("hookgate_verification_shadow_failures_total{route=\"s\",reason=\"no_match\"}"));
    gw.gw.drain().await;
}
