//! TLS termination. Certificates live behind an `ArcSwap` read at every handshake, so a
//! changed file takes effect for new connections without re-binding a listener or touching
//! open ones; an invalid new pair keeps the old one (and says why in the log).

use crate::config::TlsSource;
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate {path}: {source}")]
    Cert {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("certificate file {0} holds no certificate")]
    NoCert(PathBuf),
    #[error("cannot read private key {path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{cert} and {key} do not form a usable pair: {source}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot read certificate folder {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate folder {0} holds no NAME.crt/NAME.key pair")]
    EmptyDir(PathBuf),
    #[error("cannot create development certificate: {0}")]
    Generate(String),
    #[error("TLS setup failed: {0}")]
    Setup(#[from] rustls::Error),
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads a PEM chain and key and checks that they belong together.
pub fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|source| TlsError::Cert {
            path: cert.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCert(cert.to_owned()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_owned(),
        source,
    })?;
    CertifiedKey::from_der(chain, der, &provider())
        .map(Arc::new)
        .map_err(|source| TlsError::Pair {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })
}

/// The certificates in force: one pair, or pairs by server name.
#[derive(Debug)]
pub enum Certs {
    Single(Arc<CertifiedKey>),
    ByName {
        names: BTreeMap<String, Arc<CertifiedKey>>,
        /// For clients that send no (or an unknown) SNI name: `default.crt` if present,
        /// else the first pair by name.
        fallback: Arc<CertifiedKey>,
    },
}

/// Loads every `NAME.crt` with its `NAME.key` in `dir`; NAME is the server name it serves
/// (`*.example.com.crt` for a wildcard).
pub fn load_dir(dir: &Path) -> Result<Certs, TlsError> {
    let io = |source| TlsError::Dir {
        path: dir.to_owned(),
        source,
    };
    let mut names = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("crt") {
            continue;
        }
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let key = path.with_extension("key");
        names.insert(stem.to_ascii_lowercase(), load_pair(&path, &key)?);
    }
    let fallback = names
        .get("default")
        .or_else(|| names.values().next())
        .cloned()
        .ok_or_else(|| TlsError::EmptyDir(dir.to_owned()))?;
    Ok(Certs::ByName { names, fallback })
}

pub fn load_source(source: &TlsSource) -> Result<Certs, TlsError> {
    match source {
        TlsSource::Pair { cert, key, .. } => load_pair(cert, key).map(Certs::Single),
        TlsSource::Dir(dir) => load_dir(dir),
    }
}

/// Writes a self-signed certificate for localhost when `generate_if_missing` is set and
/// neither file exists yet. The key is created with mode 0600.
pub fn ensure_dev_cert(source: &TlsSource) -> Result<(), TlsError> {
    let TlsSource::Pair {
        cert,
        key,
        generate_if_missing: true,
    } = source
    else {
        return Ok(());
    };
    if cert.exists() || key.exists() {
        return Ok(());
    }
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let g =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    let gen_err = |e: std::io::Error| TlsError::Generate(e.to_string());
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).map_err(gen_err)?;
    }
    write_private(key, g.signing_key.serialize_pem().as_bytes()).map_err(gen_err)?;
    std::fs::write(cert, g.cert.pem()).map_err(gen_err)?;
    tracing::warn!(cert = %cert.display(), "generated a self-signed development certificate for localhost");
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(bytes)
}

/// Chooses the certificate at each handshake from what is in force at that moment.
#[derive(Debug)]
pub struct Resolver(pub Arc<ArcSwap<Certs>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match &**self.0.load() {
            Certs::Single(ck) => Some(ck.clone()),
            Certs::ByName { names, fallback } => {
                let Some(sni) = hello.server_name() else {
                    return Some(fallback.clone());
                };
                let sni = sni.to_ascii_lowercase();
                let wildcard = sni.split_once('.').map(|(_, rest)| format!("*.{rest}"));
                names
                    .get(&sni)
                    .or_else(|| wildcard.and_then(|w| names.get(&w)))
                    .or(Some(fallback))
                    .cloned()
            }
        }
    }
}

/// TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`.
pub fn server_config(certs: Arc<ArcSwap<Certs>>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(certs)));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Watches the folder holding the certificate files (editors and Kubernetes replace files by
/// rename, so watching the file itself misses changes) and swaps in a new pair once it loads.
pub fn watch(
    source: TlsSource,
    certs: Arc<ArcSwap<Certs>>,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    use notify::Watcher;
    let dirs: Vec<PathBuf> = match &source {
        TlsSource::Pair { cert, key, .. } => {
            let mut d = vec![parent(cert), parent(key)];
            d.dedup();
            d
        }
        TlsSource::Dir(dir) => vec![dir.clone()],
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.map(|e| !e.kind.is_access()).unwrap_or(true) {
            // A full channel already holds a pending reload: coalesce.
            let _ = tx.try_send(());
        }
    })?;
    for d in &dirs {
        watcher.watch(d, notify::RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: a cert and its key are usually written one after the other.
            tokio::time::sleep(Duration::from_millis(200)).await;
            while rx.try_recv().is_ok() {}
            match load_source(&source) {
                Ok(new) => {
                    certs.store(Arc::new(new));
                    tracing::info!("TLS certificates reloaded");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate change ignored, keeping the current certificates")
                }
            }
        }
    });
    Ok(watcher)
}

fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}
