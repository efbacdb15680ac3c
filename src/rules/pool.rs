//! The jq pool: programs run in a few worker processes (`hookgate jq-worker`, see
//! `worker.rs`), never in the gateway. A jq program cannot be interrupted from inside, so a
//! run is bounded from outside: each worker has a heap budget, and a run that passes its
//! deadline gets its worker killed and replaced. A stuck or greedy program therefore costs
//! at most its deadline or budget, other events go on on the other workers, and the pool
//! recovers by itself.
//!
//! Jobs wait in one queue. Each worker has a driver task that takes the jobs queued up (a
//! few, up to a size), writes them to its worker in one go and reads the answers, which the
//! worker sends back together; the deadline restarts at each answer, so time spent waiting
//! behind another job is not charged to a job. When a worker is killed or dies with several
//! jobs unanswered, they go back to the front of the queue as suspects and run one by one:
//! the one at fault then fails alone, with its reason, and the others are answered.

pub use super::eval::body_value;
pub use super::job::{Input, Plan, Plans, RunError, Verdict};
use super::wire;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a run may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock time of one event's programs on a worker.
    pub deadline: Duration,
    /// Bytes of one transform's output.
    pub max_output: usize,
    /// Heap of one worker process.
    pub memory: usize,
}

impl Limits {
    /// What the gateway allows a run when bodies are at most `max_body` bytes: 250 ms,
    /// four times the body (at least 4 MiB) of output, and a heap of 32 times the body
    /// (parsed JSON takes several times its text), between 256 MiB and 4 GiB.
    pub fn for_max_body(max_body: u64) -> Self {
        let body = usize::try_from(max_body).unwrap_or(usize::MAX);
        Limits {
            deadline: Duration::from_millis(250),
            max_output: body.max(1 << 20).saturating_mul(4),
            memory: body.saturating_mul(32).clamp(256 << 20, 4 << 30),
        }
    }
}

/// Jobs that may wait for a worker before the pool answers `Busy`.
const QUEUE: usize = 1024;
/// How long a job may wait in the queue (behind stuck programs) before it fails as `Busy`.
pub const QUEUE_WAIT: Duration = Duration::from_secs(2);
/// A driver sends at most this many jobs, or this many body bytes, in one write (the
/// answers must fit the socket's buffer while it is still writing).
const BATCH: usize = 32;
const BATCH_BYTES: usize = 64 << 10;
/// Sets of plans a worker remembers before both sides start over.
const KNOWN: usize = 512;

static PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// Runs jq workers from `program` (a `hookgate` binary) instead of this executable: for
/// tests and benchmarks, whose executable is not `hookgate`. The first call wins.
pub fn set_worker_program(program: impl Into<PathBuf>) {
    let _ = PROGRAM.set(program.into());
}

fn worker_program() -> PathBuf {
    if let Some(p) = PROGRAM.get() {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("HOOKGATE_JQ_WORKER") {
        return p.into();
    }
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("hookgate"))
}

struct Job {
    input: Input,
    plans: Plans,
    queued: Instant,
    reply: tokio::sync::oneshot::Sender<Vec<Verdict>>,
    /// Was in a batch whose worker was killed or died before answering it: it runs alone
    /// next, so that a failure can be pinned on the job that caused it.
    suspect: bool,
}

impl Job {
    fn fail(self, e: &RunError) {
        let _ = self.reply.send(Verdict::all_failed(&self.plans.list, e));
    }
}

