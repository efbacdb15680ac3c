//! Running targets' `filter` and `transform` programs, with the outcome counted per route,
//! target, kind and result, and failures logged with their reason.

pub use super::pool::{Input, Plan};
use super::pool::{JqPool, RunError, Verdict};
use crate::admin::metrics as m;
use crate::config::Target;
use bytes::Bytes;

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

/// What the rules decided for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// No filter, or the filter's first output is truthy (false, null, an error or no output
    /// decline).
    pub admitted: bool,
    /// With a transform, on an admitted event: the new JSON body, or why there is none.
    pub body: Option<Result<Bytes, String>>,
}

/// The plan for `t`: its filter when `filter`, its transform when `transform`.
pub fn plan(t: &Target, filter: bool, transform: bool) -> Plan {
    Plan {
        filter: t.filter.clone().filter(|_| filter),
        transform: t.transform.clone().filter(|_| transform),
    }
}

/// Every target admitted, bodies untouched: the answer when no target has a program.
pub fn admit_all(n: usize) -> Vec<Decision> {
    vec![
        Decision {
            admitted: true,
            body: None,
        };
        n
    ]
}

/// Runs each target's plan on one event (one trip to the jq pool, the body parsed once).
pub async fn decide(
    jq: &JqPool,
    input: Input,
    route: &str,
    plans: Vec<(&str, Plan)>,
) -> Vec<Decision> {
    if plans.iter().all(|(_, p)| p.is_empty()) {
        return admit_all(plans.len());
    }
    let (names, plans): (Vec<&str>, Vec<Plan>) = plans.into_iter().unzip();
    let verdicts = jq.run(input, plans).await;
    names
        .into_iter()
        .zip(verdicts)
        .map(|(target, v)| record(route, target, v))
        .collect()
}

fn record(route: &str, target: &str, v: Verdict) -> Decision {
    let admitted = v.admitted();
    match &v.filter {
        None => {}
        Some(Ok(yes)) => count(
            route,
            target,
            "filter",
            if *yes { "match" } else { "no_match" },
        ),
        Some(Err(e)) => {
            count(route, target, "filter", label(e));
            tracing::warn!(route, target, error = %e, "filter failed: the event is not for this target");
        }
    }
    let body = v.transform.map(|r| {
        count(
            route,
            target,
            "transform",
            if r.is_ok() { "ok" } else { "error" },
        );
        r.map_err(|e| e.to_string())
    });
    Decision { admitted, body }
}
