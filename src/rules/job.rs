//! What crosses between the gateway and a jq worker: an event's input, the programs to run
//! on it (`Plans`), what they gave (`Verdict`) and how a run can fail (`RunError`).

use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// How a run failed, worded to follow "filter " or "transform " in a dead letter's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("failed: {0}")]
    Jq(String),
    #[error("timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("used more than its memory budget of {} MiB", .0 >> 20)]
    OverMemory(usize),
    #[error("failed: the jq worker {0}")]
    Worker(String),
    #[error("output is larger than {0} bytes")]
    TooLarge(usize),
    #[error("output is nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("produced {0} outputs, expected exactly one")]
    Outputs(usize),
    #[error("could not run: the jq pool stayed busy for {} ms", .0.as_millis())]
    Busy(Duration),
    #[error("could not run: {0} events were already waiting for the jq pool")]
    QueueFull(usize),
}

/// What a program sees, in a form that can cross to a jq worker: the raw body and the
/// request's headers (lower-case names, repeats joined with ", ") and query string.
#[derive(Debug, Clone)]
pub struct Input {
    pub body: Bytes,
    pub headers: Vec<(String, String)>,
    pub query: Option<String>,
    pub route: Arc<str>,
}

impl Input {
    /// `all_headers`: keep every header for `$headers` (else only `Content-Type`, which says
    /// how to read the body); see [`Plan::names`].
    pub fn new<'a>(
        body: Bytes,
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        query: Option<&str>,
        route: Arc<str>,
        all_headers: bool,
    ) -> Self {
        let mut out: Vec<(String, String)> = Vec::new();
        for (n, v) in headers {
            if !all_headers && !n.eq_ignore_ascii_case("content-type") {
                continue;
            }
            let v = String::from_utf8_lossy(v);
            let n = n.to_ascii_lowercase();
            match out.iter_mut().find(|(k, _)| *k == n) {
                Some((_, prev)) => {
                    prev.push_str(", ");
                    prev.push_str(&v);
                }
                None => out.push((n, v.into_owned())),
            }
        }
        Input {
            body,
            headers: out,
            query: query.map(str::to_owned),
            route,
        }
    }

    pub(crate) fn content_type(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == "content-type")
            .map(|(_, v)| v.as_str())
    }
}

/// The programs of one target: a filter, a transform, or both (the transform runs only when
/// the filter admits the event).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub filter: Option<Arc<str>>,
    pub transform: Option<Arc<str>>,
}

/// What a plan gave: the filter's answer and the transform's JSON body, each when asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub filter: Option<Result<bool, RunError>>,
    pub transform: Option<Result<Bytes, RunError>>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.filter.is_none() && self.transform.is_none()
    }

    /// Whether one of the programs mentions `var` (such as `$headers`).
    pub fn names(&self, var: &str) -> bool {
        [&self.filter, &self.transform]
            .into_iter()
            .flatten()
            .any(|code| code.contains(var))
    }
}

/// The plans of one trip to the pool, one per target in order, with what they need of a
/// request worked out once. Built when the config loads and shared by every event: a trip
/// clones one `Arc`, and a jq worker is sent its programs once, named by its address.
#[derive(Debug, Clone)]
pub struct Plans {
    pub(crate) list: Arc<[Plan]>,
    /// Which of `$headers`, `$route` and `$query` some program names.
    pub(crate) headers: bool,
    pub(crate) route: bool,
    pub(crate) query: bool,
    nothing: bool,
}

impl From<Vec<Plan>> for Plans {
    fn from(list: Vec<Plan>) -> Self {
        Plans {
            headers: list.iter().any(|p| p.names("$headers")),
            route: list.iter().any(|p| p.names("$route")),
            query: list.iter().any(|p| p.names("$query")),
            nothing: list.iter().all(Plan::is_empty),
            list: list.into(),
        }
    }
}

impl Plans {
    /// How many plans (targets) there are.
    pub fn count(&self) -> usize {
        self.list.len()
    }

    /// No plan has a program: every target is admitted with its body untouched.
    pub fn runs_nothing(&self) -> bool {
        self.nothing
    }

    /// Some program reads `$headers`, so the input must carry every header.
    pub fn reads_headers(&self) -> bool {
        self.headers
    }

    pub(crate) fn address(&self) -> usize {
        Arc::as_ptr(&self.list) as *const Plan as usize
    }
}

impl Verdict {
    pub(crate) fn failed(plan: &Plan, e: RunError) -> Self {
        Verdict {
            filter: plan.filter.as_ref().map(|_| Err(e.clone())),
            transform: plan.transform.as_ref().map(|_| Err(e.clone())),
        }
    }

    /// One failed verdict per plan, all for the same reason.
    pub(crate) fn all_failed(plans: &[Plan], e: &RunError) -> Vec<Self> {
        plans
            .iter()
            .map(|p| Verdict::failed(p, e.clone()))
            .collect()
    }

    /// No filter, or a filter whose first output is truthy.
    pub fn admitted(&self) -> bool {
        matches!(self.filter, None | Some(Ok(true)))
    }
}
