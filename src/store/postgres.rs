//! The shared store: PostgreSQL, for many hookgate replicas behind one load balancer.
//!
//! Same model and invariants as the embedded store (see `store.rs`); what changes is who
//! else is writing:
//!
//! - **Ack after commit**: `enqueue` returns after PostgreSQL's COMMIT (durable by default,
//!   `synchronous_commit = on`).
//! - **Dedup across replicas** is a primary key on `(route, key)` with `ON CONFLICT`: two
//!   replicas racing on one delivery id cannot both insert.
//! - **Claims** take due rows with `FOR UPDATE SKIP LOCKED` and set a lease
//!   (`claimed_until`); the HTTP call happens after that transaction commits. A replica that
//!   dies leaves leases that simply expire, and another replica delivers.
//! - **Fleet-wide concurrency**: a claim first takes a transaction-scoped advisory lock for
//!   its (route, target) and counts the unexpired leases, so the whole fleet never holds
//!   more than the target's `concurrency` deliveries at once.
//! - **Fleet-wide rate limit**: a token bucket per target in `rate_buckets`, refilled by
//!   elapsed time and taken with one conditional upsert before each attempt.
//! - **Wake-ups**: an enqueue sends `NOTIFY hookgate_events, '<route>'` (delivered on
//!   commit) and every replica `LISTEN`s; the workers' one-second poll is the fallback.
//!
//! Schema changes are versioned migrations in `hookgate_migrations`, applied at start (under
//! an advisory lock, so replicas starting together do not race) or by `hookgate migrate`.

use super::*;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_postgres::NoTls;

const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
    "CREATE TABLE events (
        id TEXT PRIMARY KEY,
        route TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        headers BYTEA NOT NULL,
        body BYTEA NOT NULL,
        client_ip TEXT NOT NULL,
        received_at BIGINT NOT NULL,
        fwd_for TEXT NOT NULL,
        fwd_proto TEXT NOT NULL,
        fwd_host TEXT
    );
    CREATE INDEX events_received ON events (received_at);
    CREATE TABLE deliveries (
        id BIGSERIAL PRIMARY KEY,
        event_id TEXT NOT NULL,
        route TEXT NOT NULL,
        target TEXT NOT NULL,
        state SMALLINT NOT NULL,
        attempts INT NOT NULL DEFAULT 0,
        next_attempt_at BIGINT NOT NULL,
        claimed_until BIGINT NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        last_error TEXT
    );
    CREATE INDEX deliveries_due ON deliveries (route, target, next_attempt_at, id) WHERE state = 0;
    CREATE INDEX deliveries_event ON deliveries (event_id);
    CREATE INDEX deliveries_state ON deliveries (route, target, state);
    CREATE TABLE attempts (
        id BIGSERIAL PRIMARY KEY,
        delivery_id BIGINT NOT NULL,
        at BIGINT NOT NULL,
        status INT,
        error TEXT,
        duration_ms BIGINT NOT NULL
    );
    CREATE INDEX attempts_delivery ON attempts (delivery_id);
    CREATE TABLE dedup (
        route TEXT NOT NULL,
        key TEXT NOT NULL,
        event_id TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (route, key)
    );
    CREATE INDEX dedup_expiry ON dedup (expires_at);
    CREATE TABLE paused (route TEXT NOT NULL, target TEXT NOT NULL, PRIMARY KEY (route, target));",
    ),
    (
        2,
        "CREATE TABLE rate_buckets (key TEXT PRIMARY KEY, tokens DOUBLE PRECISION NOT NULL, updated_ms BIGINT NOT NULL);",
    ),
    (3, "ALTER TABLE events ADD COLUMN duplicate_of TEXT;"),
    // Counts operator replays, so that an attempt in flight during one cannot undo it.
    (
        4,
        "ALTER TABLE deliveries ADD COLUMN replays BIGINT NOT NULL DEFAULT 0;",
    ),
];

pub const CHANNEL: &str = "hookgate_events";

