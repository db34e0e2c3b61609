//! The PostgreSQL store, which lets several node replicas of one agency share one database.
//!
//! **Layout.** One table, `kv(key bytea primary key, value bytea)`, carries the [`Store`] trait
//! unchanged. bytea compares bytewise, so key order is the trait's order and a prefix scan is a
//! range query on the primary key. [`Store::insert_if_absent`] is one
//! `INSERT … ON CONFLICT DO NOTHING`, so a replay refused by one replica is refused by all. A
//! batch is one transaction. [`Store::apply_if`] takes a transaction-scoped advisory lock named
//! by its guard key, locks the guard's row, compares the value with the one the caller read and
//! writes only if it is unchanged: the audit writers of several replicas serialise on the log's
//! head and a replica whose view is stale writes nothing.
//!
//! **Schema.** Versioned migrations (`node/migrations/NNNN_name.sql`, compiled in) run when a
//! store is opened, in one transaction under an advisory lock, so replicas starting together
//! apply each one once. A database migrated by a newer node is refused.
//!
//! **Calling a network database behind a synchronous trait.** [`Store`] is synchronous and is
//! called from blocking threads and directly from async handlers on tokio workers. The store
//! owns [`CONNECTIONS`] threads; each runs its own single-threaded tokio runtime owning one
//! tokio-postgres client and its connection task. A call sends a job over a channel and blocks
//! on the reply. The round trip is driven only by the connection thread's runtime, never by
//! the caller's, so a caller blocked on a tokio worker can never starve the I/O it waits for
//! (the deadlock that `Handle::block_on`, or the blocking `postgres` client, risks inside a
//! runtime); a worker blocked this way costs what a sled read that misses its cache costs.
//! `block_in_place` was not chosen: it panics on a current-thread runtime and would make every
//! call site's runtime flavour matter. Jobs never wait on each other or on callers, so the
//! pool cannot deadlock; a transaction lives inside one job.
//!
//! **Failure.** A connection that fails is dropped and the next job connects again, so the
//! store resumes by itself when the database returns; meanwhile every operation fails, and a
//! node that cannot log does not disclose. [`Store::flush`] has nothing to do: a transaction is
//! durable once COMMIT returns (with PostgreSQL's default `synchronous_commit = on`).
//!
//! **Transport.** Connections carry no TLS, so a URL may name only a Unix socket or a loopback
//! address: the password and every record would otherwise cross a network in clear.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, NoTls, Statement};

use super::{visit_prefixed, KeyValue, Store, StoreError, Write, WriteBatch};

/// Connection threads per store: enough for the audit writer, the outbox and concurrent
/// handlers to overlap their round trips.
pub const CONNECTIONS: usize = 4;

/// Pairs fetched per round trip by a scan or a visit.
const PAGE: usize = 1024;

/// How long connecting may take before the operation fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema migrations, in order: version, name, SQL.
const MIGRATIONS: &[(i32, &str, &str)] =
    &[(1, "init", include_str!("../../migrations/0001_init.sql"))];

/// Names the advisory lock that serialises migrations (any fixed number; "tgmigr" in ASCII).
const MIGRATION_LOCK: i64 = 0x7467_6d69_6772;

fn pg(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |source| StoreError::Postgres { what, source }
}

/// One operation, run on a connection thread.
enum Op {
    Migrate,
    Get(Vec<u8>),
    Range {
        from: Vec<u8>,
        below: Option<Vec<u8>>,
        limit: usize,
    },
    Last {
        from: Vec<u8>,
        below: Option<Vec<u8>>,
    },
    Count {
        from: Vec<u8>,
        below: Option<Vec<u8>>,
    },
    Apply(Vec<Write>),
    ApplyIf {
        guard: Vec<u8>,
        expected: Option<Vec<u8>>,
        writes: Vec<Write>,
    },
    InsertIfAbsent(Vec<u8>, Vec<u8>),
    /// Every pair in key order, from one REPEATABLE READ snapshot, sent a page at a time; the
    /// caller closing its end stops it.
    Snapshot(mpsc::SyncSender<Vec<KeyValue>>),
}

