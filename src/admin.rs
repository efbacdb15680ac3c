//! The admin listener: health, readiness and Prometheus metrics; `/api/*` behind a
//! bearer token compared in constant time.

pub mod api;
pub mod cli;
pub mod config_view;
pub mod metrics;

use crate::config::Secret;
use crate::deliver::worker::Engine;
use crate::ingress::error::{error_json, HttpResponse};
use crate::ingress::Ingress;
use crate::store::Store;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use http_body_util::{BodyExt, Limited};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use subtle::ConstantTimeEq;

pub struct Admin {
    pub token: Option<Secret>,
    pub metrics: Option<PrometheusHandle>,
    /// Set once every public listener is bound and serving.
    pub ready: AtomicBool,
    pub store: Option<Arc<dyn Store>>,
    pub engine: Arc<Engine>,
    pub ingress: Arc<Ingress>,
    pub reloader: Arc<crate::config::reload::Reloader>,
    /// The public listeners' connection cap: none left means a load balancer should send
    /// traffic elsewhere.
    pub connections: Arc<tokio::sync::Semaphore>,
}

impl Admin {
    pub fn authorized<B>(&self, req: &Request<B>) -> bool {
        let Some(token) = &self.token else {
            // Validation only allows a token-less admin listener on loopback.
            return true;
        };
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes()))
    }

    /// Ready: listeners up and, when there is a store, the store taking writes.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && self.store.as_ref().is_none_or(|s| s.healthy())
            && self.connections.available_permits() > 0
    }

    pub async fn handle(&self, req: Request<hyper::body::Incoming>) -> HttpResponse {
        let path = req.uri().path().to_owned();
        match path.as_str() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if self.is_ready() => text(StatusCode::OK, "ready\n"),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            "/metrics" => match &self.metrics {
                Some(h) => {
                    let mut r = text(StatusCode::OK, &h.render());
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    r
                }
                None => error_json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "metrics recorder unavailable",
                ),
            },
            p if p.starts_with("/api/") => {
                if !self.authorized(&req) {
                    let mut r =
                        error_json(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
                    r.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                    return r;
                }
                let method = req.method().clone();
                let q = req.uri().query().map(str::to_owned);
                let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => {
                        return error_json(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
                    }
                };
                api::handle(self, &method, &path, q.as_deref(), body).await
            }
            _ => error_json(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }
}

fn text(status: StatusCode, body: &str) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
