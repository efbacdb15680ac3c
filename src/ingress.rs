//! Ingress: what happens to a request between the listener and a target, as ordered stages —
//! route → client IP and allow-list → rate limit → body (bounded) → verify → forward. Each
//! stage returns an [`IngressError`] on failure, turned into an answer in one place
//! (`error.rs`); every request ends in one access-log event and the request metrics.

pub mod client_ip;
pub mod diagnostics;
pub mod error;
pub mod limits;
pub mod router;

use crate::admin::metrics as m;
use crate::config::{Config, Dedup, Mode, PathMatch, Route, VerifySpec};
use crate::deliver::client::{self, ClientError, HttpClient};
use crate::deliver::proxy::{self, Forwarded, Outbound};
use crate::deliver::worker::Engine;
use crate::rules::pool::JqPool;
use crate::store::{Enqueued, NewEvent, Store};
use crate::verify::{Unverified, Verifier};
use arc_swap::ArcSwap;
use error::{HttpResponse, IngressError};
use http::{HeaderName, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use limits::Limiter;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// One route made ready to serve: its verifier, limiter and target clients are built once
/// per config load, never per request.
pub struct RouteRuntime {
    pub cfg: Arc<Route>,
    pub verifier: Verifier,
    pub limiter: Option<Limiter>,
    pub clients: Vec<HttpClient>,
    pub signature_headers: Vec<HeaderName>,
    pub metrics: m::RouteMetrics,
    /// One per target, for a sync route's relay.
    pub upstream_metrics: Vec<m::TargetMetrics>,
    /// One per target: its filter and transform runs.
    pub jq_metrics: Vec<m::JqMetrics>,
    /// What a sync route runs on each event: its target's filter and transform.
    pub sync_plans: crate::rules::transform::Plans,
    /// What an async route runs at ingress: every target's filter.
    pub ingress_plans: crate::rules::transform::Plans,
    /// The route's name, as the `$route` of its programs.
    pub name: Arc<str>,
}

impl router::Routable for RouteRuntime {
    fn host(&self) -> Option<&str> {
        self.cfg.host.as_deref()
    }
    fn path(&self) -> &PathMatch {
        &self.cfg.path
    }
    fn methods(&self) -> &[Method] {
        &self.cfg.methods
    }
}

/// Everything a request needs from the active config, swapped atomically as a whole.
pub struct Runtime {
    pub config: Arc<Config>,
    pub routes: Vec<RouteRuntime>,
}

impl Runtime {
    pub fn build(config: Config) -> Result<Runtime, ClientError> {
        let mut routes = Vec::new();
        for r in &config.routes {
            let clients = r
                .targets
                .iter()
                .map(|t| client::build(&t.url, &t.tls))
                .collect::<Result<Vec<_>, _>>()?;
            let signature_headers = match &r.verify {
                VerifySpec::Provider(p) => p
                    .provider
                    .signature_headers()
                    .iter()
                    .map(|h| HeaderName::from_static(h))
                    .collect(),
                VerifySpec::Hmac(h) => vec![h.header.clone()],
                VerifySpec::None => vec![],
            };
            routes.push(RouteRuntime {
                cfg: r.clone(),
                verifier: Verifier::new(&r.verify),
                limiter: r.rate_limit.as_ref().map(Limiter::new),
                clients,
                signature_headers,
                metrics: m::RouteMetrics::new(&r.name),
                upstream_metrics: r
                    .targets
                    .iter()
                    .map(|t| m::TargetMetrics::upstream(&r.name, &t.name))
                    .collect(),
                jq_metrics: r
                    .targets
                    .iter()
                    .map(|t| m::JqMetrics::new(&r.name, &t.name))
                    .collect(),
                sync_plans: r
                    .targets
                    .iter()
                    .take(1)
                    .map(|t| crate::rules::transform::plan(t, true, true))
                    .collect::<Vec<_>>()
                    .into(),
                ingress_plans: r
                    .targets
                    .iter()
                    .map(|t| crate::rules::transform::plan(t, true, false))
                    .collect::<Vec<_>>()
                    .into(),
                name: Arc::from(r.name.as_str()),
            });
        }
        Ok(Runtime {
            config: Arc::new(config),
            routes,
        })
    }

    /// The async targets this runtime wants workers for.
    pub fn wanted_workers(&self) -> Vec<crate::deliver::worker::Wanted> {
        let mut out = Vec::new();
        for r in self.routes.iter().filter(|r| r.cfg.mode == Mode::Async) {
            for (t, client) in r.cfg.targets.iter().zip(&r.clients) {
                out.push(crate::deliver::worker::Wanted {
                    route: r.cfg.clone(),
                    target: t.clone(),
                    client: client.clone(),
                    signature_headers: r.signature_headers.clone(),
                });
            }
        }
        out
    }

    /// Drops per-IP rate-limit state that has fully recovered.
    pub fn prune_limiters(&self) {
        for r in &self.routes {
            if let Some(l) = &r.limiter {
                l.prune();
            }
        }
    }
}

/// The TCP connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

pub struct Ingress {
    pub runtime: ArcSwap<Runtime>,
    /// The durable buffer; `None` when no route is async.
    pub store: Option<Arc<dyn Store>>,
    pub engine: Arc<Engine>,
    pub diagnostics: diagnostics::Diagnostics,
    pub jq: crate::rules::pool::JqPool,
}

impl Ingress {
    pub fn new(runtime: Runtime, store: Option<Arc<dyn Store>>, engine: Arc<Engine>) -> Self {
        Ingress {
            jq: engine.jq.clone(),
            runtime: ArcSwap::from_pointee(runtime),
            store,
            engine,
            diagnostics: Default::default(),
        }
    }

    pub async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> HttpResponse {
        let start = Instant::now();
        // In-flight requests keep the config they started with, whatever a reload does.
        let rt = self.runtime.load_full();
        // The access log's method and path, copied only when that log is on.
        let access = tracing::enabled!(target: "hookgate::access", tracing::Level::INFO)
            .then(|| (req.method().clone(), req.uri().path().to_owned()));
        let mut route_idx = None;
        let mut client = conn.peer.ip();
        let result = pipeline(&rt, self, req, conn, &mut route_idx, &mut client).await;
        let matched = route_idx.and_then(|i| rt.routes.get(i));
        let route = matched.map_or(m::NO_ROUTE, |r| r.cfg.name.as_str());
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                match &e {
                    IngressError::Upstream(u) => {
                        tracing::warn!(route = %route, error = %u, "target failed")
                    }
                    IngressError::StoreUnavailable(s) => {
                        tracing::error!(route = %route, error = %s, "event refused: storage cannot take it")
                    }
                    _ => {}
                }
                e.into_response()
            }
        };
        let status = resp.status().as_u16();
        let elapsed = start.elapsed();
        match matched {
            Some(r) => r.metrics.request(status, elapsed.as_secs_f64()),
            None => {
                metrics::counter!(m::REQUESTS, "route" => m::NO_ROUTE, "status" => status.to_string())
                    .increment(1);
                metrics::histogram!(m::REQUEST_DURATION, "route" => m::NO_ROUTE)
                    .record(elapsed.as_secs_f64());
            }
        }
        if let Some((method, path)) = access {
            tracing::info!(
                target: "hookgate::access",
                route = %route,
                status,
                method = %method,
                path = %path,
                client_ip = %client,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                "request"
            );
        }
        resp
    }
}

