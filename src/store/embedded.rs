//! The embedded store: one SQLite file (`<storage.path>/hookgate.db`) through rusqlite's
//! bundled library, in WAL mode with `synchronous=FULL`, so a commit is on disk when it
//! returns.
//!
//! ## Group commit
//!
//! One writer thread owns the only write connection. Every write (enqueue, completion,
//! replay, purge) is an operation sent to it over a bounded queue; a claim is a read (see
//! Recovery). The thread takes an operation — and, when nothing else queued up during the
//! last commit, sleeps [`GATHER`] while more do (it is not woken once per operation) — takes
//! them (at most [`MAX_BATCH`]), runs them inside one transaction, commits once — one fsync
//! for the whole batch — and only then answers every waiter. Operator operations (replay,
//! retire, purge, pause) run in a savepoint of their own, so one that fails rolls back alone.
//! The hot operations (enqueue, completion) do not pay for a savepoint (SQLite copies every
//! page it touches into a statement journal): they can only fail when the database itself
//! does, and then the whole batch is rolled back and every waiter told so. A failed commit
//! fails every operation of the batch. A full queue is an error (`Unavailable`), never an
//! unbounded wait.
//!
//! ## Schema
//!
//! ```sql
//! events(id TEXT PK, route, method, path, headers BLOB, body BLOB, client_ip, received_at,
//!        fwd_for, fwd_proto, fwd_host, duplicate_of)   -- duplicate_of: a repeat, not delivered
//! deliveries(id INTEGER PK, event_id, route, target, state, attempts, next_attempt_at,
//!            claimed_until, created_at, updated_at, last_error)
//! attempts(delivery_id, at, status, error, duration_ms)
//! dedup(route, key, event_id, expires_at, PK(route, key))
//! paused(route, target, PK(route, target))
//! ```
//!
//! Times are Unix milliseconds. `state`: 0 pending, 1 delivered, 2 dead, 3 filtered.
//!
//! ## Recovery
//!
//! SQLite's WAL makes every committed transaction survive a crash or power loss, and rolls
//! back any that was not committed. An exclusive lock on `<path>/LOCK` keeps a second process
//! off the same store, so leases need not be written down: a claim is a read (on a connection
//! of its own) plus an entry in this process's lease table, and a lease ends when the
//! delivery's outcome commits or its time runs out. Whatever was in flight when the process
//! died is simply pending after a restart and is attempted again. (`claimed_until` is where
//! earlier versions kept leases; it is cleared on open.)

use super::codec;
use super::*;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How long the writer waits for more operations to share a commit.
pub const GATHER: Duration = Duration::from_millis(1);
pub const MAX_BATCH: usize = 512;
const QUEUE: usize = 16_384;

type Finish = Box<dyn FnOnce(Option<&StoreError>) + Send>;
type Run = Box<dyn FnOnce(&Transaction) -> (bool, Finish) + Send>;

struct Op {
    /// In a savepoint of its own (operator operations), or not (the hot path).
    isolate: bool,
    run: Run,
}

/// The claim connection and the leases it has handed out (delivery id → until, Unix ms).
struct Claims {
    conn: Connection,
    held: HashMap<i64, i64>,
}

impl Claims {
    fn live(&mut self, now: i64) -> &HashMap<i64, i64> {
        self.held.retain(|_, until| *until > now);
        &self.held
    }
}

