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

/// Serves requests until the gateway (process `parent`) closes the socket.
pub fn serve(memory: usize, parent: u32) -> io::Result<()> {
    die_with_parent(parent);
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

fn answer_all(socket: UnixStream) -> io::Result<()> {
    let mut known: HashMap<u64, Prepared> = HashMap::new();
    // A batch of requests arrives in one read. Answers leave through a writer thread, which
    // sends whatever has piled up in one write: this thread never waits on the gateway (so
    // it always reads the rest of a batch), and an answer is sent as soon as the writer
    // gets the CPU, not held back until the run after it ends.
    let mut input = BufReader::with_capacity(256 << 10, socket.try_clone()?);
    let (answers, outbox) = std::sync::mpsc::channel::<Vec<u8>>();
    let writer = std::thread::Builder::new()
        .name("hookgate-jq-out".into())
        .spawn(move || write_answers(socket, outbox))?;
    loop {
        let mut prefix = [0; 4];
        match input.read_exact(&mut prefix) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        // A frame of its own, so that the event's body is a view of it, not a copy.
        let mut frame = vec![0; wire::frame_len(prefix)];
        input.read_exact(&mut frame)?;
        let req = wire::request(&bytes::Bytes::from(frame)).map_err(io::Error::other)?;
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
        let mut out = Vec::with_capacity(64);
        wire::put_verdicts(&mut out, &verdicts);
        if answers.send(out).is_err() {
            break;
        }
    }
    drop(answers);
    writer
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("jq answer writer panicked")))
}

fn write_answers(
    mut socket: UnixStream,
    outbox: std::sync::mpsc::Receiver<Vec<u8>>,
) -> io::Result<()> {
    let mut buf = Vec::new();
    while let Ok(first) = outbox.recv() {
        buf.extend_from_slice(&first);
        while let Ok(more) = outbox.try_recv() {
            buf.extend_from_slice(&more);
        }
        socket.write_all(&buf)?;
        buf.clear();
    }
    Ok(())
}

/// The worker ends with the gateway even in the middle of a run (the gateway may be killed
/// with SIGKILL, and a stuck program never reads the closed socket).
fn die_with_parent(parent: u32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_PDEATHSIG takes a signal number and changes no memory of ours.
        let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
        if rc != 0 {
            tracing::debug!("jq worker cannot ask to die with the gateway");
        }
        // The gateway may have gone before the request took effect (compared with its pid,
        // not with 1: the gateway may itself be pid 1 in a container).
        // SAFETY: getppid has no arguments and cannot fail.
        if i64::from(unsafe { libc::getppid() }) != i64::from(parent) {
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