async fn pipeline(
    rt: &Runtime,
    ing: &Ingress,
    req: Request<Incoming>,
    conn: ConnInfo,
    route_idx: &mut Option<usize>,
    client: &mut std::net::IpAddr,
) -> Result<HttpResponse, IngressError> {
    let server = &rt.config.server;
    let (parts, body) = req.into_parts();

    // RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host; routing by the first of
    // two could send it somewhere a proxy in front did not mean.
    if parts.version == http::Version::HTTP_11 {
        match parts.headers.get_all(http::header::HOST).iter().count() {
            1 => {}
            0 => return Err(IngressError::BadHost("missing Host header")),
            _ => return Err(IngressError::BadHost("more than one Host header")),
        }
    }

    // Route: which configured endpoint this is (404 / 405 otherwise).
    let host = router::request_host(&parts.uri, &parts.headers);
    let idx = router::find(&rt.routes, host.as_deref(), parts.uri.path(), &parts.method)?;
    *route_idx = Some(idx);
    let route = rt.routes.get(idx).ok_or(IngressError::NotFound)?;

    // Client IP, believed from X-Forwarded-For only through trusted proxies; allow-list.
    let ip = client_ip::client_ip(conn.peer.ip(), &parts.headers, &server.trusted_proxies);
    *client = ip;
    if !route.cfg.allow_ips.is_empty() && !route.cfg.allow_ips.iter().any(|n| n.contains(&ip)) {
        return Err(IngressError::Forbidden);
    }

    // Rate limit before reading the body: a flood costs no more than its headers.
    if let Some(l) = &route.limiter {
        l.check(ip).map_err(|wait| IngressError::RateLimited {
            retry_after_secs: limits::retry_after_secs(wait),
        })?;
    }

    // Meta's subscription check is a signed-less GET answered here, never forwarded.
    if let (VerifySpec::Provider(p), &Method::GET) = (&route.cfg.verify, &parts.method) {
        if p.provider == crate::config::Provider::Meta {
            let a = crate::verify::handshake::meta_subscribe(p, parts.uri.query());
            handshake_metric(&route.cfg.name, "meta");
            if a.status != StatusCode::OK {
                ing.diagnostics.record(
                    &route.cfg.name,
                    ip,
                    "handshake",
                    "meta hub.verify_token did not match",
                    false,
                );
            }
            return Ok(handshake_response(a));
        }
    }

    // Body: refuse a declared oversize at once; cap a chunked one mid-stream.
    let limit = server.max_body;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(IngressError::PayloadTooLarge { limit });
    }
    let body = tokio::time::timeout(
        server.request_timeout,
        Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX)).collect(),
    )
    .await
    .map_err(|_| IngressError::BodyTimeout)?
    .map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            IngressError::PayloadTooLarge { limit }
        } else {
            IngressError::BadBody(e.to_string())
        }
    })?
    .to_bytes();

    // Verify on the exact bytes received. Only a `Verified` can go further.
    let unverified = Unverified {
        parts,
        body,
        route: route.cfg.clone(),
        client_ip: ip,
        tls: conn.tls,
    };
    let (verified, matched) = route.verifier.verify(unverified, SystemTime::now()).map_err(|r| {
        ing.diagnostics.record(&route.cfg.name, ip, r.kind, &r.detail, false);
        metrics::counter!(m::VERIFY_FAILURES, "route" => route.cfg.name.clone(), "reason" => r.kind).increment(1);
        tracing::warn!(route = %route.cfg.name, client_ip = %ip, reason = %r.detail, "signature verification failed");
        IngressError::Unauthorized
    })?;
    if let Some(r) = verified.shadow_failure() {
        ing.diagnostics
            .record(&route.cfg.name, ip, r.kind, &r.detail, true);
        metrics::counter!(m::VERIFY_SHADOW_FAILURES, "route" => route.cfg.name.clone(), "reason" => r.kind)
            .increment(1);
        tracing::warn!(route = %route.cfg.name, client_ip = %ip, reason = %r.detail, "verification failed (shadow mode: let through)");
    }
    if let Some(i) = matched {
        route.metrics.secret_matched(i);
    }

    if route.cfg.debug_body {
        tracing::debug!(route = %route.cfg.name, body = %String::from_utf8_lossy(verified.body()), "request body (debug_body is on for this route)");
    }

    // Handshakes a provider sends before events: answered here, in either mode.
    if let VerifySpec::Provider(p) = &route.cfg.verify {
        if let Some(a) = crate::verify::handshake::after_verification(p, verified.body()) {
            handshake_metric(&route.cfg.name, p.provider.name());
            return Ok(handshake_response(a));
        }
    }

    // Where the request came from, for `X-Forwarded-*` (the host as routing saw it).
    let peer_trusted = server
        .trusted_proxies
        .iter()
        .any(|n| n.contains(&conn.peer.ip()));
    let fwd = Forwarded::from_request(
        verified.parts(),
        host,
        conn.peer.ip(),
        peer_trusted,
        conn.tls,
    );
    let store = ing.store.as_ref();
    let engine = &ing.engine;
    match route.cfg.mode {
        Mode::Sync => {
            // Without a store, sync routes remember recent delivery ids in memory (bounded).
            if let Some((id, window)) =
                dedup_key(&route.cfg, &verified.parts().headers, verified.body())
            {
                if ing.diagnostics.seen_recently(&route.cfg.name, &id, window) {
                    route.metrics.event("duplicate");
                    return Ok(error::json(
                        StatusCode::OK,
                        serde_json::json!({ "duplicate": true }).to_string(),
                    ));
                }
            }
            let mut transformed = None;
            let d = decide(&ing.jq, route, &route.sync_plans, &verified).await;
            if let Some(d) = d.into_iter().next() {
                if let Some(f) = d.failed {
                    return Err(rule_failed(route, f.reason));
                }
                if !d.admitted {
                    return Ok(error::json(
                        StatusCode::OK,
                        serde_json::json!({ "filtered": true }).to_string(),
                    ));
                }
                transformed = d.body;
            }
            forward_sync(route, transformed, verified, fwd).await
        }
        Mode::Async => match store {
            Some(store) => enqueue(store, engine, &ing.jq, route, &verified, fwd).await,
            None => Err(IngressError::StoreUnavailable(
                crate::store::StoreError::Unavailable("no store is open".into()),
            )),
        },
    }
}

