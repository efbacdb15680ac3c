//! Wiring: builds the runtime from a validated config, binds every listener, and owns the
//! drain. Tests start a real gateway through [`Gateway::start`] on port 0.

use crate::admin::{self, Admin};
use crate::config::reload::Reloader;
use crate::config::{Config, Mode, StorageBackend};
use crate::deliver::worker::Engine;
use crate::ingress::{ConnInfo, Ingress, Runtime};
use crate::server::listener::{self, Settings};
use crate::server::tls;
use crate::store::embedded::EmbeddedStore;
use crate::store::Store;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot watch certificate files: {0}")]
    Watch(#[from] notify::Error),
    #[error("cannot build a target client: {0}")]
    Client(#[from] crate::deliver::client::ClientError),
    #[error("cannot open the store: {0}")]
    Store(#[from] crate::store::StoreError),
}

pub struct Gateway {
    /// The bound public addresses, in `server.listen` order (real ports when 0 was asked).
    pub public_addrs: Vec<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub ingress: Arc<Ingress>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Delivery workers: stopped after the listeners, so in-flight attempts are recorded.
    engine: Arc<Engine>,
    admin_task: JoinSet<()>,
    grace: Duration,
    _cert_watcher: Option<notify::RecommendedWatcher>,
    config_watcher: Option<(notify::RecommendedWatcher, tokio::task::JoinHandle<()>)>,
    /// Applies a changed config file (SIGHUP, file change, admin API).
    pub reloader: Arc<Reloader>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

impl Gateway {
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        let server = config.server.clone();
        let admin_cfg = config.admin.clone();

        let (tls, watcher) = match &server.tls {
            None => (None, None),
            Some(t) => {
                tls::ensure_dev_cert(&t.source)?;
                let certs = Arc::new(ArcSwap::from_pointee(tls::load_source(&t.source)?));
                let cfg = tls::server_config(certs.clone())?;
                let watcher = tls::watch(t.source.clone(), certs)?;
                (
                    Some((tokio_rustls::TlsAcceptor::from(cfg), t.handshake_timeout)),
                    Some(watcher),
                )
            }
        };

        let needs_store = config.routes.iter().any(|r| r.mode == Mode::Async);
        let storage = config.storage.clone();
        let runtime = Runtime::build(config)?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();

        // The durable buffer and one worker per async target.
        let store: Option<Arc<dyn Store>> = if needs_store {
            let s = match storage.backend {
                StorageBackend::Embedded => EmbeddedStore::open(&storage.path, storage.max_size)?,
                StorageBackend::Postgres { url, pool } => {
                    crate::store::postgres::PgStore::open(url.expose(), pool, None).await?
                        as Arc<dyn Store>
                }
            };
            Some(s)
        } else {
            None
        };
        // jq runs in worker processes, bounded in time and memory (see rules/).
        let jq = crate::rules::pool::JqPool::new(
            2,
            crate::rules::pool::Limits::for_max_body(server.max_body),
        );
        let engine = Engine::new(store.clone(), jq);
        engine.reconcile(runtime.wanted_workers()).await?;
        if let Some(store) = &store {
            tasks.spawn(housekeeping(
                store.clone(),
                storage.retention,
                shutdown_rx.clone(),
            ));
        }
        let config_path = runtime.config.path.clone();
        let ingress = Arc::new(Ingress::new(runtime, store.clone(), engine.clone()));
        let reloader = Arc::new(Reloader::new(config_path, ingress.clone(), engine.clone()));
        let config_watcher = reloader.watch()?;

        let mut listeners = Vec::new();
        for addr in &server.listen {
            listeners.push(bind(*addr).await?);
        }
        let admin_listener = bind(admin_cfg.listen).await?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: admin_cfg.listen,
                source,
            })?;

        let connections = Arc::new(Semaphore::new(server.max_connections.max(1)));
        let per_ip = (server.max_connections_per_ip > 0).then(|| {
            crate::server::guard::PerIp::new(
                server.max_connections_per_ip,
                server.trusted_proxies.clone(),
            )
        });
        let mut public_addrs = Vec::new();
        for l in listeners {
            public_addrs.push(l.local_addr().map_err(|source| StartError::Bind {
                addr: server.listen[0],
                source,
            })?);
            let settings = Settings {
                header_timeout: server.header_timeout,
                idle_timeout: server.idle_timeout,
                per_ip: per_ip.clone(),
                h2c: server.h2c,
                connections: connections.clone(),
                tls: tls.clone(),
                count_connections: true,
            };
            let ing = ingress.clone();
            let handler = move |req, conn: ConnInfo| {
                let ing = ing.clone();
                async move { ing.handle(req, conn).await }
            };
            tasks.spawn(listener::serve(l, settings, handler, shutdown_rx.clone()));
        }

        // Idle per-IP rate-limit state is pruned once a minute.
        let ing = ingress.clone();
        let mut stop = shutdown_rx.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tick.tick() => ing.runtime.load().prune_limiters(),
                    _ = stop.changed() => break,
                }
            }
        });

        let admin = Arc::new(Admin {
            token: admin_cfg.token.clone(),
            metrics: admin::metrics::install(),
            ready: Default::default(),
            store: store.clone(),
            engine,
            ingress: ingress.clone(),
            reloader: reloader.clone(),
            connections: connections.clone(),
        });
        let a = admin.clone();
        let admin_handler = move |req, _conn: ConnInfo| {
            let a = a.clone();
            async move { a.handle(req).await }
        };
        let admin_settings = Settings {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            per_ip: None,
            h2c: false,
            connections: Arc::new(Semaphore::new(64)),
            tls: None,
            count_connections: false,
        };
        let mut admin_task = JoinSet::new();
        // The admin listener outlives the public ones during a drain, so probes keep answering.
        let (_admin_stop_tx, admin_stop) = watch::channel(false);
        let admin_stop_keep = _admin_stop_tx;
        admin_task.spawn(async move {
            let _keep = admin_stop_keep;
            listener::serve(admin_listener, admin_settings, admin_handler, admin_stop).await;
        });
        admin.ready.store(true, Ordering::Release);
        tracing::info!(listen = ?public_addrs, admin = %admin_addr, tls = tls.is_some(), "hookgate is serving");

        Ok(Gateway {
            public_addrs,
            admin_addr,
            ingress,
            shutdown,
            tasks,
            engine: admin.engine.clone(),
            admin_task,
            grace: server.shutdown_grace,
            _cert_watcher: watcher,
            config_watcher: Some(config_watcher),
            reloader,
        })
    }

    /// Stops accepting; in-flight requests go on. Call [`Gateway::drain`] to wait for them.
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits for open connections to finish, at most `shutdown_grace`. Returns false when
    /// the grace period ran out first.
    pub async fn drain(mut self) -> bool {
        self.begin_shutdown();
        let grace = self.grace;
        let engine = self.engine.clone();
        let all = async {
            while self.tasks.join_next().await.is_some() {}
            engine.shutdown().await;
        };
        let finished = tokio::time::timeout(grace, all).await.is_ok();
        if !finished {
            tracing::warn!(grace = ?grace, "shutdown grace period over; closing remaining connections");
        }
        // Abort what is left and wait until it is gone, so the store's lock is released when
        // this returns (a restart in the same process can open it again).
        self.tasks.shutdown().await;
        self.admin_task.shutdown().await;
        if let Some((watcher, task)) = self.config_watcher.take() {
            drop(watcher);
            task.abort();
            let _ = task.await;
        }
        finished
    }
}

