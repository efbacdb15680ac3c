//! Keep-alive connections to one plain-`http://` target, on hyper's own HTTP/1.1 client
//! connection (`hyper::client::conn::http1`).
//!
//! Why not hyper-util's pooled client for these: per request that client hashes the target
//! into a shared map, races a checkout against a lazy connect, and often spawns a task to
//! put the connection back. Here a request pops the newest idle connection from a `Vec`,
//! sends, reads the whole answer and pushes the connection back. On the relay benchmark
//! that is 1.08× the throughput at 2 KiB and 1.03× at 16 KiB (docs/performance.md,
//! "Dependencies beyond the chosen set"). HTTPS targets, which may speak HTTP/2, keep hyper-util's client.
//!
//! Behaviour kept from hyper-util's client: a request goes out in origin form with a `Host`
//! header made from the target URL; a request that a closing keep-alive connection refused
//! before sending a byte is sent again on a new connection; an idle connection older than
//! 60 s is closed, not reused. There is no reaper: stale connections are dropped as
//! requests pass, and the target closes the rest.

use super::client::{chain, read_answer};
use super::UpstreamError;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Idle connections kept, newest first out.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

struct Idle {
    send: SendRequest<Full<Bytes>>,
    since: Instant,
}

pub struct H1Pool {
    /// `host:port`, for connecting.
    addr: String,
    authority: http::uri::Authority,
    host: HeaderValue,
    idle: Mutex<Vec<Idle>>,
}

impl H1Pool {
    /// A pool for `url` when it is a plain-HTTP URL; `None` otherwise.
    pub fn for_url(url: &Uri) -> Option<H1Pool> {
        if url.scheme_str() != Some("http") {
            return None;
        }
        let authority = url.authority()?.clone();
        let host = url.host()?;
        // As hyper-util's client writes it: the port only when it is not 80.
        let host_header = match url.port_u16() {
            Some(p) if p != 80 => format!("{host}:{p}"),
            _ => host.to_owned(),
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let port = url.port_u16().unwrap_or(80);
        let addr = if bare.contains(':') {
            format!("[{bare}]:{port}")
        } else {
            format!("{bare}:{port}")
        };
        Some(H1Pool {
            addr,
            authority,
            host: HeaderValue::from_str(&host_header).ok()?,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// True when this pool can carry a request for `uri`.
    pub fn serves(&self, uri: &Uri) -> bool {
        uri.scheme_str() == Some("http") && uri.authority() == Some(&self.authority)
    }

    fn checkout(&self) -> Option<SendRequest<Full<Bytes>>> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(c) = idle.pop() {
            if !c.send.is_closed() && now.duration_since(c.since) < IDLE_TIMEOUT {
                return Some(c.send);
            }
        }
        None
    }

    fn checkin(&self, send: SendRequest<Full<Bytes>>) {
        if send.is_closed() {
            return;
        }
        // One clock read per check-in, for both the staleness test and the new entry.
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // The oldest are at the front: drop those that expired or closed meanwhile.
        let stale = idle
            .iter()
            .take_while(|c| c.send.is_closed() || now.duration_since(c.since) >= IDLE_TIMEOUT)
            .count();
        idle.drain(..stale);
        if idle.len() < MAX_IDLE {
            idle.push(Idle { send, since: now });
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(self.addr.as_str()),
        )
        .await
        .map_err(|_| format!("connect to {} timed out", self.addr))?
        .map_err(|e| format!("connect to {}: {e}", self.addr))?;
        let _ = stream.set_nodelay(true);
        let (send, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {}: {e}", self.addr))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "target connection ended with an error");
            }
        });
        Ok(send)
    }

    /// Sends `req` and reads the whole answer (at most `limit` bytes of body).
    pub async fn exchange(
        &self,
        mut req: Request<Full<Bytes>>,
        limit: usize,
    ) -> Result<Response<Bytes>, UpstreamError> {
        if let Some(pq) = req.uri().path_and_query() {
            let origin = Uri::from(pq.clone());
            *req.uri_mut() = origin;
        }
        req.headers_mut()
            .entry(http::header::HOST)
            .or_insert_with(|| self.host.clone());
        // A pooled connection may turn out closed; a new one is tried once after that.
        let mut pooled = true;
        loop {
            let idle = if pooled { self.checkout() } else { None };
            let mut send = match idle {
                Some(s) => s,
                None => {
                    pooled = false;
                    self.connect().await.map_err(UpstreamError::Unreachable)?
                }
            };
            if send.ready().await.is_err() {
                if pooled {
                    continue;
                }
                return Err(UpstreamError::Unreachable(format!(
                    "connection to {} closed before the request",
                    self.addr
                )));
            }
            match send.try_send_request(req).await {
                Ok(resp) => {
                    let resp = read_answer(resp, limit).await?;
                    self.checkin(send);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    // Not a byte was sent: safe to send again, on a new connection.
                    Some(back) if pooled => {
                        req = back;
                        pooled = false;
                    }
                    _ => return Err(UpstreamError::Unreachable(chain(e.into_error()))),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A bare HTTP/1.1 server: records each request head, answers `answer`; closes the
    /// connection after one request when `one_shot`. Returns its port and the accept count.
    async fn server(
        answer: &'static str,
        one_shot: bool,
    ) -> (u16, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
        server_closing(answer, one_shot, Arc::new(tokio::sync::Notify::new())).await
    }

    /// As [`server`]; a connection waiting for its next request closes when `close` is
    /// notified.
    async fn server_closing(
        answer: &'static str,
        one_shot: bool,
        close: Arc<tokio::sync::Notify>,
    ) -> (u16, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (a, h) = (accepted.clone(), heads.clone());
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                a.fetch_add(1, Ordering::SeqCst);
                let h = h.clone();
                let close = close.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // One request: the head, then Content-Length bytes of body.
                        let (head, need) = loop {
                            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                                let len = head
                                    .lines()
                                    .find_map(|l| {
                                        let (k, v) = l.split_once(':')?;
                                        k.eq_ignore_ascii_case("content-length")
                                            .then(|| v.trim().parse::<usize>().unwrap())
                                    })
                                    .unwrap_or(0);
                                break (head, end + 4 + len);
                            }
                            let n = tokio::select! {
                                n = s.read(&mut chunk) => n.unwrap_or(0),
                                _ = close.notified() => 0,
                            };
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                        };
                        while buf.len() < need {
                            let n = s.read(&mut chunk).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        buf.drain(..need);
                        h.lock().unwrap().push(head);
                        s.write_all(answer.as_bytes()).await.unwrap();
                        if one_shot {
                            return;
                        }
                    }
                });
            }
        });
        (port, accepted, heads)
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    fn request(port: u16, path: &str) -> Request<Full<Bytes>> {
        let mut r = Request::new(Full::new(Bytes::from_static(b"{\"a\":1}")));
        *r.method_mut() = http::Method::POST;
        *r.uri_mut() = format!("http://127.0.0.1:{port}{path}").parse().unwrap();
        r
    }