pub struct PgStore {
    pool: Pool,
    healthy: Arc<AtomicBool>,
    /// The schema is known to be current (migrations applied or verified).
    migrated: Arc<AtomicBool>,
    wakes: tokio::sync::broadcast::Sender<String>,
    /// Fleet-wide in-flight cap per target, by "route/target".
    concurrency: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

fn pg(e: impl std::error::Error) -> StoreError {
    let mut msg = format!("postgres: {e}");
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    StoreError::Unavailable(msg)
}

fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

fn config(url: &str, schema: Option<&str>) -> Result<tokio_postgres::Config, StoreError> {
    let mut cfg: tokio_postgres::Config = url.parse().map_err(pg)?;
    if let Some(s) = schema {
        cfg.options(format!("-c search_path={s}"));
    }
    cfg.connect_timeout(Duration::from_secs(5));
    Ok(cfg)
}

/// `sslmode=require`: TLS through rustls; otherwise plain (the server's `prefer` is not
/// attempted, so a self-signed local server still works).
fn wants_tls(cfg: &tokio_postgres::Config) -> bool {
    matches!(cfg.get_ssl_mode(), tokio_postgres::config::SslMode::Require)
}

async fn connect(cfg: &tokio_postgres::Config) -> Result<tokio_postgres::Client, StoreError> {
    if wants_tls(cfg) {
        let tls = super::pg_tls::RustlsConnect::new().map_err(pg)?;
        let (client, conn) = cfg.connect(tls).await.map_err(pg)?;
        tokio::spawn(conn);
        Ok(client)
    } else {
        let (client, conn) = cfg.connect(NoTls).await.map_err(pg)?;
        tokio::spawn(conn);
        Ok(client)
    }
}

/// Applies pending migrations; safe to run from several replicas at once.
pub async fn migrate(url: &str, schema: Option<&str>) -> Result<Vec<i32>, StoreError> {
    let cfg = config(url, schema)?;
    let mut client = connect(&cfg).await?;
    if let Some(s) = schema {
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{s}\""))
            .await
            .map_err(pg)?;
    }
    let tx = client.transaction().await.map_err(pg)?;
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(4242424242);
         CREATE TABLE IF NOT EXISTS hookgate_migrations (version INT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());",
    )
    .await
    .map_err(pg)?;
    let done: Vec<i32> = tx
        .query("SELECT version FROM hookgate_migrations", &[])
        .await
        .map_err(pg)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = Vec::new();
    for (v, sql) in MIGRATIONS {
        if !done.contains(v) {
            tx.batch_execute(sql).await.map_err(pg)?;
            tx.execute(
                "INSERT INTO hookgate_migrations (version) VALUES ($1)",
                &[v],
            )
            .await
            .map_err(pg)?;
            applied.push(*v);
        }
    }
    tx.commit().await.map_err(pg)?;
    Ok(applied)
}

impl PgStore {
    /// Connects (creating the schema objects by migration) and starts listening for wake-ups.
    /// A database that cannot be reached yet is not fatal: the store reports unhealthy (503
    /// at ingress, readiness 503) and keeps trying, with backoff, until it can migrate.
    pub async fn open(
        url: &str,
        pool_size: usize,
        schema: Option<&str>,
    ) -> Result<Arc<PgStore>, StoreError> {
        let cfg = config(url, schema)?;
        let migrated = Arc::new(AtomicBool::new(false));
        match migrate(url, schema).await {
            Ok(_) => migrated.store(true, Ordering::Release),
            Err(e) => {
                tracing::error!(error = %e, "PostgreSQL is not reachable; webhooks get 503 until it is");
                let (url, schema, flag) =
                    (url.to_owned(), schema.map(str::to_owned), migrated.clone());
                tokio::spawn(async move {
                    let mut backoff = Duration::from_millis(250);
                    loop {
                        tokio::time::sleep(backoff).await;
                        match migrate(&url, schema.as_deref()).await {
                            Ok(_) => {
                                flag.store(true, Ordering::Release);
                                tracing::info!("PostgreSQL is reachable again");
                                return;
                            }
                            Err(_) => backoff = (backoff * 2).min(Duration::from_secs(10)),
                        }
                    }
                });
            }
        }
        let mc = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let mgr = if wants_tls(&cfg) {
            Manager::from_config(
                cfg.clone(),
                super::pg_tls::RustlsConnect::new().map_err(pg)?,
                mc,
            )
        } else {
            Manager::from_config(cfg.clone(), NoTls, mc)
        };
        let pool = Pool::builder(mgr)
            .max_size(pool_size.max(2))
            .build()
            .map_err(pg)?;
        let (wakes, _) = tokio::sync::broadcast::channel(1024);
        let store = Arc::new(PgStore {
            pool,
            healthy: Arc::new(AtomicBool::new(true)),
            migrated,
            wakes: wakes.clone(),
            concurrency: Default::default(),
        });
        tokio::spawn(listen(cfg, wakes, store.healthy.clone()));
        Ok(store)
    }

