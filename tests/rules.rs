//! jq rules end to end: per-target filters decide which deliveries exist, transforms reshape
//! the body for one target without touching another, failures are contained and recorded.

mod common;

use common::*;
use std::time::{Duration, Instant};

const SECRET: &str = "s3cret";

fn push(reference: &str) -> Vec<u8> {
    format!(r#"{{"ref":"{reference}","after":"abc123","repository":{{"full_name":"acme/api"}}}}"#)
        .into_bytes()
}

async fn send(
    addr: std::net::SocketAddr,
    path: &str,
    body: &[u8],
    delivery: &str,
    ct: &str,
) -> Answer {
    let sig = github_sig(SECRET, body);
    let h = [
        ("x-hub-signature-256", sig.as_str()),
        ("x-github-delivery", delivery),
        ("x-github-event", "push"),
        ("content-type", ct),
    ];
    plain(addr, post(path, &h, body)).await
}

async fn state_of(admin: std::net::SocketAddr, id: &str, target: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, ev) = admin_get(admin, &format!("/api/v1/events/{id}")).await;
        let d = ev["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["target"] == target)
            .cloned()
            .unwrap();
        if d["state"] != "pending" || Instant::now() > deadline {
            return d["state"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_transforms_per_target() {
    let ci = TestReceiver::start().await;
    let audit = TestReceiver::start().await;
    let yaml = format!(
        r#"server: {{ listen: ["127.0.0.1:0"] }}
admin: {{ listen: "127.0.0.1:0" }}
storage: {{ path: data }}
routes:
  - name: gh
    path: /gh
    verify: {{ github: {{ secret: {SECRET} }} }}
    targets:
      - name: ci
        url: {ci}
        filter: '.ref == "refs/heads/main" and $headers["x-github-event"] == "push" and $route == "gh"'
        transform: '{{repo: .repository.full_name, sha: .after, q: $query.k}}'
      - name: audit
        url: {audit}
      - name: broken
        url: {audit}
        transform: '.ref, .after'
        retry: {{ max_attempts: 2, initial: 10ms }}
"#,
        ci = ci.url("/ci"),
        audit = audit.url("/audit")
    );
    let gw = start_gateway(&yaml, |_| {}).await;
    let main = push("refs/heads/main");
    let a = send(gw.addr, "/gh?k=v", &main, "d1", "application/json").await;
    assert_eq!(a.status, 202);
    let id1: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    let id1 = id1["id"].as_str().unwrap().to_owned();
    let feature = push("refs/heads/feature");
    let a = send(gw.addr, "/gh", &feature, "d2", "application/json").await;
    let id2: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    let id2 = id2["id"].as_str().unwrap().to_owned();

    ci.wait_for(1, 10).await;
    audit.wait_for(2, 10).await;
    let got = ci.last();
    assert_eq!(got.headers["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"repo": "acme/api", "sha": "abc123", "q": "v"})
    );
    // audit has no transform: the original bytes, both events.
    let bodies: Vec<Vec<u8>> = audit.all().iter().map(|r| r.body.to_vec()).collect();
    assert!(bodies.contains(&main) && bodies.contains(&feature));
    // The feature push was recorded as filtered for ci, delivered to audit.
    assert_eq!(state_of(gw.admin, &id2, "ci").await, "filtered");
    assert_eq!(state_of(gw.admin, &id2, "audit").await, "delivered");
    assert_eq!(state_of(gw.admin, &id1, "ci").await, "delivered");
    // Two outputs from a transform fail that delivery alone, with the reason.
    assert_eq!(state_of(gw.admin, &id1, "broken").await, "dead");
    let (_, ev) = admin_get(gw.admin, &format!("/api/v1/events/{id1}")).await;
    let broken = ev["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["target"] == "broken")
        .unwrap()
        .clone();
    assert!(
        broken["last_error"].as_str().unwrap().contains("2 outputs"),
        "{broken}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ci.count(), 1);
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_routes_filter_form_posts_and_transform() {
    let rx = TestReceiver::start().await;
    let yaml = format!(
        r#"server: {{ listen: ["127.0.0.1:0"] }}
admin: {{ listen: "127.0.0.1:0" }}
routes:
  - name: slash
    path: /slash
    mode: sync
    verify: {{ github: {{ secret: {SECRET} }} }}
    targets:
      - name: deploy
        url: {u}
        filter: '.command == "/deploy"'
        transform: '{{cmd: .command, args: .text}}'
"#,
        u = rx.url("/deploy")
    );
    let gw = start_gateway(&yaml, |_| {}).await;
    let form = "application/x-www-form-urlencoded";
    let a = send(
        gw.addr,
        "/slash",
        b"command=%2Fdeploy&text=prod",
        "s1",
        form,
    )
    .await;
    assert_eq!(a.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&rx.last().body).unwrap();
    assert_eq!(v, serde_json::json!({"cmd": "/deploy", "args": "prod"}));
    let a = send(gw.addr, "/slash", b"command=%2Fweather&text=x", "s2", form).await;
    assert_eq!(a.status, 200);
    assert_eq!(&a.body[..], br#"{"filtered":true}"#);
    assert_eq!(rx.count(), 1);
    gw.gw.drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_templates_and_kept_signatures() {
    let rx = TestReceiver::start().await;
    let yaml = format!(
        r#"server: {{ listen: ["127.0.0.1:0"] }}
admin: {{ listen: "127.0.0.1:0" }}
storage: {{ path: data }}
routes:
  - name: gh
    path: /gh
    verify: {{ github: {{ secret: {SECRET} }} }}
    targets:
      - name: ci
        url: {u}
        headers:
          set: {{ X-Event: "{{{{ event.id }}}}", X-Where: "{{{{ route }}}}/{{{{ target }}}}" }}
          keep_signature: true
"#,
        u = rx.url("/ci")
    );
    let gw = start_gateway(&yaml, |_| {}).await;
    let body = push("refs/heads/main");
    let a = send(gw.addr, "/gh", &body, "t1", "application/json").await;
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    rx.wait_for(1, 10).await;
    let h = rx.last().headers;
    assert_eq!(h["x-event"], v["id"].as_str().unwrap());
    assert_eq!(h["x-where"], "gh/ci");
    assert_eq!(h["x-hub-signature-256"], github_sig(SECRET, &body).as_str());
    gw.gw.drain().await;
}

fn id_of(a: &Answer) -> String {
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

async fn last_error(admin: std::net::SocketAddr, id: &str, target: &str) -> String {
    let (_, ev) = admin_get(admin, &format!("/api/v1/events/{id}")).await;
    ev["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["target"] == target)
        .and_then(|d| d["last_error"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn hostile_config(evil_filter: &str, good: &str, sync: &str) -> String {
    format!(
        r#"server: {{ listen: ["127.0.0.1:0"] }}
admin: {{ listen: "127.0.0.1:0" }}
storage: {{ path: data }}
routes:
  - name: evil
    path: /evil
    verify: {{ github: {{ secret: {SECRET} }} }}
    targets: [{{ name: t, url: "{good}", filter: '{evil_filter}' }}]
  - name: greedy
    path: /greedy
    verify: {{ github: {{ secret: {SECRET} }} }}
    targets: [{{ name: t, url: "{good}", filter: '[range(1e9)] | length > 0' }}]
  - name: good
    path: /good
    verify: {{ github: {{ secret: {SECRET} }} }}
    targets: [{{ name: t, url: "{good}", filter: '.ref == "refs/heads/main"' }}]
  - name: evil-sync
    path: /evil-sync
    mode: sync
    verify: {{ github: {{ secret: {SECRET} }} }}
    targets: [{{ name: t, url: "{sync}", filter: '{evil_filter}' }}]
"#
    )
}

/// A filter that never ends, and one that eats memory, cost their budget and nothing more:
/// their events are stored with a dead delivery that says why (never `filtered`), other
/// routes deliver every event meanwhile, a sync sender is told the gateway failed, and a
/// replay after the rule is fixed delivers the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_filters_end_in_dead_letters_and_spare_other_routes() {
    let rx = TestReceiver::start().await;
    let sync_rx = TestReceiver::start().await;
    let (good, sync) = (rx.url("/good"), sync_rx.url("/sync"));
    let evil = "last(range(1e12)) > 0";
    let gw = start_gateway(&hostile_config(evil, &good, &sync), |_| {}).await;
    let main = push("refs/heads/main");
    let mut stuck = Vec::new();
    for n in 0..2 {
        let a = send(
            gw.addr,
            "/evil",
            &main,
            &format!("e{n}"),
            "application/json",
        )
        .await;
        assert_eq!(a.status, 202);
        stuck.push(id_of(&a));
    }
    let greedy = send(gw.addr, "/greedy", &main, "g", "application/json").await;
    assert_eq!(greedy.status, 202);
    let greedy = id_of(&greedy);
    for n in 0..10 {
        let a = send(
            gw.addr,
            "/good",
            &main,
            &format!("ok{n}"),
            "application/json",
        )
        .await;
        assert_eq!(a.status, 202, "good route during the attack");
    }
    rx.wait_for(10, 20).await;
    for id in &stuck {
        assert_eq!(state_of(gw.admin, id, "t").await, "dead");
        assert_eq!(
            last_error(gw.admin, id, "t").await,
            "filter timed out after 250 ms"
        );
    }
    assert_eq!(state_of(gw.admin, &greedy, "t").await, "dead");
    let why = last_error(gw.admin, &greedy, "t").await;
    assert!(
        why.contains("memory budget") || why.contains("timed out"),
        "{why}"
    );
    // Sync: the sender learns the gateway failed (and retries), the target sees nothing.
    let a = send(gw.addr, "/evil-sync", &main, "s", "application/json").await;
    assert_eq!(a.status, 500);
    assert!(String::from_utf8_lossy(&a.body).contains("rules"));
    assert_eq!(sync_rx.count(), 0);
    // The pool is whole again: good events still flow at once.
    let a = send(gw.addr, "/good", &main, "after", "application/json").await;
    assert_eq!(a.status, 202);
    rx.wait_for(11, 10).await;
    // Dead-letter metrics count the rule failures by reason.
    let m = admin_metrics(gw.admin).await;
    assert!(
        m.contains(r#"route="evil",target="t",kind="filter",result="timeout""#),
        "{m}"
    );

    // Fix the rule, reload, replay: the events reach the target.
    write_config(gw.dir.path(), &hostile_config("true", &good, &sync));
    let (s, _) = admin_post(gw.admin, "/api/v1/reload", "").await;
    assert_eq!(s, 200);
    for id in &stuck {
        let (s, _) = admin_post(gw.admin, &format!("/api/v1/events/{id}/replay"), "").await;
        assert!(s.is_success(), "{s}");
        assert_eq!(state_of(gw.admin, id, "t").await, "delivered");
    }
    rx.wait_for(13, 10).await;
    gw.gw.drain().await;
}
