//! Test kit: a recording receiver, certificate generation, a gateway started from YAML on
//! port 0, and a low-level HTTP/1.1 / HTTP/2 client over TLS or plain TCP.
#![allow(dead_code)]

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// A scripted answer: status and an optional `Retry-After`.
pub type Scripted = (u16, Option<&'static str>);

#[derive(Debug, Clone)]
pub struct Received {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// An HTTP server that records every request and answers with a chosen status after a
/// chosen delay.
#[derive(Clone)]
pub struct TestReceiver {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub status: Arc<AtomicU16>,
    pub delay_ms: Arc<AtomicU64>,
    /// Answers to give first, in order: (status, Retry-After); then `status`.
    pub script: Arc<Mutex<std::collections::VecDeque<Scripted>>>,
    /// Connections accepted so far.
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl TestReceiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = TestReceiver {
            addr: listener.local_addr().unwrap(),
            received: Default::default(),
            status: Arc::new(AtomicU16::new(200)),
            delay_ms: Arc::new(AtomicU64::new(0)),
            script: Default::default(),
            accepted: Default::default(),
        };
        let me = r.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                me.accepted.fetch_add(1, Ordering::SeqCst);
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let me = me.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            me.received.lock().unwrap().push(Received {
                                method: parts.method,
                                uri: parts.uri,
                                headers: parts.headers,
                                body,
                            });
                            let d = me.delay_ms.load(Ordering::SeqCst);
                            if d > 0 {
                                tokio::time::sleep(Duration::from_millis(d)).await;
                            }
                            let scripted = me.script.lock().unwrap().pop_front();
                            let (status, retry_after) =
                                scripted.unwrap_or((me.status.load(Ordering::SeqCst), None));
                            let mut resp =
                                Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
                            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                            if let Some(ra) = retry_after {
                                resp.headers_mut()
                                    .insert("retry-after", ra.parse().unwrap());
                            }
                            resp.headers_mut()
                                .insert("x-receiver", "yes".parse().unwrap());
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        r
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits (up to `secs`) until at least `n` requests have arrived.
    pub async fn wait_for(&self, n: usize, secs: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while self.count() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "receiver got {} of {n} requests",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn last(&self) -> Received {
        self.received
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("nothing received")
    }
}

/// Writes a self-signed certificate for localhost to `dir/name.crt` and `dir/name.key`.
pub fn write_cert(dir: &Path, name: &str) -> CertificateDer<'static> {
    let g =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), g.cert.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{name}.key")),
        g.signing_key.serialize_pem(),
    )
    .unwrap();
    g.cert.der().clone()
}

pub struct TestGateway {
    pub gw: hookgate::app::Gateway,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

pub fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("routes.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Starts a gateway from `yaml` (written into a fresh temp dir, where `setup` may first put
/// certificates). Listen addresses should use port 0.
pub async fn start_gateway(yaml: &str, setup: impl FnOnce(&Path)) -> TestGateway {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let path = write_config(dir.path(), yaml);
    let loaded = match hookgate::config::load(&path) {
        Ok(l) => l,
        Err(e) => panic!("config invalid:\n{e}"),
    };
    let gw = hookgate::app::Gateway::start(loaded.config).await.unwrap();
    TestGateway {
        addr: gw.public_addrs[0],
        admin: gw.admin_addr,
        gw,
        dir,
    }
}

pub fn client_tls(
    trusted: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in trusted {
        roots.add(c.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(cfg)
}

pub async fn tls_connect(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

/// An HTTP/1.1 connection that can carry several requests.
pub struct H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>);

impl H1 {
    pub async fn over<I>(io: I) -> H1
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .unwrap();
        tokio::spawn(conn);
        H1(send)
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Answer, hyper::Error> {
        self.0.ready().await?;
        let resp = self.0.send_request(req).await?;
        into_answer(resp).await
    }
}

pub async fn into_answer(resp: Response<Incoming>) -> Result<Answer, hyper::Error> {
    let (parts, body) = resp.into_parts();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        version: parts.version,
        body: body.collect().await?.to_bytes(),
    })
}

pub async fn h2_send<I>(io: I, req: Request<Full<Bytes>>) -> Answer
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = send.send_request(req).await.unwrap();
    into_answer(resp).await.unwrap()
}

pub fn post(path: &str, headers: &[(&str, &str)], body: &[u8]) -> Request<Full<Bytes>> {
    let mut b = Request::post(path).header("host", "localhost");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::copy_from_slice(body))).unwrap()
}

