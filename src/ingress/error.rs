//! The one place where a failure becomes an HTTP answer. Every stage returns an
//! `IngressError`; nothing else builds error responses.

use crate::deliver::UpstreamError;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("no route for this host and path")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: Vec<Method> },
    #[error("client address not allowed")]
    Forbidden,
    #[error("body larger than {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("request body not received within the request timeout")]
    BodyTimeout,
    #[error("cannot read request body: {0}")]
    BadBody(String),
    #[error("{0}")]
    BadHost(&'static str),
    /// The precise reason is logged and counted; the sender learns nothing about it.
    #[error("unauthorized")]
    Unauthorized,
    #[error("rate limit exceeded")]
    RateLimited { retry_after_secs: u64 },
    #[error("request not handled within the request timeout")]
    RequestTimeout,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A filter or transform of the route failed inside the gateway (the reason is logged).
    #[error("a rule of this route failed: {0}")]
    RuleFailed(String),
    /// Not durable, so not accepted: the sender must retry.
    #[error("storage cannot accept the event: {0}")]
    StoreUnavailable(crate::store::StoreError),
}

pub type HttpResponse = Response<Full<Bytes>>;

pub fn json(status: StatusCode, body: String) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub fn error_json(status: StatusCode, msg: &str) -> HttpResponse {
    json(status, serde_json::json!({ "error": msg }).to_string())
}

impl IngressError {
    pub fn status(&self) -> StatusCode {
        match self {
            IngressError::NotFound => StatusCode::NOT_FOUND,
            IngressError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            IngressError::Forbidden => StatusCode::FORBIDDEN,
            IngressError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngressError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            IngressError::BadBody(_) | IngressError::BadHost(_) => StatusCode::BAD_REQUEST,
            IngressError::Unauthorized => StatusCode::UNAUTHORIZED,
            IngressError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            IngressError::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            IngressError::Upstream(UpstreamError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            IngressError::Upstream(_) => StatusCode::BAD_GATEWAY,
            IngressError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            IngressError::RuleFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn into_response(self) -> HttpResponse {
        let status = self.status();
        let msg = match &self {
            // Fixed texts: nothing about the secret, the target or which check failed.
            IngressError::Unauthorized => "unauthorized".to_owned(),
            IngressError::Upstream(UpstreamError::Timeout(_)) => "target timed out".to_owned(),
            IngressError::Upstream(_) => "target unavailable".to_owned(),
            IngressError::StoreUnavailable(_) => {
                "temporarily unable to accept webhooks; retry later".to_owned()
            }
            IngressError::RuleFailed(_) => {
                "the gateway failed to apply this route's rules; retry later".to_owned()
            }
            other => other.to_string(),
        };
        let mut r = error_json(status, &msg);
        let h = r.headers_mut();
        match self {
            IngressError::MethodNotAllowed { allow } => {
                let list: Vec<&str> = allow.iter().map(Method::as_str).collect();
                if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                    h.insert(header::ALLOW, v);
                }
            }
            IngressError::RateLimited { retry_after_secs } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            IngressError::StoreUnavailable(_) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            IngressError::PayloadTooLarge { .. }
            | IngressError::BodyTimeout
            | IngressError::BadHost(_) => {
                // The rest of the body is never read, so the connection cannot be reused.
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        r
    }
}