pub struct EmbeddedStore {
    ops: SyncSender<Op>,
    /// Dropped with the store, which ends the checkpoint thread.
    _checkpoints: SyncSender<()>,
    reader: Arc<Mutex<Connection>>,
    claims: Arc<Mutex<Claims>>,
    db_path: PathBuf,
    max_size: u64,
    /// Bytes on disk (database + WAL), measured by the writer after each commit.
    size: Arc<AtomicU64>,
    healthy: Arc<AtomicBool>,
    _lock: std::fs::File,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY NOT NULL,
    route TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    headers BLOB NOT NULL,
    body BLOB NOT NULL,
    client_ip TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    fwd_for TEXT NOT NULL,
    fwd_proto TEXT NOT NULL,
    fwd_host TEXT,
    duplicate_of TEXT
);
CREATE INDEX IF NOT EXISTS events_received ON events(received_at);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    route TEXT NOT NULL,
    target TEXT NOT NULL,
    state INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    claimed_until INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_error TEXT,
    replays INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(route, target, state, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries(event_id);
CREATE TABLE IF NOT EXISTS attempts (
    delivery_id INTEGER NOT NULL,
    at INTEGER NOT NULL,
    status INTEGER,
    error TEXT,
    duration_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_delivery ON attempts(delivery_id);
CREATE TABLE IF NOT EXISTS dedup (
    route TEXT NOT NULL,
    key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (route, key)
);
CREATE INDEX IF NOT EXISTS dedup_expiry ON dedup(expires_at);
CREATE TABLE IF NOT EXISTS paused (
    route TEXT NOT NULL,
    target TEXT NOT NULL,
    PRIMARY KEY (route, target)
);
";

fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // auto_vacuum and page_size must precede table creation to take effect on a new file.
    // 8 KiB pages hold three 2 KiB webhooks where 4 KiB pages hold one.
    conn.execute_batch(
        "PRAGMA page_size = 8192;
         PRAGMA auto_vacuum = INCREMENTAL;
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -8192;",
    )?;
    Ok(conn)
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in folder `dir`.
    pub fn open(dir: &Path, max_size: u64) -> Result<Arc<EmbeddedStore>, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(unavailable)?;
        lock.try_lock().map_err(|_| {
            StoreError::Unavailable(format!(
                "{} is in use by another hookgate process",
                dir.display()
            ))
        })?;
        let db_path = dir.join("hookgate.db");
        let writer = open_conn(&db_path).map_err(unavailable)?;
        writer.execute_batch(SCHEMA).map_err(unavailable)?;
        // Stores made by earlier versions get the columns added since: `duplicate_of`, and
        // `replays` (a replay during an attempt must not be undone by its outcome).
        for (table, column, ddl) in [
            ("events", "duplicate_of", "TEXT"),
            ("deliveries", "replays", "INTEGER NOT NULL DEFAULT 0"),
        ] {
            add_missing_column(&writer, table, column, ddl).map_err(unavailable)?;
        }
        // Leases of a previous process mean nothing now: make those deliveries due again.
        writer
            .execute(
                "UPDATE deliveries SET claimed_until = 0 WHERE claimed_until > 0 AND state = 0",
                [],
            )
            .map_err(unavailable)?;
        // Checkpoints copy the WAL into the database on a thread of their own, off the
        // writer's path. Under steady load that thread never finds the WAL idle, so every
        // [`WRITER_CHECKPOINT_EVERY`] commits the writer checkpoints too — after answering
        // its waiters, and finding nearly everything copied already — which lets its next
        // transaction start the WAL from its beginning. SQLite's own automatic checkpoint
        // (inside a commit, before anyone is answered) stays only as a backstop.
        writer
            .execute_batch(
                "PRAGMA wal_autocheckpoint = 16384; PRAGMA journal_size_limit = 67108864;",
            )
            .map_err(unavailable)?;
        // Copying the WAL goes around the page cache: this connection needs little of one.
        let checkpointer = open_conn(&db_path).map_err(unavailable)?;
        checkpointer
            .execute_batch("PRAGMA cache_size = -512;")
            .map_err(unavailable)?;
        let (cp_tx, cp_rx) = sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("hookgate-store-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, cp_rx))
            .map_err(unavailable)?;
        let reader = open_conn(&db_path).map_err(unavailable)?;
        let claims = Claims {
            conn: open_conn(&db_path)
                .and_then(|c| c.execute_batch("PRAGMA cache_size = -4096;").map(|_| c))
                .map_err(unavailable)?,
            held: HashMap::new(),
        };
        let (tx, rx) = sync_channel::<Op>(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        let size = Arc::new(AtomicU64::new(disk_size(&db_path)));
        let shared = Shared {
            healthy: healthy.clone(),
            size: size.clone(),
            db_path: db_path.clone(),
        };
        std::thread::Builder::new()
            .name("hookgate-store-writer".into())
            .spawn(move || writer_loop(writer, rx, shared))
            .map_err(unavailable)?;
        Ok(Arc::new(EmbeddedStore {
            ops: tx,
            _checkpoints: cp_tx,
            reader: Arc::new(Mutex::new(reader)),
            claims: Arc::new(Mutex::new(claims)),
            db_path,
            max_size,
            size,
            healthy,
            _lock: lock,
        }))
    }

    /// Runs `f` in the writer's next transaction; resolves after that transaction commits.
    fn write<R: Send + 'static>(
        &self,
        isolate: bool,
        f: impl FnOnce(&Transaction) -> Result<R, StoreError> + Send + 'static,
    ) -> BoxFut<'_, Result<R, StoreError>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let run: Run = Box::new(move |txn: &Transaction| -> (bool, Finish) {
            let r = f(txn);
            let ok = r.is_ok();
            let finish: Finish = Box::new(move |commit_err| {
                let _ = tx.send(match commit_err {
                    Some(e) => Err(StoreError::Unavailable(e.to_string())),
                    None => r,
                });
            });
            (ok, finish)
        });
        let sent = match self.ops.try_send(Op { isolate, run }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(StoreError::Unavailable("write queue full".into())),
            Err(TrySendError::Disconnected(_)) => {
                Err(StoreError::Unavailable("store writer stopped".into()))
            }
        };
        Box::pin(async move {
            sent?;
            rx.await
                .unwrap_or_else(|_| Err(StoreError::Unavailable("store writer stopped".into())))
        })
    }

    fn with_claims<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Claims) -> rusqlite::Result<R> + Send + 'static,
    ) -> BoxFut<'_, Result<R, StoreError>> {
        on_blocking_pool(self.claims.clone(), f)
    }

    fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> BoxFut<'_, Result<R, StoreError>> {
        on_blocking_pool(self.reader.clone(), |c| f(c))
    }
}