/// One request on a new plain-HTTP/1.1 connection.
pub async fn plain(addr: SocketAddr, req: Request<Full<Bytes>>) -> Answer {
    let tcp = TcpStream::connect(addr).await.unwrap();
    H1::over(tcp).await.send(req).await.unwrap()
}

pub fn github_sig(secret: &str, body: &[u8]) -> String {
    hookgate::verify::github::sign(secret, body)
}

/// GET on the admin listener with a JSON answer.
pub async fn admin_get(admin: SocketAddr, path: &str) -> (StatusCode, serde_json::Value) {
    let req = Request::get(path)
        .header("host", "admin")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let a = plain(admin, req).await;
    (
        a.status,
        serde_json::from_slice(&a.body).unwrap_or(serde_json::Value::Null),
    )
}

pub async fn admin_post(
    admin: SocketAddr,
    path: &str,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let req = Request::post(path)
        .header("host", "admin")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap();
    let a = plain(admin, req).await;
    (
        a.status,
        serde_json::from_slice(&a.body).unwrap_or(serde_json::Value::Null),
    )
}

/// Starts a gateway from `yaml` in an existing folder (a restart on the same store).
pub async fn start_in(dir: &Path, yaml: &str) -> hookgate::app::Gateway {
    init_logs();
    let path = write_config(dir, yaml);
    // A gateway drained a moment ago in this process may still be letting go of the store.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let loaded = match hookgate::config::load(&path) {
            Ok(l) => l,
            Err(e) => panic!("config invalid:\n{e}"),
        };
        match hookgate::app::Gateway::start(loaded.config).await {
            Ok(g) => return g,
            Err(e) if e.to_string().contains("in use") && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Gateway logs in test output, filtered by RUST_LOG (silent by default); jq workers from
/// the `hookgate` binary cargo built for these tests (this executable is not one).
pub fn init_logs() {
    hookgate::rules::pool::set_worker_program(env!("CARGO_BIN_EXE_hookgate"));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// An admin endpoint that needs no token (`/metrics`, `/healthz`, `/readyz`): status and body.
pub async fn admin_probe(admin: SocketAddr, path: &str) -> (StatusCode, String) {
    let req = Request::get(path).body(Full::new(Bytes::new())).unwrap();
    let a = plain(admin, req).await;
    (a.status, String::from_utf8_lossy(&a.body).into_owned())
}

/// The gateway's metrics, as [`metrics_text`] gives them.
pub async fn admin_metrics(admin: SocketAddr) -> String {
    let req = Request::get("/metrics")
        .body(Full::new(Bytes::new()))
        .unwrap();
    metrics_text(&plain(admin, req).await.body)
}

/// Prometheus text without the per-process `replica` label, for exact label assertions.
pub fn metrics_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(text.len());
    let mut rest = &text[..];
    while let Some(i) = rest.find("replica=\"") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 9..];
        let end = after.find('"').map(|e| e + 1).unwrap_or(after.len());
        rest = after[end..].strip_prefix(',').unwrap_or(&after[end..]);
    }
    out.push_str(rest);
    out.replace("{}", "")
}

/// A port free a moment ago, for a gateway process that must be told its address.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (up to 30 s) until the admin listener on `admin` answers `/readyz` with 200.
pub async fn wait_ready(admin: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", admin)).await {
            let mut c = H1::over(s).await;
            let req = Request::get("/readyz")
                .header("host", "x")
                .body(Full::new(Bytes::new()))
                .unwrap();
            if c.send(req).await.map(|a| a.status == 200).unwrap_or(false) {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gateway never became ready"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
