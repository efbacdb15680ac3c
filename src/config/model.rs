//! Stage 3 of configuration: the validated, typed runtime model. Nothing past this point is
//! stringly typed; every value here has been interpolated, parsed and checked.

use super::secret::Secret;
use http::{HeaderName, HeaderValue, Method, Uri};
use ipnet::IpNet;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Debug)]
pub struct Config {
    /// The file this was loaded from (for messages and reload).
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, hex: the config's version.
    pub hash: String,
    pub loaded_at: SystemTime,
    pub server: Server,
    pub admin: Admin,
    pub storage: Storage,
    pub routes: Vec<Arc<Route>>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    pub tls: Option<Tls>,
    pub max_body: u64,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub trusted_proxies: Vec<IpNet>,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub source: TlsSource,
    pub handshake_timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum TlsSource {
    Pair {
        cert: PathBuf,
        key: PathBuf,
        generate_if_missing: bool,
    },
    /// A folder of `NAME.crt` / `NAME.key` pairs, chosen by SNI.
    Dir(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: SocketAddr,
    pub token: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct Storage {
    pub backend: StorageBackend,
    pub path: PathBuf,
    pub retention: Duration,
    pub max_size: u64,
}

#[derive(Debug, Clone)]
pub enum StorageBackend {
    Embedded,
    Postgres { url: Secret, pool: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Sync,
    Async,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub host: Option<String>,
    pub path: PathMatch,
    pub methods: Vec<Method>,
    pub mode: Mode,
    pub verify: VerifySpec,
    pub allow_ips: Vec<IpNet>,
    pub rate_limit: Option<RouteRate>,
    pub dedup: Dedup,
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone, Copy)]
pub struct RouteRate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
    pub key: RateKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKey {
    Route,
    Ip,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dedup {
    Off,
    /// On for the provider's delivery id, or for `header` when set.
    On {
        window: Duration,
        header: Option<HeaderName>,
    },
}

#[derive(Debug, Clone)]
pub enum VerifySpec {
    Github { secrets: Vec<Secret>, enforce: bool },
    Hmac(Box<HmacSpec>),
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

#[derive(Debug, Clone)]
pub struct HmacSpec {
    pub secrets: Vec<Secret>,
    pub enforce: bool,
    pub header: HeaderName,
    pub algorithm: HmacAlgorithm,
    pub encoding: Encoding,
    pub prefix: String,
    /// Template over `{body}`, `{timestamp}`, `{id}`, `{url}`.
    pub signed: String,
    pub timestamp_header: Option<HeaderName>,
    pub id_header: Option<HeaderName>,
    pub tolerance: Duration,
    pub public_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub url: Uri,
    pub timeout: Duration,
    pub concurrency: usize,
    pub rate_limit: Option<TargetRate>,
    pub retry: Retry,
    pub headers_set: Vec<(HeaderName, HeaderValue)>,
    pub headers_remove: Vec<HeaderName>,
    pub tls: TargetTls,
    /// Standard Webhooks signing key (decoded from `sign.secret`), when outbound signing is on.
    pub sign_key: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy)]
pub struct TargetRate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max_delay: Duration,
    pub max_age: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TargetTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}