enum Reply {
    Done,
    Value(Option<Vec<u8>>),
    Pairs(Vec<KeyValue>),
    Count(u64),
    Applied(bool),
}

struct Job {
    op: Op,
    reply: mpsc::SyncSender<Result<Reply, StoreError>>,
}

/// Statements prepared once per connection.
struct Statements {
    get: Statement,
    range: Statement,
    range_open: Statement,
    last: Statement,
    last_open: Statement,
    count: Statement,
    count_open: Statement,
    insert_if_absent: Statement,
    delete_many: Statement,
    upsert_many: Statement,
    lock: Statement,
    read_guard: Statement,
}

impl Statements {
    async fn prepare(c: &Client) -> Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            get: c.prepare("SELECT value FROM kv WHERE key = $1").await?,
            range: c
                .prepare(
                    "SELECT key, value FROM kv WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3",
                )
                .await?,
            range_open: c
                .prepare("SELECT key, value FROM kv WHERE key >= $1 ORDER BY key LIMIT $2")
                .await?,
            last: c
                .prepare(
                    "SELECT key, value FROM kv WHERE key >= $1 AND key < $2 \
                     ORDER BY key DESC LIMIT 1",
                )
                .await?,
            last_open: c
                .prepare("SELECT key, value FROM kv WHERE key >= $1 ORDER BY key DESC LIMIT 1")
                .await?,
            count: c
                .prepare("SELECT count(*) FROM kv WHERE key >= $1 AND key < $2")
                .await?,
            count_open: c.prepare("SELECT count(*) FROM kv WHERE key >= $1").await?,
            insert_if_absent: c
                .prepare("INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                .await?,
            delete_many: c
                .prepare("DELETE FROM kv WHERE key = ANY($1::bytea[])")
                .await?,
            upsert_many: c
                .prepare(
                    "INSERT INTO kv (key, value) \
                     SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                )
                .await?,
            lock: c.prepare("SELECT pg_advisory_xact_lock($1)").await?,
            read_guard: c
                .prepare("SELECT value FROM kv WHERE key = $1 FOR UPDATE")
                .await?,
        })
    }
}

/// One connection thread's state: its client, once connected, and its statements.
struct Connection {
    config: tokio_postgres::Config,
    client: Option<(Client, Option<Statements>)>,
}

/// The keys a batch removes, then the keys and values it leaves.
type Collapsed<'a> = (Vec<&'a [u8]>, Vec<&'a [u8]>, Vec<&'a [u8]>);

/// A batch reduced to its effect: the keys it removes and the pairs it leaves, each key once
/// (a later write to a key replaces an earlier one, as applying the writes in order would).
fn collapse(writes: &[Write]) -> Collapsed<'_> {
    let mut last: BTreeMap<&[u8], Option<&[u8]>> = BTreeMap::new();
    for w in writes {
        match w {
            Write::Put(k, v) => last.insert(k, Some(v)),
            Write::Delete(k) => last.insert(k, None),
        };
    }
    let (mut deletes, mut keys, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for (k, v) in last {
        match v {
            Some(v) => {
                keys.push(k);
                values.push(v);
            }
            None => deletes.push(k),
        }
    }
    (deletes, keys, values)
}

/// Names the advisory lock of a guard key.
fn lock_id(guard: &[u8]) -> i64 {
    let digest = Sha256::new()
        .chain_update(b"throughgate guard lock\0")
        .chain_update(guard)
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
    i64::from_be_bytes(first)
}

async fn write_batch(
    tx: &tokio_postgres::Transaction<'_>,
    st: &Statements,
    writes: &[Write],
) -> Result<(), StoreError> {
    let (deletes, keys, values) = collapse(writes);
    if !deletes.is_empty() {
        tx.execute(&st.delete_many, &[&deletes])
            .await
            .map_err(pg("deleting a batch's keys"))?;
    }
    if !keys.is_empty() {
        tx.execute(&st.upsert_many, &[&keys, &values])
            .await
            .map_err(pg("writing a batch's keys"))?;
    }
    Ok(())
}