/// Runs `f` on the locked `conn` on tokio's blocking pool.
fn on_blocking_pool<T: Send + 'static, R: Send + 'static>(
    conn: Arc<Mutex<T>>,
    f: impl FnOnce(&mut T) -> rusqlite::Result<R> + Send + 'static,
) -> BoxFut<'static, Result<R, StoreError>> {
    Box::pin(async move {
        tokio::task::spawn_blocking(move || {
            let mut c = conn
                .lock()
                .map_err(|_| unavailable("store connection poisoned"))?;
            f(&mut c).map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    })
}

/// What the writer thread shares with the store's handle.
struct Shared {
    healthy: Arc<AtomicBool>,
    size: Arc<AtomicU64>,
    db_path: PathBuf,
}

fn disk_size(db: &Path) -> u64 {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = db.to_path_buf().into_os_string();
    wal.push("-wal");
    len(db) + len(Path::new(&wal))
}

/// How often the checkpoint thread copies committed WAL frames into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);
/// Commits between the writer's own checkpoints (which restart the WAL under steady load).
const WRITER_CHECKPOINT_EVERY: u64 = 64;

/// Copies committed WAL frames into the database. PASSIVE never blocks the writer or
/// readers; what it cannot copy now waits for the next round.
fn checkpoint(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "WAL checkpoint failed; will try again");
    }
}

fn checkpoint_loop(conn: Connection, stop: Receiver<()>) {
    loop {
        let last = matches!(
            stop.recv_timeout(CHECKPOINT_EVERY),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) | Ok(())
        );
        checkpoint(&conn);
        if last {
            return;
        }
    }
}

fn writer_loop(mut conn: Connection, rx: Receiver<Op>, shared: Shared) {
    let mut commits: u64 = 0;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        // Under load, operations queued up during the last commit: take them at once. From
        // idle, sleep while others queue up rather than wake for each of them.
        match rx.try_recv() {
            Ok(op) => batch.push(op),
            Err(_) => std::thread::sleep(GATHER),
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
            }
        }
        let started = Instant::now();
        let size = batch.len();
        let result = run_batch(&mut conn, batch);
        let (finishers, err) = match result {
            Ok(f) => (f, None),
            Err((f, e)) => (f, Some(e)),
        };
        shared.healthy.store(err.is_none(), Ordering::Release);
        shared
            .size
            .store(disk_size(&shared.db_path), Ordering::Release);
        if let Some(e) = &err {
            tracing::error!(error = %e, batch = size, "store commit failed; the batch is refused");
        }
        metrics::histogram!(crate::admin::metrics::STORE_COMMIT_BATCH).record(size as f64);
        metrics::histogram!(crate::admin::metrics::STORE_COMMIT_DURATION)
            .record(started.elapsed().as_secs_f64());
        for f in finishers {
            f(err.as_ref());
        }
        commits += 1;
        if commits.is_multiple_of(WRITER_CHECKPOINT_EVERY) {
            checkpoint(&conn);
        }
    }
}

type BatchResult = Result<Vec<Finish>, (Vec<Finish>, StoreError)>;

