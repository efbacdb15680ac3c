//! `mode: sync`: forward one verified request to the route's target and relay its answer.
//! Hop-by-hop and framing headers are stripped both ways; `X-Forwarded-*` and
//! `Hookgate-Route` are added; the target's `headers.remove`/`headers.set` apply last.

use super::client::HttpClient;
use super::UpstreamError;
use crate::config::{PathMatch, Target};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::Full;

/// Largest target answer relayed to the sender; webhook answers are small.
const MAX_RESPONSE: usize = 16 << 20;

/// Hop-by-hop and framing headers, as names made once: removing by a standard name hashes
/// an enum tag, not the string.
const HOP_BY_HOP: [HeaderName; 12] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::CONTENT_LENGTH,
    header::HOST,
    header::EXPECT,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const HOOKGATE_ROUTE: HeaderName = HeaderName::from_static("hookgate-route");

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    if h.contains_key(header::CONNECTION) {
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
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
}

/// The target URL for this request: a `path_prefix` route appends what follows the prefix;
/// the request's query string is carried over.
pub fn target_uri(target: &Uri, route_path: &PathMatch, req: &Uri) -> Result<Uri, UpstreamError> {
    // The common case, an exact route without a query: the target URL as configured.
    if matches!(route_path, PathMatch::Exact(_)) && req.query().is_none() {
        return Ok(target.clone());
    }
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

/// Where a request came from, captured on arrival and passed on as `X-Forwarded-*`.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub for_chain: String,
    pub proto: &'static str,
    pub host: Option<String>,
}

impl Forwarded {
    /// The peer is appended to the incoming `X-Forwarded-For` chain only when the peer is a
    /// trusted proxy; otherwise the chain starts at the peer. `host` is the request's host as
    /// routing saw it ([`crate::ingress::router::request_host`]).
    pub fn from_request(
        parts: &http::request::Parts,
        host: Option<String>,
        peer: std::net::IpAddr,
        peer_trusted: bool,
        tls: bool,
    ) -> Self {
        let prior = peer_trusted.then(|| {
            parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(", ")
        });
        let for_chain = match prior.filter(|p| !p.is_empty()) {
            Some(p) => format!("{p}, {peer}"),
            None => peer.to_string(),
        };
        Forwarded {
            for_chain,
            proto: if tls { "https" } else { "http" },
            host,
        }
    }
}

/// Everything that shapes the request to a target, whether forwarded now (sync) or later
/// from the store (async).
pub struct Outbound<'a> {
    pub method: http::Method,
    pub uri: &'a Uri,
    /// The sender's headers as received.
    pub headers: HeaderMap,
    pub body: Bytes,
    pub forwarded: &'a Forwarded,
    pub route_name: &'a str,
    pub route_path: &'a PathMatch,
    pub target: &'a Target,
    /// The route verifier's signature headers: not passed on.
    pub signature_headers: &'a [HeaderName],
    /// Added last (`Hookgate-Event-Id`, `Hookgate-Attempt`, signing headers).
    pub extra: Vec<(HeaderName, HeaderValue)>,
    /// For `{{ event.id }}` in `headers.set`.
    pub event_id: &'a str,
}

impl Outbound<'_> {
    pub fn into_request(self) -> Result<Request<Full<Bytes>>, UpstreamError> {
        let uri = target_uri(&self.target.url, self.route_path, self.uri)?;
        let mut headers = self.headers;
        strip_hop_by_hop(&mut headers);
        if !self.target.keep_signature {
            for h in self.signature_headers {
                headers.remove(h);
            }
        }
        let set = |h: &mut HeaderMap, name: HeaderName, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(name, v);
            }
        };
        set(&mut headers, X_FORWARDED_FOR, &self.forwarded.for_chain);
        set(&mut headers, X_FORWARDED_PROTO, self.forwarded.proto);
        if let Some(host) = &self.forwarded.host {
            set(&mut headers, X_FORWARDED_HOST, host);
        }
        set(&mut headers, HOOKGATE_ROUTE, self.route_name);
        for n in &self.target.headers_remove {
            headers.remove(n);
        }
        for (n, t) in &self.target.headers_set {
            if let Some(v) = t.render(self.event_id, self.route_name, &self.target.name) {
                headers.insert(n.clone(), v);
            }
        }
        for (n, v) in self.extra {
            headers.insert(n, v);
        }
        let mut out = Request::new(Full::new(self.body));
        *out.method_mut() = self.method;
        *out.uri_mut() = uri;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

/// Sends `req` and collects the answer, all within `timeout`.
pub async fn send(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
    timeout: std::time::Duration,
) -> Result<Response<Full<Bytes>>, UpstreamError> {
    tokio::time::timeout(timeout, exchange(client, req))
        .await
        .map_err(|_| UpstreamError::Timeout(timeout))?
}

async fn exchange(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
) -> Result<Response<Full<Bytes>>, UpstreamError> {
    let resp = client.exchange(req, MAX_RESPONSE).await?;
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Full::new(body)))
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
        assert_eq!(target_uri(&t, &exact, &r("/hooks/x")).unwrap(), t);
        let tq0: Uri = "http://svc/in?k=v".parse().unwrap();
        assert_eq!(
            target_uri(&tq0, &exact, &r("/hooks/x?a=1")).unwrap(),
            "http://svc/in?k=v&a=1"
        );
        assert_eq!(target_uri(&tq0, &exact, &r("/hooks/x")).unwrap(), tq0);
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
