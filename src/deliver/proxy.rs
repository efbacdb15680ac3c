//! `mode: sync`: forward one verified request to the route's target and relay its answer.
//! Hop-by-hop and framing headers are stripped both ways; `X-Forwarded-*` and
//! `Hookgate-Route` are added; the target's `headers.remove`/`headers.set` apply last.

use super::client::HttpClient;
use super::UpstreamError;
use crate::config::{PathMatch, Target};
use crate::verify::Verified;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};

/// Largest target answer relayed to the sender; webhook answers are small.
const MAX_RESPONSE: usize = 16 << 20;

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
    "expect",
];

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(*n);
    }
}

/// The target URL for this request: a `path_prefix` route appends what follows the prefix;
/// the request's query string is carried over.
pub fn target_uri(target: &Uri, route_path: &PathMatch, req: &Uri) -> Result<Uri, UpstreamError> {
    let mut path = target.path().to_owned();
    if let PathMatch::Prefix(prefix) = route_path {
        let rest = req.path().strip_prefix(prefix.as_str()).unwrap_or("");
        if !rest.is_empty() {
            if !path.ends_with('/') {
                path.push('/');
            }
            path.push_str(rest.trim_start_matches('/'));
        }
    }
    let query = match (target.query(), req.query()) {
        (Some(a), Some(b)) => format!("?{a}&{b}"),
        (Some(q), None) | (None, Some(q)) => format!("?{q}"),
        (None, None) => String::new(),
    };
    let authority = target.authority().map(|a| a.as_str()).unwrap_or("");
    let scheme = target.scheme_str().unwrap_or("http");
    format!("{scheme}://{authority}{path}{query}")
        .parse()
        .map_err(|e| UpstreamError::Request(format!("target URL: {e}")))
}

pub struct Forward<'a> {
    pub client: &'a HttpClient,
    pub target: &'a Target,
    /// `https` when the request arrived over TLS.
    pub proto: &'static str,
    /// Signature headers of the route's verifier: not passed on.
    pub signature_headers: &'a [HeaderName],
    /// Whether the TCP peer is a trusted proxy (its `X-Forwarded-For` chain is kept).
    pub peer_trusted: bool,
    pub peer_ip: std::net::IpAddr,
}

impl Forward<'_> {
    pub fn request(&self, req: &Verified) -> Result<Request<Full<Bytes>>, UpstreamError> {
        let parts = req.parts();
        let uri = target_uri(&self.target.url, &req.route().path, &parts.uri)?;
        let mut headers = parts.headers.clone();
        strip_hop_by_hop(&mut headers);
        for h in self.signature_headers {
            headers.remove(h);
        }
        let prior = self.peer_trusted.then(|| {
            parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(", ")
        });
        let xff = match prior.filter(|p| !p.is_empty()) {
            Some(p) => format!("{p}, {}", self.peer_ip),
            None => self.peer_ip.to_string(),
        };
        let host = crate::ingress::router::request_host(&parts.uri, &parts.headers);
        let set = |h: &mut HeaderMap, name: &'static str, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(name, v);
            }
        };
        set(&mut headers, "x-forwarded-for", &xff);
        set(&mut headers, "x-forwarded-proto", self.proto);
        if let Some(host) = &host {
            set(&mut headers, "x-forwarded-host", host);
        }
        set(&mut headers, "hookgate-route", &req.route().name);
        for n in &self.target.headers_remove {
            headers.remove(n);
        }
        for (n, v) in &self.target.headers_set {
            headers.insert(n.clone(), v.clone());
        }
        let mut out = Request::new(Full::new(req.body().clone()));
        *out.method_mut() = parts.method.clone();
        *out.uri_mut() = uri;
        *out.headers_mut() = headers;
        Ok(out)
    }

    /// Sends the request and collects the target's answer, all within the target's timeout.
    pub async fn send(&self, req: &Verified) -> Result<Response<Full<Bytes>>, UpstreamError> {
        let out = self.request(req)?;
        let timeout = self.target.timeout;
        tokio::time::timeout(timeout, exchange(self.client, out))
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))?
    }
}

async fn exchange(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
) -> Result<Response<Full<Bytes>>, UpstreamError> {
    let resp = client.request(req).await.map_err(|e| {
        use std::error::Error;
        let mut msg = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            msg = format!("{msg}: {s}");
            src = s.source();
        }
        UpstreamError::Unreachable(msg)
    })?;
    let (mut parts, body) = resp.into_parts();
    let bytes = Limited::new(body, MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| UpstreamError::BadResponse(e.to_string()))?
        .to_bytes();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Full::new(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_building() {
        let t: Uri = "http://svc:8080/in".parse().unwrap();
        let exact = PathMatch::Exact("/hooks/x".into());
        let prefix = PathMatch::Prefix("/api/".into());
        let r = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(
            target_uri(&t, &exact, &r("/hooks/x?a=1")).unwrap(),
            "http://svc:8080/in?a=1"
        );
        assert_eq!(
            target_uri(&t, &prefix, &r("/api/v1/y")).unwrap(),
            "http://svc:8080/in/v1/y"
        );
        let tq: Uri = "https://svc/base/?k=v".parse().unwrap();
        assert_eq!(
            target_uri(&tq, &prefix, &r("/api/z?q=2")).unwrap(),
            "https://svc/base/z?k=v&q=2"
        );
    }

    #[test]
    fn hop_by_hop_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("x-github-event", "push".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-github-event"));
    }
}
