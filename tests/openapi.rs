//! The OpenAPI document is kept true: every operation in it is called on a live gateway
//! holding delivered, dead, filtered and pending events, and every JSON answer is checked
//! against the schema the document gives for its status code. An operation the document
//! lists but the test did not reach fails the test, and so does an undocumented status.

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashSet;

/// Checks `v` against the subset of JSON Schema the document uses.
fn validate(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        return validate(doc, &doc["components"]["schemas"][name], v, at);
    }
    if v.is_null() {
        return if schema["nullable"] == true || schema.get("type").is_none() {
            Ok(())
        } else {
            Err(format!("{at}: null where the schema does not allow it"))
        };
    }
    let ok = match schema.get("type").and_then(Value::as_str) {
        None => true,
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some(t) => return Err(format!("{at}: unknown type {t}")),
    };
    if !ok {
        return Err(format!("{at}: expected {}, got {v}", schema["type"]));
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            return Err(format!("{at}: {v} not in {e:?}"));
        }
    }
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req {
            let k = r.as_str().unwrap();
            if v.get(k).is_none() {
                return Err(format!("{at}: missing required `{k}`"));
            }
        }
    }
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        v.as_object(),
    ) {
        for (k, val) in obj {
            match props.get(k) {
                Some(s) => validate(doc, s, val, &format!("{at}.{k}"))?,
                None => return Err(format!("{at}: `{k}` is not in the schema")),
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            validate(doc, items, x, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

struct Checker {
    doc: Value,
    admin: std::net::SocketAddr,
    seen: HashSet<(String, String)>,
}

impl Checker {
    /// Calls the live API and checks the answer against the document.
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, Value) {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "admin")
            .header("authorization", "Bearer tok")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.unwrap_or("").to_owned(),
            )))
            .unwrap();
        let a = plain(self.admin, req).await;
        let status = a.status.as_u16();
        let op = &self.doc["paths"][template][method.to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not in the document");
        let resp = &op["responses"][status.to_string()];
        assert!(
            resp.is_object(),
            "{method} {path} answered {status}, which the document does not list"
        );
        let resp = match resp.get("$ref").and_then(Value::as_str) {
            Some(r) => self.doc["components"]["responses"]
                [r.trim_start_matches("#/components/responses/")]
            .clone(),
            None => resp.clone(),
        };
        let mut value = Value::Null;
        if let Some(schema) = resp["content"]
            .get("application/json")
            .map(|c| &c["schema"])
        {
            value = serde_json::from_slice(&a.body)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e})"));
            if let Err(e) = validate(&self.doc, schema, &value, "$") {
                panic!("{method} {path} ({status}) does not match the document: {e}\n{value}");
            }
        } else {
            let ct = a
                .headers
                .get("content-type")
                .map(|v| v.to_str().unwrap_or(""))
                .unwrap_or("");
            assert!(
                ct.starts_with("text/plain"),
                "{method} {path}: content-type {ct}"
            );
        }
        self.seen
            .insert((method.to_lowercase(), template.to_owned()));
        (status, value)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_as_documented() {
    let rx = TestReceiver::start().await;
    rx.script.lock().unwrap().push_back((410, None));
    let yaml = format!(
        r#"server: {{ listen: ["127.0.0.1:0"] }}
admin: {{ listen: "127.0.0.1:0", token: tok }}
storage: {{ path: data }}
routes:
  - name: gh
    path: /gh
    verify: {{ bearer: {{ secret: s }} }}
    targets:
      - {{ name: ci, url: "{u}", filter: '.keep == true' }}
  - name: proxy
    path: /proxy
    mode: sync
    verify: {{ none: true }}
    targets: [{{ name: t, url: "{u}" }}]
"#,
        u = rx.url("/ci")
    );
    let gw = start_gateway(&yaml, |_| {}).await;
    let send = |auth: &'static str, body: &'static [u8]| {
        let addr = gw.addr;
        async move { plain(addr, post("/gh", &[("authorization", auth)], body)).await }
    };
    let dead: Value =
        serde_json::from_slice(&send("Bearer s", br#"{"keep":true}"#).await.body).unwrap();
    rx.wait_for(1, 10).await;
    send("Bearer s", br#"{"keep":false}"#).await;
    send("Bearer wrong", b"{}").await;
    let id = dead["id"].as_str().unwrap().to_owned();
    let a = gw.admin;
    let doc: Value = serde_json::from_str(hookgate::admin::api::OPENAPI).unwrap();
    let mut c = Checker {
        doc: doc.clone(),
        admin: a,
        seen: HashSet::new(),
    };

    // Wait for the 410 to be recorded as a dead letter.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, v) = c
            .call(
                "GET",
                "/api/v1/dead-letters",
                "/api/v1/dead-letters?target=gh/ci",
                None,
            )
            .await;
        if !v["dead_letters"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    c.call("GET", "/healthz", "/healthz", None).await;
    c.call("GET", "/readyz", "/readyz", None).await;
    c.call("GET", "/metrics", "/metrics", None).await;
    let (_, served) = c
        .call("GET", "/api/v1/openapi.json", "/api/v1/openapi.json", None)
        .await;
    assert_eq!(served, doc);
    c.call("GET", "/api/v1/routes", "/api/v1/routes", None)
        .await;
    c.call("GET", "/api/v1/events", "/api/v1/events", None)
        .await;
    c.call(
        "GET",
        "/api/v1/events",
        "/api/v1/events?status=filtered&limit=1",
        None,
    )
    .await;
    assert_eq!(
        c.call("GET", "/api/v1/events", "/api/v1/events?status=bogus", None)
            .await
            .0,
        400
    );
    c.call(
        "GET",
        "/api/v1/events/{id}",
        &format!("/api/v1/events/{id}"),
        None,
    )
    .await;
    assert_eq!(
        c.call("GET", "/api/v1/events/{id}", "/api/v1/events/nope", None)
            .await
            .0,
        404
    );
    assert_eq!(
        c.call(
            "GET",
            "/api/v1/dead-letters",
            "/api/v1/dead-letters?target=nodash",
            None
        )
        .await
        .0,
        400
    );
    c.call(
        "POST",
        "/api/v1/dead-letters/replay",
        "/api/v1/dead-letters/replay",
        Some(r#"{"target":"gh/ci","all":true}"#),
    )
    .await;
    assert_eq!(
        c.call(
            "POST",
            "/api/v1/dead-letters/replay",
            "/api/v1/dead-letters/replay",
            Some("{}")
        )
        .await
        .0,
        400
    );
    c.call(
        "POST",
        "/api/v1/events/{id}/replay",
        &format!("/api/v1/events/{id}/replay?target=ci"),
        None,
    )
    .await;
    assert_eq!(
        c.call(
            "POST",
            "/api/v1/events/{id}/replay",
            "/api/v1/events/nope/replay",
            None
        )
        .await
        .0,
        404
    );
    c.call(
        "POST",
        "/api/v1/targets/{route}/{target}/pause",
        "/api/v1/targets/gh/ci/pause",
        None,
    )
    .await;
    c.call("GET", "/api/v1/routes", "/api/v1/routes", None)
        .await;
    c.call(
        "POST",
        "/api/v1/targets/{route}/{target}/resume",
        "/api/v1/targets/gh/ci/resume",
        None,
    )
    .await;
    assert_eq!(
        c.call(
            "POST",
            "/api/v1/targets/{route}/{target}/pause",
            "/api/v1/targets/gh/zz/pause",
            None
        )
        .await
        .0,
        404
    );
    c.call(
        "GET",
        "/api/v1/rejections",
        "/api/v1/rejections?route=gh",
        None,
    )
    .await;
    c.call("GET", "/api/v1/config", "/api/v1/config", None)
        .await;
    c.call("POST", "/api/v1/reload", "/api/v1/reload", None)
        .await;
    write_config(gw.dir.path(), "routes: [");
    assert_eq!(
        c.call("POST", "/api/v1/reload", "/api/v1/reload", None)
            .await
            .0,
        400
    );

    // Without the token: 401 as documented.
    let no_token = plain(
        a,
        http::Request::get("/api/v1/routes")
            .header("host", "x")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(no_token.status, 401);

    let documented: HashSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), p.clone()))
        })
        .collect();
    let missed: Vec<_> = documented.difference(&c.seen).collect();
    assert!(
        missed.is_empty(),
        "documented but never exercised: {missed:?}"
    );
    gw.gw.drain().await;
}
