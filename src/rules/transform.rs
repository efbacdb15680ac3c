//! Running targets' `filter` and `transform` programs, with the outcome counted per route,
//! target, kind and result, and failures logged with their reason.

pub use super::pool::{Input, Plan, Plans};
use super::pool::{JqPool, RunError, Verdict};
use crate::admin::metrics as m;
use crate::config::Target;
use bytes::Bytes;

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

/// Runs each target's plan on one event (one trip to the jq pool, the body parsed once);
/// each run is counted on its target's [`m::JqMetrics`], `counters[i]` for `plans`' `i`th.
pub async fn decide(
    jq: &JqPool,
    input: Input,
    plans: &Plans,
    counters: &[m::JqMetrics],
) -> Vec<Decision> {
    if plans.runs_nothing() {
        return admit_all(plans.count());
    }
    let verdicts = jq.run(input, plans).await;
    counters
        .iter()
        .zip(verdicts)
        .map(|(c, v)| record(c, v))
        .collect()
}

fn record(c: &m::JqMetrics, v: Verdict) -> Decision {
    let (route, target) = (c.route.as_str(), c.target.as_str());
    let admitted = v.admitted();
    match &v.filter {
        None => {}
        Some(Ok(yes)) => c.run("filter", if *yes { "match" } else { "no_match" }),
        Some(Err(e)) => {
            c.run("filter", label(e));
            tracing::warn!(route, target, error = %e, "filter failed: the event is not for this target");
        }
    }
    let body = v.transform.map(|r| {
        c.run("transform", if r.is_ok() { "ok" } else { "error" });
        r.map_err(|e| e.to_string())
    });
    Decision { admitted, body }
}
