//! Live reconfiguration: SIGHUP, a change of the config file, or
//! `POST /api/v1/reload`. The new file is loaded, validated and fully built — verifiers,
//! clients, limiters — before one atomic swap; requests in flight finish under the config they
//! started with; listeners are never re-bound. An invalid file changes nothing: the error is
//! logged with `FILE:LINE:COL`, counted, and returned to the caller.

use crate::admin::metrics as m;
use crate::config::{self, ConfigError, Mode};
use crate::deliver::worker::Engine;
use crate::ingress::{Ingress, Runtime};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Invalid(ConfigError),
    #[error("{0}")]
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    Applied { hash: String },
    Unchanged { hash: String },
}

pub struct Reloader {
    pub path: PathBuf,
    ingress: Arc<Ingress>,
    engine: Arc<Engine>,
    /// One reload at a time, whatever triggered it.
    lock: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(path: PathBuf, ingress: Arc<Ingress>, engine: Arc<Engine>) -> Self {
        Reloader {
            path,
            ingress,
            engine,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    pub async fn reload(&self, trigger: &'static str) -> Result<Reloaded, ReloadError> {
        let _one = self.lock.lock().await;
        let result = self.apply().await;
        let label = match &result {
            Ok(Reloaded::Applied { hash }) => {
                tracing::info!(trigger, version = %hash, "configuration reloaded");
                "ok"
            }
            Ok(Reloaded::Unchanged { .. }) => "unchanged",
            Err(ReloadError::Invalid(e)) => {
                for line in e.lines() {
                    tracing::error!(
                        trigger,
                        "config reload refused, keeping the running config: {line}"
                    );
                }
                "error"
            }
            Err(ReloadError::Refused(why)) => {
                tracing::error!(
                    trigger,
                    "config reload refused, keeping the running config: {why}"
                );
                "error"
            }
        };
        metrics::counter!(m::RELOADS, "result" => label).increment(1);
        result
    }

    async fn apply(&self) -> Result<Reloaded, ReloadError> {
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .map_err(|e| ReloadError::Refused(e.to_string()))?
            .map_err(ReloadError::Invalid)?;
        let new = loaded.config;
        let old = self.ingress.runtime.load_full();
        if new.hash == old.config.hash {
            return Ok(Reloaded::Unchanged { hash: new.hash });
        }
        if self.ingress.store.is_none() && new.routes.iter().any(|r| r.mode == Mode::Async) {
            return Err(ReloadError::Refused(
                "the first async route needs a restart: this process started without a store"
                    .into(),
            ));
        }
        for (what, a, b) in [
            (
                "server.listen",
                format!("{:?}", old.config.server.listen),
                format!("{:?}", new.server.listen),
            ),
            (
                "server.tls",
                format!("{:?}", old.config.server.tls),
                format!("{:?}", new.server.tls),
            ),
            (
                "admin",
                format!("{:?}", old.config.admin.listen),
                format!("{:?}", new.admin.listen),
            ),
            (
                "storage",
                format!("{:?}", old.config.storage),
                format!("{:?}", new.storage),
            ),
        ] {
            if a != b {
                tracing::warn!("{what} changed: that part takes effect at the next restart (listeners are never re-bound)");
            }
        }
        let hash = new.hash.clone();
        let runtime = Runtime::build(new).map_err(|e| ReloadError::Refused(e.to_string()))?;
        let wanted = runtime.wanted_workers();
        // The swap: new requests see the new config; requests in flight keep the old one.
        self.ingress.runtime.store(Arc::new(runtime));
        self.engine
            .reconcile(wanted)
            .await
            .map_err(|e| ReloadError::Refused(format!("workers: {e}")))?;
        Ok(Reloaded::Applied { hash })
    }

    /// Watches the config file's folder (editors and Kubernetes ConfigMaps replace files by
    /// rename and symlink swaps) and reloads when the file's content changes, debounced.
    pub fn watch(
        self: &Arc<Self>,
    ) -> Result<(notify::RecommendedWatcher, tokio::task::JoinHandle<()>), notify::Error> {
        use notify::Watcher;
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if res.map(|e| !e.kind.is_access()).unwrap_or(true) {
                    let _ = tx.try_send(());
                }
            })?;
        watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
        let me = self.clone();
        let task = tokio::spawn(async move {
            while rx.recv().await.is_some() {
                tokio::time::sleep(Duration::from_millis(300)).await;
                while rx.try_recv().is_ok() {}
                // Only a change of this file's content counts, not any file in the folder.
                let Ok(bytes) = tokio::fs::read(&me.path).await else {
                    continue;
                };
                use sha2::Digest;
                let hash = hex::encode(sha2::Sha256::digest(&bytes));
                if hash != me.ingress.runtime.load().config.hash {
                    let _ = me.reload("file change").await;
                }
            }
        });
        Ok((watcher, task))
    }
}
