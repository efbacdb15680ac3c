//! `hookgate check --sample FILE`: runs a route's filters and transforms on a sample payload
//! and shows, per target, whether it would be delivered and the exact request it would get —
//! so a rule change can be tested in CI before it ships. Signatures are not checked (a sample
//! has none); everything after verification runs as the gateway runs it.

use crate::config::{Config, Mode, Route};
use crate::deliver::proxy::{Forwarded, Outbound};
use crate::rules::pool::JqPool;
use crate::rules::transform::{self, Input};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::fmt::Write;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("{0}")]
    Input(String),
}

/// Picks the route: the one named, or the only one.
pub fn route<'a>(config: &'a Config, name: Option<&str>) -> Result<&'a Arc<Route>, SampleError> {
    match name {
        Some(n) => config
            .routes
            .iter()
            .find(|r| r.name == n)
            .ok_or_else(|| SampleError::Input(format!("no route named `{n}`"))),
        None if config.routes.len() == 1 => Ok(&config.routes[0]),
        None => Err(SampleError::Input(format!(
            "the config has {} routes: name one with --route",
            config.routes.len()
        ))),
    }
}

/// The report: per target, delivered or filtered out, and the request it would receive.
pub async fn run(
    route: &Route,
    body: Bytes,
    headers: &[(String, String)],
    jq: &JqPool,
) -> Result<String, SampleError> {
    let mut map = HeaderMap::new();
    for (n, v) in headers {
        let n = HeaderName::from_bytes(n.trim().as_bytes())
            .map_err(|_| SampleError::Input(format!("bad header name `{n}`")))?;
        let v = HeaderValue::from_str(v.trim())
            .map_err(|_| SampleError::Input(format!("bad value for header {n}")))?;
        map.append(n, v);
    }
    let input = Input::new(
        body.clone(),
        map.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
        None,
        std::sync::Arc::from(route.name.as_str()),
        true,
    );
    let mode = match route.mode {
        Mode::Sync => "sync",
        Mode::Async => "async",
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "route {} ({mode}), {} target(s); signatures are not checked on a sample",
        route.name,
        route.targets.len()
    );
    let uri: http::Uri = match &route.path {
        crate::config::PathMatch::Exact(p) | crate::config::PathMatch::Prefix(p) => {
            p.parse().unwrap_or_default()
        }
    };
    let forwarded = Forwarded {
        for_chain: "203.0.113.7".into(),
        proto: "https",
        host: Some("hooks.example.com".into()),
    };
    let signature_headers: Vec<HeaderName> = match &route.verify {
        crate::config::VerifySpec::Provider(p) => p
            .provider
            .signature_headers()
            .iter()
            .map(|h| HeaderName::from_static(h))
            .collect(),
        crate::config::VerifySpec::Hmac(h) => vec![h.header.clone()],
        crate::config::VerifySpec::None => vec![],
    };
    for t in &route.targets {
        let _ = writeln!(out);
        let plans = vec![transform::plan(t, true, true)].into();
        let counter = crate::admin::metrics::JqMetrics::new(&route.name, &t.name);
        let d = transform::decide(jq, input.clone(), &plans, std::slice::from_ref(&counter))
            .await
            .into_iter()
            .next()
            .unwrap_or(transform::Decision {
                admitted: true,
                failed: None,
                body: None,
            });
        if let Some(f) = d.failed {
            let _ = writeln!(
                out,
                "== {}: dead letter: {f} (the gateway would not deliver it)",
                t.name
            );
            continue;
        }
        if !d.admitted {
            let f = t.filter.as_deref().unwrap_or_default();
            let _ = writeln!(
                out,
                "== {}: filtered out (`{f}` is not true for this sample)",
                t.name
            );
            continue;
        }
        let mut headers = map.clone();
        let body = match d.body {
            None => body.clone(),
            Some(Ok(b)) => {
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                b
            }
            Some(Err(e)) => {
                let _ = writeln!(
                    out,
                    "== {}: dead letter: {e} (the gateway would not deliver it)",
                    t.name
                );
                continue;
            }
        };
        let extra = vec![
            (
                HeaderName::from_static("hookgate-event-id"),
                HeaderValue::from_static("sample"),
            ),
            (
                HeaderName::from_static("hookgate-attempt"),
                HeaderValue::from_static("1"),
            ),
        ];
        let req = Outbound {
            method: http::Method::POST,
            uri: &uri,
            headers,
            body,
            forwarded: &forwarded,
            route_name: &route.name,
            route_path: &route.path,
            target: t,
            signature_headers: &signature_headers,
            extra,
            event_id: "sample",
        }
        .into_request()
        .map_err(|e| SampleError::Input(e.to_string()))?;
        let _ = writeln!(out, "== {}: delivered", t.name);
        let _ = writeln!(out, "{} {}", req.method(), req.uri());
        let mut names: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        names.sort();
        for (n, v) in names {
            let v = if crate::config::secret::is_credential_header(&n) {
                "[redacted]"
            } else {
                v.as_str()
            };
            let _ = writeln!(out, "{n}: {v}");
        }
        if t.sign_key.is_some() {
            let _ = writeln!(
                out,
                "(+ webhook-id, webhook-timestamp, webhook-signature at delivery time)"
            );
        }
        let _ = writeln!(out);
        let body = http_body_util::BodyExt::collect(req.into_body())
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let _ = writeln!(out, "{}", String::from_utf8_lossy(&body));
    }
    Ok(out)
}