fn run_batch(conn: &mut Connection, batch: Vec<Op>) -> BatchResult {
    let txn = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(t) => t,
        Err(e) => {
            // Nothing ran: every operation fails with the same cause (dropping an operation
            // drops its reply channel, which its waiter sees as an error).
            return Err((Vec::new(), unavailable(e)));
        }
    };
    let mut finishers = Vec::with_capacity(batch.len());
    let mut doomed = None;
    let run = |sql: &str| txn.prepare_cached(sql).and_then(|mut s| s.execute([]));
    for op in batch {
        if !op.isolate {
            let (ok, finish) = (op.run)(&txn);
            if !ok && doomed.is_none() {
                doomed = Some(unavailable(
                    "a write failed part-way; its whole batch was rolled back",
                ));
            }
            finishers.push(finish);
            continue;
        }
        if let Err(e) = run("SAVEPOINT op") {
            // Cannot isolate this operation: run it anyway; a failure surfaces at commit.
            tracing::warn!(error = %e, "savepoint failed");
        }
        let (ok, finish) = (op.run)(&txn);
        let end = if ok {
            run("RELEASE op")
        } else {
            run("ROLLBACK TO op").and_then(|_| run("RELEASE op"))
        };
        if let Err(e) = end {
            tracing::warn!(error = %e, "savepoint release failed");
        }
        finishers.push(finish);
    }
    if let Some(e) = doomed {
        // Dropping the transaction rolls it back.
        drop(txn);
        return Err((finishers, e));
    }
    match txn.commit() {
        Ok(()) => Ok(finishers),
        Err(e) => Err((finishers, unavailable(e))),
    }
}

fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

fn sql(e: rusqlite::Error) -> StoreError {
    unavailable(e)
}

fn sql_err(e: rusqlite::Error) -> StoreError {
    sql(e)
}

