//! The operator commands (`hookgate status`, `events`, `dead-letters`, `replay`, `targets`,
//! `reload`): thin clients of the admin API. Human tables by default, the API's JSON with
//! `--json`. Exit codes: 0 success, 1 a refused request (bad input, unknown id, wrong
//! token), 2 the admin listener unreachable or failing.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::io::{IsTerminal, Write};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Refused(_) => 1,
            CliError::Failed(_) => 2,
        }
    }
}

pub struct AdminClient {
    base: String,
    token: Option<String>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    pub fn new(base: &str, token: Option<String>) -> Self {
        AdminClient {
            base: base.trim_end_matches('/').to_owned(),
            token: token.filter(|t| !t.is_empty()),
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let mut req = http::Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = req
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CliError::Refused(format!("invalid admin URL {url}: {e}")))?;
        let resp = self.http.request(req).await.map_err(|e| {
            CliError::Failed(format!(
                "cannot reach the admin listener at {}: {e}",
                self.base
            ))
        })?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| CliError::Failed(format!("admin listener: {e}")))?
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let msg = v["error"].as_str().unwrap_or("").to_owned();
        match status.as_u16() {
            200..=299 => Ok(v),
            401 => {
                Err(CliError::Refused(format!(
                "the admin API refused the token (401): pass --token or set HOOKGATE_ADMIN_TOKEN{}",
                if msg.is_empty() { String::new() } else { format!(" ({msg})") }
            )))
            }
            400..=499 => Err(CliError::Refused(format!("{status}: {msg}"))),
            _ => Err(CliError::Failed(format!("{status}: {msg}"))),
        }
    }
}

/// Prints rows as aligned columns under a header.
pub fn table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for r in rows {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn ago(ms: &Value) -> String {
    match ms.as_i64() {
        None => "-".into(),
        Some(ms) => {
            let secs = ms / 1000;
            if secs < 120 {
                format!("{secs}s")
            } else if secs < 7200 {
                format!("{}m", secs / 60)
            } else {
                format!("{}h", secs / 3600)
            }
        }
    }
}

pub fn print_status(v: &Value, out: &mut impl Write) {
    let mut rows = Vec::new();
    for r in v["routes"].as_array().into_iter().flatten() {
        for t in r["targets"].as_array().into_iter().flatten() {
            rows.push(vec![
                s(&r["name"]),
                s(&t["name"]),
                s(&r["mode"]),
                s(&t["pending"]),
                s(&t["dead_letters"]),
                s(&t["delivered"]),
                ago(&t["oldest_pending_ms"]),
                s(&t["circuit"]),
                if t["paused"] == true {
                    "yes".into()
                } else {
                    "no".into()
                },
                s(&t["in_flight"]),
                t["last_error"]
                    .as_str()
                    .map(|e| e.chars().take(60).collect())
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    table(
        out,
        &[
            "ROUTE",
            "TARGET",
            "MODE",
            "PENDING",
            "DEAD",
            "DELIVERED",
            "OLDEST",
            "CIRCUIT",
            "PAUSED",
            "IN_FLIGHT",
            "LAST_ERROR",
        ],
        &rows,
    );
}

pub fn print_events(v: &Value, out: &mut impl Write) {
    let rows: Vec<Vec<String>> = v["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let d: Vec<String> = e["deliveries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| format!("{}:{}", s(&d["target"]), s(&d["state"])))
                .collect();
            vec![
                s(&e["id"]),
                s(&e["route"]),
                s(&e["received_at_ms"]),
                s(&e["body_bytes"]),
                d.join(" "),
            ]
        })
        .collect();
    table(
        out,
        &["ID", "ROUTE", "RECEIVED_MS", "BYTES", "DELIVERIES"],
        &rows,
    );
    if let Some(c) = v["next_cursor"].as_str() {
        let _ = writeln!(out, "(more: --cursor {c})");
    }
}

pub fn print_event(v: &Value, out: &mut impl Write) {
    let _ = writeln!(
        out,
        "event    {}\nroute    {}\nreceived {}\npath     {}\nclient   {}",
        s(&v["id"]),
        s(&v["route"]),
        s(&v["received_at_ms"]),
        s(&v["path"]),
        s(&v["client_ip"])
    );
    let _ = writeln!(out, "\nheaders");
    for h in v["headers"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  {}: {}", s(&h[0]), s(&h[1]));
    }
    let _ = writeln!(
        out,
        "\nbody ({})\n  {}\n",
        s(&v["body"]["encoding"]),
        s(&v["body"]["data"])
    );
    let rows: Vec<Vec<String>> = v["deliveries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            vec![
                s(&d["id"]),
                s(&d["target"]),
                s(&d["state"]),
                s(&d["attempts"]),
                s(&d["last_error"]),
            ]
        })
        .collect();
    table(
        out,
        &["DELIVERY", "TARGET", "STATE", "ATTEMPTS", "LAST_ERROR"],
        &rows,
    );
    let _ = writeln!(out);
    let rows: Vec<Vec<String>> = v["attempts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            vec![
                s(&a["target"]),
                s(&a["at_ms"]),
                s(&a["status"]),
                s(&a["duration_ms"]),
                s(&a["error"]),
            ]
        })
        .collect();
    table(out, &["TARGET", "AT_MS", "STATUS", "MS", "ERROR"], &rows);
}

pub fn print_dead(v: &Value, out: &mut impl Write) {
    let rows: Vec<Vec<String>> = v["dead_letters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            vec![
                s(&d["delivery_id"]),
                s(&d["event_id"]),
                format!("{}/{}", s(&d["route"]), s(&d["target"])),
                s(&d["attempts"]),
                s(&d["last_error"]),
            ]
        })
        .collect();
    table(
        out,
        &["DELIVERY", "EVENT", "TARGET", "ATTEMPTS", "LAST_ERROR"],
        &rows,
    );
}

/// Replays every dead letter of `target` in chunks, showing progress (a bar on a terminal,
/// plain lines otherwise). Each chunk is one request, so an interruption between chunks
/// leaves everything consistent: what was replayed is pending again, the rest is still dead.
pub async fn replay_all(c: &AdminClient, target: &str, chunk: usize) -> Result<usize, CliError> {
    let path = format!("/api/v1/dead-letters?target={target}&limit=1000");
    let first = c.call(http::Method::GET, &path, None).await?;
    let total = first["dead_letters"].as_array().map(Vec::len).unwrap_or(0);
    let tty = std::io::stderr().is_terminal();
    let mut done = 0;
    loop {
        let page = c.call(http::Method::GET, &path, None).await?;
        let ids: Vec<i64> = page["dead_letters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["delivery_id"].as_i64())
            .take(chunk)
            .collect();
        if ids.is_empty() {
            break;
        }
        let r = c
            .call(
                http::Method::POST,
                "/api/v1/dead-letters/replay",
                Some(serde_json::json!({ "ids": ids })),
            )
            .await?;
        done += r["replayed"].as_u64().unwrap_or(0) as usize;
        let shown = total.max(done);
        if tty {
            let width = 30;
            let filled = done * width / shown.max(1);
            eprint!(
                "\r[{}{}] {done}/{shown}",
                "#".repeat(filled),
                " ".repeat(width - filled.min(width))
            );
        } else {
            eprintln!("replayed {done}/{shown}");
        }
        if r["replayed"].as_u64() == Some(0) {
            break;
        }
    }
    if tty {
        eprintln!();
    }
    Ok(done)
}