/// How an operation failed: `Unsent` when it certainly changed nothing (a read, or a write
/// whose transaction never began), so it may run again on a new connection; `Failed` otherwise.
enum Failure {
    Unsent(StoreError),
    Failed(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Failed(e)
    }
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn pairs(rows: Vec<tokio_postgres::Row>) -> Result<Vec<KeyValue>, StoreError> {
    rows.into_iter()
        .map(|r| {
            Ok((
                r.try_get(0).map_err(pg("reading a key"))?,
                r.try_get(1).map_err(pg("reading a value"))?,
            ))
        })
        .collect()
}

impl Connection {
    async fn migrate(client: &mut Client) -> Result<(), StoreError> {
        let tx = client
            .transaction()
            .await
            .map_err(pg("starting the migration transaction"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg("locking for migrations"))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS throughgate_migrations (\
                 version integer PRIMARY KEY, \
                 name text NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(pg("creating the migrations table"))?;
        let applied: Vec<i32> = tx
            .query(
                "SELECT version FROM throughgate_migrations ORDER BY version",
                &[],
            )
            .await
            .map_err(pg("reading applied migrations"))?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(pg("reading applied migrations"))?;
        let known = MIGRATIONS.last().map_or(0, |(v, _, _)| *v);
        if let Some(newest) = applied.iter().copied().filter(|v| *v > known).max() {
            return Err(StoreError::SchemaTooNew {
                found: newest,
                known,
            });
        }
        for (version, name, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            tx.batch_execute(sql)
                .await
                .map_err(|source| StoreError::Migration {
                    version: *version,
                    name,
                    source,
                })?;
            tx.execute(
                "INSERT INTO throughgate_migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .await
            .map_err(pg("recording a migration"))?;
            tracing::info!(version, name, "applied a PostgreSQL schema migration");
        }
        tx.commit().await.map_err(pg("committing migrations"))
    }

    /// The client (connecting if there is none) and, unless `bare`, its prepared statements.
    async fn client(
        &mut self,
        bare: bool,
    ) -> Result<(&mut Client, Option<&Statements>), StoreError> {
        if self.client.as_ref().is_some_and(|(c, _)| c.is_closed()) {
            self.client = None;
        }
        let (client, stmts) = match &mut self.client {
            Some(c) => c,
            slot @ None => {
                let (client, connection) = self
                    .config
                    .connect(NoTls)
                    .await
                    .map_err(pg("connecting to the database"))?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::warn!(error = %e, "PostgreSQL connection closed");
                    }
                });
                slot.insert((client, None))
            }
        };
        if !bare && stmts.is_none() {
            *stmts = Some(
                Statements::prepare(client)
                    .await
                    .map_err(pg("preparing statements"))?,
            );
        }
        Ok((client, stmts.as_ref()))
    }