/// Queue gauges every few seconds; retention purge in small batches every minute.
async fn housekeeping(store: Arc<dyn Store>, retention: Duration, mut stop: watch::Receiver<bool>) {
    use crate::admin::metrics as m;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {},
            _ = stop.changed() => return,
        }
        n += 1;
        if let Ok(stats) = store.stats().await {
            for s in stats {
                let labels = [("route", s.route.clone()), ("target", s.target.clone())];
                metrics::gauge!(m::QUEUE_DEPTH, &labels).set(s.pending as f64);
                metrics::gauge!(m::DEAD_LETTERS, &labels).set(s.dead as f64);
                metrics::gauge!(m::OLDEST_PENDING, &labels)
                    .set(s.oldest_pending_ms.unwrap_or(0) as f64 / 1000.0);
            }
        }
        metrics::gauge!(m::STORE_SIZE).set(store.size_on_disk() as f64);
        if n % 12 == 1 {
            let cutoff = std::time::SystemTime::now() - retention;
            loop {
                match store.purge(cutoff, 500).await {
                    Ok(500) => continue,
                    Ok(removed) => {
                        if removed > 0 {
                            tracing::debug!(removed, "retention: removed delivered events");
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "retention purge failed");
                        break;
                    }
                }
            }
        }
    }
}