fn insert_event(
    txn: &Transaction,
    ev: &NewEvent,
    duplicate_of: Option<&str>,
) -> Result<(), StoreError> {
    txn.prepare_cached(
        "INSERT INTO events (id, route, method, path, headers, body, client_ip, received_at, fwd_for, fwd_proto, fwd_host, duplicate_of)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .map_err(sql)?
    .execute(params![
        ev.id,
        ev.route,
        ev.method,
        ev.path_and_query,
        codec::encode(&ev.headers),
        &ev.body[..],
        ev.client_ip.to_string(),
        to_ms(ev.received_at),
        ev.forwarded_for,
        ev.forwarded_proto,
        ev.forwarded_host,
        duplicate_of,
    ])
    .map_err(sql)?;
    Ok(())
}

fn enqueue_tx(txn: &Transaction, ev: &NewEvent) -> Result<Enqueued, StoreError> {
    let now = now_ms();
    if let Some((key, window)) = &ev.dedup {
        let existing: Option<(String, i64)> = txn
            .prepare_cached("SELECT event_id, expires_at FROM dedup WHERE route = ?1 AND key = ?2")
            .map_err(sql)?
            .query_row(params![ev.route, key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(sql)?;
        if let Some((id, expires)) = existing {
            if expires > now {
                // Kept for the operator (status `duplicate`), with no delivery.
                insert_event(txn, ev, Some(&id))?;
                return Ok(Enqueued::Duplicate { id });
            }
        }
        let expires = now.saturating_add(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
        txn.prepare_cached("INSERT OR REPLACE INTO dedup (route, key, event_id, expires_at) VALUES (?1, ?2, ?3, ?4)")
            .map_err(sql)?
            .execute(params![ev.route, key, ev.id, expires])
            .map_err(sql)?;
    }
    insert_event(txn, ev, None)?;
    let mut ins = txn
        .prepare_cached(
            "INSERT INTO deliveries (event_id, route, target, state, attempts, next_attempt_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5, ?5)",
        )
        .map_err(sql)?;
    for t in &ev.targets {
        ins.execute(params![
            ev.id,
            ev.route,
            t,
            DeliveryState::Pending.code(),
            now
        ])
        .map_err(sql)?;
    }
    for t in &ev.filtered {
        ins.execute(params![
            ev.id,
            ev.route,
            t,
            DeliveryState::Filtered.code(),
            now
        ])
        .map_err(sql)?;
    }
    let mut dead = txn
        .prepare_cached(
            "INSERT INTO deliveries (event_id, route, target, state, attempts, next_attempt_at, created_at, updated_at, last_error)
             VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5, ?5, ?6)",
        )
        .map_err(sql)?;
    for (t, reason) in &ev.failed {
        dead.execute(params![
            ev.id,
            ev.route,
            t,
            DeliveryState::Dead.code(),
            now,
            reason
        ])
        .map_err(sql)?;
    }
    Ok(Enqueued::Stored { id: ev.id.clone() })
}

fn row_event(r: &rusqlite::Row, at: usize) -> rusqlite::Result<StoredEvent> {
    let headers: Vec<u8> = r.get(at + 4)?;
    let body: Vec<u8> = r.get(at + 5)?;
    Ok(StoredEvent {
        id: r.get(at)?,
        route: r.get(at + 1)?,
        method: r.get(at + 2)?,
        path_and_query: r.get(at + 3)?,
        headers: codec::decode(&headers).unwrap_or_default(),
        body: Bytes::from(body),
        client_ip: r.get(at + 6)?,
        received_at: from_ms(r.get(at + 7)?),
        forwarded_for: r.get(at + 8)?,
        forwarded_proto: r.get(at + 9)?,
        forwarded_host: r.get(at + 10)?,
    })
}

const EVENT_COLS: &str = "e.id, e.route, e.method, e.path, e.headers, e.body, e.client_ip, e.received_at, e.fwd_for, e.fwd_proto, e.fwd_host";

fn claim_read(
    c: &mut Claims,
    route: &str,
    target: &str,
    limit: usize,
    lease: Duration,
) -> rusqlite::Result<Vec<Claimed>> {
    let now = now_ms();
    let skip = c.live(now).len();
    // One snapshot for both queries.
    let txn = c.conn.transaction()?;
    let due: Vec<i64> = txn
        .prepare_cached(
            "SELECT id FROM deliveries WHERE route = ?1 AND target = ?2 AND state = 0 AND next_attempt_at <= ?3
             ORDER BY next_attempt_at, id LIMIT ?4",
        )?
        .query_map(
            params![route, target, now, i64::try_from(limit + skip).unwrap_or(i64::MAX)],
            |r| r.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?;
    let mut rows = Vec::with_capacity(limit.min(due.len()));
    {
        let mut one = txn.prepare_cached(&format!(
            "SELECT d.id, d.attempts, d.created_at, d.replays, {EVENT_COLS} FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE d.id = ?1"
        ))?;
        for id in due
            .into_iter()
            .filter(|id| !c.held.contains_key(id))
            .take(limit)
        {
            rows.push(one.query_row([id], |r| {
                Ok(Claimed {
                    delivery_id: r.get(0)?,
                    attempts: r.get(1)?,
                    created_at: from_ms(r.get(2)?),
                    replays: r.get(3)?,
                    event: row_event(r, 4)?,
                })
            })?);
        }
    }
    txn.finish()?;
    let until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
    for r in &rows {
        c.held.insert(r.delivery_id, until);
    }
    Ok(rows)
}

/// Adds `column` to `table` unless it is there already (the schema's own migrations).
fn add_missing_column(
    conn: &Connection,
    table: &str,
    column: &str,
    ddl: &str,
) -> rusqlite::Result<()> {
    let has: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
        [table, column],
        |r| r.get(0),
    )?;
    if !has {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ddl}"))?;
    }
    Ok(())
}

fn complete_tx(
    txn: &Transaction,
    lease: Lease,
    a: &Attempt,
    outcome: &Completion,
) -> Result<(), StoreError> {
    let (id, replays) = (lease.delivery_id, lease.replays);
    let now = now_ms();
    txn.prepare_cached("INSERT INTO attempts (delivery_id, at, status, error, duration_ms) VALUES (?1, ?2, ?3, ?4, ?5)")
        .map_err(sql)?
        .execute(params![id, a.at_ms, a.status, a.error, a.duration_ms])
        .map_err(sql)?;
    match outcome {
        Completion::Delivered => txn
            .prepare_cached(
                "UPDATE deliveries SET state = 1, attempts = attempts + 1, claimed_until = 0, updated_at = ?2, last_error = NULL
                 WHERE id = ?1 AND replays = ?3",
            )
            .map_err(sql)?
            .execute(params![id, now, replays]),
        Completion::Retry { at, error } => txn
            .prepare_cached(
                "UPDATE deliveries SET attempts = attempts + 1, claimed_until = 0, next_attempt_at = ?2, updated_at = ?3,
                 last_error = ?4 WHERE id = ?1 AND state = 0 AND replays = ?5",
            )
            .map_err(sql)?
            .execute(params![id, to_ms(*at), now, error, replays]),
        Completion::Dead { error } => txn
            .prepare_cached(
                "UPDATE deliveries SET state = 2, attempts = attempts + 1, claimed_until = 0, updated_at = ?2, last_error = ?3
                 WHERE id = ?1 AND state = 0 AND replays = ?4",
            )
            .map_err(sql)?
            .execute(params![id, now, error, replays]),
    }
    .map_err(sql)?;
    Ok(())
}

fn deliveries_of(conn: &Connection, event_id: &str) -> rusqlite::Result<Vec<DeliveryView>> {
    let mut s = conn.prepare_cached(
        "SELECT id, target, state, attempts, next_attempt_at, last_error FROM deliveries WHERE event_id = ?1 ORDER BY id",
    )?;
    let rows = s.query_map([event_id], |r| {
        let state = DeliveryState::from_code(r.get(2)?);
        Ok(DeliveryView {
            id: r.get(0)?,
            target: r.get(1)?,
            state,
            attempts: r.get(3)?,
            next_attempt_at_ms: (state == DeliveryState::Pending)
                .then(|| r.get(4))
                .transpose()?,
            last_error: r.get(5)?,
        })
    })?;
    rows.collect()
}

impl Store for EmbeddedStore {
    fn enqueue(&self, ev: NewEvent) -> BoxFut<'_, Result<Enqueued, StoreError>> {
        let used = self.size_on_disk();
        if used >= self.max_size {
            return Box::pin(async move {
                Err(StoreError::Full {
                    used,
                    limit: self.max_size,
                })
            });
        }
        self.write(false, move |txn| enqueue_tx(txn, &ev))
    }

    fn claim(
        &self,
        route: &str,
        target: &str,
        limit: usize,
        lease: Duration,
    ) -> BoxFut<'_, Result<Vec<Claimed>, StoreError>> {
        let (route, target) = (route.to_owned(), target.to_owned());
        self.with_claims(move |c| claim_read(c, &route, &target, limit, lease))
    }

    fn complete(
        &self,
        lease: Lease,
        attempt: Attempt,
        outcome: Completion,
    ) -> BoxFut<'_, Result<(), StoreError>> {
        let delivery_id = lease.delivery_id;
        let done = self.write(false, move |txn| {
            complete_tx(txn, lease, &attempt, &outcome)
        });
        let claims = self.claims.clone();
        Box::pin(async move {
            done.await?;
            // Committed: the lease has done its job.
            if let Ok(mut c) = claims.lock() {
                c.held.remove(&delivery_id);
            }
            Ok(())
        })
    }

    fn next_due(
        &self,
        route: &str,
        target: &str,
    ) -> BoxFut<'_, Result<Option<SystemTime>, StoreError>> {
        let (route, target) = (route.to_owned(), target.to_owned());
        self.with_claims(move |c| {
            let now = now_ms();
            let held = c.live(now).clone();
            // The first pending delivery not leased, or the first lease to run out.
            let first_free: Option<i64> = c
                .conn
                .prepare_cached(
                    "SELECT id, next_attempt_at FROM deliveries WHERE route = ?1 AND target = ?2 AND state = 0
                     ORDER BY next_attempt_at, id LIMIT ?3",
                )?
                .query_map(
                    params![route, target, i64::try_from(held.len() + 1).unwrap_or(i64::MAX)],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )?
                .filter_map(Result::ok)
                .find(|(id, _)| !held.contains_key(id))
                .map(|(_, at)| at);
            let lease_end = held.values().min().copied();
            Ok(match (first_free, lease_end) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
            .map(from_ms))
        })
    }

    fn replay_event(
        &self,
        event_id: &str,
        target: Option<&str>,
    ) -> BoxFut<'_, Result<usize, StoreError>> {
        let (event_id, target) = (event_id.to_owned(), target.map(str::to_owned));
        self.write(true, move |txn| {
            let exists: bool = txn
                .query_row("SELECT EXISTS (SELECT 1 FROM events WHERE id = ?1)", [&event_id], |r| r.get(0))
                .map_err(sql)?;
            if !exists {
                return Err(StoreError::NotFound);
            }
            txn.execute(
                "UPDATE deliveries SET state = 0, attempts = 0, next_attempt_at = ?3, claimed_until = 0, updated_at = ?3,
                 replays = replays + 1
                 WHERE event_id = ?1 AND (?2 IS NULL OR target = ?2) AND state != 3",
                params![event_id, target, now_ms()],
            )
            .map_err(sql)
        })
    }

    fn replay_dead(&self, sel: DeadSelector) -> BoxFut<'_, Result<usize, StoreError>> {
        self.write(true, move |txn| {
            let now = now_ms();
            let set = "UPDATE deliveries SET state = 0, attempts = 0, next_attempt_at = ?1, claimed_until = 0, updated_at = ?1, replays = replays + 1";
            match sel {
                DeadSelector::Ids(ids) => {
                    let mut n = 0;
                    let mut s = txn
                        .prepare_cached(&format!("{set} WHERE id = ?2 AND state = 2"))
                        .map_err(sql)?;
                    for id in ids {
                        n += s.execute(params![now, id]).map_err(sql)?;
                    }
                    Ok(n)
                }
                DeadSelector::AllFor { route, target } => txn
                    .execute(
                        &format!("{set} WHERE route = ?2 AND target = ?3 AND state = 2"),
                        params![now, route, target],
                    )
                    .map_err(sql),
                DeadSelector::Matching {
                    route,
                    target,
                    error_contains,
                } => txn
                    .execute(
                        &format!(
                            "{set} WHERE state = 2 AND (?2 IS NULL OR route = ?2) AND (?3 IS NULL OR target = ?3)
                             AND (?4 IS NULL OR instr(coalesce(last_error, ''), ?4) > 0)"
                        ),
                        params![now, route, target, error_contains],
                    )
                    .map_err(sql),
            }
        })
    }

    fn list_events(&self, q: EventQuery) -> BoxFut<'_, Result<Vec<EventSummary>, StoreError>> {
        self.read(move |c| {
            let (route_f, target_f) = match q.target.as_deref().map(|t| t.split_once('/')) {
                Some(Some((r, t))) => (Some(r.to_owned()), Some(t.to_owned())),
                Some(None) => (q.route.clone(), q.target.clone()),
                None => (q.route.clone(), None),
            };
            let mut s = c.prepare_cached(
                "SELECT e.id, e.route, e.received_at, length(e.body), e.duplicate_of FROM events e
                 WHERE (?1 IS NULL OR e.route = ?1)
                   AND (?2 IS NULL OR e.received_at >= ?2)
                   AND (?3 IS NULL OR e.id < ?3)
                   AND (?7 = 0 OR e.duplicate_of IS NOT NULL)
                   AND (?4 IS NULL AND ?5 IS NULL OR EXISTS (
                        SELECT 1 FROM deliveries d WHERE d.event_id = e.id
                          AND (?4 IS NULL OR d.target = ?4) AND (?5 IS NULL OR d.state = ?5)))
                 ORDER BY e.id DESC LIMIT ?6",
            )?;
            let rows = s
                .query_map(
                    params![
                        route_f,
                        q.since.map(to_ms),
                        q.before,
                        target_f,
                        q.state.map(DeliveryState::code),
                        i64::try_from(q.limit).unwrap_or(100),
                        q.duplicates
                    ],
                    |r| {
                        Ok(EventSummary {
                            id: r.get(0)?,
                            route: r.get(1)?,
                            received_at_ms: r.get(2)?,
                            body_bytes: r.get::<_, i64>(3)? as usize,
                            deliveries: Vec::new(),
                            duplicate_of: r.get(4)?,
                        })
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|mut e| {
                    e.deliveries = deliveries_of(c, &e.id)?;
                    Ok(e)
                })
                .collect()
        })
    }

    fn get_event(&self, id: &str) -> BoxFut<'_, Result<Option<EventDetail>, StoreError>> {
        let id = id.to_owned();
        self.read(move |c| {
            let q = format!("SELECT {EVENT_COLS} FROM events e WHERE e.id = ?1");
            let Some(event) = c.query_row(&q, [&id], |r| row_event(r, 0)).optional()? else {
                return Ok(None);
            };
            let deliveries = deliveries_of(c, &id)?;
            let duplicate_of: Option<String> =
                c.query_row("SELECT duplicate_of FROM events WHERE id = ?1", [&id], |r| r.get(0))?;
            let mut s = c.prepare_cached(
                "SELECT a.delivery_id, d.target, a.at, a.status, a.error, a.duration_ms FROM attempts a
                 JOIN deliveries d ON d.id = a.delivery_id WHERE d.event_id = ?1 ORDER BY a.rowid",
            )?;
            let attempts = s
                .query_map([&id], |r| {
                    Ok(AttemptView {
                        delivery_id: r.get(0)?,
                        target: r.get(1)?,
                        attempt: Attempt {
                            at_ms: r.get(2)?,
                            status: r.get(3)?,
                            error: r.get(4)?,
                            duration_ms: r.get(5)?,
                        },
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(EventDetail {
                summary: EventSummary {
                    id: event.id.clone(),
                    route: event.route.clone(),
                    received_at_ms: to_ms(event.received_at),
                    body_bytes: event.body.len(),
                    deliveries,
                    duplicate_of,
                },
                event,
                attempts,
            }))
        })
    }

    fn list_dead(
        &self,
        route: Option<String>,
        target: Option<String>,
        limit: usize,
    ) -> BoxFut<'_, Result<Vec<DeadLetter>, StoreError>> {
        self.read(move |c| {
            let mut s = c.prepare_cached(
                "SELECT id, event_id, route, target, attempts, last_error, updated_at FROM deliveries
                 WHERE state = 2 AND (?1 IS NULL OR route = ?1) AND (?2 IS NULL OR target = ?2)
                 ORDER BY id DESC LIMIT ?3",
            )?;
            let rows = s.query_map(params![route, target, i64::try_from(limit).unwrap_or(100)], |r| {
                Ok(DeadLetter {
                    delivery_id: r.get(0)?,
                    event_id: r.get(1)?,
                    route: r.get(2)?,
                    target: r.get(3)?,
                    attempts: r.get(4)?,
                    last_error: r.get(5)?,
                    updated_at_ms: r.get(6)?,
                })
            })?;
            rows.collect()
        })
    }

    fn stats(&self) -> BoxFut<'_, Result<Vec<TargetStats>, StoreError>> {
        self.read(move |c| {
            let now = now_ms();
            let mut s = c.prepare_cached(
                "SELECT route, target,
                        SUM(state = 0), SUM(state = 2), SUM(state = 1),
                        MIN(CASE WHEN state = 0 THEN created_at END)
                 FROM deliveries GROUP BY route, target ORDER BY route, target",
            )?;
            let rows = s.query_map([], |r| {
                Ok(TargetStats {
                    route: r.get(0)?,
                    target: r.get(1)?,
                    pending: r.get::<_, i64>(2)? as u64,
                    dead: r.get::<_, i64>(3)? as u64,
                    delivered: r.get::<_, i64>(4)? as u64,
                    oldest_pending_ms: r.get::<_, Option<i64>>(5)?.map(|t| (now - t).max(0)),
                })
            })?;
            rows.collect()
        })
    }

    fn retire_targets(&self, live: Vec<(String, String)>) -> BoxFut<'_, Result<usize, StoreError>> {
        self.write(true, move |txn| {
            let pairs: Vec<(String, String)> = txn
                .prepare("SELECT DISTINCT route, target FROM deliveries WHERE state = 0")
                .map_err(sql)?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sql)?
                .collect::<rusqlite::Result<_>>()
                .map_err(sql)?;
            let mut n = 0;
            for (route, target) in pairs {
                if !live.iter().any(|(r, t)| *r == route && *t == target) {
                    n += txn
                        .execute(
                            "UPDATE deliveries SET state = 2, claimed_until = 0, updated_at = ?3,
                             last_error = 'target removed from the config' WHERE route = ?1 AND target = ?2 AND state = 0",
                            params![route, target, now_ms()],
                        )
                        .map_err(sql)?;
                }
            }
            Ok(n)
        })
    }

    fn purge(&self, older_than: SystemTime, batch: usize) -> BoxFut<'_, Result<usize, StoreError>> {
        self.write(true, move |txn| {
            let ids: Vec<String> = txn
                .prepare_cached(
                    "SELECT e.id FROM events e WHERE e.received_at < ?1 AND NOT EXISTS (
                        SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.state IN (0, 2))
                     LIMIT ?2",
                )
                .map_err(sql)?
                .query_map(params![to_ms(older_than), i64::try_from(batch).unwrap_or(1000)], |r| r.get(0))
                .map_err(sql)?
                .collect::<rusqlite::Result<_>>()
                .map_err(sql)?;
            for id in &ids {
                txn.execute(
                    "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_id = ?1)",
                    [id],
                )
                .map_err(sql)?;
                txn.execute("DELETE FROM deliveries WHERE event_id = ?1", [id]).map_err(sql)?;
                txn.execute("DELETE FROM events WHERE id = ?1", [id]).map_err(sql)?;
            }
            txn.execute("DELETE FROM dedup WHERE expires_at < ?1", [now_ms()]).map_err(sql)?;
            // Give freed pages back to the file system a little at a time.
            txn.query_row("PRAGMA incremental_vacuum(256)", [], |_| Ok(())).optional().map_err(sql)?;
            Ok(ids.len())
        })
    }

    fn set_paused(
        &self,
        route: &str,
        target: &str,
        paused: bool,
    ) -> BoxFut<'_, Result<(), StoreError>> {
        let (route, target) = (route.to_owned(), target.to_owned());
        self.write(true, move |txn| {
            let sql = if paused {
                "INSERT OR IGNORE INTO paused (route, target) VALUES (?1, ?2)"
            } else {
                "DELETE FROM paused WHERE route = ?1 AND target = ?2"
            };
            txn.execute(sql, params![route, target])
                .map(|_| ())
                .map_err(sql_err)
        })
    }

    fn paused(&self) -> BoxFut<'_, Result<Vec<(String, String)>, StoreError>> {
        self.read(|c| {
            let mut s =
                c.prepare_cached("SELECT route, target FROM paused ORDER BY route, target")?;
            let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire) && self.size_on_disk() < self.max_size
    }

    fn size_on_disk(&self) -> u64 {
        let cached = self.size.load(Ordering::Acquire);
        if cached < self.max_size {
            return cached;
        }
        // At the cap: look again (space may have been reclaimed since the last commit).
        let fresh = disk_size(&self.db_path);
        self.size.store(fresh, Ordering::Release);
        fresh
    }
}