    /// Runs `op`. A connection that died while idle (the server restarted) is found only by
    /// using it: an operation that certainly changed nothing then runs once more on a new
    /// connection, so the first call after an outage succeeds. One whose effect is unknown (a
    /// write cut off after it began) is not repeated: it fails, and its caller decides.
    async fn run(&mut self, op: &Op) -> Result<Reply, StoreError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let result = self.execute(op).await;
            let closed = self.client.as_ref().is_some_and(|(c, _)| c.is_closed());
            if result.is_err() && closed {
                self.client = None;
            }
            match result {
                Ok(reply) => return Ok(reply),
                Err(Failure::Unsent(_)) if closed && tries < 2 => continue,
                Err(Failure::Unsent(e) | Failure::Failed(e)) => return Err(e),
            }
        }
    }

    async fn execute(&mut self, op: &Op) -> Result<Reply, Failure> {
        if let Op::Migrate = op {
            let (client, _) = self.client(true).await?;
            Connection::migrate(client).await?;
            return Ok(Reply::Done);
        }
        let (client, st) = self.client(false).await.map_err(Failure::Unsent)?;
        let st = st.ok_or(StoreError::Backend("statements were not prepared".into()))?;
        let unsent = |what| move |e| Failure::Unsent(pg(what)(e));
        match op {
            Op::Migrate => Ok(Reply::Done),
            Op::Get(key) => {
                let row = client
                    .query_opt(&st.get, &[key])
                    .await
                    .map_err(unsent("reading a key"))?;
                Ok(Reply::Value(match row {
                    Some(r) => Some(r.try_get(0).map_err(pg("reading a value"))?),
                    None => None,
                }))
            }
            Op::Range { from, below, limit } => {
                let rows = match below {
                    Some(below) => {
                        client
                            .query(&st.range, &[from, below, &limit_param(*limit)])
                            .await
                    }
                    None => {
                        client
                            .query(&st.range_open, &[from, &limit_param(*limit)])
                            .await
                    }
                }
                .map_err(unsent("scanning keys"))?;
                Ok(Reply::Pairs(pairs(rows)?))
            }
            Op::Last { from, below } => {
                let rows = match below {
                    Some(below) => client.query(&st.last, &[from, below]).await,
                    None => client.query(&st.last_open, &[from]).await,
                }
                .map_err(unsent("reading the last key"))?;
                Ok(Reply::Pairs(pairs(rows)?))
            }
            Op::Count { from, below } => {
                let row = match below {
                    Some(below) => client.query_one(&st.count, &[from, below]).await,
                    None => client.query_one(&st.count_open, &[from]).await,
                }
                .map_err(unsent("counting keys"))?;
                let n: i64 = row.try_get(0).map_err(pg("counting keys"))?;
                Ok(Reply::Count(u64::try_from(n).unwrap_or(0)))
            }
            Op::Snapshot(sink) => {
                let tx = client
                    .build_transaction()
                    .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .await
                    .map_err(unsent("starting a snapshot"))?;
                let mut from = Vec::new();
                loop {
                    let rows = tx
                        .query(&st.range_open, &[&from, &limit_param(PAGE)])
                        .await
                        .map_err(pg("reading a snapshot"))?;
                    let page = pairs(rows)?;
                    let full = page.len() == PAGE;
                    if let Some((k, _)) = page.last() {
                        from = k.clone();
                        from.push(0);
                    }
                    if !page.is_empty() && sink.send(page).is_err() {
                        break;
                    }
                    if !full {
                        break;
                    }
                }
                tx.rollback().await.map_err(pg("ending a snapshot"))?;
                Ok(Reply::Done)
            }
            Op::InsertIfAbsent(key, value) => {
                // Repeating it is safe: had the first attempt inserted, the second reports the
                // key present, which refuses (a replay) rather than accepts twice.
                let n = client
                    .execute(&st.insert_if_absent, &[key, value])
                    .await
                    .map_err(unsent("inserting a key if absent"))?;
                Ok(Reply::Applied(n == 1))
            }
            Op::Apply(writes) => {
                let tx = client
                    .transaction()
                    .await
                    .map_err(unsent("starting a batch"))?;
                write_batch(&tx, st, writes).await?;
                tx.commit().await.map_err(pg("committing a batch"))?;
                Ok(Reply::Done)
            }
            Op::ApplyIf {
                guard,
                expected,
                writes,
            } => {
                let tx = client
                    .transaction()
                    .await
                    .map_err(unsent("starting a batch"))?;
                // The advisory lock serialises writers of this guard even while its row does
                // not exist yet; the row lock and the comparison then see the last committed
                // value (each statement reads afresh under READ COMMITTED).
                tx.execute(&st.lock, &[&lock_id(guard)])
                    .await
                    .map_err(pg("locking a guard key"))?;
                let current: Option<Vec<u8>> = match tx
                    .query_opt(&st.read_guard, &[guard])
                    .await
                    .map_err(pg("reading a guard key"))?
                {
                    Some(r) => Some(r.try_get(0).map_err(pg("reading a guard key"))?),
                    None => None,
                };
                if current != *expected {
                    tx.rollback().await.map_err(pg("abandoning a batch"))?;
                    return Ok(Reply::Applied(false));
                }
                write_batch(&tx, st, writes).await?;
                tx.commit().await.map_err(pg("committing a batch"))?;
                Ok(Reply::Applied(true))
            }
        }
    }
}