    /// Sets the fleet-wide in-flight cap of a target (its `concurrency`).
    pub fn set_concurrency(&self, route: &str, target: &str, n: usize) {
        if let Ok(mut m) = self.concurrency.lock() {
            m.insert(
                format!("{route}/{target}"),
                i64::try_from(n).unwrap_or(i64::MAX),
            );
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        if !self.migrated.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable(
                "postgres: not reachable yet".into(),
            ));
        }
        match self.pool.get().await {
            Ok(c) => {
                self.healthy.store(true, Ordering::Release);
                Ok(c)
            }
            Err(e) => {
                self.healthy.store(false, Ordering::Release);
                Err(pg(e))
            }
        }
    }

    fn note<T>(&self, r: Result<T, tokio_postgres::Error>) -> Result<T, StoreError> {
        r.map_err(|e| {
            if e.is_closed() || e.as_db_error().is_none() {
                self.healthy.store(false, Ordering::Release);
            }
            pg(e)
        })
    }
}

/// Keeps a LISTEN connection up (reconnecting with backoff) and forwards notifications.
async fn listen(
    cfg: tokio_postgres::Config,
    wakes: tokio::sync::broadcast::Sender<String>,
    healthy: Arc<AtomicBool>,
) {
    use futures_util_lite::poll_messages;
    let mut backoff = Duration::from_millis(200);
    loop {
        if wakes.receiver_count() == 0 && Arc::strong_count(&healthy) == 1 {
            return;
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let connected = if wants_tls(&cfg) {
            match super::pg_tls::RustlsConnect::new() {
                Ok(tls) => cfg
                    .connect(tls)
                    .await
                    .map(|(c, conn)| (c, tokio::spawn(poll_messages(conn, tx)))),
                Err(e) => {
                    tracing::error!(error = %e, "postgres TLS setup failed");
                    return;
                }
            }
        } else {
            cfg.connect(NoTls)
                .await
                .map(|(c, conn)| (c, tokio::spawn(poll_messages(conn, tx))))
        };
        match connected {
            Ok((client, task)) => {
                backoff = Duration::from_millis(200);
                if client
                    .batch_execute(&format!("LISTEN {CHANNEL}"))
                    .await
                    .is_ok()
                {
                    while let Some(route) = rx.recv().await {
                        let _ = wakes.send(route);
                    }
                }
                task.abort();
            }
            Err(e) => {
                healthy.store(false, Ordering::Release);
                tracing::warn!(error = %e, "postgres LISTEN connection failed; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Drives a connection and hands its notifications on (tokio-postgres exposes them only
/// through `poll_message`).
mod futures_util_lite {
    use std::future::poll_fn;
    use tokio_postgres::AsyncMessage;

    pub async fn poll_messages<S, T>(
        mut conn: tokio_postgres::Connection<S, T>,
        tx: tokio::sync::mpsc::UnboundedSender<String>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        loop {
            match poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    }
}

async fn insert_event(
    tx: &deadpool_postgres::Transaction<'_>,
    ev: &NewEvent,
    duplicate_of: Option<&str>,
) -> Result<u64, tokio_postgres::Error> {
    let headers = codec::encode(&ev.headers);
    let body: &[u8] = &ev.body;
    tx.execute(
        "INSERT INTO events (id, route, method, path, headers, body, client_ip, received_at, fwd_for, fwd_proto, fwd_host, duplicate_of)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &ev.id,
            &ev.route,
            &ev.method,
            &ev.path_and_query,
            &headers,
            &body,
            &ev.client_ip.to_string(),
            &to_ms(ev.received_at),
            &ev.forwarded_for,
            &ev.forwarded_proto,
            &ev.forwarded_host,
            &duplicate_of,
        ],
    )
    .await
}

fn row_event(r: &tokio_postgres::Row, at: usize) -> StoredEvent {
    let headers: Vec<u8> = r.get(at + 4);
    let body: Vec<u8> = r.get(at + 5);
    StoredEvent {
        id: r.get(at),
        route: r.get(at + 1),
        method: r.get(at + 2),
        path_and_query: r.get(at + 3),
        headers: codec::decode(&headers).unwrap_or_default(),
        body: Bytes::from(body),
        client_ip: r.get(at + 6),
        received_at: from_ms(r.get(at + 7)),
        forwarded_for: r.get(at + 8),
        forwarded_proto: r.get(at + 9),
        forwarded_host: r.get(at + 10),
    }
}

const EVENT_COLS: &str = "e.id, e.route, e.method, e.path, e.headers, e.body, e.client_ip, e.received_at, e.fwd_for, e.fwd_proto, e.fwd_host";

fn delivery_view(r: &tokio_postgres::Row) -> DeliveryView {
    let state = DeliveryState::from_code(i64::from(r.get::<_, i16>(2)));
    DeliveryView {
        id: r.get(0),
        target: r.get(1),
        state,
        attempts: u32::try_from(r.get::<_, i32>(3)).unwrap_or(0),
        next_attempt_at_ms: (state == DeliveryState::Pending).then(|| r.get(4)),
        last_error: r.get(5),
    }
}

impl Store for PgStore {
    fn enqueue(&self, ev: NewEvent) -> BoxFut<'_, Result<Enqueued, StoreError>> {
        Box::pin(async move {
            let mut c = self.client().await?;
            let tx = self.note(c.transaction().await)?;
            let now = now_ms();
            if let Some((key, window)) = &ev.dedup {
                let expires =
                    now.saturating_add(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
                let won = self.note(
                    tx.query_opt(
                        "INSERT INTO dedup (route, key, event_id, expires_at) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (route, key) DO UPDATE SET event_id = EXCLUDED.event_id, expires_at = EXCLUDED.expires_at
                         WHERE dedup.expires_at <= $5 RETURNING event_id",
                        &[&ev.route, key, &ev.id, &expires, &now],
                    )
                    .await,
                )?;
                if won.is_none() {
                    let first: String = self
                        .note(
                            tx.query_one(
                                "SELECT event_id FROM dedup WHERE route = $1 AND key = $2",
                                &[&ev.route, key],
                            )
                            .await,
                        )?
                        .get(0);
                    // Kept for the operator (status `duplicate`), with no delivery.
                    self.note(insert_event(&tx, &ev, Some(&first)).await)?;
                    self.note(tx.commit().await)?;
                    return Ok(Enqueued::Duplicate { id: first });
                }
            }
            self.note(insert_event(&tx, &ev, None).await)?;
            for (targets, state) in [
                (&ev.targets, DeliveryState::Pending),
                (&ev.filtered, DeliveryState::Filtered),
            ] {
                let code = state.code() as i16;
                for t in targets {
                    self.note(
                        tx.execute(
                            "INSERT INTO deliveries (event_id, route, target, state, attempts, next_attempt_at, created_at, updated_at)
                             VALUES ($1, $2, $3, $4, 0, $5, $5, $5)",
                            &[&ev.id, &ev.route, t, &code, &now],
                        )
                        .await,
                    )?;
                }
            }
            let dead = DeliveryState::Dead.code() as i16;
            for (t, reason) in &ev.failed {
                self.note(
                    tx.execute(
                        "INSERT INTO deliveries (event_id, route, target, state, attempts, next_attempt_at, created_at, updated_at, last_error)
                         VALUES ($1, $2, $3, $4, 0, $5, $5, $5, $6)",
                        &[&ev.id, &ev.route, t, &dead, &now, reason],
                    )
                    .await,
                )?;
            }
            // Delivered to listeners on commit: idle workers of this route wake up.
            self.note(
                tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &ev.route])
                    .await,
            )?;
            self.note(tx.commit().await)?;
            Ok(Enqueued::Stored { id: ev.id })
        })
    }

    fn claim(
        &self,
        route: &str,
        target: &str,
        limit: usize,
        lease: Duration,
    ) -> BoxFut<'_, Result<Vec<Claimed>, StoreError>> {
        let (route, target) = (route.to_owned(), target.to_owned());
        Box::pin(async move {
            let mut c = self.client().await?;
            let tx = self.note(c.transaction().await)?;
            let now = now_ms();
            let key = format!("{route}/{target}");
            let cap = self
                .concurrency
                .lock()
                .ok()
                .and_then(|m| m.get(&key).copied());
            let mut limit = i64::try_from(limit).unwrap_or(i64::MAX);
            if let Some(cap) = cap {
                // One claimer per target across the fleet at a time, then count live leases.
                self.note(
                    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&key])
                        .await,
                )?;
                let active: i64 = self
                    .note(
                        tx.query_one(
                            "SELECT count(*) FROM deliveries WHERE route = $1 AND target = $2 AND state = 0 AND claimed_until > $3",
                            &[&route, &target, &now],
                        )
                        .await,
                    )?
                    .get(0);
                limit = limit.min((cap - active).max(0));
            }
            if limit == 0 {
                self.note(tx.commit().await)?;
                return Ok(Vec::new());
            }
            let until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
            let rows = self.note(
                tx.query(
                    "WITH c AS (
                        SELECT id FROM deliveries
                        WHERE route = $1 AND target = $2 AND state = 0 AND next_attempt_at <= $3 AND claimed_until <= $3
                        ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED)
                     UPDATE deliveries d SET claimed_until = $5 FROM c WHERE d.id = c.id
                     RETURNING d.id, d.attempts, d.created_at, d.event_id, d.replays",
                    &[&route, &target, &now, &limit, &until],
                )
                .await,
            )?;
            let ids: Vec<String> = rows.iter().map(|r| r.get(3)).collect();
            let events = self.note(
                tx.query(
                    &format!("SELECT {EVENT_COLS} FROM events e WHERE e.id = ANY($1)"),
                    &[&ids],
                )
                .await,
            )?;
            self.note(tx.commit().await)?;
            let by_id: std::collections::HashMap<String, StoredEvent> = events
                .iter()
                .map(|r| (r.get::<_, String>(0), row_event(r, 0)))
                .collect();
            let mut out: Vec<Claimed> = rows
                .iter()
                .filter_map(|r| {
                    Some(Claimed {
                        delivery_id: r.get(0),
                        replays: r.get(4),
                        attempts: u32::try_from(r.get::<_, i32>(1)).unwrap_or(0),
                        created_at: from_ms(r.get(2)),
                        event: by_id.get(&r.get::<_, String>(3))?.clone(),
                    })
                })
                .collect();
            out.sort_by_key(|c| c.delivery_id);
            Ok(out)
        })
    }

    fn complete(
        &self,
        lease: Lease,
        a: Attempt,
        outcome: Completion,
    ) -> BoxFut<'_, Result<(), StoreError>> {
        let Lease {
            delivery_id,
            replays,
        } = lease;
        Box::pin(async move {
            let mut c = self.client().await?;
            let tx = self.note(c.transaction().await)?;
            let now = now_ms();
            let status = a.status.map(i32::from);
            self.note(
                tx.execute(
                    "INSERT INTO attempts (delivery_id, at, status, error, duration_ms) VALUES ($1, $2, $3, $4, $5)",
                    &[&delivery_id, &a.at_ms, &status, &a.error, &a.duration_ms],
                )
                .await,
            )?;
            let r = match &outcome {
                Completion::Delivered => {
                    tx.execute(
                        "UPDATE deliveries SET state = 1, attempts = attempts + 1, claimed_until = 0, updated_at = $2, last_error = NULL WHERE id = $1 AND replays = $3",
                        &[&delivery_id, &now, &replays],
                    )
                    .await
                }
                Completion::Retry { at, error } => {
                    tx.execute(
                        "UPDATE deliveries SET attempts = attempts + 1, claimed_until = 0, next_attempt_at = $2, updated_at = $3, last_error = $4
                         WHERE id = $1 AND state = 0 AND replays = $5",
                        &[&delivery_id, &to_ms(*at), &now, error, &replays],
                    )
                    .await
                }
                Completion::Dead { error } => {
                    tx.execute(
                        "UPDATE deliveries SET state = 2, attempts = attempts + 1, claimed_until = 0, updated_at = $2, last_error = $3
                         WHERE id = $1 AND state = 0 AND replays = $4",
                        &[&delivery_id, &now, error, &replays],
                    )
                    .await
                }
            };
            self.note(r)?;
            self.note(tx.commit().await)?;
            Ok(())
        })
    }

    fn next_due(
        &self,
        route: &str,
        target: &str,
    ) -> BoxFut<'_, Result<Option<SystemTime>, StoreError>> {
        let (route, target) = (route.to_owned(), target.to_owned());
        Box::pin(async move {
            let c = self.client().await?;
            let r = self.note(
                c.query_one(
                    "SELECT MIN(GREATEST(next_attempt_at, claimed_until)) FROM deliveries WHERE route = $1 AND target = $2 AND state = 0",
                    &[&route, &target],
                )
                .await,
            )?;
            Ok(r.get::<_, Option<i64>>(0).map(from_ms))
        })
    }

    fn replay_event(
        &self,
        event_id: &str,
        target: Option<&str>,
    ) -> BoxFut<'_, Result<usize, StoreError>> {
        let (event_id, target) = (event_id.to_owned(), target.map(str::to_owned));
        Box::pin(async move {
            let c = self.client().await?;
            let exists = self.note(
                c.query_opt("SELECT 1 FROM events WHERE id = $1", &[&event_id])
                    .await,
            )?;
            if exists.is_none() {
                return Err(StoreError::NotFound);
            }
            let n = self.note(
                c.execute(
                    "UPDATE deliveries SET state = 0, attempts = 0, next_attempt_at = $3, claimed_until = 0, updated_at = $3, replays = replays + 1
                     WHERE event_id = $1 AND ($2::TEXT IS NULL OR target = $2) AND state != 3",
                    &[&event_id, &target, &now_ms()],
                )
                .await,
            )?;
            Ok(n as usize)
        })
    }

    fn replay_dead(&self, sel: DeadSelector) -> BoxFut<'_, Result<usize, StoreError>> {
        Box::pin(async move {
            let c = self.client().await?;
            let now = now_ms();
            let n = match sel {
                DeadSelector::Ids(ids) => self.note(
                    c.execute(
                        "UPDATE deliveries SET state = 0, attempts = 0, next_attempt_at = $1, claimed_until = 0, updated_at = $1, replays = replays + 1
                         WHERE id = ANY($2) AND state = 2",
                        &[&now, &ids],
                    )
                    .await,
                )?,
                DeadSelector::AllFor { route, target } => self.note(
                    c.execute(
                        "UPDATE deliveries SET state = 0, attempts = 0, next_attempt_at = $1, claimed_until = 0, updated_at = $1, replays = replays + 1
                         WHERE route = $2 AND target = $3 AND state = 2",
                        &[&now, &route, &target],
                    )
                    .await,
                )?,
                DeadSelector::Matching {
                    route,
                    target,
                    error_contains,
                } => self.note(
                    c.execute(
                        "UPDATE deliveries SET state = 0, attempts = 0, next_attempt_at = $1, claimed_until = 0, updated_at = $1, replays = replays + 1
                         WHERE state = 2 AND ($2::TEXT IS NULL OR route = $2) AND ($3::TEXT IS NULL OR target = $3)
                           AND ($4::TEXT IS NULL OR strpos(coalesce(last_error, ''), $4) > 0)",
                        &[&now, &route, &target, &error_contains],
                    )
                    .await,
                )?,
            };
            Ok(n as usize)
        })
    }

    fn list_events(&self, q: EventQuery) -> BoxFut<'_, Result<Vec<EventSummary>, StoreError>> {
        Box::pin(async move {
            let c = self.client().await?;
            let (route_f, target_f) = match q.target.as_deref().map(|t| t.split_once('/')) {
                Some(Some((r, t))) => (Some(r.to_owned()), Some(t.to_owned())),
                Some(None) => (q.route.clone(), q.target.clone()),
                None => (q.route.clone(), None),
            };
            let state = q.state.map(|s| s.code() as i16);
            let since = q.since.map(to_ms);
            let limit = i64::try_from(q.limit).unwrap_or(100);
            let rows = self.note(
                c.query(
                    "SELECT e.id, e.route, e.received_at, length(e.body), e.duplicate_of FROM events e
                     WHERE ($1::TEXT IS NULL OR e.route = $1)
                       AND ($2::BIGINT IS NULL OR e.received_at >= $2)
                       AND ($3::TEXT IS NULL OR e.id < $3)
                       AND (NOT $7::BOOL OR e.duplicate_of IS NOT NULL)
                       AND (($4::TEXT IS NULL AND $5::SMALLINT IS NULL) OR EXISTS (
                            SELECT 1 FROM deliveries d WHERE d.event_id = e.id
                              AND ($4::TEXT IS NULL OR d.target = $4) AND ($5::SMALLINT IS NULL OR d.state = $5)))
                     ORDER BY e.id DESC LIMIT $6",
                    &[&route_f, &since, &q.before, &target_f, &state, &limit, &q.duplicates],
                )
                .await,
            )?;
            let mut out = Vec::new();
            for r in rows {
                let id: String = r.get(0);
                let ds = self.note(
                    c.query(
                        "SELECT id, target, state, attempts, next_attempt_at, last_error FROM deliveries WHERE event_id = $1 ORDER BY id",
                        &[&id],
                    )
                    .await,
                )?;
                out.push(EventSummary {
                    id,
                    route: r.get(1),
                    received_at_ms: r.get(2),
                    body_bytes: usize::try_from(r.get::<_, i32>(3)).unwrap_or(0),
                    deliveries: ds.iter().map(delivery_view).collect(),
                    duplicate_of: r.get(4),
                });
            }
            Ok(out)
        })
    }

    fn get_event(&self, id: &str) -> BoxFut<'_, Result<Option<EventDetail>, StoreError>> {
        let id = id.to_owned();
        Box::pin(async move {
            let c = self.client().await?;
            let Some(r) = self.note(
                c.query_opt(
                    &format!("SELECT {EVENT_COLS}, e.duplicate_of FROM events e WHERE e.id = $1"),
                    &[&id],
                )
                .await,
            )?
            else {
                return Ok(None);
            };
            let event = row_event(&r, 0);
            let ds = self.note(
                c.query(
                    "SELECT id, target, state, attempts, next_attempt_at, last_error FROM deliveries WHERE event_id = $1 ORDER BY id",
                    &[&id],
                )
                .await,
            )?;
            let attempts = self.note(
                c.query(
                    "SELECT a.delivery_id, d.target, a.at, a.status, a.error, a.duration_ms FROM attempts a
                     JOIN deliveries d ON d.id = a.delivery_id WHERE d.event_id = $1 ORDER BY a.id",
                    &[&id],
                )
                .await,
            )?;
            Ok(Some(EventDetail {
                summary: EventSummary {
                    id: event.id.clone(),
                    route: event.route.clone(),
                    received_at_ms: to_ms(event.received_at),
                    body_bytes: event.body.len(),
                    deliveries: ds.iter().map(delivery_view).collect(),
                    duplicate_of: r.get(11),
                },
                attempts: attempts
                    .iter()
                    .map(|r| AttemptView {
                        delivery_id: r.get(0),
                        target: r.get(1),
                        attempt: Attempt {
                            at_ms: r.get(2),
                            status: r
                                .get::<_, Option<i32>>(3)
                                .and_then(|s| u16::try_from(s).ok()),
                            error: r.get(4),
                            duration_ms: r.get(5),
                        },
                    })
                    .collect(),
                event,
            }))
        })
    }

    fn list_dead(
        &self,
        route: Option<String>,
        target: Option<String>,
        limit: usize,
    ) -> BoxFut<'_, Result<Vec<DeadLetter>, StoreError>> {
        Box::pin(async move {
            let c = self.client().await?;
            let limit = i64::try_from(limit).unwrap_or(100);
            let rows = self.note(
                c.query(
                    "SELECT id, event_id, route, target, attempts, last_error, updated_at FROM deliveries
                     WHERE state = 2 AND ($1::TEXT IS NULL OR route = $1) AND ($2::TEXT IS NULL OR target = $2)
                     ORDER BY id DESC LIMIT $3",
                    &[&route, &target, &limit],
                )
                .await,
            )?;
            Ok(rows
                .iter()
                .map(|r| DeadLetter {
                    delivery_id: r.get(0),
                    event_id: r.get(1),
                    route: r.get(2),
                    target: r.get(3),
                    attempts: u32::try_from(r.get::<_, i32>(4)).unwrap_or(0),
                    last_error: r.get(5),
                    updated_at_ms: r.get(6),
                })
                .collect())
        })
    }

    fn stats(&self) -> BoxFut<'_, Result<Vec<TargetStats>, StoreError>> {
        Box::pin(async move {
            let c = self.client().await?;
            let now = now_ms();
            let rows = self.note(
                c.query(
                    "SELECT route, target,
                            count(*) FILTER (WHERE state = 0), count(*) FILTER (WHERE state = 2), count(*) FILTER (WHERE state = 1),
                            MIN(created_at) FILTER (WHERE state = 0)
                     FROM deliveries GROUP BY route, target ORDER BY route, target",
                    &[],
                )
                .await,
            )?;
            Ok(rows
                .iter()
                .map(|r| TargetStats {
                    route: r.get(0),
                    target: r.get(1),
                    pending: r.get::<_, i64>(2) as u64,
                    dead: r.get::<_, i64>(3) as u64,
                    delivered: r.get::<_, i64>(4) as u64,
                    oldest_pending_ms: r.get::<_, Option<i64>>(5).map(|t| (now - t).max(0)),
                })
                .collect())
        })
    }

    fn retire_targets(&self, live: Vec<(String, String)>) -> BoxFut<'_, Result<usize, StoreError>> {
        Box::pin(async move {
            let c = self.client().await?;
            let rows = self.note(
                c.query(
                    "SELECT DISTINCT route, target FROM deliveries WHERE state = 0",
                    &[],
                )
                .await,
            )?;
            let mut n = 0;
            for r in rows {
                let (route, target): (String, String) = (r.get(0), r.get(1));
                if !live.iter().any(|(lr, lt)| *lr == route && *lt == target) {
                    n += self.note(
                        c.execute(
                            "UPDATE deliveries SET state = 2, claimed_until = 0, updated_at = $3,
                             last_error = 'target removed from the config' WHERE route = $1 AND target = $2 AND state = 0",
                            &[&route, &target, &now_ms()],
                        )
                        .await,
                    )? as usize;
                }
            }
            Ok(n)
        })
    }

    fn purge(&self, older_than: SystemTime, batch: usize) -> BoxFut<'_, Result<usize, StoreError>> {
        Box::pin(async move {
            let mut c = self.client().await?;
            let tx = self.note(c.transaction().await)?;
            let limit = i64::try_from(batch).unwrap_or(1000);
            let ids: Vec<String> = self
                .note(
                    tx.query(
                        "SELECT e.id FROM events e WHERE e.received_at < $1 AND NOT EXISTS (
                            SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.state IN (0, 2))
                         LIMIT $2 FOR UPDATE SKIP LOCKED",
                        &[&to_ms(older_than), &limit],
                    )
                    .await,
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            self.note(
                tx.execute(
                    "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_id = ANY($1))",
                    &[&ids],
                )
                .await,
            )?;
            self.note(
                tx.execute("DELETE FROM deliveries WHERE event_id = ANY($1)", &[&ids])
                    .await,
            )?;
            self.note(
                tx.execute("DELETE FROM events WHERE id = ANY($1)", &[&ids])
                    .await,
            )?;
            self.note(
                tx.execute("DELETE FROM dedup WHERE expires_at < $1", &[&now_ms()])
                    .await,
            )?;
            self.note(tx.commit().await)?;
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
        Box::pin(async move {
            let c = self.client().await?;
            let sql = if paused {
                "INSERT INTO paused (route, target) VALUES ($1, $2) ON CONFLICT DO NOTHING"
            } else {
                "DELETE FROM paused WHERE route = $1 AND target = $2"
            };
            self.note(c.execute(sql, &[&route, &target]).await)?;
            Ok(())
        })
    }

    fn paused(&self) -> BoxFut<'_, Result<Vec<(String, String)>, StoreError>> {
        Box::pin(async move {
            let c = self.client().await?;
            let rows = self.note(
                c.query(
                    "SELECT route, target FROM paused ORDER BY route, target",
                    &[],
                )
                .await,
            )?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn size_on_disk(&self) -> u64 {
        // Not bounded by hookgate: PostgreSQL's own monitoring covers it.
        0
    }

    fn healthy(&self) -> bool {
        self.migrated.load(Ordering::Acquire) && self.healthy.load(Ordering::Acquire)
    }

    fn wakes(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        Some(self.wakes.subscribe())
    }

    fn fleet_concurrency(&self, route: &str, target: &str, n: usize) {
        self.set_concurrency(route, target, n);
    }

    fn take_token(
        &self,
        route: &str,
        target: &str,
        per_second: f64,
        burst: f64,
    ) -> BoxFut<'_, Result<Option<bool>, StoreError>> {
        let key = format!("{route}/{target}");
        Box::pin(async move {
            let c = self.client().await?;
            let now = now_ms();
            // A token bucket shared by the fleet: refill by elapsed time, take one if there is one.
            let row = self.note(
                c.query_opt(
                    "INSERT INTO rate_buckets (key, tokens, updated_ms) VALUES ($1, $2::FLOAT8 - 1, $3::BIGINT)
                     ON CONFLICT (key) DO UPDATE SET
                        tokens = LEAST($2::FLOAT8, rate_buckets.tokens + ($3::BIGINT - rate_buckets.updated_ms) * $4::FLOAT8 / 1000.0) - 1,
                        updated_ms = $3::BIGINT
                     WHERE LEAST($2::FLOAT8, rate_buckets.tokens + ($3::BIGINT - rate_buckets.updated_ms) * $4::FLOAT8 / 1000.0) >= 1
                     RETURNING tokens",
                    &[&key, &burst, &now, &per_second],
                )
                .await,
            )?;
            Ok(Some(row.is_some()))
        })
    }
}
