//! Stage 2 of configuration: raw YAML → runtime model. Every problem is collected with its
//! position (never stop at the first), so `hookgate check` lists them all at once.

use super::interp::interpolate;
use super::model::*;
use super::raw::*;
use super::secret::Secret;
use super::units::{parse_duration, parse_size};
use super::{Diagnostic, Diagnostics};
use http::{HeaderName, Method, Uri};
use ipnet::IpNet;
use serde_saphyr::{Location, Spanned};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub struct Ctx<'a> {
    pub base_dir: &'a Path,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub diags: Diagnostics,
    /// The file's text, to point inside a YAML string at a jq error.
    pub source: &'a str,
}

impl Ctx<'_> {
    pub fn err(&mut self, at: &Location, msg: impl Into<String>) {
        self.diags.errors.push(Diagnostic::at(at, msg));
    }

    /// A jq program, compiled now; an error points at its place inside the YAML string.
    pub fn program(&mut self, s: &Str) -> Option<std::sync::Arc<str>> {
        let code = self.text(s)?;
        match crate::rules::check(&code) {
            Ok(()) => {
                for (offset, message) in crate::rules::unbounded::warnings(&code) {
                    let (line, column) = self.inside(&s.referenced, &code, offset);
                    self.diags.warnings.push(Diagnostic {
                        line,
                        column,
                        message,
                    });
                }
                Some(std::sync::Arc::from(code.as_str()))
            }
            Err(e) => {
                let (line, column) = self.inside(&s.referenced, &code, e.offset);
                self.diags.errors.push(Diagnostic {
                    line,
                    column,
                    message: e.message,
                });
                None
            }
        }
    }

    /// Line and column of byte `offset` of a scalar's value, written at `at`.
    fn inside(&self, at: &Location, code: &str, offset: usize) -> (u64, u64) {
        let (line, col) = (at.line(), at.column());
        let src_line = self
            .source
            .lines()
            .nth(usize::try_from(line.saturating_sub(1)).unwrap_or(0))
            .unwrap_or("");
        let first = src_line
            .chars()
            .nth(usize::try_from(col.saturating_sub(1)).unwrap_or(0));
        let before = &code[..offset.min(code.len())];
        let newlines = before.matches('\n').count() as u64;
        let last_line = before.rsplit('\n').next().unwrap_or("").chars().count() as u64;
        match first {
            // Block scalar: the program starts on the next line, at its indentation.
            Some('|') | Some('>') => {
                let l = line + 1 + newlines;
                let text = self
                    .source
                    .lines()
                    .nth(usize::try_from(l - 1).unwrap_or(0))
                    .unwrap_or("");
                let indent = text.chars().take_while(|c| *c == ' ').count() as u64;
                (l, indent + 1 + last_line)
            }
            Some('"') | Some('\'') => (line, col + 1 + last_line),
            _ => (line, col + last_line),
        }
    }

    pub fn warn(&mut self, at: &Location, msg: impl Into<String>) {
        self.diags.warnings.push(Diagnostic::at(at, msg));
    }

    /// The scalar with `${VAR}` resolved.
    pub fn text(&mut self, s: &Str) -> Option<String> {
        match interpolate(&s.value.0, self.env) {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(&s.referenced, e);
                None
            }
        }
    }

    fn parse<T>(&mut self, s: &Str, f: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let text = self.text(s)?;
        match f(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(&s.referenced, e);
                None
            }
        }
    }

    fn duration(&mut self, s: Option<&Str>, default: Duration) -> Duration {
        s.and_then(|s| self.parse(s, parse_duration))
            .unwrap_or(default)
    }

    fn size(&mut self, s: Option<&Str>, default: u64) -> u64 {
        s.and_then(|s| self.parse(s, parse_size)).unwrap_or(default)
    }

    fn number<T: std::str::FromStr>(&mut self, s: Option<&Str>, what: &str, default: T) -> T {
        s.and_then(|s| {
            self.parse(s, |t| {
                t.trim()
                    .parse::<T>()
                    .map_err(|_| format!("{what} must be a whole number, got `{t}`"))
            })
        })
        .unwrap_or(default)
    }

    fn nonzero(&mut self, s: &Str, what: &str) -> Option<NonZeroU32> {
        self.parse(s, |t| {
            t.trim()
                .parse::<NonZeroU32>()
                .map_err(|_| format!("{what} must be a whole number above 0, got `{t}`"))
        })
    }

    fn boolean(&mut self, s: Option<&Str>, default: bool) -> bool {
        s.and_then(|s| {
            self.parse(s, |t| match t.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                other => Err(format!("expected true or false, got `{other}`")),
            })
        })
        .unwrap_or(default)
    }

    /// A path relative to the config file's folder.
    fn path(&mut self, s: &Str) -> Option<PathBuf> {
        let t = self.text(s)?;
        Some(self.base_dir.join(t))
    }

    fn existing_file(&mut self, s: &Str, what: &str) -> Option<PathBuf> {
        let p = self.path(s)?;
        if !p.is_file() {
            self.err(
                &s.referenced,
                format!("{what} file {} does not exist", p.display()),
            );
            return None;
        }
        Some(p)
    }

    fn cidrs(&mut self, list: Option<&Vec<Str>>) -> Vec<IpNet> {
        let mut out = Vec::new();
        for s in list.into_iter().flatten() {
            if let Some(n) = self.parse(s, parse_cidr) {
                out.push(n);
            }
        }
        out
    }

    fn header_name(&mut self, s: &Str) -> Option<HeaderName> {
        self.parse(s, |t| {
            HeaderName::from_bytes(t.trim().as_bytes())
                .map_err(|_| format!("`{t}` is not a valid header name"))
        })
    }

    fn secret(&mut self, s: &Str) -> Option<Secret> {
        // Never echo a secret's value in a message.
        let v = match interpolate(&s.value.0, self.env) {
            Ok(v) => v,
            Err(e) => {
                self.err(&s.referenced, e);
                return None;
            }
        };
        if v.is_empty() {
            self.err(&s.referenced, "secret is empty");
            return None;
        }
        Some(Secret::new(v))
    }

    fn secrets(
        &mut self,
        at: &Location,
        one: Option<&Str>,
        many: Option<&Vec<Str>>,
    ) -> Vec<Secret> {
        let mut out = Vec::new();
        match (one, many) {
            (Some(_), Some(_)) => self.err(at, "set either `secret` or `secrets`, not both"),
            (None, None) => self.err(
                at,
                "a `secret` (or `secrets: [..]` for rotation) is required",
            ),
            (Some(s), None) => out.extend(self.secret(s)),
            (None, Some(list)) => {
                if list.is_empty() {
                    self.err(at, "`secrets` is empty");
                }
                for s in list {
                    out.extend(self.secret(s));
                }
            }
        }
        out
    }
}