/// The first key after every key that starts with `prefix`, or `None` if there is none (an
/// empty prefix, or one of only 0xff bytes).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Whether a URL's hosts are all on this machine (Unix sockets or loopback addresses).
pub(crate) fn check_local(config: &tokio_postgres::Config) -> Result<(), StoreError> {
    for host in config.get_hosts() {
        if let Host::Tcp(name) = host {
            let loopback = name == "localhost"
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(StoreError::Config(format!(
                    "the PostgreSQL URL names the host {name}, which is neither a Unix socket \
                     nor a loopback address; this node connects without TLS, so name a Unix \
                     socket (host=/path/to/socket/dir) or 127.0.0.1 and run the database, or a \
                     TLS-terminating proxy to it, on this machine"
                )));
            }
        }
    }
    for addr in config.get_hostaddrs() {
        if !addr.is_loopback() {
            return Err(StoreError::Config(format!(
                "the PostgreSQL URL names the address {addr}, which is not loopback; name a Unix \
                 socket or a loopback address"
            )));
        }
    }
    Ok(())
}

/// The PostgreSQL store. Cloning shares the connection threads.
#[derive(Clone)]
pub struct PostgresStore {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresStore")
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgresql://` URL or `key=value` pairs, naming a
    /// Unix socket or a loopback address), applies any schema migrations it lacks, and starts
    /// the connection threads.
    pub fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|source| StoreError::Postgres {
                what: "reading the database URL",
                source,
            })?;
        check_local(&config)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("throughgate-node");
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..CONNECTIONS {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StoreError::Backend(Box::new(e)))?;
            let mut conn = Connection {
                config: config.clone(),
                client: None,
            };
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("tg-postgres-{n}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(rx) => match rx.recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        },
                        Err(_) => return,
                    };
                    let result = runtime.block_on(conn.run(&job.op));
                    let _ = job.reply.send(result);
                })
                .map_err(|e| StoreError::Backend(Box::new(e)))?;
        }
        let store = PostgresStore { jobs: tx };
        store.call(Op::Migrate)?;
        Ok(store)
    }

    fn call(&self, op: Op) -> Result<Reply, StoreError> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.jobs
            .send(Job { op, reply })
            .map_err(|_| StoreError::Backend("the PostgreSQL connection threads stopped".into()))?;
        rx.recv()
            .map_err(|_| StoreError::Backend("a PostgreSQL connection thread stopped".into()))?
    }

    fn pairs(&self, op: Op) -> Result<Vec<KeyValue>, StoreError> {
        match self.call(op)? {
            Reply::Pairs(p) => Ok(p),
            _ => Err(unexpected()),
        }
    }

    fn applied(&self, op: Op) -> Result<bool, StoreError> {
        match self.call(op)? {
            Reply::Applied(a) => Ok(a),
            _ => Err(unexpected()),
        }
    }
}

fn unexpected() -> StoreError {
    StoreError::Backend("a PostgreSQL connection thread answered out of turn".into())
}

