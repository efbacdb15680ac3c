//! Running a target's `filter` and `transform`, with the outcome counted per route, target,
//! kind and result, and failures logged with their reason.

use super::pool::{JqPool, RunError};
use crate::admin::metrics as m;
use bytes::Bytes;
use serde_json::Value;
use std::sync::Arc;

/// What a program sees: `.`, `$headers`, `$query` (`$route` is passed by name).
#[derive(Debug, Clone)]
pub struct Input {
    pub body: Value,
    pub headers: Value,
    pub query: Value,
}

fn count(route: &str, target: &str, kind: &'static str, result: &'static str) {
    metrics::counter!(m::JQ_RUNS, "route" => route.to_owned(), "target" => target.to_owned(), "kind" => kind, "result" => result)
        .increment(1);
}

fn label(e: &RunError) -> &'static str {
    match e {
        RunError::Timeout(_) => "timeout",
        RunError::Busy => "busy",
        _ => "error",
    }
}

/// True when the first output is truthy; false, null, an error or no output decline.
pub async fn filter(
    jq: &JqPool,
    program: &Arc<str>,
    input: Input,
    route: &str,
    target: &str,
) -> bool {
    match jq
        .run(
            program.clone(),
            input.body,
            input.headers,
            route,
            input.query,
        )
        .await
    {
        Ok(out) => {
            let yes = out.first().is_some_and(super::truthy);
            count(
                route,
                target,
                "filter",
                if yes { "match" } else { "no_match" },
            );
            yes
        }
        Err(e) => {
            count(route, target, "filter", label(&e));
            tracing::warn!(route, target, error = %e, "filter failed: the event is not for this target");
            false
        }
    }
}

/// The new JSON body: exactly one output, or an error saying why not.
pub async fn apply(
    jq: &JqPool,
    program: &Arc<str>,
    input: Input,
    route: &str,
    target: &str,
) -> Result<Bytes, String> {
    let out = jq
        .run(
            program.clone(),
            input.body,
            input.headers,
            route,
            input.query,
        )
        .await;
    let r = match out {
        Ok(mut v) if v.len() == 1 => serde_json::to_vec(&v.remove(0))
            .map(Bytes::from)
            .map_err(|e| e.to_string()),
        Ok(v) => Err(format!(
            "transform produced {} outputs, expected exactly one",
            v.len()
        )),
        Err(e) => Err(e.to_string()),
    };
    count(
        route,
        target,
        "transform",
        if r.is_ok() { "ok" } else { "error" },
    );
    r
}