struct Shared {
    queue: Mutex<Queue>,
    ready: tokio::sync::Notify,
    limits: Limits,
    program: PathBuf,
}

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job`; `false` (and the job dropped) when the queue is full or closed.
    fn push(&self, job: Job) -> bool {
        let mut q = self.lock();
        if q.closed || q.jobs.len() >= QUEUE {
            return false;
        }
        q.jobs.push_back(job);
        drop(q);
        self.ready.notify_one();
        true
    }

    /// Puts jobs that did not run back at the front, in their order.
    fn requeue(&self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let mut q = self.lock();
        for job in jobs.into_iter().rev() {
            q.jobs.push_front(job);
        }
        drop(q);
        self.ready.notify_one();
    }

    /// The next jobs for one worker, or `None` once the pool is gone.
    async fn next_batch(&self) -> Option<Vec<Job>> {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut q = self.lock();
                if let Some(first) = q.jobs.pop_front() {
                    let mut bytes = first.input.body.len();
                    let alone = first.suspect;
                    let mut batch = vec![first];
                    while let Some(next) = q.jobs.front().filter(|_| !alone) {
                        bytes += next.input.body.len();
                        if next.suspect || batch.len() >= BATCH || bytes > BATCH_BYTES {
                            break;
                        }
                        batch.extend(q.jobs.pop_front());
                    }
                    let more = !q.jobs.is_empty();
                    drop(q);
                    if more {
                        self.ready.notify_one();
                    }
                    return Some(batch);
                }
                if q.closed {
                    return None;
                }
            }
            notified.await;
        }
    }
}

/// Closes the queue when the last clone of the pool is dropped, so the drivers end and
/// their workers are killed.
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.ready.notify_waiters();
    }
}

#[derive(Clone)]
pub struct JqPool {
    shared: Arc<Closer>,
}

impl JqPool {
    /// Starts `workers` drivers on the current tokio runtime (each starts its worker
    /// process when its first job comes).
    pub fn new(workers: usize, limits: Limits) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: tokio::sync::Notify::new(),
            limits,
            program: worker_program(),
        });
        for _ in 0..workers.max(1) {
            tokio::spawn(drive(shared.clone()));
        }
        JqPool {
            shared: Arc::new(Closer(shared)),
        }
    }

    pub fn limits(&self) -> Limits {
        self.shared.0.limits
    }

    /// Runs every plan of `plans` on one event. Always answers, one verdict per plan: a
    /// failure of the pool (busy, a worker that died) is a failed verdict with its reason.
    pub async fn run(&self, input: Input, plans: &Plans) -> Vec<Verdict> {
        // Frame lengths are 32-bit: a body that large is refused, not garbled.
        if input.body.len() > (u32::MAX >> 1) as usize {
            return Verdict::all_failed(&plans.list, &RunError::TooLarge(input.body.len()));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = Job {
            input,
            plans: plans.clone(),
            queued: Instant::now(),
            reply: tx,
            suspect: false,
        };
        if !self.shared.0.push(job) {
            return Verdict::all_failed(&plans.list, &RunError::QueueFull(QUEUE));
        }
        // A driver answers within the queue wait and a deadline; the margin covers writing
        // a large body to the worker.
        let most = QUEUE_WAIT + self.shared.0.limits.deadline + Duration::from_secs(5);
        match tokio::time::timeout(most, rx).await {
            Ok(Ok(v)) => v,
            Ok(Err(_)) => {
                let e = RunError::Worker("the pool stopped".into());
                Verdict::all_failed(&plans.list, &e)
            }
            Err(_) => Verdict::all_failed(&plans.list, &RunError::Busy(most)),
        }
    }
}

/// One worker's driver: takes batches from the queue and runs them on its worker,
/// starting a new worker whenever the last one was killed or died.
async fn drive(shared: Arc<Shared>) {
    let mut worker: Option<Worker> = None;
    while let Some(batch) = shared.next_batch().await {
        let batch = drop_stale(batch);
        if batch.is_empty() {
            continue;
        }
        let w = match worker.as_mut() {
            Some(w) => w,
            None => match Worker::start(&shared) {
                Ok(w) => worker.insert(w),
                Err(e) => {
                    tracing::error!(program = %shared.program.display(), error = %e, "cannot start a jq worker");
                    let e = RunError::Worker(format!("cannot start: {e}"));
                    batch.into_iter().for_each(|j| j.fail(&e));
                    continue;
                }
            },
        };
        if let Err(unrun) = w.run_batch(batch, shared.limits).await {
            worker = None;
            shared.requeue(unrun);
        }
    }
}

/// Answers the jobs that waited too long, and forgets those whose caller has gone.
fn drop_stale(batch: Vec<Job>) -> Vec<Job> {
    batch
        .into_iter()
        .filter_map(|job| {
            if job.reply.is_closed() {
                None
            } else if job.queued.elapsed() > QUEUE_WAIT {
                job.fail(&RunError::Busy(QUEUE_WAIT));
                None
            } else {
                Some(job)
            }
        })
        .collect()
}

/// After a worker failed with `jobs` unanswered: a job alone is the one at fault and is
/// answered with `e`; several go back to run one by one, as suspects.
fn blame(mut jobs: VecDeque<Job>, e: &RunError) -> Vec<Job> {
    if jobs.len() == 1 {
        if let Some(job) = jobs.pop_front() {
            job.fail(e);
        }
        return Vec::new();
    }
    // Their time in the queue starts again: waiting behind another's fault is not theirs.
    jobs.into_iter()
        .map(|mut j| {
            j.suspect = true;
            j.queued = Instant::now();
            j
        })
        .collect()
}

/// A running `hookgate jq-worker` and the sets of plans it knows (held, so that the
/// address that names each set stays unique while the worker knows it).
struct Worker {
    child: tokio::process::Child,
    /// Answers, read through a buffer: a batch's answers usually arrive in one piece.
    answers: tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>,
    requests: tokio::net::unix::OwnedWriteHalf,
    known: HashMap<u64, Plans>,
    out: Vec<u8>,
    frame: Vec<u8>,
}

impl Worker {
    fn start(shared: &Shared) -> std::io::Result<Worker> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let child = tokio::process::Command::new(&shared.program)
            .arg("jq-worker")
            .arg("--memory")
            .arg(shared.limits.memory.to_string())
            .arg("--parent")
            .arg(std::process::id().to_string())
            .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
                theirs,
            )))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        ours.set_nonblocking(true)?;
        let (answers, requests) = tokio::net::UnixStream::from_std(ours)?.into_split();
        Ok(Worker {
            child,
            answers: tokio::io::BufReader::with_capacity(64 << 10, answers),
            requests,
            known: HashMap::new(),
            out: Vec::new(),
            frame: Vec::new(),
        })
    }

    /// Sends `batch` and answers each job in turn. The batch is written while answers are
    /// read, so neither side can wait on the other, and a write that cannot finish (a
    /// worker stuck before reading it all) counts against the deadline like a run. On a
    /// deadline passed or a worker that died, the jobs still unanswered are handed back;
    /// when that is one job alone, it was at fault and is answered with why, otherwise all
    /// of them run again one by one.
    async fn run_batch(&mut self, batch: Vec<Job>, limits: Limits) -> Result<(), Vec<Job>> {
        self.out.clear();
        for job in &batch {
            let key = job.plans.address() as u64;
            let defs = if self.known.contains_key(&key) {
                None
            } else {
                let reset = self.known.len() >= KNOWN;
                if reset {
                    self.known.clear();
                }
                self.known.insert(key, job.plans.clone());
                Some((&job.plans.list[..], reset))
            };
            wire::put_request(&mut self.out, key, defs, limits.max_output, &job.input);
        }
        let mut jobs: VecDeque<Job> = batch.into();
        let Worker {
            child,
            answers,
            requests,
            out,
            frame,
            ..
        } = self;
        let mut write = std::pin::pin!(requests.write_all(out));
        let mut written = false;
        while let Some(job) = jobs.pop_front() {
            let answered = {
                let deadline = tokio::time::sleep(limits.deadline);
                tokio::pin!(deadline);
                let read = read_frame(answers, frame);
                tokio::pin!(read);
                loop {
                    tokio::select! {
                        w = &mut write, if !written => match w {
                            Ok(()) => written = true,
                            Err(_) => break Err(None),
                        },
                        r = &mut read => break r.map_err(|_| None),
                        _ = &mut deadline => break Err(Some(RunError::Timeout(limits.deadline))),
                    }
                }
            };
            match answered {
                Ok(()) => match wire::verdicts(frame) {
                    Ok(v) if v.len() == job.plans.count() => {
                        let _ = job.reply.send(v);
                    }
                    _ => {
                        job.fail(&RunError::Worker("answered out of turn".into()));
                        let _ = child.start_kill();
                        return Err(jobs.into());
                    }
                },
                Err(Some(timeout)) => {
                    let _ = child.start_kill();
                    tracing::warn!(route = %job.input.route, deadline_ms = limits.deadline.as_millis() as u64, "jq run passed its deadline: its worker was killed and is replaced");
                    jobs.push_front(job);
                    return Err(blame(jobs, &timeout));
                }
                Err(None) => {
                    jobs.push_front(job);
                    let e = ended(child, limits).await;
                    return Err(blame(jobs, &e));
                }
            }
        }
        Ok(())
    }
}

async fn read_frame(
    answers: &mut tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>,
    frame: &mut Vec<u8>,
) -> std::io::Result<()> {
    let mut prefix = [0; 4];
    answers.read_exact(&mut prefix).await?;
    frame.resize(wire::frame_len(prefix), 0);
    answers.read_exact(frame).await?;
    Ok(())
}

/// Why a worker stopped answering, from its exit status.
async fn ended(child: &mut tokio::process::Child, limits: Limits) -> RunError {
    let status = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
    let e = match status {
        Ok(Ok(status)) => super::worker::exit_reason(status, limits.memory),
        _ => {
            let _ = child.start_kill();
            RunError::Worker("stopped answering".into())
        }
    };
    tracing::warn!(error = %e, "a jq worker ended: it is replaced");
    e
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
