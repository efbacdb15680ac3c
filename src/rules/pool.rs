//! The jq thread pool: a few threads that own compiled programs (jaq values are not `Send`,
//! so each thread compiles a program once and keeps it), fed by a bounded queue. A caller
//! waits at most `deadline`; a run that goes over keeps its thread busy until it ends, but
//! the caller has moved on, and the queue bound keeps the backlog finite.
//!
//! One job carries an event's raw bytes and every program to run on it (the filters of all
//! targets at ingress, or a target's filter and transform): the body is parsed once, straight
//! into jq values on the jq thread, and a transform's output is written straight to JSON
//! bytes. A filter stops at its first output; a transform at its second.

use super::project::Keys;
use super::{compile, Filter};
use bytes::Bytes;
use jaq_core::{Ctx, RcIter};
use jaq_json::Val;
use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::io::Write;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("jq error: {0}")]
    Jq(String),
    #[error("jq run took longer than {0:?}")]
    Timeout(Duration),
    #[error("jq output larger than {0} bytes")]
    TooLarge(usize),
    #[error("jq output nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("transform produced {0} outputs, expected exactly one")]
    Outputs(usize),
    #[error("jq pool busy")]
    Busy,
}

/// What a program sees, in a form that can cross to a jq thread: the raw body and the
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

    fn content_type(&self) -> Option<&str> {
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
/// clones one `Arc`, and the jq threads find their prepared programs by its address.
#[derive(Debug, Clone)]
pub struct Plans {
    list: Arc<[Plan]>,
    /// Which of `$headers`, `$route` and `$query` some program names.
    headers: bool,
    route: bool,
    query: bool,
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

    fn address(&self) -> usize {
        Arc::as_ptr(&self.list) as *const Plan as usize
    }
}

impl Verdict {
    fn failed(plan: &Plan, e: RunError) -> Self {
        Verdict {
            filter: plan.filter.as_ref().map(|_| Err(e.clone())),
            transform: plan.transform.as_ref().map(|_| Err(e.clone())),
        }
    }

    /// One failed verdict per plan, all for the same reason.
    fn all_failed(plans: &[Plan], e: &RunError) -> Vec<Self> {
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

struct Job {
    input: Input,
    plans: Plans,
    started: Instant,
    deadline: Duration,
    max_output: usize,
    reply: tokio::sync::oneshot::Sender<Vec<Verdict>>,
}

/// The jobs waiting for a jq thread. Idle threads wait on `ready` (not on the lock). A job
/// wakes an idle thread only when none is already on its way, and a thread that takes a job
/// with more behind it wakes the next: a burst costs one wake per busy thread, not per job.
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

struct QueueState {
    jobs: VecDeque<Job>,
    idle: usize,
    /// Wakes sent and not yet taken, so a burst wakes no more threads than there are jobs.
    waking: usize,
    closed: bool,
}

/// Jobs that may wait for a thread before the pool answers `Busy`.
const QUEUE: usize = 1024;

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job`; `false` when the queue is full or closed (the job is dropped).
    fn push(&self, job: Job) -> bool {
        let mut s = self.lock();
        if s.closed || s.jobs.len() >= QUEUE {
            return false;
        }
        s.jobs.push_back(job);
        // One thread on its way is enough for now: it wakes another if it finds more work.
        let wake = s.waking == 0 && s.idle > 0;
        if wake {
            s.waking += 1;
        }
        drop(s);
        if wake {
            self.ready.notify_one();
        }
        true
    }

    /// The next job, or `None` once the pool is gone.
    fn pop(&self) -> Option<Job> {
        let mut s = self.lock();
        loop {
            if let Some(job) = s.jobs.pop_front() {
                // More waiting: wake a helper, so a backlog spreads over the idle threads.
                let wake = !s.jobs.is_empty() && s.idle > s.waking;
                if wake {
                    s.waking += 1;
                }
                drop(s);
                if wake {
                    self.ready.notify_one();
                }
                return Some(job);
            }
            if s.closed {
                return None;
            }
            s.idle += 1;
            s = self.ready.wait(s).unwrap_or_else(PoisonError::into_inner);
            s.idle -= 1;
            s.waking = s.waking.saturating_sub(1);
        }
    }
}

/// Marks the calling jq thread `SCHED_BATCH`: a job wakes it without preempting the async
/// worker that queued it, so on a busy core the worker answers more requests first and the
/// thread then runs the queued jobs in one go (one switch per batch, not two per event).
/// Its share of the CPU is unchanged. Best effort: on failure, the default policy stays.
fn batch_policy() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param that outlives the call; pid 0 means the
        // calling thread, and changing its own policy affects no memory.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        if rc != 0 {
            tracing::debug!("jq thread stays on the default scheduling policy");
        }
    }
}

type Answer = (tokio::sync::oneshot::Sender<Vec<Verdict>>, Vec<Verdict>);

/// Answers on their way back to the async side, handed over by one task of the runtime. A jq
/// thread that finishes a job while earlier answers still wait adds to them and wakes
/// nothing, so a burst of answers costs the runtime one wake-up from another thread (which a
/// current-thread runtime pays with a system call), not one per answer.
struct Outbox {
    answers: Mutex<Vec<Answer>>,
    ready: tokio::sync::Notify,
    closed: std::sync::atomic::AtomicBool,
}

impl Outbox {
    fn push(&self, answer: Answer) {
        let mut a = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        let first = a.is_empty();
        a.push(answer);
        drop(a);
        if first {
            self.ready.notify_one();
        }
    }

    /// The task that hands answers to their callers, until the pool is gone.
    async fn deliver(self: Arc<Self>) {
        loop {
            self.ready.notified().await;
            let batch =
                std::mem::take(&mut *self.answers.lock().unwrap_or_else(PoisonError::into_inner));
            for (reply, verdicts) in batch {
                let _ = reply.send(verdicts);
            }
            if self.closed.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
        }
    }
}

/// Closes the queue when the last clone of the pool is dropped, so its threads end.
struct Closer(Arc<Queue>, Option<Arc<Outbox>>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.ready.notify_all();
        if let Some(o) = &self.1 {
            o.closed.store(true, std::sync::atomic::Ordering::Release);
            o.ready.notify_one();
        }
    }
}

#[derive(Clone)]
pub struct JqPool {
    queue: Arc<Closer>,
    deadline: Duration,
    max_output: usize,
}

/// A compiled program and the key paths it reads (`None`: maybe all of the document).
#[derive(Clone)]
struct Program {
    filter: Rc<Filter>,
    keys: Option<Rc<Keys>>,
}

/// What one job's set of programs needs, worked out once per thread: each plan's compiled
/// programs, and what they read of the document together.
struct Prepared {
    /// Held so that the address of its list stays a unique key (see [`prepared`]).
    _plans: Plans,
    plans: Vec<(Option<Compiled>, Option<Compiled>)>,
    reads: Reads,
}

/// A program ready to run, or why it is not (it changed under us after its check).
type Compiled = Result<Rc<Filter>, RunError>;

/// What some programs read of the document (`None`: maybe all of it).
type Reads = Option<Rc<Keys>>;

thread_local! {
    static PROGRAMS: RefCell<HashMap<Arc<str>, Program>> = RefCell::new(HashMap::new());
    /// Prepared plans, by the address of their shared list.
    static PREPARED: RefCell<HashMap<usize, Rc<Prepared>>> = RefCell::new(HashMap::new());
}

/// Entries a per-thread cache holds before it starts over (configs change rarely).
const CACHED: usize = 512;

fn program(code: &Arc<str>) -> Result<Program, RunError> {
    PROGRAMS.with(|cell| {
        let mut cache = cell.borrow_mut();
        if let Some(p) = cache.get(code) {
            return Ok(p.clone());
        }
        // Checked when the config loaded; a failure here means a program changed under us.
        let p = Program {
            filter: Rc::new(compile(code).map_err(|e| RunError::Jq(e.message))?),
            keys: super::project::keys(code).map(Rc::new),
        };
        if cache.len() > CACHED {
            cache.clear();
        }
        cache.insert(code.clone(), p.clone());
        Ok(p)
    })
}

/// The prepared form of `plans`, found by the address of their shared list: one word to
/// hash instead of the programs' text. An address is a sound key because the entry holds
/// the list, so no other allocation can take that address while the entry lives.
fn prepared(plans: &Plans) -> Rc<Prepared> {
    PREPARED.with(|cell| {
        if let Some(p) = cell.borrow().get(&plans.address()) {
            return p.clone();
        }
        let p = Rc::new(prepare(plans));
        let mut cache = cell.borrow_mut();
        if cache.len() > CACHED {
            cache.clear();
        }
        cache.insert(plans.address(), p.clone());
        p
    })
}

fn prepare(plans: &Plans) -> Prepared {
    let mut all = Keys::default();
    let mut known = true;
    let codes = plans.list.iter().flat_map(|p| [&p.filter, &p.transform]);
    for code in codes.flatten() {
        match program(code).ok().and_then(|p| p.keys) {
            Some(k) => all.merge(&k),
            None => known = false,
        }
    }
    let compiled = |c: &Option<Arc<str>>| c.as_ref().map(|c| program(c).map(|p| p.filter));
    Prepared {
        plans: plans
            .list
            .iter()
            .map(|p| (compiled(&p.filter), compiled(&p.transform)))
            .collect(),
        reads: known.then(|| Rc::new(all)),
        _plans: plans.clone(),
    }
}

/// `.` for a run: only the fields its programs read, when that is known and the body is a
/// JSON object; else the whole body.
fn input_value(input: &Input, reads: &Reads) -> Val {
    if let Some(keys) = reads {
        if let Some(v) = super::project::parse(&input.body, keys) {
            return v;
        }
    }
    body_value(input.content_type(), &input.body)
}

/// `.`: the body as JSON, or a form post as an object of its fields (a repeated field keeps
/// its last value), or the body as a string.
pub fn body_value(content_type: Option<&str>, body: &[u8]) -> Val {
    if let Some(v) = super::project::parse_all(body) {
        return v;
    }
    let form = content_type.is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if form || (content_type.is_none() && std::str::from_utf8(body).is_ok_and(|s| s.contains('=')))
    {
        return fields(form_urlencoded::parse(body).into_owned());
    }
    Val::from(String::from_utf8_lossy(body).into_owned())
}

fn fields(pairs: impl Iterator<Item = (String, String)>) -> Val {
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    Val::from(serde_json::Value::Object(map))
}

/// jq's truthiness: everything but `false` and `null`.
fn truthy(v: &Val) -> bool {
    !matches!(v, Val::Null | Val::Bool(false))
}

struct Vars([Val; 3]);

impl Vars {
    /// Each variable is built only when one of the programs names it.
    fn of(input: &Input, p: &Plans) -> Self {
        let headers = if p.headers {
            fields(input.headers.iter().cloned())
        } else {
            Val::Null
        };
        let query = if p.query {
            fields(
                form_urlencoded::parse(input.query.as_deref().unwrap_or("").as_bytes())
                    .into_owned(),
            )
        } else {
            Val::Null
        };
        let route = if p.route {
            Val::from(input.route.to_string())
        } else {
            Val::Null
        };
        Vars([headers, route, query])
    }
}

fn run_filter(job: &Job, f: &Compiled, body: &Val, vars: &Vars) -> Result<bool, RunError> {
    let f = f.as_ref().map_err(Clone::clone)?;
    let inputs = RcIter::new(core::iter::empty());
    let mut out = f.run((Ctx::new(vars.0.clone(), &inputs), body.clone()));
    let r = match out.next() {
        None => Ok(false),
        Some(Ok(v)) => {
            let yes = truthy(&v);
            drop_deep(v);
            Ok(yes)
        }
        // An error before any output declines, as jq's `select` would.
        Some(Err(e)) => Err(RunError::Jq(e.to_string())),
    };
    if job.started.elapsed() > job.deadline {
        return Err(RunError::Timeout(job.deadline));
    }
    r
}

/// Writes `v` as compact JSON to `out`, as jq prints it (a float that is not finite as
/// `null`, a big number as written), failing once `out` grows past `cap`. Strings go through
/// serde_json's escaping, which copies runs of plain text at once; jaq's `Display` works
/// through the formatter one piece at a time, at three times the cost on a typical output.
fn write_json(v: &Val, out: &mut Vec<u8>, cap: usize, depth: usize) -> Result<(), RunError> {
    if depth > MAX_OUTPUT_DEPTH {
        return Err(RunError::TooDeep(MAX_OUTPUT_DEPTH));
    }
    match v {
        Val::Null => out.extend_from_slice(b"null"),
        Val::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Val::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Val::Float(x) if x.is_finite() => {
            let _ = write!(out, "{x:?}");
        }
        Val::Float(_) => out.extend_from_slice(b"null"),
        Val::Num(n) => out.extend_from_slice(n.as_bytes()),
        Val::Str(s) => string(out, s)?,
        Val::Arr(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(x, out, cap, depth + 1)?;
            }
            out.push(b']');
        }
        Val::Obj(o) => {
            out.push(b'{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, k)?;
                out.push(b':');
                write_json(x, out, cap, depth + 1)?;
            }
            out.push(b'}');
        }
    }
    if out.len() > cap {
        return Err(RunError::TooLarge(cap));
    }
    Ok(())
}

fn string(out: &mut Vec<u8>, s: &str) -> Result<(), RunError> {
    serde_json::to_writer(&mut *out, s).map_err(|e| RunError::Jq(e.to_string()))
}

/// How deeply a program's output may nest. jq sets no limit, but a program can build values
/// nested far deeper than a thread's stack allows to print or drop recursively
/// (`reduce range(1e5) as $i (null; [.])`), and most JSON parsers refuse such a body anyway.
const MAX_OUTPUT_DEPTH: usize = 1000;

/// Drops `v` without recursion, so an output nested arbitrarily deep cannot overflow the
/// stack of the jq thread (and abort the gateway) as it goes.
fn drop_deep(v: Val) {
    if !matches!(v, Val::Arr(_) | Val::Obj(_)) {
        return;
    }
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Val::Arr(a) => {
                if let Ok(items) = Rc::try_unwrap(a) {
                    stack.extend(items);
                }
            }
            Val::Obj(o) => {
                if let Ok(map) = Rc::try_unwrap(o) {
                    stack.extend(map.into_iter().map(|(_, v)| v));
                }
            }
            _ => {}
        }
    }
}

/// Stack for a jq thread: generous (reserved, not used, until a program nests deeply), so
/// that jaq's own recursion over a deep value, such as dropping one inside a program,
/// reaches far beyond what a program builds within its deadline.
const JQ_STACK: usize = 256 << 20;

fn run_transform(job: &Job, f: &Compiled, body: &Val, vars: &Vars) -> Result<Bytes, RunError> {
    let f = f.as_ref().map_err(Clone::clone)?;
    let inputs = RcIter::new(core::iter::empty());
    let mut out = f.run((Ctx::new(vars.0.clone(), &inputs), body.clone()));
    let first = match out.next() {
        None => return Err(RunError::Outputs(0)),
        Some(v) => v.map_err(|e| RunError::Jq(e.to_string()))?,
    };
    let mut buf = Vec::with_capacity(256);
    let written = if job.started.elapsed() > job.deadline {
        Err(RunError::Timeout(job.deadline))
    } else {
        write_json(&first, &mut buf, job.max_output, 0)
    };
    drop_deep(first);
    written?;
    // A second output, or an error after the first, fails the transform; counting the rest
    // could run forever, so stop at two.
    match out.next() {
        None => {}
        Some(Ok(v)) => {
            drop_deep(v);
            return Err(RunError::Outputs(2));
        }
        Some(Err(e)) => return Err(RunError::Jq(e.to_string())),
    }
    if job.started.elapsed() > job.deadline {
        return Err(RunError::Timeout(job.deadline));
    }
    Ok(Bytes::from(buf))
}

fn run(job: &Job) -> Vec<Verdict> {
    let prep = prepared(&job.plans);
    let body = input_value(&job.input, &prep.reads);
    let vars = Vars::of(&job.input, &job.plans);
    job.plans
        .list
        .iter()
        .zip(&prep.plans)
        .map(|(plan, (filter, transform))| {
            if job.started.elapsed() > job.deadline {
                return Verdict::failed(plan, RunError::Timeout(job.deadline));
            }
            let filter = filter.as_ref().map(|f| run_filter(job, f, &body, &vars));
            let admitted = matches!(filter, None | Some(Ok(true)));
            let transform = transform
                .as_ref()
                .and_then(|t| admitted.then(|| run_transform(job, t, &body, &vars)));
            Verdict { filter, transform }
        })
        .collect()
}

impl JqPool {
    pub fn new(threads: usize, deadline: Duration, max_output: usize) -> Self {
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                idle: 0,
                waking: 0,
                closed: false,
            }),
            ready: Condvar::new(),
        });
        // Inside a runtime, answers go back through one task of it (see `Outbox`); outside
        // one (a command-line check, a benchmark), each caller is answered directly.
        let outbox = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let o = Arc::new(Outbox {
                answers: Mutex::new(Vec::new()),
                ready: tokio::sync::Notify::new(),
                closed: std::sync::atomic::AtomicBool::new(false),
            });
            rt.spawn(o.clone().deliver());
            o
        });
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            let outbox = outbox.clone();
            let _ = std::thread::Builder::new()
                .name(format!("hookgate-jq-{i}"))
                .stack_size(JQ_STACK)
                .spawn(move || {
                    batch_policy();
                    while let Some(job) = queue.pop() {
                        let verdicts = if job.started.elapsed() > job.deadline {
                            Verdict::all_failed(&job.plans.list, &RunError::Timeout(job.deadline))
                        } else {
                            run(&job)
                        };
                        match &outbox {
                            Some(o) => o.push((job.reply, verdicts)),
                            None => {
                                let _ = job.reply.send(verdicts);
                            }
                        }
                    }
                });
        }
        JqPool {
            queue: Arc::new(Closer(queue, outbox)),
            deadline,
            max_output,
        }
    }

    /// Runs every plan on `input` with `$headers`, `$route`, `$query`, within the deadline;
    /// one verdict per plan, in order.
    pub async fn run(&self, input: Input, plans: &Plans) -> Vec<Verdict> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = Job {
            input,
            plans: plans.clone(),
            started: Instant::now(),
            deadline: self.deadline,
            max_output: self.max_output,
            reply: tx,
        };
        if !self.queue.0.push(job) {
            return Verdict::all_failed(&plans.list, &RunError::Busy);
        }
        match tokio::time::timeout(self.deadline, rx).await {
            Ok(Ok(v)) => v,
            Ok(Err(_)) => Verdict::all_failed(&plans.list, &RunError::Busy),
            Err(_) => Verdict::all_failed(&plans.list, &RunError::Timeout(self.deadline)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(body: &str, headers: &[(&str, &str)], query: Option<&str>) -> Input {
        Input::new(
            Bytes::from(body.to_owned()),
            headers.iter().map(|(n, v)| (*n, v.as_bytes())),
            query,
            Arc::from("gh"),
            true,
        )
    }

    fn transform(code: &str) -> Plan {
        Plan {
            filter: None,
            transform: Some(Arc::from(code)),
        }
    }

    fn filter(code: &str) -> Plan {
        Plan {
            filter: Some(Arc::from(code)),
            transform: None,
        }
    }

    async fn one(pool: &JqPool, i: Input, p: Plan) -> Verdict {
        pool.run(i, &vec![p].into()).await.remove(0)
    }

    #[tokio::test]
    async fn runs_with_variables_and_limits() {
        let pool = JqPool::new(1, Duration::from_millis(500), 1 << 20);
        let v = one(
            &pool,
            input(
                r#"{"after": "abc"}"#,
                &[("X-GitHub-Event", "push")],
                Some("x=1"),
            ),
            transform("{ev: $headers[\"x-github-event\"], r: $route, q: $query.x, sha: .after}"),
        )
        .await;
        assert_eq!(
            v.transform,
            Some(Ok(Bytes::from_static(
                br#"{"ev":"push","r":"gh","q":"1","sha":"abc"}"#
            )))
        );
        let v = one(&pool, input(r#"{"a": 5}"#, &[], None), transform(".a.b")).await;
        assert!(matches!(v.transform, Some(Err(RunError::Jq(_)))), "{v:?}");
        let v = one(
            &pool,
            input("null", &[], None),
            transform("range(100000000)"),
        )
        .await;
        assert_eq!(v.transform, Some(Err(RunError::Outputs(2))));
        let v = one(&pool, input("null", &[], None), transform("empty")).await;
        assert_eq!(v.transform, Some(Err(RunError::Outputs(0))));
        let small = JqPool::new(1, Duration::from_millis(500), 10);
        let v = one(
            &small,
            input("null", &[], None),
            transform("\"0123456789abcdef\""),
        )
        .await;
        assert_eq!(v.transform, Some(Err(RunError::TooLarge(10))));
    }

    /// The bytes a transform sends are jq's own printing of its output: the same JSON text
    /// as jaq's `Display`, escapes aside (serde_json writes `\b` and `\f` short).
    #[test]
    fn output_is_printed_as_jq_prints_it() {
        let programs = [
            r#"{a: 1, b: -2.5, c: 1e400, d: 123456789012345678901234567890, e: null}"#,
            r#"{s: "quote \" back \\ tab \t nl \n cr \r nul \u0000 é ☃ 😀", t: true, f: false}"#,
            r#"[[], {}, [1, [2, {"x y": [3]}]], "", 0, 1.0, 100000000000000000000]"#,
            r#"{"k\"ey": {"\u0001": [nan, infinite, -infinite]}}"#,
            ".",
        ];
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/github-push.json"
        ))
        .unwrap();
        for code in programs {
            let f = compile(code).unwrap();
            let inputs = RcIter::new(core::iter::empty());
            let vars = vec![Val::Null, Val::Null, Val::Null];
            let input = body_value(None, &body);
            for v in f.run((Ctx::new(vars, &inputs), input)) {
                let v = v.unwrap();
                let mut out = Vec::new();
                write_json(&v, &mut out, usize::MAX, 0).unwrap();
                assert_eq!(String::from_utf8(out).unwrap(), v.to_string(), "{code}");
            }
        }
        // The cap holds at every step, not only at the end.
        let v = Val::from(serde_json::json!({"a": "x".repeat(100), "b": [1, 2, 3]}));
        let mut out = Vec::new();
        assert!(write_json(&v, &mut out, 50, 0).is_err());
        assert!(out.len() <= 120, "{}", out.len());
        let mut out = Vec::new();
        assert!(write_json(&v, &mut out, 200, 0).is_ok());
    }

    /// A reloaded config brings new plans with the same code: each is prepared on its own,
    /// and a plan's programs never answer for another's.
    #[tokio::test]
    async fn plans_are_prepared_per_list() {
        let pool = JqPool::new(1, Duration::from_millis(500), 1 << 20);
        let i = || input(r#"{"a": 1, "b": 2}"#, &[("X-Kind", "k")], None);
        for _ in 0..3 {
            let a: Plans = vec![transform(".a")].into();
            let b: Plans = vec![transform(".b"), filter("$headers[\"x-kind\"] == \"k\"")].into();
            assert_eq!(
                pool.run(i(), &a).await[0].transform,
                Some(Ok(Bytes::from("1")))
            );
            let v = pool.run(i(), &b).await;
            assert_eq!(v[0].transform, Some(Ok(Bytes::from("2"))));
            assert_eq!(v[1].filter, Some(Ok(true)));
            assert!(b.reads_headers() && !a.reads_headers());
            assert!(!a.runs_nothing());
            assert!(Plans::from(vec![Plan::default()]).runs_nothing());
        }
    }

    /// A program can build a value nested deeper than any stack can print or drop
    /// recursively; the run fails (or declines) and the gateway lives on.
    #[tokio::test]
    async fn deeply_nested_outputs_fail_without_a_crash() {
        let pool = JqPool::new(1, Duration::from_secs(5), 1 << 30);
        let deep = "reduce range(200000) as $i (null; [.])";
        let i = || input("{}", &[], None);
        let v = one(&pool, i(), transform(deep)).await;
        assert_eq!(v.transform, Some(Err(RunError::TooDeep(MAX_OUTPUT_DEPTH))));
        let v = one(&pool, i(), filter(deep)).await;
        assert_eq!(v.filter, Some(Ok(true)));
        // Dropped inside jaq, on the jq thread's own stack.
        let v = one(&pool, i(), filter(&format!("({deep}) | length == 1"))).await;
        assert_eq!(v.filter, Some(Ok(true)));
        // Nested as deep as allowed still prints.
        let ok = format!("reduce range({MAX_OUTPUT_DEPTH}) as $i (0; [.])");
        let v = one(&pool, i(), transform(&ok)).await;
        assert!(matches!(v.transform, Some(Ok(ref b)) if b.len() == 2 * MAX_OUTPUT_DEPTH + 1));
        // The pool still answers.
        let v = one(&pool, i(), transform("1")).await;
        assert_eq!(v.transform, Some(Ok(Bytes::from("1"))));
    }

    #[tokio::test]
    async fn filters_and_plans() {
        let pool = JqPool::new(1, Duration::from_millis(500), 1 << 20);
        let i = input(r#"{"ref":"refs/heads/main","n":[1,2]}"#, &[], None);
        let plans = vec![
            filter(r#".ref == "refs/heads/main""#),
            filter(".ref == \"x\""),
            filter(".n[]"),
            filter("empty"),
            filter(".ref.nope"),
            Plan {
                filter: Some(Arc::from("false")),
                transform: Some(Arc::from(".n")),
            },
            Plan {
                filter: Some(Arc::from("true")),
                transform: Some(Arc::from(".n")),
            },
        ];
        let v = pool.run(i, &plans.into()).await;
        assert_eq!(v[0].filter, Some(Ok(true)));
        assert_eq!(v[1].filter, Some(Ok(false)));
        assert_eq!(v[2].filter, Some(Ok(true)));
        assert_eq!(v[3].filter, Some(Ok(false)));
        assert!(matches!(v[4].filter, Some(Err(RunError::Jq(_)))));
        assert!(!v[4].admitted());
        assert_eq!(v[5].transform, None);
        assert_eq!(v[6].transform, Some(Ok(Bytes::from_static(b"[1,2]"))));
    }

    /// Many callers at once on two threads: each gets its own answer; a program stuck past
    /// the deadline fails its caller without holding up the others; the threads end with the
    /// pool.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_and_shutdown() {
        let pool = JqPool::new(2, Duration::from_millis(300), 1 << 20);
        let stuck = {
            let pool = pool.clone();
            tokio::spawn(async move {
                let i = input("null", &[], None);
                one(&pool, i, filter("last(range(3e7))")).await
            })
        };
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..200 {
            let pool = pool.clone();
            calls.spawn(async move {
                let i = input(&format!(r#"{{"n": {n}}}"#), &[], None);
                (n, one(&pool, i, transform(".n * 2")).await)
            });
        }
        while let Some(r) = calls.join_next().await {
            let (n, v) = r.unwrap();
            assert_eq!(v.transform, Some(Ok(Bytes::from((n * 2).to_string()))));
        }
        let v = stuck.await.unwrap();
        assert_eq!(
            v.filter,
            Some(Err(RunError::Timeout(Duration::from_millis(300))))
        );
        let queue = Arc::downgrade(&pool.queue.0);
        drop(pool);
        // The stuck run ends on its own; then both threads see the closed queue and exit.
        for _ in 0..600 {
            if queue.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("jq threads still hold the queue 30 s after the pool was dropped");
    }

    #[test]
    fn bodies() {
        assert_eq!(
            body_value(None, br#" {"b":1, "a":[1.50, "x"]} "#).to_string(),
            r#"{"b":1,"a":[1.5,"x"]}"#
        );
        let form = body_value(
            Some("application/x-www-form-urlencoded"),
            b"command=%2Fdeploy&text=prod",
        );
        assert_eq!(form.to_string(), r#"{"command":"/deploy","text":"prod"}"#);
        assert_eq!(
            body_value(Some("text/plain"), b"hello").to_string(),
            r#""hello""#
        );
        assert_eq!(
            body_value(None, b"{\"a\":\"\\u00e9\\n\"}").to_string(),
            "{\"a\":\"\u{e9}\\n\"}"
        );
    }
}
