//! Stage 1 of configuration: the YAML as written, with every scalar kept as text and its
//! position, so validation (stage 2) can interpolate `${VAR}` and report `FILE:LINE:COL`.
//! Unknown keys are rejected here: a typo must never silently disable a check.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::fmt;

/// A scalar exactly as written (numbers and booleans as their text), before interpolation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

/// A scalar together with where it was written.
pub type Str = Spanned<Scalar>;

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar (string, number or boolean)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar("null".to_owned()))
            }
            fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar("null".to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    #[serde(default)]
    pub server: Option<Spanned<RawServer>>,
    #[serde(default)]
    pub admin: Option<Spanned<RawAdmin>>,
    #[serde(default)]
    pub storage: Option<Spanned<RawStorage>>,
    #[serde(default)]
    pub defaults: Option<RawTargetSettings>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    pub listen: Option<Vec<Str>>,
    pub tls: Option<Spanned<RawTls>>,
    pub max_body: Option<Str>,
    pub header_timeout: Option<Str>,
    pub request_timeout: Option<Str>,
    pub max_connections: Option<Str>,
    pub max_connections_per_ip: Option<Str>,
    pub idle_timeout: Option<Str>,
    pub h2c: Option<Str>,
    pub trusted_proxies: Option<Vec<Str>>,
    pub shutdown_grace: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTls {
    pub cert: Option<Str>,
    pub key: Option<Str>,
    pub certs: Option<Str>,
    /// Development convenience: create a self-signed pair at `cert`/`key` when both are missing.
    pub generate_if_missing: Option<Str>,
    pub handshake_timeout: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAdmin {
    pub listen: Option<Str>,
    pub token: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawStorage {
    pub backend: Option<Str>,
    pub path: Option<Str>,
    pub retention: Option<Str>,
    pub max_size: Option<Str>,
    pub postgres: Option<RawPostgres>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawPostgres {
    pub url: Option<Str>,
    pub pool: Option<Str>,
}

/// Per-target delivery settings; `defaults:` and each target share this shape.
#[derive(Debug, Default, Deserialize)]
pub struct RawTargetSettings {
    pub timeout: Option<Str>,
    pub concurrency: Option<Str>,
    pub rate_limit: Option<Spanned<Option<RawRate>>>,
    pub retry: Option<RawRetry>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRate {
    pub per_second: Option<Str>,
    pub burst: Option<Str>,
    pub key: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRetry {
    pub max_attempts: Option<Str>,
    pub initial: Option<Str>,
    pub max_delay: Option<Str>,
    pub max_age: Option<Str>,
}

#[derive(Debug, Deserialize)]
pub struct RawRoute {
    pub name: Option<Str>,
    pub path: Option<Str>,
    pub path_prefix: Option<Str>,
    pub host: Option<Str>,
    pub methods: Option<Vec<Str>>,
    pub mode: Option<Str>,
    pub verify: Option<Spanned<RawVerify>>,
    pub allow_ips: Option<Vec<Str>>,
    pub rate_limit: Option<Spanned<RawRate>>,
    pub dedup: Option<Spanned<RawDedup>>,
    pub verify_token: Option<Str>,
    /// Log request bodies at debug level (off by default: bodies are never logged).
    pub debug_body: Option<Str>,
    #[serde(default)]
    pub targets: Vec<Spanned<RawTarget>>,
}

/// `dedup: false`, or `dedup: { window: 24h, header: X-Id }`.
#[derive(Debug)]
pub enum RawDedup {
    Switch(Scalar),
    Settings {
        window: Option<Str>,
        header: Option<Str>,
    },
}

impl<'de> Deserialize<'de> for RawDedup {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawDedup;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("false, or a mapping with `window` and/or `header`")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawDedup, E> {
                Ok(RawDedup::Switch(Scalar(v.to_string())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDedup, E> {
                Ok(RawDedup::Switch(Scalar(v.to_owned())))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<RawDedup, A::Error> {
                let (mut window, mut header) = (None, None);
                while let Some(k) = m.next_key::<String>()? {
                    match k.as_str() {
                        "window" => window = Some(m.next_value::<Str>()?),
                        "header" => header = Some(m.next_value::<Str>()?),
                        // Reported with every other unknown key (see `config::unknown_keys`).
                        _ => {
                            m.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(RawDedup::Settings { window, header })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RawVerify {
    pub github: Option<Spanned<RawProvider>>,
    pub stripe: Option<Spanned<RawProvider>>,
    pub slack: Option<Spanned<RawProvider>>,
    pub shopify: Option<Spanned<RawProvider>>,
    pub twilio: Option<Spanned<RawProvider>>,
    pub gitlab: Option<Spanned<RawProvider>>,
    pub standard: Option<Spanned<RawProvider>>,
    pub paddle: Option<Spanned<RawProvider>>,
    pub linear: Option<Spanned<RawProvider>>,
    pub zoom: Option<Spanned<RawProvider>>,
    pub meta: Option<Spanned<RawProvider>>,
    pub square: Option<Spanned<RawProvider>>,
    pub discord: Option<Spanned<RawProvider>>,
    pub sendgrid: Option<Spanned<RawProvider>>,
    pub bearer: Option<Spanned<RawProvider>>,
    pub basic: Option<Spanned<RawProvider>>,
    pub hmac: Option<RawHmac>,
    pub none: Option<Str>,
}

/// The keys any dedicated verifier may take; validation says which apply to which provider.
#[derive(Debug, Default, Deserialize)]
pub struct RawProvider {
    pub secret: Option<Str>,
    pub secrets: Option<Vec<Str>>,
    pub public_key: Option<Str>,
    pub public_keys: Option<Vec<Str>>,
    pub enforce: Option<Str>,
    pub tolerance: Option<Str>,
    pub public_url: Option<Str>,
    pub username: Option<Str>,
    pub password: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawHmac {
    pub secret: Option<Str>,
    pub secrets: Option<Vec<Str>>,
    pub enforce: Option<Str>,
    pub header: Option<Str>,
    pub algorithm: Option<Str>,
    pub encoding: Option<Str>,
    pub prefix: Option<Str>,
    pub signed: Option<Str>,
    pub timestamp_header: Option<Str>,
    pub id_header: Option<Str>,
    pub tolerance: Option<Str>,
    pub public_url: Option<Str>,
}

#[derive(Debug, Deserialize)]
pub struct RawTarget {
    pub name: Option<Str>,
    pub url: Option<Str>,
    pub filter: Option<Str>,
    pub transform: Option<Str>,
    pub headers: Option<RawHeaders>,
    pub sign: Option<Spanned<RawSign>>,
    pub tls: Option<RawTargetTls>,
    pub timeout: Option<Str>,
    pub concurrency: Option<Str>,
    pub rate_limit: Option<Spanned<Option<RawRate>>>,
    pub retry: Option<RawRetry>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawHeaders {
    #[serde(default)]
    pub set: Entries,
    #[serde(default)]
    pub remove: Vec<Str>,
    pub keep_signature: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawTargetTls {
    pub ca: Option<Str>,
    pub cert: Option<Str>,
    pub key: Option<Str>,
}

/// A YAML mapping kept in written order with each value's position (a key is placed at its
/// value, on the same line).
#[derive(Debug, Default)]
pub struct Entries(pub Vec<(Str, Str)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of names to values")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                // The key is read as a plain scalar (so unknown-key tracking can name it) and
                // placed where its value is: on the same line.
                while let Some(k) = m.next_key::<Scalar>()? {
                    let v: Str = m.next_value()?;
                    let k = Spanned::new(k, v.referenced, v.defined);
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSign {
    pub secret: Option<Str>,
}
