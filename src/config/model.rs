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
    /// Open connections one client address may hold (0: no limit).
    pub max_connections_per_ip: usize,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// HTTP/2 without TLS (prior knowledge) on plain listeners; off: HTTP/1.1 only there.
    pub h2c: bool,
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
    /// Log verified request bodies at debug level.
    pub debug_body: bool,
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
    Provider(Box<ProviderSpec>),
    Hmac(Box<HmacSpec>),
    None,
}

impl VerifySpec {
    pub fn enforce(&self) -> bool {
        match self {
            VerifySpec::Provider(p) => p.enforce,
            VerifySpec::Hmac(h) => h.enforce,
            VerifySpec::None => true,
        }
    }

    pub fn provider(&self) -> Option<Provider> {
        match self {
            VerifySpec::Provider(p) => Some(p.provider),
            _ => None,
        }
    }
}

/// A sender with a dedicated verifier (docs/configuration.md: verify).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Github,
    Stripe,
    Slack,
    Shopify,
    Twilio,
    Gitlab,
    Standard,
    Paddle,
    Linear,
    Zoom,
    Meta,
    Square,
    Discord,
    Sendgrid,
    Bearer,
    Basic,
}

impl Provider {
    pub const ALL: [Provider; 16] = [
        Provider::Github,
        Provider::Stripe,
        Provider::Slack,
        Provider::Shopify,
        Provider::Twilio,
        Provider::Gitlab,
        Provider::Standard,
        Provider::Paddle,
        Provider::Linear,
        Provider::Zoom,
        Provider::Meta,
        Provider::Square,
        Provider::Discord,
        Provider::Sendgrid,
        Provider::Bearer,
        Provider::Basic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Stripe => "stripe",
            Provider::Slack => "slack",
            Provider::Shopify => "shopify",
            Provider::Twilio => "twilio",
            Provider::Gitlab => "gitlab",
            Provider::Standard => "standard",
            Provider::Paddle => "paddle",
            Provider::Linear => "linear",
            Provider::Zoom => "zoom",
            Provider::Meta => "meta",
            Provider::Square => "square",
            Provider::Discord => "discord",
            Provider::Sendgrid => "sendgrid",
            Provider::Bearer => "bearer",
            Provider::Basic => "basic",
        }
    }

    pub fn parse(s: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The replay window when the provider signs a timestamp.
    pub fn default_tolerance(self) -> Option<Duration> {
        match self {
            Provider::Stripe | Provider::Slack | Provider::Standard | Provider::Zoom => {
                Some(Duration::from_secs(300))
            }
            Provider::Discord | Provider::Sendgrid => Some(Duration::from_secs(300)),
            Provider::Paddle => Some(Duration::from_secs(5)),
            Provider::Linear => Some(Duration::from_secs(60)),
            _ => None,
        }
    }

    /// Headers that carry the signature or credential: never passed on to targets, and
    /// redacted in the admin API.
    pub fn signature_headers(self) -> &'static [&'static str] {
        match self {
            Provider::Github | Provider::Meta => &["x-hub-signature-256", "x-hub-signature"],
            Provider::Stripe => &["stripe-signature"],
            Provider::Slack => &["x-slack-signature"],
            Provider::Shopify => &["x-shopify-hmac-sha256", "shopify-hmac-sha256"],
            Provider::Twilio => &["x-twilio-signature"],
            Provider::Gitlab => &["x-gitlab-token"],
            Provider::Standard => &["webhook-signature", "svix-signature"],
            Provider::Paddle => &["paddle-signature"],
            Provider::Linear => &["linear-signature"],
            Provider::Zoom => &["x-zm-signature"],
            Provider::Square => &["x-square-hmacsha256-signature"],
            Provider::Discord => &["x-signature-ed25519"],
            Provider::Sendgrid => &["x-twilio-email-event-webhook-signature"],
            Provider::Bearer | Provider::Basic => &["authorization"],
        }
    }

    /// Verifies with public keys rather than shared secrets.
    pub fn asymmetric(self) -> bool {
        matches!(self, Provider::Discord | Provider::Sendgrid)
    }
}

