//! The floor of the sync relay benchmark: the least a relay on hookgate's own stack (tokio's
//! single-thread runtime, hyper's HTTP/1.1 server and client connections, mimalloc, the
//! `hmac`/`sha2` GitHub check) can cost per request. It routes nothing, rewrites no
//! headers, keeps no metrics and has no timeouts: it reads the body, checks
//! `X-Hub-Signature-256`, forwards to one upstream over kept-alive connections and relays
//! the answer. `benches/sync-vs-nginx.sh` runs it beside hookgate, so the README can say
//! which part of the gap to nginx is the stack and which is hookgate.
//!
//! Not a product: `relay_floor LISTEN UPSTREAM` (both `host:port`), secret in
//! `FLOOR_SECRET`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::rc::Rc;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Pool = Rc<RefCell<Vec<SendRequest<Full<Bytes>>>>>;

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        return Err("usage: relay_floor LISTEN UPSTREAM".into());
    };
    let secret: Rc<[u8]> = std::env::var("FLOOR_SECRET")?.into_bytes().into();
    let upstream: Rc<str> = upstream.into();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio::task::LocalSet::new().block_on(&rt, async move {
        let listener = tokio::net::TcpListener::bind(listen.as_str()).await?;
        let pool: Pool = Rc::default();
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let (pool, secret, upstream) = (pool.clone(), secret.clone(), upstream.clone());
            tokio::task::spawn_local(async move {
                let svc = service_fn(move |req| {
                    relay(req, pool.clone(), secret.clone(), upstream.clone())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

fn answer(status: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

async fn relay(
    req: Request<Incoming>,
    pool: Pool,
    secret: Rc<[u8]>,
    upstream: Rc<str>,
) -> Result<Response<Full<Bytes>>, Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let signature = parts
        .headers
        .get("x-hub-signature-256")
        .and_then(|v| v.as_bytes().strip_prefix(b"sha256="))
        .and_then(|hex| hex::decode(hex).ok());
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&secret)?;
    mac.update(&body);
    if signature.is_none_or(|s| mac.verify_slice(&s).is_err()) {
        return Ok(answer(StatusCode::UNAUTHORIZED));
    }
    let mut out = Request::new(Full::new(body));
    *out.method_mut() = parts.method;
    *out.uri_mut() = parts.uri;
    *out.headers_mut() = parts.headers;
    let popped = pool.borrow_mut().pop();
    let mut send = match popped {
        Some(s) => s,
        None => {
            let stream = tokio::net::TcpStream::connect(&*upstream).await?;
            stream.set_nodelay(true)?;
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::task::spawn_local(conn);
            send
        }
    };
    send.ready().await?;
    let resp = send.send_request(out).await?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    pool.borrow_mut().push(send);
    Ok(Response::from_parts(parts, Full::new(body)))
}