pub fn parse_cidr(t: &str) -> Result<IpNet, String> {
    let t = t.trim();
    t.parse::<IpNet>()
        .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{t}` is not an IP address or CIDR like 10.0.0.0/8"))
}

pub fn build(raw: &RawConfig, ctx: &mut Ctx) -> Option<(Server, Admin, Storage, Vec<Arc<Route>>)> {
    let server = server(raw.server.as_ref(), ctx);
    let admin = admin(raw.admin.as_ref(), ctx);
    let storage = storage(raw.storage.as_ref(), ctx);
    let defaults = TargetDefaults::from_raw(raw.defaults.as_ref(), ctx);
    let routes = routes(&raw.routes, &defaults, ctx);
    if ctx.diags.errors.is_empty() {
        Some((server, admin, storage, routes))
    } else {
        None
    }
}

fn server(raw: Option<&Spanned<RawServer>>, ctx: &mut Ctx) -> Server {
    let empty = RawServer::default();
    let r = raw.map(|s| &s.value).unwrap_or(&empty);
    let mut listen = Vec::new();
    match &r.listen {
        None => listen.push(SocketAddr::from(([0, 0, 0, 0], 8080))),
        Some(list) => {
            if list.is_empty() {
                if let Some(s) = raw {
                    ctx.err(&s.referenced, "server.listen needs at least one address");
                }
            }
            for s in list {
                listen.extend(ctx.parse(s, parse_listen));
            }
        }
    }
    let header_timeout = ctx.duration(r.header_timeout.as_ref(), Duration::from_secs(10));
    Server {
        listen,
        tls: r.tls.as_ref().and_then(|t| tls(t, header_timeout, ctx)),
        max_body: ctx.size(r.max_body.as_ref(), 1 << 20),
        header_timeout,
        request_timeout: ctx.duration(r.request_timeout.as_ref(), Duration::from_secs(30)),
        max_connections: ctx.number(r.max_connections.as_ref(), "max_connections", 10_000),
        max_connections_per_ip: ctx.number(
            r.max_connections_per_ip.as_ref(),
            "max_connections_per_ip",
            256,
        ),
        idle_timeout: ctx.duration(r.idle_timeout.as_ref(), Duration::from_secs(60)),
        h2c: ctx.boolean(r.h2c.as_ref(), false),
        trusted_proxies: ctx.cidrs(r.trusted_proxies.as_ref()),
        shutdown_grace: ctx.duration(r.shutdown_grace.as_ref(), Duration::from_secs(30)),
    }
}

fn parse_listen(t: &str) -> Result<SocketAddr, String> {
    t.trim()
        .parse::<SocketAddr>()
        .map_err(|_| format!("`{t}` is not a listen address like 0.0.0.0:8443 or [::]:8443"))
}

fn tls(raw: &Spanned<RawTls>, header_timeout: Duration, ctx: &mut Ctx) -> Option<Tls> {
    let r = &raw.value;
    let handshake_timeout = ctx.duration(r.handshake_timeout.as_ref(), header_timeout);
    let source = match (&r.cert, &r.key, &r.certs) {
        (Some(c), Some(k), None) => {
            let generate = ctx.boolean(r.generate_if_missing.as_ref(), false);
            let (cp, kp) = (ctx.path(c)?, ctx.path(k)?);
            if generate && !cp.exists() && !kp.exists() {
                // Created at start-up (`run`), never by `check`.
            } else {
                let cert = ctx.existing_file(c, "certificate");
                let key = ctx.existing_file(k, "key");
                if let (Some(cert), Some(key)) = (cert, key) {
                    if let Err(e) = crate::server::tls::load_pair(&cert, &key) {
                        ctx.err(&c.referenced, e.to_string());
                    }
                }
            }
            TlsSource::Pair {
                cert: cp,
                key: kp,
                generate_if_missing: generate,
            }
        }
        (None, None, Some(dir)) => {
            let p = ctx.path(dir)?;
            match crate::server::tls::load_dir(&p) {
                Ok(_) => TlsSource::Dir(p),
                Err(e) => {
                    ctx.err(&dir.referenced, e.to_string());
                    return None;
                }
            }
        }
        _ => {
            ctx.err(
                &raw.referenced,
                "tls needs either `cert` and `key`, or `certs` (a folder of NAME.crt/NAME.key)",
            );
            return None;
        }
    };
    Some(Tls {
        source,
        handshake_timeout,
    })
}

fn admin(raw: Option<&Spanned<RawAdmin>>, ctx: &mut Ctx) -> Admin {
    let empty = RawAdmin::default();
    let r = raw.map(|s| &s.value).unwrap_or(&empty);
    let listen = r
        .listen
        .as_ref()
        .and_then(|s| ctx.parse(s, parse_listen))
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9900)));
    let token = r.token.as_ref().and_then(|s| {
        let v = ctx.text(s)?;
        (!v.is_empty()).then(|| Secret::new(v))
    });
    if token.is_none() && !listen.ip().is_loopback() {
        let at = r
            .listen
            .as_ref()
            .map(|s| s.referenced)
            .or(raw.map(|s| s.referenced))
            .unwrap_or(Location::UNKNOWN);
        ctx.err(
            &at,
            format!("admin.listen {listen} is not a loopback address, so admin.token is required"),
        );
    }
    Admin { listen, token }
}

fn storage(raw: Option<&Spanned<RawStorage>>, ctx: &mut Ctx) -> Storage {
    let empty = RawStorage::default();
    let r = raw.map(|s| &s.value).unwrap_or(&empty);
    let backend = match r.backend.as_ref().map(|s| (s, ctx.text(s))) {
        None => StorageBackend::Embedded,
        Some((_, Some(b))) if b == "embedded" => StorageBackend::Embedded,
        Some((s, Some(b))) if b == "postgres" => {
            match r.postgres.as_ref().and_then(|p| p.url.as_ref()) {
                Some(url) => {
                    let pool = ctx.number(
                        r.postgres.as_ref().and_then(|p| p.pool.as_ref()),
                        "postgres.pool",
                        16,
                    );
                    match ctx.secret(url) {
                        Some(url) => StorageBackend::Postgres { url, pool },
                        None => StorageBackend::Embedded,
                    }
                }
                None => {
                    ctx.err(
                        &s.referenced,
                        "backend postgres needs `postgres: { url: ... }`",
                    );
                    StorageBackend::Embedded
                }
            }
        }
        Some((s, Some(b))) => {
            ctx.err(
                &s.referenced,
                format!("unknown storage backend `{b}` (embedded or postgres)"),
            );
            StorageBackend::Embedded
        }
        Some((_, None)) => StorageBackend::Embedded,
    };
    let path = r
        .path
        .as_ref()
        .and_then(|s| ctx.path(s))
        .unwrap_or_else(|| ctx.base_dir.join("data"));
    Storage {
        backend,
        path,
        retention: ctx.duration(r.retention.as_ref(), Duration::from_secs(7 * 86400)),
        max_size: ctx.size(r.max_size.as_ref(), 10 << 30),
    }
}

/// `defaults:` resolved once; each target starts from these.
struct TargetDefaults {
    timeout: Duration,
    concurrency: usize,
    rate_limit: Option<TargetRate>,
    retry: Retry,
}

impl TargetDefaults {
    fn from_raw(raw: Option<&RawTargetSettings>, ctx: &mut Ctx) -> Self {
        let base = TargetDefaults {
            timeout: Duration::from_secs(10),
            concurrency: 16,
            rate_limit: None,
            retry: Retry {
                max_attempts: 12,
                initial: Duration::from_secs(1),
                max_delay: Duration::from_secs(3600),
                max_age: Duration::from_secs(72 * 3600),
            },
        };
        match raw {
            None => base,
            Some(r) => base.overlay(
                r.timeout.as_ref(),
                r.concurrency.as_ref(),
                r.rate_limit.as_ref(),
                r.retry.as_ref(),
                ctx,
            ),
        }
    }

    fn overlay(
        &self,
        timeout: Option<&Str>,
        concurrency: Option<&Str>,
        rate: Option<&Spanned<Option<RawRate>>>,
        retry: Option<&RawRetry>,
        ctx: &mut Ctx,
    ) -> TargetDefaults {
        let rate_limit = match rate {
            None => self.rate_limit,
            Some(Spanned { value: None, .. }) => None,
            Some(Spanned {
                value: Some(r),
                referenced,
                ..
            }) => {
                if let Some(k) = &r.key {
                    ctx.err(
                        &k.referenced,
                        "`key` applies to a route's rate_limit, not a target's",
                    );
                }
                rate_pair(r, referenced, ctx)
                    .map(|(per_second, burst)| TargetRate { per_second, burst })
            }
        };
        let mut rt = self.retry;
        if let Some(r) = retry {
            rt.max_attempts = ctx.number(
                r.max_attempts.as_ref(),
                "retry.max_attempts",
                rt.max_attempts,
            );
            rt.initial = ctx.duration(r.initial.as_ref(), rt.initial);
            rt.max_delay = ctx.duration(r.max_delay.as_ref(), rt.max_delay);
            rt.max_age = ctx.duration(r.max_age.as_ref(), rt.max_age);
            if let (Some(m), 0) = (&r.max_attempts, rt.max_attempts) {
                ctx.err(&m.referenced, "retry.max_attempts must be at least 1");
            }
        }
        let concurrency_value: usize = ctx.number(concurrency, "concurrency", self.concurrency);
        if let (Some(c), 0) = (concurrency, concurrency_value) {
            ctx.err(&c.referenced, "concurrency must be at least 1");
        }
        let concurrency = concurrency_value;
        TargetDefaults {
            timeout: ctx.duration(timeout, self.timeout),
            concurrency: concurrency.max(1),
            rate_limit,
            retry: rt,
        }
    }
}

fn rate_pair(r: &RawRate, at: &Location, ctx: &mut Ctx) -> Option<(NonZeroU32, NonZeroU32)> {
    let Some(ps) = &r.per_second else {
        ctx.err(at, "rate_limit needs `per_second`");
        return None;
    };
    let per_second = ctx.nonzero(ps, "per_second")?;
    let burst = match &r.burst {
        Some(b) => ctx.nonzero(b, "burst")?,
        None => per_second,
    };
    Some((per_second, burst))
}

fn routes(raw: &[Spanned<RawRoute>], defaults: &TargetDefaults, ctx: &mut Ctx) -> Vec<Arc<Route>> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    let mut places = HashSet::new();
    if raw.is_empty() {
        ctx.warn(
            &Location::UNKNOWN,
            "no routes are configured: every request will get 404",
        );
    }
    // Duplicates are judged on what was written, so a route with other errors still counts.
    let quiet = |ctx: &Ctx, s: &Option<Str>| {
        s.as_ref()
            .and_then(|s| interpolate(&s.value.0, ctx.env).ok())
    };
    for r in raw {
        let v = &r.value;
        if let (Some(n), Some(name)) = (&v.name, quiet(ctx, &v.name)) {
            if !names.insert(name.clone()) {
                ctx.err(&n.referenced, format!("duplicate route name `{name}`"));
            }
        }
        let host = quiet(ctx, &v.host).map(|h| h.to_ascii_lowercase());
        let place = match (quiet(ctx, &v.path), quiet(ctx, &v.path_prefix)) {
            (Some(p), None) => Some(("path", p)),
            (None, Some(p)) => Some(("path_prefix", p)),
            _ => None,
        };
        if let Some((kind, p)) = place {
            if !places.insert((host.clone(), kind, p.clone())) {
                let on = host.as_deref().unwrap_or("any host");
                ctx.err(
                    &r.referenced,
                    format!("another route already serves {kind} {p} on {on}"),
                );
            }
        }
        if let Some(route) = route(r, defaults, ctx) {
            out.push(Arc::new(route));
        }
    }
    out
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn route(raw: &Spanned<RawRoute>, defaults: &TargetDefaults, ctx: &mut Ctx) -> Option<Route> {
    let r = &raw.value;
    let at = raw.referenced;
    let name = match &r.name {
        None => {
            ctx.err(&at, "route needs a `name`");
            String::from("?")
        }
        Some(s) => {
            let n = ctx.text(s).unwrap_or_default();
            if !valid_name(&n) {
                ctx.err(
                    &s.referenced,
                    format!("route name `{n}` must match [a-z0-9_-]+"),
                );
            }
            n
        }
    };
    let path = match (&r.path, &r.path_prefix) {
        (Some(p), None) => ctx.text(p).map(|t| (p, PathMatch::Exact(t))),
        (None, Some(p)) => ctx.text(p).map(|t| (p, PathMatch::Prefix(t))),
        _ => {
            ctx.err(
                &at,
                format!("route `{name}` needs exactly one of `path` or `path_prefix`"),
            );
            None
        }
    };
    if let Some((s, PathMatch::Exact(p) | PathMatch::Prefix(p))) = &path {
        if !p.starts_with('/') {
            ctx.err(&s.referenced, format!("path `{p}` must start with /"));
        }
    }
    let host = r
        .host
        .as_ref()
        .and_then(|h| ctx.text(h))
        .map(|h| h.to_ascii_lowercase());
    let methods = match &r.methods {
        None => vec![Method::POST],
        Some(list) => list
            .iter()
            .filter_map(|m| {
                ctx.parse(m, |t| {
                    Method::from_bytes(t.trim().to_ascii_uppercase().as_bytes())
                        .map_err(|_| format!("`{t}` is not an HTTP method"))
                })
            })
            .collect(),
    };
    let mode = match &r.mode {
        None => Mode::Async,
        Some(m) => match ctx.text(m).as_deref() {
            Some("sync") => Mode::Sync,
            Some("async") => Mode::Async,
            Some(other) => {
                ctx.err(
                    &m.referenced,
                    format!("mode must be `async` or `sync`, got `{other}`"),
                );
                Mode::Sync
            }
            None => Mode::Sync,
        },
    };
    let verify = match &r.verify {
        None => {
            ctx.err(&at, format!("route `{name}` needs `verify:` (write `none: true` to accept unsigned requests)"));
            None
        }
        Some(v) => verify(v, r.verify_token.as_ref(), ctx),
    };
    if matches!(verify, Some(VerifySpec::None)) {
        if let Some(v) = &r.verify {
            ctx.warn(
                &v.referenced,
                format!("route `{name}` accepts unauthenticated requests (verify: none)"),
            );
        }
    }
    // Meta verifies a subscription with a GET before it POSTs events.
    let mut methods = methods;
    if matches!(&verify, Some(VerifySpec::Provider(p)) if p.provider == Provider::Meta)
        && !methods.contains(&Method::GET)
    {
        methods.push(Method::GET);
    }
    let rate_limit = r.rate_limit.as_ref().and_then(|rl| {
        let key = match rl.value.key.as_ref().map(|k| (k, ctx.text(k))) {
            None => RateKey::Route,
            Some((_, Some(k))) if k == "route" => RateKey::Route,
            Some((_, Some(k))) if k == "ip" => RateKey::Ip,
            Some((k, Some(other))) => {
                ctx.err(
                    &k.referenced,
                    format!("rate_limit.key must be `route` or `ip`, got `{other}`"),
                );
                RateKey::Route
            }
            Some((_, None)) => RateKey::Route,
        };
        rate_pair(&rl.value, &rl.referenced, ctx).map(|(per_second, burst)| RouteRate {
            per_second,
            burst,
            key,
        })
    });
    let dedup = dedup(r.dedup.as_ref(), ctx);
    let mut targets = Vec::new();
    let mut tnames = HashSet::new();
    for t in &r.targets {
        if let Some(n) = &t.value.name {
            if let Ok(tn) = interpolate(&n.value.0, ctx.env) {
                if !tnames.insert(tn.clone()) {
                    ctx.err(
                        &n.referenced,
                        format!("route `{name}`: duplicate target name `{tn}`"),
                    );
                }
            }
        }
        targets.extend(target(t, defaults, ctx));
    }
    if r.targets.is_empty() {
        ctx.err(&at, format!("route `{name}` needs at least one target"));
    } else if mode == Mode::Sync && r.targets.len() != 1 {
        ctx.err(
            &at,
            format!(
                "route `{name}`: mode sync proxies to exactly one target, found {}",
                r.targets.len()
            ),
        );
    }
    let (_, path) = path?;
    Some(Route {
        name,
        host,
        path,
        methods,
        mode,
        verify: verify?,
        allow_ips: ctx.cidrs(r.allow_ips.as_ref()),
        rate_limit,
        dedup,
        targets,
        debug_body: ctx.boolean(r.debug_body.as_ref(), false),
    })
}

fn dedup(raw: Option<&Spanned<RawDedup>>, ctx: &mut Ctx) -> Dedup {
    let day = Duration::from_secs(86400);
    let Some(d) = raw else {
        return Dedup::On {
            window: day,
            header: None,
        };
    };
    match &d.value {
        RawDedup::Switch(s) => match s.0.as_str() {
            "false" => Dedup::Off,
            "true" => Dedup::On {
                window: day,
                header: None,
            },
            other => {
                ctx.err(
                    &d.referenced,
                    format!("dedup must be false or {{window, header}}, got `{other}`"),
                );
                Dedup::Off
            }
        },
        RawDedup::Settings { window, header } => Dedup::On {
            window: ctx.duration(window.as_ref(), day),
            header: header.as_ref().and_then(|h| ctx.header_name(h)),
        },
    }
}

fn verify(
    raw: &Spanned<RawVerify>,
    verify_token: Option<&Str>,
    ctx: &mut Ctx,
) -> Option<VerifySpec> {
    let v = &raw.value;
    let mut found: Vec<(&str, Option<VerifySpec>)> = Vec::new();
    let providers = [
        (Provider::Github, &v.github),
        (Provider::Stripe, &v.stripe),
        (Provider::Slack, &v.slack),
        (Provider::Shopify, &v.shopify),
        (Provider::Twilio, &v.twilio),
        (Provider::Gitlab, &v.gitlab),
        (Provider::Standard, &v.standard),
        (Provider::Paddle, &v.paddle),
        (Provider::Linear, &v.linear),
        (Provider::Zoom, &v.zoom),
        (Provider::Meta, &v.meta),
        (Provider::Square, &v.square),
        (Provider::Discord, &v.discord),
        (Provider::Sendgrid, &v.sendgrid),
        (Provider::Bearer, &v.bearer),
        (Provider::Basic, &v.basic),
    ];
    for (p, slot) in providers {
        if let Some(spec) = slot {
            let built =
                provider(p, spec, verify_token, ctx).map(|s| VerifySpec::Provider(Box::new(s)));
            found.push((p.name(), built));
        }
    }
    if let Some(t) = verify_token {
        if v.meta.is_none() {
            ctx.err(
                &t.referenced,
                "`verify_token` is only used by the meta verifier",
            );
        }
    }
    if let Some(h) = &v.hmac {
        found.push((
            "hmac",
            hmac(h, &raw.referenced, ctx).map(|h| VerifySpec::Hmac(Box::new(h))),
        ));
    }
    if let Some(n) = &v.none {
        let on = ctx.boolean(Some(n), false);
        if !on {
            ctx.err(&n.referenced, "`none` must be written as `none: true`");
        }
        found.push(("none", Some(VerifySpec::None)));
    }
    match found.len() {
        0 => {
            ctx.err(
                &raw.referenced,
                "verify: needs exactly one verifier (e.g. github, stripe, hmac, or none: true)",
            );
            None
        }
        1 => found.pop().and_then(|(_, s)| s),
        _ => {
            let names: Vec<_> = found.iter().map(|(n, _)| *n).collect();
            ctx.err(
                &raw.referenced,
                format!(
                    "verify: takes exactly one verifier, found {}",
                    names.join(", ")
                ),
            );
            None
        }
    }
}

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
}

/// A public key as the provider publishes it, decoded and checked.
fn public_key(p: Provider, text: &str) -> Result<Vec<u8>, String> {
    use aws_lc_rs::signature::{ParsedPublicKey, ECDSA_P256_SHA256_ASN1, ED25519};
    match p {
        Provider::Discord => {
            let k = hex::decode(text.trim())
                .map_err(|_| "discord public_key must be hex (64 digits)".to_owned())?;
            ParsedPublicKey::new(&ED25519, &k)
                .map_err(|_| "discord public_key is not an Ed25519 key".to_owned())?;
            Ok(k)
        }
        Provider::Sendgrid => {
            let k = decode_b64(text).ok_or("sendgrid public_key must be base64 (DER)")?;
            ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &k)
                .map_err(|_| "sendgrid public_key is not an ECDSA P-256 public key".to_owned())?;
            Ok(k)
        }
        _ => {
            let b = text
                .trim()
                .strip_prefix("whpk_")
                .ok_or("standard public_key must look like whpk_<base64>")?;
            let k = decode_b64(b).ok_or("standard public_key: whpk_ must be followed by base64")?;
            ParsedPublicKey::new(&ED25519, &k)
                .map_err(|_| "standard public_key is not an Ed25519 key".to_owned())?;
            Ok(k)
        }
    }
}

fn provider(
    p: Provider,
    raw: &Spanned<RawProvider>,
    verify_token: Option<&Str>,
    ctx: &mut Ctx,
) -> Option<ProviderSpec> {
    let r = &raw.value;
    let at = raw.referenced;
    let name = p.name();
    let not_for = |ctx: &mut Ctx, s: Option<&Str>, key: &str| {
        if let Some(s) = s {
            ctx.err(
                &s.referenced,
                format!("`{key}` does not apply to the {name} verifier"),
            );
        }
    };
    let uses_keys = matches!(
        p,
        Provider::Discord | Provider::Sendgrid | Provider::Standard
    );
    let mut secrets = Vec::new();
    let mut public_keys = Vec::new();
    let mut username = None;
    match p {
        Provider::Basic => {
            username = match &r.username {
                Some(u) => ctx.text(u),
                None => {
                    ctx.err(&at, "basic needs `username` and `password`");
                    None
                }
            };
            match &r.password {
                Some(pw) => secrets.extend(ctx.secret(pw)),
                None => ctx.err(&at, "basic needs `username` and `password`"),
            }
            not_for(ctx, r.secret.as_ref(), "secret");
            not_for(ctx, r.secrets.as_ref().and_then(|v| v.first()), "secrets");
        }
        Provider::Discord | Provider::Sendgrid => {
            not_for(ctx, r.secret.as_ref(), "secret");
            not_for(ctx, r.secrets.as_ref().and_then(|v| v.first()), "secrets");
        }
        Provider::Standard if r.secret.is_none() && r.secrets.is_none() => {}
        _ => secrets = ctx.secrets(&at, r.secret.as_ref(), r.secrets.as_ref()),
    }
    if p != Provider::Basic {
        not_for(ctx, r.username.as_ref(), "username");
        not_for(ctx, r.password.as_ref(), "password");
    }
    if uses_keys {
        let keys: Vec<&Str> = r
            .public_key
            .iter()
            .chain(r.public_keys.iter().flatten())
            .collect();
        if r.public_key.is_some() && r.public_keys.is_some() {
            ctx.err(&at, "set either `public_key` or `public_keys`, not both");
        }
        for k in keys {
            if let Some(text) = ctx.text(k) {
                match public_key(p, &text) {
                    Ok(k) => public_keys.push(k),
                    Err(e) => ctx.err(&k.referenced, e),
                }
            }
        }
        if p != Provider::Standard
            && public_keys.is_empty()
            && r.public_key.is_none()
            && r.public_keys.is_none()
        {
            ctx.err(
                &at,
                format!("{name} needs `public_key` (or `public_keys: [..]` for rotation)"),
            );
        }
        if p == Provider::Standard
            && secrets.is_empty()
            && r.public_key.is_none()
            && r.public_keys.is_none()
        {
            ctx.err(
                &at,
                "standard needs `secret` (whsec_...) or `public_key` (whpk_...)",
            );
        }
    } else {
        not_for(ctx, r.public_key.as_ref(), "public_key");
        not_for(
            ctx,
            r.public_keys.as_ref().and_then(|v| v.first()),
            "public_keys",
        );
    }
    if p == Provider::Standard {
        let sources: Vec<&Str> = r.secret.iter().chain(r.secrets.iter().flatten()).collect();
        for (s, src) in secrets.iter().zip(sources) {
            if let Err(e) = crate::deliver::sign::decode_secret(s.expose()) {
                ctx.err(&src.referenced, e);
            }
        }
    }
    let tolerance = match (p.default_tolerance(), &r.tolerance) {
        (Some(d), t) => ctx.duration(t.as_ref(), d),
        (None, Some(t)) => {
            ctx.err(
                &t.referenced,
                format!("the {name} verifier signs no timestamp, so `tolerance` does not apply"),
            );
            Duration::ZERO
        }
        (None, None) => Duration::ZERO,
    };
    let public_url = match (
        &r.public_url,
        matches!(p, Provider::Twilio | Provider::Square),
    ) {
        (Some(u), true) => ctx.parse(u, |t| {
            let uri: Uri = t.parse().map_err(|_| format!("`{t}` is not a URL"))?;
            match (uri.scheme_str(), uri.host()) {
                (Some("http" | "https"), Some(_)) => Ok(t.to_owned()),
                _ => Err(format!("public_url `{t}` must be an absolute http(s) URL")),
            }
        }),
        (Some(u), false) => {
            ctx.err(
                &u.referenced,
                format!("`public_url` does not apply to the {name} verifier"),
            );
            None
        }
        (None, _) => None,
    };
    let verify_token = match (p, verify_token) {
        (Provider::Meta, Some(t)) => ctx.secret(t),
        _ => None,
    };
    Some(ProviderSpec {
        provider: p,
        secrets,
        public_keys,
        enforce: ctx.boolean(r.enforce.as_ref(), true),
        tolerance,
        public_url,
        verify_token,
        username,
    })
}

fn hmac(h: &RawHmac, at: &Location, ctx: &mut Ctx) -> Option<HmacSpec> {
    let secrets = ctx.secrets(at, h.secret.as_ref(), h.secrets.as_ref());
    let header = match &h.header {
        Some(s) => ctx.header_name(s),
        None => {
            ctx.err(
                at,
                "hmac needs `header` (the request header carrying the signature)",
            );
            None
        }
    };
    let algorithm = match h.algorithm.as_ref().map(|s| (s, ctx.text(s))) {
        None => HmacAlgorithm::Sha256,
        Some((s, t)) => match t.as_deref() {
            Some("sha1") => HmacAlgorithm::Sha1,
            Some("sha256") => HmacAlgorithm::Sha256,
            Some("sha512") => HmacAlgorithm::Sha512,
            Some(o) => {
                ctx.err(
                    &s.referenced,
                    format!("algorithm must be sha1, sha256 or sha512, got `{o}`"),
                );
                HmacAlgorithm::Sha256
            }
            None => HmacAlgorithm::Sha256,
        },
    };
    let encoding = match h.encoding.as_ref().map(|s| (s, ctx.text(s))) {
        None => Encoding::Hex,
        Some((s, t)) => match t.as_deref() {
            Some("hex") => Encoding::Hex,
            Some("base64") => Encoding::Base64,
            Some(o) => {
                ctx.err(
                    &s.referenced,
                    format!("encoding must be hex or base64, got `{o}`"),
                );
                Encoding::Hex
            }
            None => Encoding::Hex,
        },
    };
    let signed = h
        .signed
        .as_ref()
        .and_then(|s| ctx.text(s))
        .unwrap_or_else(|| "{body}".to_owned());
    let timestamp_header = h.timestamp_header.as_ref().and_then(|s| ctx.header_name(s));
    let id_header = h.id_header.as_ref().and_then(|s| ctx.header_name(s));
    let public_url = h.public_url.as_ref().and_then(|s| ctx.text(s));
    if let Some(s) = &h.signed {
        for (ph, ok, need) in [
            (
                "{timestamp}",
                timestamp_header.is_some(),
                "timestamp_header",
            ),
            ("{id}", id_header.is_some(), "id_header"),
            ("{url}", public_url.is_some(), "public_url"),
        ] {
            if signed.contains(ph) && !ok {
                ctx.err(
                    &s.referenced,
                    format!("`signed` uses {ph} but `{need}` is not set"),
                );
            }
        }
        let stripped = signed
            .replace("{body}", "")
            .replace("{timestamp}", "")
            .replace("{id}", "")
            .replace("{url}", "");
        if stripped.contains('{') || stripped.contains('}') {
            ctx.err(
                &s.referenced,
                "`signed` may only use {body}, {timestamp}, {id} and {url}",
            );
        }
    }
    Some(HmacSpec {
        secrets,
        enforce: ctx.boolean(h.enforce.as_ref(), true),
        header: header?,
        algorithm,
        encoding,
        prefix: h
            .prefix
            .as_ref()
            .and_then(|s| ctx.text(s))
            .unwrap_or_default(),
        signed,
        timestamp_header,
        id_header,
        tolerance: ctx.duration(h.tolerance.as_ref(), Duration::from_secs(300)),
        public_url,
    })
}

fn target(raw: &Spanned<RawTarget>, defaults: &TargetDefaults, ctx: &mut Ctx) -> Option<Target> {
    let t = &raw.value;
    let name = match &t.name {
        Some(s) => {
            let n = ctx.text(s).unwrap_or_default();
            if !valid_name(&n) {
                ctx.err(
                    &s.referenced,
                    format!("target name `{n}` must match [a-z0-9_-]+"),
                );
            }
            n
        }
        None => {
            ctx.err(&raw.referenced, "target needs a `name`");
            String::new()
        }
    };
    let url = match &t.url {
        Some(s) => ctx.parse(s, |u| {
            let uri: Uri = u.parse().map_err(|_| format!("`{u}` is not a valid URL"))?;
            match (uri.scheme_str(), uri.host()) {
                (Some("http" | "https"), Some(h)) if !h.is_empty() => Ok(uri),
                _ => Err(format!(
                    "target url `{u}` must be an absolute http:// or https:// URL"
                )),
            }
        }),
        None => {
            ctx.err(&raw.referenced, format!("target `{name}` needs a `url`"));
            None
        }
    };
    let filter = t.filter.as_ref().and_then(|s| ctx.program(s));
    let transform = t.transform.as_ref().and_then(|s| ctx.program(s));
    let sign_key = t.sign.as_ref().and_then(|s| match &s.value.secret {
        None => {
            ctx.err(&s.referenced, "sign needs `secret` (whsec_<base64>)");
            None
        }
        Some(sec) => {
            let v = ctx.secret(sec)?;
            match crate::deliver::sign::decode_secret(v.expose()) {
                Ok(k) => Some(k),
                Err(e) => {
                    ctx.err(&sec.referenced, e);
                    None
                }
            }
        }
    });
    let eff = defaults.overlay(
        t.timeout.as_ref(),
        t.concurrency.as_ref(),
        t.rate_limit.as_ref(),
        t.retry.as_ref(),
        ctx,
    );
    let mut headers_set = Vec::new();
    let mut headers_remove = Vec::new();
    let keep_signature = ctx.boolean(
        t.headers.as_ref().and_then(|h| h.keep_signature.as_ref()),
        false,
    );
    if let Some(h) = &t.headers {
        for (k, v) in &h.set.0 {
            let name = ctx.header_name(k);
            let value = ctx.parse(v, HeaderTemplate::parse);
            if let (Some(n), Some(v)) = (name, value) {
                headers_set.push((n, v));
            }
        }
        for k in &h.remove {
            headers_remove.extend(ctx.header_name(k));
        }
    }
    let mut tls = TargetTls::default();
    if let Some(r) = &t.tls {
        tls.ca = r.ca.as_ref().and_then(|s| ctx.existing_file(s, "CA"));
        tls.cert = r
            .cert
            .as_ref()
            .and_then(|s| ctx.existing_file(s, "client certificate"));
        tls.key = r
            .key
            .as_ref()
            .and_then(|s| ctx.existing_file(s, "client key"));
        if r.cert.is_some() != r.key.is_some() {
            ctx.err(
                &raw.referenced,
                "target tls needs both `cert` and `key` for a client certificate",
            );
        }
    }
    Some(Target {
        name,
        url: url?,
        timeout: eff.timeout,
        concurrency: eff.concurrency,
        rate_limit: eff.rate_limit,
        retry: eff.retry,
        headers_set,
        keep_signature,
        headers_remove,
        tls,
        sign_key,
        filter,
        transform,
    })
}
