//! The jq thread pool: a few threads that own compiled programs (jaq values are not `Send`,
//! so each thread compiles a program once and keeps it), fed by a bounded queue. A caller
//! waits at most `deadline`; a run that goes over keeps its thread busy until it ends, but
//! the caller has moved on, and the queue bound keeps the backlog finite.

use super::{compile, Filter, GLOBALS};
use jaq_core::{Ctx, RcIter};
use jaq_json::Val;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Outputs beyond this count, or bytes of output beyond `max_output`, fail the run.
pub const MAX_OUTPUTS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("jq error: {0}")]
    Jq(String),
    #[error("jq run took longer than {0:?}")]
    Timeout(Duration),
    #[error("jq output larger than {0} bytes")]
    TooLarge(usize),
    #[error("jq produced more than {MAX_OUTPUTS} outputs")]
    TooMany,
    #[error("jq pool busy")]
    Busy,
}

struct Job {
    program: Arc<str>,
    input: Value,
    vars: [Value; 3],
    started: Instant,
    deadline: Duration,
    max_output: usize,
    reply: tokio::sync::oneshot::Sender<Result<Vec<Value>, RunError>>,
}

#[derive(Clone)]
pub struct JqPool {
    jobs: SyncSender<Job>,
    deadline: Duration,
    max_output: usize,
}

thread_local! {
    static PROGRAMS: RefCell<HashMap<Arc<str>, Filter>> = RefCell::new(HashMap::new());
}

fn run(job: &Job) -> Result<Vec<Value>, RunError> {
    PROGRAMS.with(|cell| {
        let mut cache = cell.borrow_mut();
        if !cache.contains_key(&job.program) {
            // Checked when the config loaded; a failure here means a program changed under us.
            let f = compile(&job.program).map_err(|e| RunError::Jq(e.message))?;
            if cache.len() > 512 {
                cache.clear();
            }
            cache.insert(job.program.clone(), f);
        }
        let filter = cache
            .get(&job.program)
            .ok_or(RunError::Jq("program missing".into()))?;
        let inputs = RcIter::new(core::iter::empty());
        let vars = job.vars.clone().map(Val::from);
        let mut out = Vec::new();
        let mut bytes = 0;
        for v in filter.run((Ctx::new(vars, &inputs), Val::from(job.input.clone()))) {
            if job.started.elapsed() > job.deadline {
                return Err(RunError::Timeout(job.deadline));
            }
            let v = v.map_err(|e| RunError::Jq(e.to_string()))?;
            let json = Value::from(v);
            bytes += json.to_string().len();
            if bytes > job.max_output {
                return Err(RunError::TooLarge(job.max_output));
            }
            out.push(json);
            if out.len() > MAX_OUTPUTS {
                return Err(RunError::TooMany);
            }
        }
        Ok(out)
    })
}

impl JqPool {
    pub fn new(threads: usize, deadline: Duration, max_output: usize) -> Self {
        let (tx, rx) = sync_channel::<Job>(1024);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let _ = std::thread::Builder::new()
                .name(format!("hookgate-jq-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    if job.started.elapsed() > job.deadline {
                        let _ = job.reply.send(Err(RunError::Timeout(job.deadline)));
                        continue;
                    }
                    let r = run(&job);
                    let _ = job.reply.send(r);
                });
        }
        JqPool {
            jobs: tx,
            deadline,
            max_output,
        }
    }

    /// Runs `program` on `input` with `$headers`, `$route`, `$query`, within the deadline.
    pub async fn run(
        &self,
        program: Arc<str>,
        input: Value,
        headers: Value,
        route: &str,
        query: Value,
    ) -> Result<Vec<Value>, RunError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = Job {
            program,
            input,
            vars: [headers, Value::String(route.to_owned()), query],
            started: Instant::now(),
            deadline: self.deadline,
            max_output: self.max_output,
            reply: tx,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                return Err(RunError::Busy)
            }
        }
        match tokio::time::timeout(self.deadline, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RunError::Busy),
            Err(_) => Err(RunError::Timeout(self.deadline)),
        }
    }
}

const _: () = assert!(GLOBALS.len() == 3);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn runs_with_variables_and_limits() {
        let pool = JqPool::new(1, Duration::from_millis(500), 1 << 20);
        let out = pool
            .run(
                Arc::from(
                    "{ev: $headers[\"x-github-event\"], r: $route, q: $query.x, sha: .after}",
                ),
                json!({"after": "abc"}),
                json!({"x-github-event": "push"}),
                "gh",
                json!({"x": "1"}),
            )
            .await
            .unwrap();
        assert_eq!(
            out,
            vec![json!({"ev": "push", "r": "gh", "q": "1", "sha": "abc"})]
        );
        let err = pool
            .run(
                Arc::from(".a.b"),
                json!({"a": 5}),
                json!({}),
                "r",
                json!({}),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, RunError::Jq(_)), "{err:?}");
        let err = pool
            .run(
                Arc::from("range(100000000)"),
                json!(null),
                json!({}),
                "r",
                json!({}),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, RunError::TooMany | RunError::Timeout(_)),
            "{err:?}"
        );
        let small = JqPool::new(1, Duration::from_millis(500), 10);
        let err = small
            .run(
                Arc::from("\"0123456789abcdef\""),
                json!(null),
                json!({}),
                "r",
                json!({}),
            )
            .await
            .unwrap_err();
        assert_eq!(err, RunError::TooLarge(10));
    }
}
