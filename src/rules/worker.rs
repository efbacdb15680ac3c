//! The jq worker: `hookgate jq-worker`, a child process of the gateway that runs jq programs
//! for it, one request at a time, on the socket it was given as standard input. It keeps
//! compiled programs between requests. It runs under a heap budget (`budget.rs`), dies with
//! the gateway, and is killed by the gateway when a run passes its deadline: a program that
//! never ends, or eats memory, costs one worker, which the pool replaces.

use super::eval::{self, Prepared};
use super::job::{Plans, RunError, Verdict};
use super::wire;
use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Serves requests until the gateway closes the socket.
pub fn serve(memory: usize) -> io::Result<()> {
    die_with_parent();
    batch_policy();
    let socket = UnixStream::from(io::stdin().as_fd().try_clone_to_owned()?);
    super::budget::limit(memory);
    let thread = std::thread::Builder::new()
        .name("hookgate-jq".into())
        .stack_size(eval::JQ_STACK)
        .spawn(move || answer_all(socket))?;
    thread
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("jq worker thread panicked")))
}

/// How long answers may wait for the ones after them before they are sent: a batch of
/// requests then costs one write back, not one per request.
const HOLD: Duration = Duration::from_millis(5);

fn answer_all(socket: UnixStream) -> io::Result<()> {
    let mut known: HashMap<u64, Prepared> = HashMap::new();
    let (mut frame, mut held) = (Vec::new(), Vec::new());
    let mut held_since = Instant::now();
    // A batch of requests arrives in one read; its answers leave in one write, once no more
    // requests are waiting (or the first has waited `HOLD`). If a run never ends, the answers
    // held before it are lost with the worker: the pool then runs those events again, one
    // by one, to find which was at fault.
    let mut input = BufReader::with_capacity(256 << 10, socket.try_clone()?);
    let mut output = socket;
    loop {
        if !held.is_empty() && (input.buffer().is_empty() || held_since.elapsed() >= HOLD) {
            output.write_all(&held)?;
            held.clear();
        }
        let mut prefix = [0; 4];
        match input.read_exact(&mut prefix) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        frame.resize(wire::frame_len(prefix), 0);
        input.read_exact(&mut frame)?;
        let req = wire::request(&frame).map_err(io::Error::other)?;
        if req.reset {
            known.clear();
        }
        if let Some(list) = req.plans {
            known.insert(req.key, eval::prepare(&Plans::from(list)));
        }
        let verdicts: Vec<Verdict> = match known.get(&req.key) {
            Some(prep) => eval::run(&req.input, prep, req.max_output),
            // The gateway sends a set's programs before naming it; an empty answer tells it
            // something went wrong, and it fails that event's runs.
            None => Vec::new(),
        };
        if held.is_empty() {
            held_since = Instant::now();
        }
        wire::put_verdicts(&mut held, &verdicts);
    }
}

/// The worker ends with the gateway even in the middle of a run (the gateway may be killed
/// with SIGKILL, and a stuck program never reads the closed socket).
fn die_with_parent() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_PDEATHSIG takes a signal number and changes no memory of ours.
        let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
        if rc != 0 {
            tracing::debug!("jq worker cannot ask to die with the gateway");
        }
        // The gateway may have gone before the request took effect.
        // SAFETY: getppid has no arguments and cannot fail.
        if unsafe { libc::getppid() } == 1 {
            std::process::exit(0);
        }
    }
}

/// Marks the worker `SCHED_BATCH`: a request wakes it without preempting the gateway thread
/// that sent it, so on a busy core the gateway answers more requests first and the worker
/// then runs the queued ones in one go. Its share of the CPU is unchanged. Best effort.
fn batch_policy() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param that outlives the call; pid 0 means the
        // calling thread, and changing its own policy affects no memory.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        if rc != 0 {
            tracing::debug!("jq worker stays on the default scheduling policy");
        }
    }
}

/// Why a worker's run failed, from how the worker ended.
pub fn exit_reason(status: std::process::ExitStatus, memory: usize) -> RunError {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(super::budget::OVER_BUDGET), _) => RunError::OverMemory(memory),
        (_, Some(libc::SIGABRT)) => RunError::Worker("aborted (a stack overflow)".into()),
        (_, Some(sig)) => RunError::Worker(format!("killed by signal {sig}")),
        (Some(code), _) => RunError::Worker(format!("exited with code {code}")),
        (None, None) => RunError::Worker("ended".into()),
    }
}