/// The provider's delivery id for deduplication, when the route has one.
fn dedup_key(
    route: &Route,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Option<(String, std::time::Duration)> {
    let Dedup::On { window, header } = &route.dedup else {
        return None;
    };
    let id = match (header, &route.verify) {
        (Some(h), _) => headers.get(h)?.to_str().ok()?.trim().to_owned(),
        (None, VerifySpec::Provider(p)) => {
            crate::verify::providers::delivery_id(p.provider, headers, body)?
        }
        (None, VerifySpec::Hmac(h)) => headers
            .get(h.id_header.as_ref()?)?
            .to_str()
            .ok()?
            .trim()
            .to_owned(),
        (None, VerifySpec::None) => return None,
    };
    (!id.is_empty()).then_some((id, *window))
}

/// `mode: async`: store the event with one delivery per target, answer only after commit.
async fn enqueue(
    store: &Arc<dyn Store>,
    engine: &Engine,
    jq: &JqPool,
    route: &RouteRuntime,
    verified: &crate::verify::Verified,
    fwd: Forwarded,
) -> Result<HttpResponse, IngressError> {
    let parts = verified.parts();
    let (mut targets, mut filtered, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    let decisions = decide(jq, route, &route.ingress_plans, verified).await;
    for (t, d) in route.cfg.targets.iter().zip(decisions) {
        match (d.failed, d.admitted) {
            (Some(f), _) => failed.push((t.name.clone(), f.reason)),
            (None, true) => targets.push(t.name.clone()),
            (None, false) => filtered.push(t.name.clone()),
        }
    }
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let ev = NewEvent {
        id: uuid::Uuid::now_v7().to_string(),
        route: route.cfg.name.clone(),
        method: parts.method.as_str().to_owned(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned()),
        headers,
        body: verified.body().clone(),
        client_ip: verified.client_ip(),
        received_at: SystemTime::now(),
        forwarded_for: fwd.for_chain,
        forwarded_proto: fwd.proto.to_owned(),
        forwarded_host: fwd.host,
        targets,
        filtered,
        failed,
        dedup: dedup_key(&route.cfg, &parts.headers, verified.body()),
    };
    match store.enqueue(ev).await {
        Ok(Enqueued::Stored { id }) => {
            route.metrics.event("stored");
            engine.wake_route(&route.cfg.name);
            Ok(accepted(StatusCode::ACCEPTED, &id, false))
        }
        Ok(Enqueued::Duplicate { id }) => {
            route.metrics.event("duplicate");
            Ok(accepted(StatusCode::OK, &id, true))
        }
        Err(e) => {
            route.metrics.event("refused");
            Err(IngressError::StoreUnavailable(e))
        }
    }
}

fn accepted(status: StatusCode, id: &str, duplicate: bool) -> HttpResponse {
    let body = if duplicate {
        serde_json::json!({ "id": id, "duplicate": true })
    } else {
        serde_json::json!({ "id": id })
    };
    let mut r = error::json(status, body.to_string());
    if let Ok(v) = http::HeaderValue::from_str(id) {
        r.headers_mut().insert("hookgate-event-id", v);
    }
    r
}

/// A sync route's rule failed: the gateway's fault, said as such to the sender (who retries),
/// with the precise reason in the log and metrics.
fn rule_failed(route: &RouteRuntime, reason: String) -> IngressError {
    route.metrics.event("rule_failed");
    tracing::warn!(route = %route.cfg.name, %reason, "sync route: a rule failed, the sender is told to retry");
    IngressError::RuleFailed(reason)
}

async fn forward_sync(
    route: &RouteRuntime,
    transformed: Option<Result<bytes::Bytes, crate::rules::transform::RuleFailure>>,
    verified: crate::verify::Verified,
    fwd: Forwarded,
) -> Result<HttpResponse, IngressError> {
    let (Some(target), Some(client)) = (route.cfg.targets.first(), route.clients.first()) else {
        return Err(IngressError::NotFound);
    };
    let (
        http::request::Parts {
            method,
            uri,
            mut headers,
            ..
        },
        original,
    ) = verified.into_parts();
    let body = match transformed {
        None => original,
        Some(Ok(b)) => {
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            b
        }
        Some(Err(e)) => return Err(rule_failed(route, e.reason)),
    };
    // A sync request is not stored; templates still get a unique id per request, made only
    // when one asks for it (a random id costs a system call).
    let event_id = target
        .headers_set
        .iter()
        .any(|(_, t)| t.uses_event_id())
        .then(|| uuid::Uuid::now_v7().to_string());
    let req = Outbound {
        method,
        uri: &uri,
        headers,
        body,
        forwarded: &fwd,
        route_name: &route.cfg.name,
        route_path: &route.cfg.path,
        target,
        signature_headers: &route.signature_headers,
        extra: Vec::new(),
        event_id: event_id.as_deref().unwrap_or_default(),
    }
    .into_request()?;
    let start = Instant::now();
    let result = proxy::send(client, req, target.timeout).await;
    let outcome = match &result {
        Ok(r) => m::status_class(r.status().as_u16()),
        Err(crate::deliver::UpstreamError::Timeout(_)) => "timeout",
        Err(_) => "error",
    };
    if let Some(um) = route.upstream_metrics.first() {
        um.answer(outcome, start.elapsed().as_secs_f64());
    }
    Ok(result?)
}

fn handshake_metric(route: &str, provider: &'static str) {
    metrics::counter!(m::HANDSHAKES, "route" => route.to_owned(), "provider" => provider)
        .increment(1);
}

fn handshake_response(a: crate::verify::handshake::Answer) -> HttpResponse {
    let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(a.body)));
    *r.status_mut() = a.status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(a.content_type),
    );
    r
}

/// Runs the targets' plans on a verified request: one trip to the jq pool.
async fn decide(
    jq: &JqPool,
    route: &RouteRuntime,
    plans: &crate::rules::transform::Plans,
    v: &crate::verify::Verified,
) -> Vec<crate::rules::transform::Decision> {
    if plans.runs_nothing() {
        return crate::rules::transform::admit_all(plans.count());
    }
    let p = v.parts();
    let input = crate::rules::transform::Input::new(
        v.body().clone(),
        p.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
        p.uri.query(),
        route.name.clone(),
        plans.reads_headers(),
    );
    crate::rules::transform::decide(jq, input, plans, &route.jq_metrics).await
}