impl Store for PostgresStore {
    fn snapshot(&self, visit: &mut super::PairVisitor<'_>) -> Option<Result<u64, StoreError>> {
        let (sink, pages) = mpsc::sync_channel(2);
        let (reply, done) = mpsc::sync_channel(1);
        if self
            .jobs
            .send(Job {
                op: Op::Snapshot(sink),
                reply,
            })
            .is_err()
        {
            return Some(Err(StoreError::Backend(
                "the PostgreSQL connection threads stopped".into(),
            )));
        }
        let mut n = 0u64;
        let mut failed = None;
        for page in &pages {
            for (k, v) in &page {
                if let Err(e) = visit(k, v) {
                    failed = Some(e);
                    break;
                }
                n += 1;
            }
            if failed.is_some() {
                break;
            }
        }
        drop(pages);
        let finished = done
            .recv()
            .map_err(|_| StoreError::Backend("a PostgreSQL connection thread stopped".into()))
            .and_then(|r| r.map(|_| ()));
        Some(match (failed, finished) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(())) => Ok(n),
        })
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.call(Op::Get(key.to_vec()))? {
            Reply::Value(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }

    fn scan(
        &self,
        prefix: &[u8],
        start: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        let mut from = start.unwrap_or(prefix).to_vec();
        let below = prefix_end(prefix);
        while out.len() < limit {
            let want = (limit - out.len()).min(PAGE);
            let page = self.pairs(Op::Range {
                from: from.clone(),
                below: below.clone(),
                limit: want,
            })?;
            let full = page.len() == want;
            if let Some((k, _)) = page.last() {
                from = k.clone();
                from.push(0);
            }
            // As every store: the scan ends at the first key outside the prefix.
            let mut ended = false;
            for (k, v) in page {
                if !k.starts_with(prefix) {
                    ended = true;
                    break;
                }
                out.push((k, v));
            }
            if ended || !full {
                break;
            }
        }
        Ok(out)
    }

    fn visit(
        &self,
        prefix: &[u8],
        start: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let mut from = start.unwrap_or(prefix).to_vec();
        let below = prefix_end(prefix);
        loop {
            let page = self.pairs(Op::Range {
                from: from.clone(),
                below: below.clone(),
                limit: PAGE,
            })?;
            let full = page.len() == PAGE;
            let mut stopped = false;
            if let Some((k, _)) = page.last() {
                from = k.clone();
                from.push(0);
            }
            visit_prefixed(
                page.iter().map(|(k, v)| Ok::<_, StoreError>((k, v))),
                prefix,
                &mut |k, v| {
                    let go_on = visit(k, v);
                    stopped = !go_on;
                    go_on
                },
            )?;
            if stopped || !full {
                return Ok(());
            }
        }
    }

    fn last(&self, prefix: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        Ok(self
            .pairs(Op::Last {
                from: prefix.to_vec(),
                below: prefix_end(prefix),
            })?
            .into_iter()
            .next())
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        match self.call(Op::Apply(batch.writes))? {
            Reply::Done => Ok(()),
            _ => Err(unexpected()),
        }
    }

    fn apply_if(
        &self,
        guard: &[u8],
        expected: Option<&[u8]>,
        batch: WriteBatch,
    ) -> Result<bool, StoreError> {
        self.applied(Op::ApplyIf {
            guard: guard.to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            writes: batch.writes,
        })
    }

    fn insert_if_absent(&self, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        self.applied(Op::InsertIfAbsent(key.to_vec(), value.to_vec()))
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn count(&self, prefix: &[u8]) -> Result<u64, StoreError> {
        match self.call(Op::Count {
            from: prefix.to_vec(),
            below: prefix_end(prefix),
        })? {
            Reply::Count(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_before_the_first_key_it_does_not_start() {
        assert_eq!(prefix_end(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn a_batch_collapses_to_the_last_write_of_each_key() {
        let writes = [
            Write::Put(b"k".to_vec(), b"1".to_vec()),
            Write::Delete(b"k".to_vec()),
            Write::Delete(b"j".to_vec()),
            Write::Put(b"j".to_vec(), b"2".to_vec()),
            Write::Put(b"j".to_vec(), b"3".to_vec()),
        ];
        let (deletes, keys, values) = collapse(&writes);
        assert_eq!(deletes, vec![&b"k"[..]]);
        assert_eq!(keys, vec![&b"j"[..]]);
        assert_eq!(values, vec![&b"3"[..]]);
    }

    #[test]
    fn only_a_unix_socket_or_loopback_is_accepted() {
        for ok in [
            "host=/run/postgresql dbname=tg",
            "postgresql://tg@localhost/tg",
            "postgresql://tg@127.0.0.1:5432/tg",
            "postgresql://tg@[::1]/tg",
            "host=/tmp/x hostaddr=127.0.0.1",
        ] {
            check_local(&ok.parse().unwrap()).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "postgresql://tg:secret@db.example.org/tg",
            "postgresql://tg@10.0.0.5/tg",
            "host=localhost hostaddr=10.1.2.3",
        ] {
            let err = check_local(&bad.parse().unwrap()).unwrap_err().to_string();
            assert!(err.contains("loopback"), "{bad}: {err}");
        }
    }
}