#[derive(Debug, Clone)]
pub struct ProviderSpec {
    pub provider: Provider,
    /// Shared secrets (the token for gitlab and bearer; the password for basic).
    pub secrets: Vec<Secret>,
    /// Decoded public keys (discord: 32-byte Ed25519; sendgrid: SPKI DER; standard: `whpk_`).
    pub public_keys: Vec<Vec<u8>>,
    pub enforce: bool,
    pub tolerance: Duration,
    /// The URL the provider calls (twilio, square), when hookgate is behind another proxy.
    pub public_url: Option<String>,
    /// Meta's subscription handshake token.
    pub verify_token: Option<Secret>,
    /// basic: the user name.
    pub username: Option<String>,
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
    pub headers_set: Vec<(HeaderName, HeaderTemplate)>,
    /// Pass the provider's signature headers on (default: dropped).
    pub keep_signature: bool,
    pub headers_remove: Vec<HeaderName>,
    pub tls: TargetTls,
    /// Standard Webhooks signing key (decoded from `sign.secret`), when outbound signing is on.
    pub sign_key: Option<Vec<u8>>,
    /// jq: which events go to this target (compiled and checked at load).
    pub filter: Option<Arc<str>>,
    /// jq: the JSON body sent to this target instead of the original bytes.
    pub transform: Option<Arc<str>>,
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

/// A `headers.set` value: fixed, or with `{{ event.id }}`, `{{ route }}`, `{{ target }}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderTemplate {
    Fixed(HeaderValue),
    Parts(Vec<TemplatePart>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Text(String),
    EventId,
    Route,
    Target,
}

impl HeaderTemplate {
    /// Parses `{{ name }}` placeholders; an unknown name is an error.
    pub fn parse(s: &str) -> Result<HeaderTemplate, String> {
        if !s.contains("{{") {
            return HeaderValue::from_str(s)
                .map(HeaderTemplate::Fixed)
                .map_err(|_| format!("`{s}` is not a valid header value"));
        }
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find("{{") {
            if i > 0 {
                parts.push(TemplatePart::Text(rest[..i].to_owned()));
            }
            let end = rest[i..]
                .find("}}")
                .ok_or_else(|| format!("unclosed `{{{{` in `{s}`"))?;
            let name = rest[i + 2..i + end].trim();
            parts.push(match name {
                "event.id" => TemplatePart::EventId,
                "route" => TemplatePart::Route,
                "target" => TemplatePart::Target,
                other => {
                    return Err(format!(
                        "unknown template value `{other}` (use event.id, route, target)"
                    ))
                }
            });
            rest = &rest[i + end + 2..];
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Text(rest.to_owned()));
        }
        Ok(HeaderTemplate::Parts(parts))
    }

    /// Whether the value names `{{ event.id }}`.
    pub fn uses_event_id(&self) -> bool {
        matches!(self, HeaderTemplate::Parts(parts) if parts.iter().any(|p| matches!(p, TemplatePart::EventId)))
    }

    pub fn render(&self, event_id: &str, route: &str, target: &str) -> Option<HeaderValue> {
        match self {
            HeaderTemplate::Fixed(v) => Some(v.clone()),
            HeaderTemplate::Parts(parts) => {
                let s: String = parts
                    .iter()
                    .map(|p| match p {
                        TemplatePart::Text(t) => t.as_str(),
                        TemplatePart::EventId => event_id,
                        TemplatePart::Route => route,
                        TemplatePart::Target => target,
                    })
                    .collect();
                HeaderValue::from_str(&s).ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_templates() {
        let t = HeaderTemplate::parse("{{ event.id }}@{{route}}/{{ target }}").unwrap();
        assert_eq!(t.render("e1", "r", "t").unwrap(), "e1@r/t");
        assert!(t.uses_event_id());
        assert!(!HeaderTemplate::parse("{{ route }}-x")
            .unwrap()
            .uses_event_id());
        assert!(!HeaderTemplate::parse("plain").unwrap().uses_event_id());
        assert!(matches!(
            HeaderTemplate::parse("plain").unwrap(),
            HeaderTemplate::Fixed(_)
        ));
        assert!(HeaderTemplate::parse("{{ secret }}")
            .unwrap_err()
            .contains("unknown template value"));
        assert!(HeaderTemplate::parse("{{ route").is_err());
    }
}
