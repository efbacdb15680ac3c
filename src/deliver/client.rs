//! The outbound HTTP client: pooled, HTTP/1.1 and HTTP/2 (by ALPN on https), rustls with the
//! same crypto provider as the listener. It never follows redirects and never reads proxy
//! settings from the environment (hyper does neither), so a target cannot bounce a webhook
//! elsewhere.

use super::h1pool::H1Pool;
use super::UpstreamError;
use crate::config::TargetTls;
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;

type Pooled = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The client for one target: its plain-HTTP keep-alive connections ([`H1Pool`]) when the
/// target URL is `http://`, else hyper-util's pooled client (TLS, HTTP/2 by ALPN).
#[derive(Clone)]
pub struct HttpClient {
    pooled: Pooled,
    plain: Option<Arc<H1Pool>>,
}

impl HttpClient {
    /// Sends `req` and reads the whole answer (at most `limit` bytes of body).
    pub async fn exchange(
        &self,
        req: Request<Full<Bytes>>,
        limit: usize,
    ) -> Result<Response<Bytes>, UpstreamError> {
        if let Some(p) = self.plain.as_ref().filter(|p| p.serves(req.uri())) {
            return p.exchange(req, limit).await;
        }
        let resp = self
            .pooled
            .request(req)
            .await
            .map_err(|e| UpstreamError::Unreachable(chain(e)))?;
        read_answer(resp, limit).await
    }
}

/// Reads a whole answer, at most `limit` bytes of body.
pub async fn read_answer(
    resp: Response<hyper::body::Incoming>,
    limit: usize,
) -> Result<Response<Bytes>, UpstreamError> {
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| UpstreamError::BadResponse(e.to_string()))?
        .to_bytes();
    Ok(Response::from_parts(parts, body))
}

/// An error and its sources, as one line.
pub fn chain(e: impl std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read {what} {path}: {source}")]
    Pem {
        what: &'static str,
        path: String,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("TLS client setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot load the system's trusted roots: {0}")]
    Roots(#[from] std::io::Error),
}

fn pem_err(
    what: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(rustls_pki_types::pem::Error) -> ClientError {
    let path = path.display().to_string();
    move |source| ClientError::Pem { what, path, source }
}

/// The client for a target at `url`.
pub fn build(url: &Uri, tls: &TargetTls) -> Result<HttpClient, ClientError> {
    Ok(HttpClient {
        pooled: build_pooled(tls)?,
        plain: H1Pool::for_url(url).map(Arc::new),
    })
}

fn build_pooled(tls: &TargetTls) -> Result<Pooled, ClientError> {
    let provider = crate::server::tls::provider();
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = if *tls == TargetTls::default() {
        builder.with_provider_and_native_roots(provider)?
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &tls.ca {
            // An internal CA replaces the public roots: a target behind it is only ever
            // expected to present a certificate from it.
            Some(ca) => {
                for c in CertificateDer::pem_file_iter(ca).map_err(pem_err("CA", ca))? {
                    roots.add(c.map_err(pem_err("CA", ca))?)?;
                }
            }
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let cfg = match (&tls.cert, &tls.key) {
            (Some(c), Some(k)) => {
                let chain = CertificateDer::pem_file_iter(c)
                    .map_err(pem_err("client certificate", c))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(pem_err("client certificate", c))?;
                let key = PrivateKeyDer::from_pem_file(k).map_err(pem_err("client key", k))?;
                b.with_client_auth_cert(chain, key)?
            }
            _ => b.with_no_client_auth(),
        };
        builder.with_tls_config(cfg)
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let connector = builder
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(connector))
}
