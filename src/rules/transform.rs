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
        RunError::Busy(_) | RunError::QueueFull(_) => "busy",
        RunError::OverMemory(_) => "memory",
        _ => "error",
    }
}

/// What the rules decided for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// No filter, or the filter's first output is truthy (false, null or no output
    /// decline: the event is *filtered* for this target).
    pub admitted: bool,
    /// The filter could not decide (an error, its deadline, its memory budget, a busy pool):
    /// the reason, worded for a dead letter ("filter timed out after 250 ms"). Such an event
    /// is not filtered: its delivery is dead, and a replay delivers it (the operator decides).
    pub failed: Option<RuleFailure>,
    /// With a transform, on an admitted event: the new JSON body, or why there is none.
    pub body: Option<Result<Bytes, RuleFailure>>,
}

/// Why a rule gave no answer, worded for a dead letter ("transform timed out after 250 ms").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct RuleFailure {
    pub reason: String,
    /// The pool could not run it (busy, or a worker lost beside another run): trying again
    /// may succeed. Otherwise the program itself failed, and will again on the same event.
    pub transient: bool,
}

impl RuleFailure {
    fn of(kind: &str, e: &RunError) -> Self {
        RuleFailure {
            reason: format!("{kind} {e}"),
            transient: matches!(
                e,
                RunError::Busy(_) | RunError::QueueFull(_) | RunError::Worker(_)
            ),
        }
    }
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
            failed: None,
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
    let failed = match &v.filter {
        None => None,
        Some(Ok(yes)) => {
            c.run("filter", if *yes { "match" } else { "no_match" });
            None
        }
        Some(Err(e)) => {
            c.run("filter", label(e));
            tracing::warn!(route, target, error = %e, "filter failed: the delivery is dead, replay it once the rule is fixed");
            Some(RuleFailure::of("filter", e))
        }
    };
    let body = v.transform.map(|r| {
        let outcome = match &r {
            Ok(_) => "ok",
            Err(e) => label(e),
        };
        c.run("transform", outcome);
        r.map_err(|e| RuleFailure::of("transform", &e))
    });
    Decision {
        admitted,
        failed,
        body,
    }
}
