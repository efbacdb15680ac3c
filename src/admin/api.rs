//! The operator API under `/api/v1`: events, their attempts and replay, dead
//! letters and their replay, routes with live queue state. JSON in and out; errors as
//! `{"error": "..."}` with the matching status.

use super::Admin;
use crate::config::reload::{ReloadError, Reloaded};
use crate::ingress::error::{error_json, json, HttpResponse};
use crate::store::{DeadSelector, DeliveryState, EventQuery, Store, StoreError};
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

const MAX_LIMIT: usize = 1000;

/// The OpenAPI 3 document of this API, kept true by `tests/openapi.rs`.
pub const OPENAPI: &str = include_str!("openapi.json");

fn query(q: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn store_error(e: StoreError) -> HttpResponse {
    match e {
        StoreError::NotFound => error_json(StatusCode::NOT_FOUND, "no such event"),
        other => error_json(StatusCode::SERVICE_UNAVAILABLE, &other.to_string()),
    }
}

fn ok(v: serde_json::Value) -> HttpResponse {
    json(StatusCode::OK, v.to_string())
}

use crate::config::secret::is_credential_header as redact;

fn split_target(t: &str) -> Option<(String, String)> {
    t.split_once('/').map(|(r, t)| (r.to_owned(), t.to_owned()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadReplay {
    target: Option<String>,
    route: Option<String>,
    error_contains: Option<String>,
    ids: Option<Vec<i64>>,
    #[serde(default)]
    all: bool,
}

pub async fn handle(
    admin: &Admin,
    method: &Method,
    path: &str,
    q: Option<&str>,
    body: Bytes,
) -> HttpResponse {
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return error_json(StatusCode::NOT_FOUND, "no such endpoint");
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let store = admin.store.as_ref();
    match (method, segs.as_slice()) {
        (&Method::GET, ["openapi.json"]) => json(StatusCode::OK, OPENAPI.to_owned()),
        (&Method::GET, ["routes"]) => routes(admin).await,
        (&Method::POST, ["reload"]) => match admin.reloader.reload("admin API").await {
            Ok(Reloaded::Applied { hash }) => ok(json!({ "result": "reloaded", "version": hash })),
            Ok(Reloaded::Unchanged { hash }) => {
                ok(json!({ "result": "unchanged", "version": hash }))
            }
            Err(ReloadError::Invalid(e)) => json(
                StatusCode::BAD_REQUEST,
                json!({ "error": e.lines().join("\n"), "errors": e.lines() }).to_string(),
            ),
            Err(ReloadError::Refused(why)) => error_json(StatusCode::BAD_REQUEST, &why),
        },
        (&Method::POST, ["targets", route, target, action @ ("pause" | "resume")]) => {
            match admin
                .engine
                .set_paused(route, target, *action == "pause")
                .await
            {
                Ok(true) => {
                    ok(json!({ "route": route, "target": target, "paused": *action == "pause" }))
                }
                Ok(false) => error_json(StatusCode::NOT_FOUND, "no such async target"),
                Err(e) => store_error(e),
            }
        }
        (&Method::GET, ["config"]) => ok(super::config_view::view(
            &admin.ingress.runtime.load().config,
        )),
        (&Method::GET, ["rejections"]) => {
            let qs = query(q);
            let list = admin
                .ingress
                .diagnostics
                .rejections(qs.get("route").map(String::as_str), limit(&qs));
            ok(json!({ "rejections": list }))
        }
        (&Method::GET, ["events"]) => match store {
            Some(s) => list_events(s, &query(q)).await,
            None => no_store(),
        },
        (&Method::GET, ["events", id]) => match store {
            Some(s) => get_event(s, id).await,
            None => no_store(),
        },
        (&Method::POST, ["events", id, "replay"]) => match store {
            Some(s) => {
                let qs = query(q);
                match s
                    .replay_event(id, qs.get("target").map(String::as_str))
                    .await
                {
                    Ok(n) => {
                        admin.engine.wake_all();
                        json(StatusCode::ACCEPTED, json!({ "replayed": n }).to_string())
                    }
                    Err(e) => store_error(e),
                }
            }
            None => no_store(),
        },
        (&Method::GET, ["dead-letters"]) => match store {
            Some(s) => {
                let qs = query(q);
                let (route, target) = match qs.get("target").map(|t| split_target(t)) {
                    Some(Some((r, t))) => (Some(r), Some(t)),
                    Some(None) => {
                        return error_json(StatusCode::BAD_REQUEST, "target must be route/target")
                    }
                    None => (qs.get("route").cloned(), None),
                };
                let limit = limit(&qs);
                match s.list_dead(route, target, limit).await {
                    Ok(d) => ok(json!({ "dead_letters": d })),
                    Err(e) => store_error(e),
                }
            }
            None => no_store(),
        },
        (&Method::POST, ["dead-letters", "replay"]) => match store {
            Some(s) => replay_dead(admin, s, &body).await,
            None => no_store(),
        },
        (
            _,
            ["routes" | "events" | "dead-letters" | "rejections" | "reload" | "config" | "targets", ..],
        ) => error_json(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => error_json(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

fn no_store() -> HttpResponse {
    error_json(
        StatusCode::NOT_FOUND,
        "no async route is configured, so there is no event store",
    )
}

fn limit(qs: &HashMap<String, String>) -> usize {
    qs.get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100)
        .clamp(1, MAX_LIMIT)
}

async fn routes(admin: &Admin) -> HttpResponse {
    let stats = match &admin.store {
        Some(s) => s.stats().await.unwrap_or_default(),
        None => Vec::new(),
    };
    let rt = admin.ingress.runtime.load();
    let routes: Vec<_> = rt
        .routes
        .iter()
        .map(|r| {
            let targets: Vec<_> = r
                .cfg
                .targets
                .iter()
                .map(|t| {
                    let st = stats.iter().find(|s| s.route == r.cfg.name && s.target == t.name);
                    let circuit = admin.engine.circuit(&r.cfg.name, &t.name);
                    let (in_flight, last_error) = admin.engine.activity(&r.cfg.name, &t.name);
                    json!({
                        "name": t.name,
                        "url": t.url.to_string(),
                        "pending": st.map(|s| s.pending).unwrap_or(0),
                        "dead_letters": st.map(|s| s.dead).unwrap_or(0),
                        "delivered": st.map(|s| s.delivered).unwrap_or(0),
                        "oldest_pending_ms": st.and_then(|s| s.oldest_pending_ms),
                        "circuit": circuit.unwrap_or("closed"),
                        "paused": admin.engine.is_paused(&r.cfg.name, &t.name),
                        "in_flight": in_flight,
                        "last_error": last_error,
                    })
                })
                .collect();
            json!({
                "name": r.cfg.name,
                "mode": match r.cfg.mode { crate::config::Mode::Sync => "sync", crate::config::Mode::Async => "async" },
                "targets": targets,
            })
        })
        .collect();
    ok(json!({ "routes": routes }))
}

async fn list_events(store: &Arc<dyn Store>, qs: &HashMap<String, String>) -> HttpResponse {
    let (state, duplicates) = match qs.get("status").map(String::as_str) {
        Some("duplicate") => (None, true),
        Some(s) => match DeliveryState::parse(s) {
            Some(st) => (Some(st), false),
            None => {
                return error_json(
                    StatusCode::BAD_REQUEST,
                    "status must be one of pending, delivered, dead, filtered, duplicate",
                )
            }
        },
        None => (None, false),
    };
    let since = match qs.get("since").map(|s| s.parse::<u64>()) {
        Some(Ok(secs)) => Some(UNIX_EPOCH + Duration::from_secs(secs)),
        Some(Err(_)) => return error_json(StatusCode::BAD_REQUEST, "since must be Unix seconds"),
        None => None,
    };
    let limit = limit(qs);
    let q = EventQuery {
        route: qs.get("route").cloned(),
        target: qs.get("target").cloned(),
        state,
        since,
        before: qs.get("cursor").cloned(),
        limit,
        duplicates,
    };
    match store.list_events(q).await {
        Ok(events) => {
            let next = (events.len() == limit)
                .then(|| events.last().map(|e| e.id.clone()))
                .flatten();
            ok(json!({ "events": events, "next_cursor": next }))
        }
        Err(e) => store_error(e),
    }
}

async fn get_event(store: &Arc<dyn Store>, id: &str) -> HttpResponse {
    match store.get_event(id).await {
        Ok(Some(d)) => {
            let headers: Vec<_> = d
                .event
                .headers
                .iter()
                .map(|(n, v)| {
                    let value = if redact(n) {
                        "[redacted]".to_owned()
                    } else {
                        String::from_utf8_lossy(v).into_owned()
                    };
                    json!([n, value])
                })
                .collect();
            let body = match std::str::from_utf8(&d.event.body) {
                Ok(s) => json!({ "encoding": "utf-8", "data": s }),
                Err(_) => {
                    json!({ "encoding": "base64", "data": base64::engine::general_purpose::STANDARD.encode(&d.event.body) })
                }
            };
            ok(json!({
                "id": d.summary.id,
                "route": d.summary.route,
                "duplicate_of": d.summary.duplicate_of,
                "received_at_ms": d.summary.received_at_ms,
                "method": d.event.method,
                "path": d.event.path_and_query,
                "client_ip": d.event.client_ip,
                "headers": headers,
                "body": body,
                "deliveries": d.summary.deliveries,
                "attempts": d.attempts,
            }))
        }
        Ok(None) => error_json(StatusCode::NOT_FOUND, "no such event"),
        Err(e) => store_error(e),
    }
}

async fn replay_dead(admin: &Admin, store: &Arc<dyn Store>, body: &[u8]) -> HttpResponse {
    let req: DeadReplay = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")),
    };
    let sel = match (req.ids, req.all) {
        (Some(ids), false) => DeadSelector::Ids(ids),
        (None, true) => {
            let (mut route, mut target) = (req.route, None);
            if let Some(t) = req.target.as_deref() {
                match split_target(t) {
                    Some((r, t)) => {
                        route = Some(r);
                        target = Some(t);
                    }
                    None => target = Some(t.to_owned()),
                }
            }
            DeadSelector::Matching {
                route,
                target,
                error_contains: req.error_contains,
            }
        }
        _ => return error_json(
            StatusCode::BAD_REQUEST,
            "give either `ids`, or `all: true` (narrowed by `target`, `route`, `error_contains`)",
        ),
    };
    match store.replay_dead(sel).await {
        Ok(n) => {
            admin.engine.wake_all();
            json(StatusCode::ACCEPTED, json!({ "replayed": n }).to_string())
        }
        Err(e) => store_error(e),
    }
}
