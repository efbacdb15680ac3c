//! The active config as the admin API shows it: its version (hash, load time) and content,
//! built from the validated model so that no secret can appear — secrets are `[redacted]`.

use crate::config::{Config, Dedup, Mode, PathMatch, VerifySpec};
use serde_json::{json, Value};

pub fn view(c: &Config) -> Value {
    let routes: Vec<Value> = c
        .routes
        .iter()
        .map(|r| {
            let (kind, path) = match &r.path {
                PathMatch::Exact(p) => ("path", p),
                PathMatch::Prefix(p) => ("path_prefix", p),
            };
            let verify = match &r.verify {
                VerifySpec::Provider(p) => json!({
                    p.provider.name(): {
                        "secrets": vec!["[redacted]"; p.secrets.len()],
                        "public_keys": p.public_keys.len(),
                        "enforce": p.enforce,
                        "tolerance_s": p.tolerance.as_secs(),
                        "public_url": p.public_url,
                    }
                }),
                VerifySpec::Hmac(h) => json!({ "hmac": {
                    "secrets": vec!["[redacted]"; h.secrets.len()],
                    "header": h.header.as_str(),
                    "algorithm": format!("{:?}", h.algorithm).to_lowercase(),
                    "encoding": format!("{:?}", h.encoding).to_lowercase(),
                    "prefix": h.prefix,
                    "signed": h.signed,
                    "enforce": h.enforce,
                }}),
                VerifySpec::None => json!({ "none": true }),
            };
            let targets: Vec<Value> = r
                .targets
                .iter()
                .map(|t| {
                    json!({
                        "name": t.name,
                        "url": t.url.to_string(),
                        "timeout_ms": t.timeout.as_millis() as u64,
                        "concurrency": t.concurrency,
                        "retry": {
                            "max_attempts": t.retry.max_attempts,
                            "initial_ms": t.retry.initial.as_millis() as u64,
                            "max_delay_ms": t.retry.max_delay.as_millis() as u64,
                            "max_age_ms": t.retry.max_age.as_millis() as u64,
                        },
                        "headers_set": t.headers_set.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
                        "keep_signature": t.keep_signature,
                        "headers_remove": t.headers_remove.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
                        "signed": t.sign_key.is_some(),
                    })
                })
                .collect();
            json!({
                "name": r.name,
                kind: path,
                "host": r.host,
                "methods": r.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                "mode": match r.mode { Mode::Sync => "sync", Mode::Async => "async" },
                "verify": verify,
                "dedup": match &r.dedup {
                    Dedup::Off => json!(false),
                    Dedup::On { window, header } => json!({ "window_s": window.as_secs(), "header": header.as_ref().map(|h| h.as_str()) }),
                },
                "targets": targets,
            })
        })
        .collect();
    let loaded_at_ms = crate::store::to_ms(c.loaded_at);
    json!({
        "version": { "hash": c.hash, "loaded_at_ms": loaded_at_ms, "path": c.path.display().to_string() },
        "content": {
            "server": {
                "listen": c.server.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "tls": c.server.tls.is_some(),
                "max_body": c.server.max_body,
            },
            "admin": { "listen": c.admin.listen.to_string(), "token": c.admin.token.as_ref().map(|_| "[redacted]") },
            "routes": routes,
        }
    })
}
