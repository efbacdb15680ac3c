//! The admin listener (SPEC §6): health, readiness and Prometheus metrics; `/api/*` behind a
//! bearer token compared in constant time.

pub mod metrics;

use crate::config::Secret;
use crate::ingress::error::{error_json, HttpResponse};
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::atomic::{AtomicBool, Ordering};
use subtle::ConstantTimeEq;

pub struct Admin {
    pub token: Option<Secret>,
    pub metrics: Option<PrometheusHandle>,
    /// Set once every public listener is bound and serving.
    pub ready: AtomicBool,
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

    pub async fn handle<B>(&self, req: Request<B>) -> HttpResponse {
        let path = req.uri().path();
        match path {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if self.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ready\n"),
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
                error_json(StatusCode::NOT_FOUND, "no such endpoint")
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