    #[tokio::test]
    async fn keeps_the_connection_and_writes_origin_form_with_host() {
        let (port, accepted, heads) = server(OK, false).await;
        let url: Uri = format!("http://127.0.0.1:{port}/in").parse().unwrap();
        let pool = H1Pool::for_url(&url).unwrap();
        for _ in 0..5 {
            let r = pool.exchange(request(port, "/in?x=1"), 1024).await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.body().as_ref(), b"ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection, reused");
        let heads = heads.lock().unwrap();
        assert_eq!(heads.len(), 5);
        assert!(
            heads[0].starts_with("POST /in?x=1 HTTP/1.1\r\n"),
            "{}",
            heads[0]
        );
        assert!(
            heads[0].contains(&format!("host: 127.0.0.1:{port}")),
            "{}",
            heads[0]
        );
    }

    #[tokio::test]
    async fn a_connection_the_target_closed_is_replaced() {
        // The target closes after each answer without saying so: every request still
        // succeeds, each on a new connection.
        let (port, accepted, _) = server(OK, true).await;
        let url: Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let pool = H1Pool::for_url(&url).unwrap();
        for _ in 0..5 {
            let r = pool.exchange(request(port, "/"), 1024).await.unwrap();
            assert_eq!(r.status(), 200);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn an_idle_connection_the_target_closed_is_not_used() {
        let close = Arc::new(tokio::sync::Notify::new());
        let (port, accepted, _) = server_closing(OK, false, close.clone()).await;
        let url: Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let pool = H1Pool::for_url(&url).unwrap();
        pool.exchange(request(port, "/"), 64).await.unwrap();
        assert_eq!(pool.idle.lock().unwrap().len(), 1);
        close.notify_one();
        // Wait (bounded) until the client side has seen the close.
        tokio::time::timeout(Duration::from_secs(10), async {
            while !pool.idle.lock().unwrap()[0].send.is_closed() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        let r = pool.exchange(request(port, "/"), 64).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_oversized_answer_is_an_error_and_its_connection_is_not_kept() {
        let (port, accepted, _) = server(
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789",
            false,
        )
        .await;
        let url: Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let pool = H1Pool::for_url(&url).unwrap();
        let e = pool.exchange(request(port, "/"), 4).await.unwrap_err();
        assert!(matches!(e, UpstreamError::BadResponse(_)), "{e:?}");
        assert!(pool.idle.lock().unwrap().is_empty());
        pool.exchange(request(port, "/"), 64).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_target_that_is_down_is_a_send_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let url: Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let pool = H1Pool::for_url(&url).unwrap();
        match pool.exchange(request(port, "/"), 64).await {
            Err(UpstreamError::Unreachable(m)) => assert!(m.contains("connect to"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_plain_http_urls_get_a_pool_and_the_host_header_follows_hyper_util() {
        let u = |s: &str| s.parse::<Uri>().unwrap();
        assert!(H1Pool::for_url(&u("https://svc/")).is_none());
        let p = H1Pool::for_url(&u("http://svc/in")).unwrap();
        assert_eq!(
            (p.addr.as_str(), p.host.to_str().unwrap()),
            ("svc:80", "svc")
        );
        let p = H1Pool::for_url(&u("http://[::1]:8080/")).unwrap();
        assert_eq!(p.addr, "[::1]:8080");
        assert_eq!(p.host.to_str().unwrap(), "[::1]:8080");
        assert!(p.serves(&u("http://[::1]:8080/other?q")));
        assert!(!p.serves(&u("http://[::1]:8081/")));
        assert!(!p.serves(&u("https://[::1]:8080/")));
    }
}
