//! Accept loop and connection serving, in the mini-redis shape: `serve(listener, shutdown)`
//! with both injected. A semaphore caps open connections (the kernel backlog holds the
//! rest); TLS handshakes have a deadline; hyper's timer makes `header_timeout` real; on
//! shutdown the loop stops accepting and every connection is drained gracefully.

use crate::admin::metrics as m;
use crate::ingress::error::HttpResponse;
use crate::ingress::ConnInfo;
use crate::server::guard::{Activity, PerIp};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

pub struct Settings {
    pub header_timeout: Duration,
    /// Time a connection may sit with no request in flight, after its first request.
    pub idle_timeout: Duration,
    /// Connections one client address may hold (`None`: no limit).
    pub per_ip: Option<Arc<PerIp>>,
    pub connections: Arc<Semaphore>,
    pub tls: Option<(TlsAcceptor, Duration)>,
    /// Serve HTTP/2 without TLS (prior knowledge) on a plain listener; TLS listeners offer
    /// HTTP/2 by ALPN either way.
    pub h2c: bool,
    /// Count connections in `hookgate_open_connections` (public listeners only).
    pub count_connections: bool,
}

pub trait Handler: Clone + Send + Sync + 'static {
    fn call(
        &self,
        req: hyper::Request<Incoming>,
        conn: ConnInfo,
    ) -> impl Future<Output = HttpResponse> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(hyper::Request<Incoming>, ConnInfo) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send,
{
    fn call(
        &self,
        req: hyper::Request<Incoming>,
        conn: ConnInfo,
    ) -> impl Future<Output = HttpResponse> + Send {
        self(req, conn)
    }
}

fn builder(header_timeout: Duration, http1_only: bool) -> Builder<TokioExecutor> {
    let mut b = Builder::new(TokioExecutor::new());
    if http1_only {
        b = b.http1_only();
    }
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    b
}

/// Serves `listener` until `shutdown` turns true, then drains open connections. Returns
/// when every connection has closed; the caller bounds that wait with `shutdown_grace`.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    settings: Settings,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) {
    let http1_only = settings.tls.is_none() && !settings.h2c;
    let builder = Arc::new(builder(settings.header_timeout, http1_only));
    let graceful = GracefulShutdown::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let permit = tokio::select! {
            p = settings.connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let slot = match &settings.per_ip {
            None => None,
            Some(p) => match p.admit(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    metrics::counter!(m::CONNECTIONS_CLOSED, "reason" => "per_ip").increment(1);
                    tracing::debug!(%peer, "connection refused: this address holds its share of connections");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let limits = (settings.header_timeout, settings.idle_timeout);
        let builder = builder.clone();
        let handler = handler.clone();
        let tls = settings.tls.clone();
        let count = settings.count_connections;
        tokio::spawn(async move {
            let (_permit, _slot) = (permit, slot);
            if count {
                metrics::gauge!(m::OPEN_CONNECTIONS).increment(1.0);
            }
            match tls {
                None => {
                    let conn = ConnInfo { peer, tls: false };
                    serve_conn(
                        TokioIo::new(stream),
                        &builder,
                        handler,
                        conn,
                        watcher,
                        limits,
                    )
                    .await;
                }
                Some((acceptor, deadline)) => {
                    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let conn = ConnInfo { peer, tls: true };
                            let io = TokioIo::new(tls_stream);
                            serve_conn(io, &builder, handler, conn, watcher, limits).await;
                        }
                        Ok(Err(e)) => {
                            metrics::counter!(m::TLS_HANDSHAKE_FAILURES).increment(1);
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            metrics::counter!(m::TLS_HANDSHAKE_FAILURES).increment(1);
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                }
            }
            if count {
                metrics::gauge!(m::OPEN_CONNECTIONS).decrement(1.0);
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn serve_conn<I, H>(
    io: TokioIo<I>,
    builder: &Builder<TokioExecutor>,
    handler: H,
    conn: ConnInfo,
    watcher: hyper_util::server::graceful::Watcher,
    (first, idle): (Duration, Duration),
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let activity = Activity::new();
    let requests = activity.clone();
    let svc = service_fn(move |req| {
        let in_flight = requests.begin();
        // The request's future is several KiB: boxed once here, hyper moves a pointer
        // instead of copying the whole state at each layer.
        let handler = handler.clone();
        let fut = Box::pin(async move { handler.call(req, conn).await });
        async move {
            let resp = fut.await;
            drop(in_flight);
            Ok::<_, Infallible>(resp)
        }
    });
    // The connection runs as its own task, so its traffic never wakes the watchdog here.
    let mut served = tokio::spawn(watcher.watch(builder.serve_connection(io, svc).into_owned()));
    tokio::select! {
        r = &mut served => {
            if let Ok(Err(e)) = r {
                tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
            }
        }
        reason = activity.idle(first, idle) => {
            served.abort();
            metrics::counter!(m::CONNECTIONS_CLOSED, "reason" => reason).increment(1);
            tracing::debug!(peer = %conn.peer, reason, "connection closed: no request in time");
        }
    }
}
