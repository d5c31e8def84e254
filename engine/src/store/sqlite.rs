//! The SQLite backend: one file in WAL mode, a pool of readers, one writer
//! thread that commits writes in groups, and one sync thread that flushes
//! each commit to disk before its callers hear of it.
//!
//! Reads go through sqlx's pool (those whose SQL PostgreSQL shares are in
//! `reads`; here only the claim's). Writes go through a dedicated thread that
//! owns a synchronous rusqlite connection: sqlx runs each statement as a
//! round trip to its connection's worker thread, and an ingested event takes
//! about fourteen statements from arrival to logged attempt. On one thread
//! the statements of a whole group run back to back, with one wake-up per
//! group; its fsync runs beside the next group, not before it. A group
//! stays open while the last one is being flushed (its callers could not be
//! answered before the next flush anyway), and until a short pace after the
//! last one began: one commit instead of several writes each page the group
//! changes to the log once.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::OptionalExtension;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Connection, Row, SqliteConnection};
use tokio::sync::{Notify, mpsc, oneshot};

use super::rows::*;
use super::*;
use crate::telemetry;

/// A unit of work for the writer: it runs inside a group's transaction,
/// keeps its result, and answers its caller once the group is durable.
///
/// A job may run twice. A group first runs without savepoints: a savepoint
/// copies each page the job then changes into a journal, and the jobs of a
/// group change the same pages over and over (the ends of the same
/// indexes). When a job fails, the group is rolled back and run again with
/// a savepoint per job, so that only the failed one's writes are undone.
trait Job: Send {
    /// Runs the job in `conn`'s open transaction; why it failed, if it did.
    fn run(&mut self, conn: &rusqlite::Connection) -> std::result::Result<(), String>;
    /// Answers the caller: the last run's result if the group committed.
    fn answer(self: Box<Self>, commit: std::result::Result<(), String>);
}

/// A store call's job: its writes, its result, and where the result goes.
struct Call<T, F> {
    writes: F,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Call<T, F>
where
    T: Send,
    F: Fn(&rusqlite::Connection) -> Result<T> + Send,
{
    fn run(&mut self, conn: &rusqlite::Connection) -> std::result::Result<(), String> {
        let result = (self.writes)(conn);
        let outcome = result.as_ref().map(drop).map_err(|e| e.to_string());
        self.result = Some(result);
        outcome
    }

    fn answer(self: Box<Self>, commit: std::result::Result<(), String>) {
        let result = match (commit, self.result) {
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StoreError::Closed),
            (Err(e), _) => Err(StoreError::Commit(e)),
        };
        let _ = self.reply.send(result);
    }
}

/// Most jobs committed together. With a backlog, a group this size is
/// committed at once, even while the last one is being flushed: the next
/// flush takes both. Larger groups (1,024) let every waiting job into one
/// commit, and the writer then sat idle while that whole wave of callers
/// was answered and came back (tests/LOAD.md, "Attempt groups in flight").
const MAX_GROUP: usize = 256;

/// The shortest time between the starts of two groups. Below full rate
/// the writer was idle between small groups and committed each at once:
/// at half rate ~1,900 groups a second of 3.4 jobs, each writing the same
/// index ends to the log and waking the sync thread. 2 ms took the engine's
/// CPU per event at half rate from 8.5 to 7.5 raw exchanges and added
/// ~3 ms to the median latency (tests/LOAD.md); a write that finds the
/// writer idle for longer than this is not held at all.
const COMMIT_PACE: Duration = Duration::from_millis(2);

/// Committed groups the sync thread has not flushed yet, and a wake-up for
/// the writer when there are none left.
#[derive(Default)]
struct Flushing {
    groups: AtomicUsize,
    done: Notify,
    /// Flushes so far: the tests' way to see which writes need one.
    syncs: AtomicUsize,
}

/// An attempt to record, and where its answer goes.
type AttemptJob = (NewAttempt, oneshot::Sender<Result<FailureStreak>>);

/// Most attempts recorded in one writer job.
const MAX_ATTEMPT_GROUP: usize = 256;

/// Groups of attempts handed to the writer and not yet durable. With one,
/// a node recorded at most [`MAX_ATTEMPT_GROUP`] attempts per commit and
/// flush, however many cores it had to send with (tests/LOAD.md, "Attempt
/// groups in flight").
const ATTEMPT_GROUPS_IN_FLIGHT: usize = 4;

#[derive(Clone)]
pub struct SqliteStore {
    pub(super) read: SqlitePool,
    writer: mpsc::Sender<Box<dyn Job>>,
    /// Attempts to record: grouped, one writer job for all those waiting
    /// (one wake-up, and one savepoint when a group is run again).
    attempts: mpsc::Sender<AttemptJob>,
    /// Rate-limit slots: with one node they need no database, and writing
    /// them would put a commit before every rate-limited request.
    slots: Arc<Mutex<HashMap<ConfigId, Instant>>>,
    /// Event types known to be in each tenant's catalog (committed there by
    /// an earlier ingest; a catalog row is never deleted): an ingest of
    /// only these writes no catalog row.
    catalogued: Arc<Mutex<HashMap<TenantId, HashSet<String>>>>,
    /// What the sync thread has flushed, and is flushing.
    #[cfg_attr(not(test), allow(dead_code))]
    flushing: Arc<Flushing>,
}

/// Types [`SqliteStore::catalogued`] remembers before it starts over: a
/// tenant inventing types costs memory no longer than this.
const CATALOGUED_MAX: usize = 65_536;

impl SqliteStore {
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("cache_size", "-32768");
        let mut conn = SqliteConnection::connect_with(&options).await?;
        sqlx::migrate!("./migrations/sqlite").run(&mut conn).await?;
        conn.close().await?;
        let read = SqlitePoolOptions::new().max_connections(8).min_connections(1).connect_with(options.read_only(true)).await?;
        let writer_conn = open_writer(path)?;
        let wal = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(wal_path(path))
            .map_err(|e| StoreError::Commit(format!("cannot open the write-ahead log: {e}")))?;
        let (writer, jobs) = mpsc::channel(8192);
        let (committed, synced) = std::sync::mpsc::channel();
        let flushing = Arc::new(Flushing::default());
        let waits = (tokio::runtime::Handle::current(), flushing.clone());
        let flushes = flushing.clone();
        std::thread::Builder::new()
            .name("sluice-sqlite-writer".into())
            .spawn(move || write_loop(writer_conn, jobs, committed, waits))
            .map_err(|e| StoreError::Commit(format!("cannot start the writer thread: {e}")))?;
        let checkpointer = rusqlite::Connection::open(path)?;
        // A restart waits for the writer to finish its group, not longer.
        checkpointer.busy_handler(Some(|attempt| wait_for_lock(attempt, RESTART_WAIT)))?;
        let (nudge, nudged) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("sluice-sqlite-ckpt".into())
            .spawn(move || checkpoint_loop(checkpointer, nudged))
            .map_err(|e| StoreError::Commit(format!("cannot start the checkpoint thread: {e}")))?;
        std::thread::Builder::new()
            .name("sluice-sqlite-sync".into())
            .spawn(move || sync_loop(wal, synced, nudge, flushing))
            .map_err(|e| StoreError::Commit(format!("cannot start the sync thread: {e}")))?;
        let (attempts, queue) = mpsc::channel(4096);
        tokio::spawn(write_attempts(writer.clone(), queue));
        Ok(Self { read, writer, attempts, slots: Arc::default(), catalogued: Arc::default(), flushing: flushes })
    }

    /// Flushes of the log so far.
    #[cfg(test)]
    pub(super) fn syncs(&self) -> usize {
        self.flushing.syncs.load(Ordering::Relaxed)
    }

    /// One node: every change is made through it.
    pub async fn watch(&self) -> Result<Option<mpsc::Receiver<Change>>> {
        Ok(None)
    }

    pub async fn close(&self) {
        // The writer ends when every sender is gone; readers close here.
        self.read.close().await;
    }

    /// Runs `f` in the writer's next group transaction: if `f` fails, its
    /// writes are undone and the group goes on. `f` may run more than once
    /// (see [`Job`]); the caller hears the last run's result.
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&rusqlite::Connection) -> Result<T> + Send + 'static,
    {
        write_with(&self.writer, f).await
    }
}

/// [`SqliteStore::write`] through the writer's queue `writer`.
async fn write_with<T, F>(writer: &mpsc::Sender<Box<dyn Job>>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: Fn(&rusqlite::Connection) -> Result<T> + Send + 'static,
{
    submit(writer, f).await?.await.map_err(|_| StoreError::Closed)?
}

/// Queues `f` on the writer; its result comes on the receiver returned.
async fn submit<T, F>(writer: &mpsc::Sender<Box<dyn Job>>, f: F) -> Result<oneshot::Receiver<Result<T>>>
where
    T: Send + 'static,
    F: Fn(&rusqlite::Connection) -> Result<T> + Send + 'static,
{
    let (reply, rx) = oneshot::channel::<Result<T>>();
    let job = Box::new(Call { writes: f, result: None, reply });
    writer.send(job).await.map_err(|_| StoreError::Closed)?;
    Ok(rx)
}

/// Records the attempts waiting, all in one writer job, while up to
/// [`ATTEMPT_GROUPS_IN_FLIGHT`] earlier groups are still being committed:
/// each group is handed to the writer in order as it is taken, and
/// answered by a task of its own.
async fn write_attempts(writer: mpsc::Sender<Box<dyn Job>>, mut queue: mpsc::Receiver<AttemptJob>) {
    let room = Arc::new(tokio::sync::Semaphore::new(ATTEMPT_GROUPS_IN_FLIGHT));
    let mut jobs = Vec::with_capacity(MAX_ATTEMPT_GROUP);
    loop {
        let Ok(turn) = room.clone().acquire_owned().await else { return };
        if queue.recv_many(&mut jobs, MAX_ATTEMPT_GROUP).await == 0 {
            return;
        }
        let (attempts, replies): (Vec<NewAttempt>, Vec<_>) = std::mem::take(&mut jobs).into_iter().unzip();
        // Shared with the jobs, not copied: the writer may run a job twice,
        // and the attempts are written alone after a failed group.
        let attempts = Arc::new(attempts);
        let group = attempts.clone();
        let Ok(written) = submit(&writer, move |c| insert_attempts(c, &group)).await else { return };
        let writer = writer.clone();
        tokio::spawn(async move {
            answer_attempts(&writer, attempts, replies, written).await;
            drop(turn);
        });
    }
}

/// Answers a group of attempts once its writer job is durable; when that
/// job failed (one attempt's row cannot be stored), writes each alone, so
/// that only that one fails.
async fn answer_attempts(
    writer: &mpsc::Sender<Box<dyn Job>>,
    attempts: Arc<Vec<NewAttempt>>,
    mut replies: Vec<oneshot::Sender<Result<FailureStreak>>>,
    written: oneshot::Receiver<Result<Vec<FailureStreak>>>,
) {
    let e = match written.await.map_err(|_| StoreError::Closed).and_then(|written| written) {
        Ok(streaks) => {
            for (reply, streak) in replies.into_iter().zip(streaks) {
                let _ = reply.send(Ok(streak));
            }
            return;
        }
        Err(StoreError::Closed) => return,
        Err(e) => e,
    };
    if replies.len() == 1 {
        // Written alone already: its caller hears why.
        if let Some(reply) = replies.pop() {
            let _ = reply.send(Err(e));
        }
        return;
    }
    tracing::debug!(error = %e, attempts = attempts.len(), "writing a group of attempts failed; writing them one by one");
    for (i, reply) in replies.into_iter().enumerate() {
        let group = attempts.clone();
        let written = write_with(writer, move |c| insert_attempts(c, &group[i..=i])).await;
        let _ = reply.send(written.map(|mut streaks| streaks.pop().unwrap_or_default()));
    }
}

/// The write-ahead log next to the database file.
fn wal_path(path: &Path) -> std::path::PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    wal.into()
}

fn open_writer(path: &Path) -> Result<rusqlite::Connection> {
    // Through the VFS that writes each commit's log frames in one call
    // (`log_writes`); the readers and the checkpointer need no such thing.
    let vfs = super::log_writes::register().map_err(StoreError::Commit)?;
    let conn = rusqlite::Connection::open_with_flags_and_vfs(path, rusqlite::OpenFlags::default(), vfs)?;
    // With WAL, NORMAL loses nothing when the process dies (a commit is in
    // the WAL file before the call returns), but a power loss may take the
    // last commits. No caller hears of a commit before the sync thread has
    // flushed the log to disk after it: as durable as FULL, and the writer
    // goes on with the next group meanwhile instead of waiting for the disk.
    // (SQLite itself syncs the log before every checkpoint.)
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         -- 8 MiB, not the readers' 32: a B-tree rebalance renumbers a page
         -- through the lock-byte page's number (262,145 with 4-KiB pages), and
         -- every commit that follows one then walks the whole page cache's hash
         -- table, a slot per cached page (3.6 % of the writer's time at 32 MiB).
         PRAGMA cache_size = -8192;
         -- A job run again runs in a savepoint, which keeps the pages it changes
         -- in a sub-journal: in memory, not written to a temporary file.
         PRAGMA temp_store = MEMORY;
         -- Checkpoints run on a thread of their own (`checkpoint_loop`),
         -- which also starts the log over: on the writer they took 9-13 %
         -- of its time, fsyncs included. The writer checkpoints only when
         -- that thread has fallen far behind.
         PRAGMA wal_autocheckpoint = 16384;",
    )?;
    conn.busy_handler(Some(|attempt| wait_for_lock(attempt, WRITER_PATIENCE)))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// How long the writer waits for a lock another connection holds (the
/// checkpoint thread's restart, an operator's `sqlite3` shell) before its
/// group fails.
const WRITER_PATIENCE: Duration = Duration::from_secs(10);

/// SQLite's busy handler for a connection that waits up to `patience`: it
/// tries again every 100 µs for the first 50 ms, then every 5 ms. SQLite's
/// own (`busy_timeout`) sleeps 1, 2, 5, 10, 15, 20, 25 ms... between tries:
/// a restart checkpoint that held the write lock for 3 ms kept the writer
/// asleep for 8, and the writer's waits there were a tenth of its time in
/// the store bench. Each connection is used on one thread at a time, so the
/// wait's start is the thread's.
fn wait_for_lock(attempt: i32, patience: Duration) -> bool {
    thread_local! {
        static SINCE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    }
    let now = Instant::now();
    let since = SINCE.with(|since| {
        if attempt == 0 {
            since.set(Some(now));
        }
        since.get().unwrap_or(now)
    });
    let waited = now.saturating_duration_since(since);
    if waited >= patience {
        return false;
    }
    let step = if waited < Duration::from_millis(50) { Duration::from_micros(100) } else { Duration::from_millis(5) };
    std::thread::sleep(step.min(patience - waited));
    true
}

/// A committed group's answers, whether the commit succeeded, and when
/// the group began (its commit latency is counted once it is durable).
struct Committed {
    jobs: Vec<Box<dyn Job>>,
    commit: std::result::Result<(), String>,
    began: Instant,
    /// Whether the group changed a row: one that changed none (the retry
    /// poller's claim when nothing is due, every 250 ms) has nothing to flush.
    wrote: bool,
}

/// Takes jobs as they come, up to [`MAX_GROUP`] at a time, and commits each
/// group in one transaction. A job that fails is rolled back to its own
/// savepoint; the others still commit (see [`Job`]). While the sync thread
/// is flushing earlier groups, or until [`COMMIT_PACE`] after the last
/// group began, the open group takes the jobs that arrive meanwhile instead
/// of committing. The answers go to the sync thread.
fn write_loop(
    conn: rusqlite::Connection,
    mut jobs: mpsc::Receiver<Box<dyn Job>>,
    committed: std::sync::mpsc::Sender<Committed>,
    (runtime, flushing): (tokio::runtime::Handle, Arc<Flushing>),
) {
    let mut group: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_GROUP);
    // Cached statements: `execute_batch` would parse these every time.
    let run = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([]));
    let mut previous: Option<Instant> = None;
    while let Some(first) = jobs.blocking_recv() {
        let began = Instant::now();
        if let Err(e) = run("BEGIN IMMEDIATE") {
            // Every job waiting now waited for the same lock (another
            // process's, a busy wait of seconds): answered alike at once,
            // not one by one after a wait each.
            let waiting: Vec<_> = std::iter::once(first).chain(std::iter::from_fn(|| jobs.try_recv().ok())).collect();
            tracing::error!(error = %e, jobs = waiting.len(), "cannot begin a write transaction");
            for job in waiting {
                job.answer(Err(format!("cannot begin a write transaction: {e}")));
            }
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let changes = conn.total_changes();
        // Whether the job ran without failing.
        let take = |mut job: Box<dyn Job>, group: &mut Vec<Box<dyn Job>>| {
            let ok = job.run(&conn).is_ok();
            group.push(job);
            ok
        };
        let mut failed = !take(first, &mut group);
        // After a failure the group is run again: it takes no more jobs.
        while !failed {
            while group.len() < MAX_GROUP && !failed {
                match jobs.try_recv() {
                    Ok(job) => failed = !take(job, &mut group),
                    Err(_) => break,
                }
            }
            if failed || group.len() >= MAX_GROUP {
                break;
            }
            let flush_under_way = flushing.groups.load(Ordering::Acquire) > 0;
            let too_soon = previous.map_or(Duration::ZERO, |p| COMMIT_PACE.saturating_sub(p.elapsed()));
            if !flush_under_way && too_soon.is_zero() {
                break;
            }
            if !flush_under_way {
                // The last group began less than [`COMMIT_PACE`] ago: every
                // commit writes the pages its group changed to the log, and a
                // few jobs change nearly as many pages (the ends of the same
                // indexes) as many jobs do. The jobs that come meanwhile wait
                // in the channel; one sleep, not a timer per job.
                std::thread::sleep(too_soon);
                continue;
            }
            // The flush under way answers earlier groups only: wait for it
            // to end, taking the jobs that come meanwhile.
            let next = runtime.block_on(async {
                tokio::select! {
                    job = jobs.recv() => Some(job),
                    () = flushing.done.notified() => None,
                }
            });
            match next {
                Some(Some(job)) => failed = !take(job, &mut group),
                Some(None) => break,
                None => {}
            }
        }
        let mut commit = Ok(());
        if failed {
            // Once more, each job in a savepoint of its own.
            // (An error may have ended the transaction already.)
            if !conn.is_autocommit() {
                let _ = run("ROLLBACK");
            }
            commit = run("BEGIN IMMEDIATE").map(drop).map_err(|e| e.to_string());
            if commit.is_ok() {
                for job in &mut group {
                    let _ = run("SAVEPOINT job");
                    if let Err(e) = job.run(&conn) {
                        if conn.is_autocommit() {
                            // SQLite rolled the whole transaction back (it
                            // may on a full disk, an I/O error, no memory):
                            // the jobs run before this one are undone too,
                            // and those after it would each commit alone.
                            commit = Err(format!("a write failed and took its group with it: {e}"));
                            break;
                        }
                        let _ = run("ROLLBACK TO job");
                    }
                    let _ = run("RELEASE job");
                }
            }
        }
        if commit.is_ok() {
            commit = run("COMMIT").map(drop).map_err(|e| e.to_string());
        }
        if commit.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        // Counted with those of savepoints rolled back and of a failed group:
        // either is flushed as if it had written.
        let wrote = conn.total_changes() != changes || commit.is_err();
        flushing.groups.fetch_add(1, Ordering::AcqRel);
        previous = Some(began);
        let jobs = std::mem::replace(&mut group, Vec::with_capacity(MAX_GROUP));
        if committed.send(Committed { jobs, commit, began, wrote }).is_err() {
            return;
        }
    }
}

/// Flushes the log to disk after each commit (once for all the groups
/// committed meanwhile), then answers their callers: no one hears of a
/// commit before it is durable. Groups that changed nothing are answered
/// without a flush, still in order: what they read was flushed before them.
fn sync_loop(
    wal: std::fs::File,
    committed: std::sync::mpsc::Receiver<Committed>,
    nudge: std::sync::mpsc::SyncSender<()>,
    flushing: Arc<Flushing>,
) {
    while let Ok(first) = committed.recv() {
        let mut groups = vec![first];
        groups.extend(committed.try_iter());
        let synced = if groups.iter().any(|g| g.wrote) {
            let _ = nudge.try_send(());
            flushing.syncs.fetch_add(1, Ordering::Relaxed);
            wal.sync_data().map_err(|e| format!("cannot flush the write-ahead log to disk: {e}"))
        } else {
            Ok(())
        };
        if flushing.groups.fetch_sub(groups.len(), Ordering::AcqRel) == groups.len() {
            flushing.done.notify_one();
        }
        for Committed { jobs, commit, began, .. } in groups {
            telemetry::store_group("writer", jobs.len(), began.elapsed());
            let outcome = commit.and_then(|()| synced.clone());
            for job in jobs {
                job.answer(outcome.clone());
            }
        }
    }
}

/// Copies the log's pages into the database file after commits, at most
/// every [`CHECKPOINT_EVERY`], on a thread of its own instead of the
/// writer's. Passive checkpoints never block the writer, but one that
/// commits run beside never finishes, and only a finished one lets the log
/// start over from its beginning: once the log is past [`RESTART_AT`]
/// frames, a restart checkpoint holds the writer back for the last frames.
/// It gives up when the writer is not between groups within
/// [`RESTART_WAIT`], and is tried again after the next commit.
fn checkpoint_loop(conn: rusqlite::Connection, nudged: std::sync::mpsc::Receiver<()>) {
    while nudged.recv().is_ok() {
        let checkpoint = |mode: &str| {
            conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| row.get::<_, i64>(1))
                .inspect_err(|e| tracing::warn!(error = %e, mode, "a checkpoint failed; the next commit tries again"))
        };
        if let Ok(frames) = checkpoint("PASSIVE")
            && frames >= RESTART_AT
        {
            let _ = checkpoint("RESTART");
        }
        std::thread::sleep(CHECKPOINT_EVERY);
    }
}

/// Log frames (pages) past which the checkpoint thread starts the log over.
const RESTART_AT: i64 = 4096;
/// The longest a checkpoint waits for the writer (or a reader) to let go.
const RESTART_WAIT: Duration = Duration::from_millis(20);
/// The shortest time between two checkpoints.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

impl Columns for SqliteRow {
    fn text(&self, col: &str) -> Result<String> {
        Ok(self.try_get(col)?)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        Ok(self.try_get(col)?)
    }
    fn int(&self, col: &str) -> Result<i64> {
        Ok(self.try_get(col)?)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        Ok(self.try_get(col)?)
    }
    fn flag(&self, col: &str) -> Result<bool> {
        Ok(self.try_get::<i64, _>(col)? != 0)
    }
    fn bytes(&self, col: &str) -> Result<Vec<u8>> {
        Ok(self.try_get(col)?)
    }
    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.try_get(col)?)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, col: &str) -> Result<String> {
        Ok(self.get(col)?)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        Ok(self.get(col)?)
    }
    fn int(&self, col: &str) -> Result<i64> {
        Ok(self.get(col)?)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        Ok(self.get(col)?)
    }
    fn flag(&self, col: &str) -> Result<bool> {
        Ok(self.get::<_, i64>(col)? != 0)
    }
    fn bytes(&self, col: &str) -> Result<Vec<u8>> {
        Ok(self.get(col)?)
    }
    fn opt_bytes(&self, col: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.get(col)?)
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    use rusqlite::ffi::{SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE};
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == SQLITE_CONSTRAINT_UNIQUE || f.extended_code == SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// Inserts a key into its tenant; `None` when the tenant does not exist.
fn insert_key(c: &rusqlite::Connection, key: NewKey, now: i64) -> Result<Option<KeyRecord>> {
    let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
    let inserted = c.execute(
        "INSERT INTO api_keys (id, tenant_id, name, prefix, hash, scopes, created_at, expires_at)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = ?2)",
        rusqlite::params![key.id.as_str(), key.tenant_id.as_str(), key.name, key.prefix, key.hash.0, scopes.join(" "), now, key.expires_at],
    )?;
    Ok((inserted > 0).then(|| key.into_record(now)))
}

/// Maps a unique-constraint failure to [`StoreError::Conflict`] on `what`.
fn conflict_on(what: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| if is_unique_violation(&e) { StoreError::Conflict(what) } else { e.into() }
}

impl SqliteStore {
    // Tenants and keys.

    pub async fn bootstrap(&self, admin: NewKey, tenant_name: &str) -> Result<Option<TenantId>> {
        let name = tenant_name.to_owned();
        self.write(move |c| {
            let now = now_ms();
            c.execute(
                "INSERT INTO tenants (id, name, operator, created_at) VALUES (?, ?, 1, ?)",
                rusqlite::params![admin.tenant_id.as_str(), name, now],
            )?;
            let scopes: Vec<&str> = admin.scopes.iter().map(|s| s.as_str()).collect();
            c.execute(
                "INSERT INTO api_keys (id, tenant_id, name, prefix, hash, scopes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rusqlite::params![
                    admin.id.as_str(),
                    admin.tenant_id.as_str(),
                    admin.name,
                    admin.prefix,
                    admin.hash.0,
                    scopes.join(" "),
                    now
                ],
            )?;
            Ok(Some(admin.tenant_id.clone()))
        })
        .await
    }

    pub async fn create_tenant(&self, name: &str, monthly_quota: Option<i64>) -> Result<TenantRecord> {
        let record = TenantRecord { id: TenantId::generate(), name: name.to_owned(), monthly_quota, created_at: now_ms() };
        self.write(move |c| {
            c.execute(
                "INSERT INTO tenants (id, name, monthly_quota, created_at) VALUES (?, ?, ?, ?)",
                rusqlite::params![record.id.as_str(), record.name, record.monthly_quota, record.created_at],
            )
            .map_err(conflict_on("tenant name"))?;
            Ok(record.clone())
        })
        .await
    }

    pub async fn update_tenant(&self, id: &TenantId, name: &str, monthly_quota: Option<i64>) -> Result<TenantRecord> {
        let (id, name) = (id.clone(), name.to_owned());
        self.write(move |c| {
            let row = c
                .query_row(
                    "UPDATE tenants SET name = ?, monthly_quota = ? WHERE id = ? RETURNING id, name, monthly_quota, created_at",
                    rusqlite::params![name, monthly_quota, id.as_str()],
                    |row| Ok(tenant_row(row)),
                )
                .optional()
                .map_err(conflict_on("tenant name"))?;
            not_found_if_none(row)?
        })
        .await
    }

    pub async fn create_key(&self, key: NewKey) -> Result<KeyRecord> {
        self.write(move |c| {
            let record = insert_key(c, key.clone(), now_ms())?;
            record.ok_or(StoreError::NotFound)
        })
        .await
    }

    pub async fn create_portal_link(&self, link: &NewPortalLink) -> Result<()> {
        let link = link.clone();
        self.write(move |c| {
            let scopes: Vec<&str> = link.scopes.iter().map(|s| s.as_str()).collect();
            let inserted = c.execute(
                "INSERT INTO portal_links (id, tenant_id, hash, scopes, session_ms, expires_at, created_by, created_at)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = ?2)",
                rusqlite::params![
                    link.id.as_str(),
                    link.tenant_id.as_str(),
                    link.hash.0,
                    scopes.join(" "),
                    link.session_ms,
                    link.expires_at,
                    link.created_by.as_ref().map(KeyId::as_str),
                    now_ms()
                ],
            )?;
            if inserted == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    pub async fn redeem_portal_link(&self, hash: &KeyHash, session: SessionKey, now: i64) -> Result<KeyRecord> {
        let hash = hash.0.clone();
        // A job's writes are undone when it fails: when the key cannot be
        // inserted, the link's stamp is rolled back with it.
        self.write(move |c| {
            let link = c
                .query_row(
                    "UPDATE portal_links SET used_at = ?1, session_key = ?2
                     WHERE hash = ?3 AND used_at IS NULL AND expires_at > ?1
                     RETURNING id, tenant_id, scopes, session_ms",
                    rusqlite::params![now, session.id.as_str(), hash],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?, row.get::<_, i64>(3)?)),
                )
                .optional()?;
            let Some((link_id, tenant, scopes, session_ms)) = link else { return Err(StoreError::NotFound) };
            let key = session_key(session.clone(), &link_id, &tenant, &scopes, now + session_ms)?;
            insert_key(c, key, now)?.ok_or(StoreError::NotFound)
        })
        .await
    }

    pub async fn revoke_key(&self, tenant: &TenantId, id: &KeyId) -> Result<KeyRecord> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.write(move |c| {
            let row = c
                .query_row(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE tenant_id = ? AND id = ? RETURNING *",
                    rusqlite::params![now_ms(), tenant.as_str(), id.as_str()],
                    |row| Ok(key_row(row)),
                )
                .optional()?;
            not_found_if_none(row)?
        })
        .await
    }

    // Scripts.

    pub async fn insert_script(&self, tenant: &TenantId, script: &ScriptRecord, bytes: &[u8], compiled: Option<&[u8]>) -> Result<i64> {
        let (tenant, script, bytes, compiled) = (tenant.clone(), script.clone(), bytes.to_vec(), compiled.map(<[u8]>::to_vec));
        self.write(move |c| {
            let version = c.query_row(
                "INSERT INTO scripts (id, tenant_id, name, sha256, size, wit_version, bytes, compiled, created_at, created_by, version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,
                         (SELECT COALESCE(MAX(version), 0) + 1 FROM scripts WHERE tenant_id = ?2 AND name = ?3))
                 RETURNING version",
                rusqlite::params![
                    script.id.as_str(),
                    tenant.as_str(),
                    script.name,
                    script.sha256,
                    script.size,
                    script.wit_version,
                    bytes,
                    compiled,
                    script.created_at,
                    script.created_by.as_ref().map(|k| k.as_str())
                ],
                |row| row.get(0),
            )?;
            Ok(version)
        })
        .await
    }

    pub async fn delete_script(&self, tenant: &TenantId, id: &ScriptId) -> Result<()> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.write(move |c| {
            let users: i64 = c.query_row(
                "SELECT COUNT(*) FROM configurations WHERE tenant_id = ? AND script_id = ?",
                [tenant.as_str(), id.as_str()],
                |row| row.get(0),
            )?;
            if users > 0 {
                return Err(StoreError::InUse(users));
            }
            let deleted = c.execute("DELETE FROM scripts WHERE tenant_id = ? AND id = ?", [tenant.as_str(), id.as_str()])?;
            if deleted == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    // Hosted catchers.

    pub async fn create_catcher(&self, catcher: CatcherRecord, hash: KeyHash) -> Result<CatcherRecord> {
        self.write(move |c| {
            let inserted = c.execute(
                "INSERT INTO catchers (id, tenant_id, name, hash, answer_status, answer_body, created_at)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = ?2)",
                rusqlite::params![
                    catcher.id.as_str(),
                    catcher.tenant_id.as_str(),
                    catcher.name,
                    hash.0,
                    catcher.answer_status,
                    catcher.answer_body,
                    catcher.created_at
                ],
            )?;
            if inserted == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(catcher.clone())
        })
        .await
    }

    pub async fn delete_catcher(&self, tenant: &TenantId, id: &CatcherId) -> Result<()> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.write(move |c| {
            let deleted = c.execute("DELETE FROM catchers WHERE tenant_id = ? AND id = ?", [tenant.as_str(), id.as_str()])?;
            if deleted == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    pub async fn catch(&self, hash: &KeyHash, caught: Caught) -> Result<Option<CatcherRecord>> {
        let hash = hash.0.clone();
        self.write(move |c| {
            let Some(catcher) = c.query_row("SELECT * FROM catchers WHERE hash = ?", [hash.as_str()], |row| Ok(catcher_row(row))).optional()?
            else {
                return Ok(None);
            };
            let catcher = catcher?;
            c.prepare_cached(
                "INSERT INTO caught_requests (id, catcher_id, received_at, method, uri, headers, body, body_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(rusqlite::params![
                caught.id.as_str(),
                catcher.id.as_str(),
                caught.received_at,
                caught.method,
                caught.uri,
                caught.headers,
                text::encode_bytes(&caught.body),
                caught.body_size
            ])?;
            c.prepare_cached(
                "DELETE FROM caught_requests WHERE catcher_id = ?1 AND id < (SELECT id FROM caught_requests WHERE catcher_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )?
            .execute(rusqlite::params![catcher.id.as_str(), CAUGHT_KEPT - 1])?;
            Ok(Some(catcher))
        })
        .await
    }

    // Configurations.

    pub async fn insert_config(&self, tenant: &TenantId, id: &ConfigId, write: &ConfigWrite) -> Result<ConfigRecord> {
        let (tenant, id) = (tenant.clone(), id.clone());
        let write = write.clone();
        self.write(move |c| {
            check_script_owner(c, &tenant, write.script_id.as_ref())?;
            let now = now_ms();
            let record = c
                .query_row(
                    "INSERT INTO configurations (id, tenant_id, name, version, enabled, script_id, spec, created_at, updated_at)
                     VALUES (?, ?, ?, 1, 0, ?, ?, ?, ?) RETURNING *",
                    rusqlite::params![
                        id.as_str(),
                        tenant.as_str(),
                        write.name,
                        write.script_id.as_ref().map(|s| s.as_str()),
                        write.spec,
                        now,
                        now
                    ],
                    |row| Ok(config_row(row)),
                )
                .map_err(conflict_on("configuration name"))??;
            insert_config_script(c, &tenant, &id, record.version, &write)?;
            Ok(record)
        })
        .await
    }

    pub async fn record_config_script(&self, tenant: &TenantId, id: &ConfigId, version: i64, write: &ConfigWrite) -> Result<()> {
        let (tenant, id, write) = (tenant.clone(), id.clone(), write.clone());
        self.write(move |c| insert_config_script(c, &tenant, &id, version, &write)).await
    }

    /// Replaces a spec by the same settings sealed anew, if it is still `old`.
    pub async fn reseal_config(&self, tenant: &TenantId, id: &ConfigId, old: &str, new: &str) -> Result<bool> {
        let (tenant, id, old, new) = (tenant.clone(), id.clone(), old.to_owned(), new.to_owned());
        self.write(move |c| {
            let n = c.execute(
                "UPDATE configurations SET spec = ? WHERE tenant_id = ? AND id = ? AND spec = ?",
                rusqlite::params![new, tenant.as_str(), id.as_str(), old],
            )?;
            Ok(n == 1)
        })
        .await
    }

    pub async fn update_config(&self, tenant: &TenantId, id: &ConfigId, expected: i64, write: &ConfigWrite) -> Result<ConfigRecord> {
        let (tenant, id) = (tenant.clone(), id.clone());
        let write = write.clone();
        self.write(move |c| {
            check_script_owner(c, &tenant, write.script_id.as_ref())?;
            let row = c
                .query_row(
                    "UPDATE configurations SET name = ?, script_id = ?, spec = ?, version = version + 1, updated_at = ?
                     WHERE tenant_id = ? AND id = ? AND version = ? RETURNING *",
                    rusqlite::params![
                        write.name,
                        write.script_id.as_ref().map(|s| s.as_str()),
                        write.spec,
                        now_ms(),
                        tenant.as_str(),
                        id.as_str(),
                        expected
                    ],
                    |row| Ok(config_row(row)),
                )
                .optional()
                .map_err(conflict_on("configuration name"))?;
            let record = match row {
                Some(record) => record?,
                None => return Err(stale_or_missing(c, &tenant, &id)),
            };
            insert_config_script(c, &tenant, &id, record.version, &write)?;
            Ok(record)
        })
        .await
    }

    pub async fn set_config_enabled(
        &self,
        tenant: &TenantId,
        id: &ConfigId,
        expected: Option<i64>,
        enabled: bool,
        reason: Option<&str>,
    ) -> Result<ConfigRecord> {
        let (tenant, id, reason) = (tenant.clone(), id.clone(), reason.map(str::to_owned));
        self.write(move |c| {
            let row = c
                .query_row(
                    "UPDATE configurations SET enabled = ?1, disabled_reason = ?2, version = version + 1, updated_at = ?3
                     WHERE tenant_id = ?4 AND id = ?5 AND (?6 IS NULL OR version = ?6) RETURNING *",
                    rusqlite::params![
                        enabled,
                        if enabled { None } else { reason.as_deref() },
                        now_ms(),
                        tenant.as_str(),
                        id.as_str(),
                        expected
                    ],
                    |row| Ok(config_row(row)),
                )
                .optional()?;
            if enabled && row.is_some() {
                // Enabled again: its failures so far no longer count.
                c.execute("DELETE FROM failure_streaks WHERE config_id = ?", [id.as_str()])?;
            }
            match row {
                Some(record) => record,
                None => Err(stale_or_missing(c, &tenant, &id)),
            }
        })
        .await
    }

    pub async fn delete_config(&self, tenant: &TenantId, id: &ConfigId, expected: Option<i64>) -> Result<()> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.write(move |c| {
            let deleted = c.execute(
                "DELETE FROM configurations WHERE tenant_id = ?1 AND id = ?2 AND (?3 IS NULL OR version = ?3)",
                rusqlite::params![tenant.as_str(), id.as_str(), expected],
            )?;
            if deleted == 0 {
                return Err(stale_or_missing(c, &tenant, &id));
            }
            c.prepare_cached(concat!(
                "UPDATE deliveries SET status = 'failed', error_kind = '",
                config_deleted!(kind),
                "', reason = '",
                config_deleted!(reason),
                "', undecided = 0, next_attempt_at = NULL, lease_until = NULL, updated_at = ?1
                 WHERE tenant_id = ?2 AND config_id = ?3 AND status = 'pending'",
            ))?
            .execute(rusqlite::params![now_ms(), tenant.as_str(), id.as_str()])?;
            Ok(())
        })
        .await
    }

    // Events.

    pub async fn put_event_type(&self, tenant: &TenantId, name: &str, description: Option<&str>) -> Result<EventTypeRecord> {
        let (tenant, name, description) = (tenant.clone(), name.to_owned(), description.map(str::to_owned));
        self.write(move |c| {
            c.query_row(
                "INSERT INTO event_types (tenant_id, name, description, first_seen) VALUES (?, ?, ?, ?)
                 ON CONFLICT (tenant_id, name) DO UPDATE SET description = excluded.description
                 RETURNING name, description, first_seen",
                rusqlite::params![tenant.as_str(), name, description, now_ms()],
                |row| Ok(event_type_row(row)),
            )?
        })
        .await
    }

    pub async fn ingest(&self, tenant: &TenantId, quota: Option<i64>, events: Vec<Event>) -> Result<Vec<Ingested>> {
        let types: Vec<String> = {
            let catalogued = self.catalogued.lock().unwrap_or_else(|e| e.into_inner());
            let known = catalogued.get(tenant);
            let mut types: Vec<&str> =
                events.iter().map(|e| e.event_type.as_str()).filter(|t| known.is_none_or(|known| !known.contains(*t))).collect();
            types.sort_unstable();
            types.dedup();
            types.into_iter().map(str::to_owned).collect()
        };
        let out = self.write_ingest(tenant.clone(), quota, events, types.clone()).await?;
        // Committed: those types are in the catalog for good.
        if !types.is_empty() && out.iter().any(|i| matches!(i, Ingested::Stored { .. })) {
            let mut catalogued = self.catalogued.lock().unwrap_or_else(|e| e.into_inner());
            if catalogued.values().map(HashSet::len).sum::<usize>() + types.len() > CATALOGUED_MAX {
                catalogued.clear();
            }
            catalogued.entry(tenant.clone()).or_default().extend(types);
        }
        Ok(out)
    }

    /// Stores the events, and `types` (those not known to be there) in the
    /// tenant's catalog of event types.
    async fn write_ingest(&self, tenant: TenantId, quota: Option<i64>, events: Vec<Event>, types: Vec<String>) -> Result<Vec<Ingested>> {
        self.write(move |c| {
            let now = now_ms();
            let mut out = Vec::with_capacity(events.len());
            let (mut stored, mut counted) = (0i64, 0i64);
            let mut insert = c.prepare_cached(
                "INSERT INTO events (tenant_id, id, type, organization_unit, occurred_at_ns, received_at, source, related, payload)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, id) DO NOTHING",
            )?;
            // Not claimed: on one node the pipeline itself keeps the events
            // it holds from being routed twice.
            let mut unrouted = c.prepare_cached("INSERT INTO unrouted (seq) VALUES (?)")?;
            for e in &events {
                let source = e.source.as_ref().map(serde_json::to_string).transpose().map_err(corrupt)?;
                let related = (!e.related.is_empty()).then(|| serde_json::to_string(&e.related)).transpose().map_err(corrupt)?;
                // Not `RETURNING seq`: a statement that returns rows runs in
                // a statement journal of its own, one more copy of each page
                // it changes.
                let inserted = insert.execute(rusqlite::params![
                    tenant.as_str(),
                    e.id.as_str(),
                    e.event_type.as_str(),
                    e.organization_unit.as_str(),
                    e.occurred_at.unix_timestamp_nanos() as i64,
                    now,
                    source,
                    related,
                    e.payload.get()
                ])?;
                let seq = (inserted == 1).then(|| c.last_insert_rowid());
                match seq {
                    Some(seq) => {
                        unrouted.execute([seq])?;
                        stored += 1;
                        // sluice's own notices are not the tenant's usage.
                        counted += i64::from(!e.event_type.is_reserved());
                        out.push(Ingested::Stored { seq });
                    }
                    None => out.push(Ingested::Duplicate),
                }
            }
            if stored == 0 {
                return Ok(out);
            }
            if counted > 0 {
                let month = month_of(now);
                // Not `RETURNING events`: SQLite would open a temporary table
                // for the returned row, with a page cache of its own, for
                // every request (8 % of the writer's time). The count is read
                // back only where there is a quota to hold it against.
                c.prepare_cached(
                    "INSERT INTO usage (tenant_id, month, events) VALUES (?, ?, ?)
                     ON CONFLICT (tenant_id, month) DO UPDATE SET events = events + excluded.events",
                )?
                .execute(rusqlite::params![tenant.as_str(), month, counted])?;
                if let Some(quota) = quota {
                    let used: i64 = c
                        .prepare_cached("SELECT events FROM usage WHERE tenant_id = ? AND month = ?")?
                        .query_row(rusqlite::params![tenant.as_str(), month], |row| row.get(0))?;
                    if used > quota {
                        // Failing undoes the job's writes: the whole batch.
                        return Err(StoreError::QuotaExceeded { quota, used: used - counted });
                    }
                }
            }
            let mut catalog =
                c.prepare_cached("INSERT INTO event_types (tenant_id, name, first_seen) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")?;
            for t in &types {
                catalog.execute(rusqlite::params![tenant.as_str(), t, now])?;
            }
            Ok(out)
        })
        .await
    }

    pub async fn record_routing(&self, routed: Vec<Routed>) -> Result<Vec<bool>> {
        self.write(move |c| {
            let now = now_ms();
            // One node: no claims, the pipeline keeps the events it holds
            // from being routed twice. What the marking tests is that the
            // event is still unrouted and the tenant's.
            let mut mark = c.prepare_cached(
                "DELETE FROM unrouted WHERE seq = ?1 AND EXISTS (SELECT 1 FROM events WHERE seq = ?1 AND tenant_id = ?2)",
            )?;
            macro_rules! insert {
                () => {
                    "INSERT INTO deliveries (id, tenant_id, event_seq, config_id, config_version, status, reason, error_kind,
                                             script_logs, body, headers, undecided, next_attempt_at, lease_until, created_at,
                                             updated_at, fuel_used) "
                };
            }
            let mut insert = c.prepare_cached(concat!(
                insert!(),
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15, ?16)"
            ))?;
            // Resumed: the rows its first routing wrote stand. (`INSERT …
            // SELECT` only here: it costs SQLite more than `VALUES`.)
            let mut insert_missing = c.prepare_cached(concat!(
                insert!(),
                "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15, ?16
                 WHERE NOT EXISTS (SELECT 1 FROM deliveries WHERE event_seq = ?3 AND config_id = ?4)"
            ))?;
            let mut recorded = Vec::with_capacity(routed.len());
            for r in &routed {
                // Rows handed on: the event stays unrouted until they are written.
                if r.handed == 0 && mark.execute(rusqlite::params![r.event_seq, r.tenant.as_str()])? == 0 {
                    recorded.push(false);
                    continue;
                }
                let insert = if r.resumed { &mut insert_missing } else { &mut insert };
                for d in &r.deliveries {
                    insert.execute(rusqlite::params![
                        d.id.as_str(),
                        r.tenant.as_str(),
                        r.event_seq,
                        d.config_id.as_str(),
                        d.config_version,
                        d.status.as_str(),
                        d.reason,
                        d.error_kind,
                        d.script_logs,
                        d.body,
                        d.headers,
                        d.undecided,
                        d.next_attempt_at,
                        d.lease_until,
                        now,
                        d.fuel_used
                    ])?;
                }
                recorded.push(true);
            }
            Ok(recorded)
        })
        .await
    }

    /// One node: none is skipped (the pipeline tells the events it holds
    /// from those left unrouted).
    pub async fn unrouted_events(&self, after_seq: i64, received_before: i64, _now: i64, limit: i64) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM unrouted r JOIN events e ON e.seq = r.seq
             WHERE r.seq > $1 AND e.received_at < $2 ORDER BY r.seq LIMIT $3"
        ))
        .bind(after_seq)
        .bind(received_before)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(event_row).collect()
    }

    // Deliveries and attempts.

    pub async fn claim_due(&self, now: i64, lease_ms: i64, limit: i64, skip: &ClaimSkip) -> Result<Vec<DueDelivery>> {
        let skip_tenants = serde_json::to_string(&skip.tenants).map_err(corrupt)?;
        let skip_configs = serde_json::to_string(&skip.configs).map_err(corrupt)?;
        let claimed: Vec<String> = self
            .write(move |c| {
                let claimed: Vec<String> = c
                    .prepare_cached(CLAIM_DUE)?
                    .query_map(rusqlite::params![now + lease_ms, now, limit, skip_tenants, skip_configs], |row| row.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                Ok(claimed)
            })
            .await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        // Read on the reader pool: the writer thread is the pipeline's
        // narrowest part, and the claim is what must be serialized, not this.
        let ids = serde_json::to_string(&claimed).map_err(corrupt)?;
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS}, {EVENT_COLUMNS} FROM deliveries d JOIN events e ON e.seq = d.event_seq
             WHERE d.id IN (SELECT value FROM json_each(?)) ORDER BY d.next_attempt_at"
        ))
        .bind(ids)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let delivery = delivery_row(row)?;
                let event = event_row(row)?;
                Ok(DueDelivery { delivery, tenant_id: event.tenant_id, event: event.event })
            })
            .collect()
    }

    pub async fn record_decision(&self, tenant: &TenantId, d: NewDelivery) -> Result<bool> {
        let tenant = tenant.clone();
        self.write(move |c| {
            let updated = c
                .prepare_cached(
                    "UPDATE deliveries SET status = ?1, reason = ?2, error_kind = ?3, script_logs = ?4, body = ?5, headers = ?6,
                                           config_version = ?7, undecided = 0, updated_at = ?8, fuel_used = ?11,
                                           next_attempt_at = CASE WHEN ?1 = 'pending' THEN next_attempt_at END,
                                           lease_until = CASE WHEN ?1 = 'pending' THEN lease_until END
                     WHERE tenant_id = ?9 AND id = ?10 AND undecided = 1 AND status = 'pending'",
                )?
                .execute(rusqlite::params![
                    d.status.as_str(),
                    d.reason,
                    d.error_kind,
                    d.script_logs,
                    d.body,
                    d.headers,
                    d.config_version,
                    now_ms(),
                    tenant.as_str(),
                    d.id.as_str(),
                    d.fuel_used
                ])?;
            Ok(updated == 1)
        })
        .await
    }

    pub async fn hurry_undecided(&self, tenant: &TenantId, config: &ConfigId, now: i64, limit: i64) -> Result<u64> {
        let (tenant, config) = (tenant.clone(), config.clone());
        self.write(move |c| {
            let hurried = c
                .prepare_cached(
                    "UPDATE deliveries SET next_attempt_at = ?1
                     WHERE id IN (SELECT id FROM deliveries
                                  WHERE config_id = ?3 AND undecided = 1 AND next_attempt_at > ?1
                                    AND tenant_id = ?2 AND status = 'pending' AND lease_until IS NULL
                                  ORDER BY next_attempt_at LIMIT ?4)",
                )?
                .execute(rusqlite::params![now, tenant.as_str(), config.as_str(), limit])?;
            Ok(hurried as u64)
        })
        .await
    }

    pub async fn release_delivery(&self, tenant: &TenantId, id: &DeliveryId, next_attempt_at: i64) -> Result<()> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE deliveries SET lease_until = NULL, next_attempt_at = ?, updated_at = ?
                 WHERE tenant_id = ? AND id = ? AND status = 'pending'",
            )?
            .execute(rusqlite::params![next_attempt_at, now_ms(), tenant.as_str(), id.as_str()])?;
            Ok(())
        })
        .await
    }

    pub async fn write_pending(&self, unwritten: Vec<Arc<Unwritten>>, next_attempt_at: i64, lease_until: Option<i64>) -> Result<()> {
        self.write(move |c| {
            let mut writes = UnwrittenWrites::prepare(c)?;
            unwritten.iter().try_for_each(|u| writes.write(u, DeliveryStatus::Pending, 0, Some(next_attempt_at), lease_until))
        })
        .await
    }

    pub async fn reserve_send_slot(&self, config: &ConfigId, interval: Duration) -> Result<Duration> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let next = slots.entry(config.clone()).or_insert(now);
        let start = (*next).max(now);
        *next = start + interval;
        Ok(start - now)
    }

    pub async fn release_leases(&self) -> Result<u64> {
        self.write(|c| {
            let released =
                c.execute("UPDATE deliveries SET lease_until = NULL WHERE status = 'pending' AND lease_until IS NOT NULL", [])?;
            // Routing claims need no release: on one node the scan skips none.
            Ok(released as u64)
        })
        .await
    }

    /// Always [`Recorded::Logged`]: a node alone has one epoch.
    pub async fn record_attempt(&self, a: NewAttempt) -> Result<Recorded> {
        let (reply, answer) = oneshot::channel();
        self.attempts.send((a, reply)).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?.map(Recorded::Logged)
    }

    // Replay and recovery.

    pub async fn add_deliveries(&self, tenant: &TenantId, rows: Vec<AddedDelivery>) -> Result<Vec<bool>> {
        let tenant = tenant.clone();
        self.write(move |c| {
            let now = now_ms();
            // `IS` compares NULL too: no replay_of, no delivery to the configuration yet.
            let mut insert = c.prepare_cached(
                "INSERT INTO deliveries (id, tenant_id, event_seq, config_id, config_version, status, reason, error_kind,
                                         script_logs, body, headers, next_attempt_at, lease_until, replay_of, created_at, updated_at,
                                         undecided, fuel_used)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15, ?16, ?17
                 WHERE EXISTS (SELECT 1 FROM events WHERE seq = ?3 AND tenant_id = ?2)
                   AND NOT EXISTS (SELECT 1 FROM unrouted WHERE seq = ?3)
                   AND (SELECT id FROM deliveries WHERE event_seq = ?3 AND config_id = ?4 ORDER BY id DESC LIMIT 1) IS ?14",
            )?;
            let mut added = Vec::with_capacity(rows.len());
            for r in &rows {
                let d = &r.delivery;
                let inserted = insert.execute(rusqlite::params![
                    d.id.as_str(),
                    tenant.as_str(),
                    r.event_seq,
                    d.config_id.as_str(),
                    d.config_version,
                    d.status.as_str(),
                    d.reason,
                    d.error_kind,
                    d.script_logs,
                    d.body,
                    d.headers,
                    d.next_attempt_at,
                    d.lease_until,
                    r.replay_of.as_ref().map(|id| id.as_str()),
                    now,
                    d.undecided,
                    d.fuel_used
                ])?;
                added.push(inserted == 1);
            }
            Ok(added)
        })
        .await
    }

    // Retention.

    pub async fn purge_payloads(&self, before: i64, limit: i64, from: &PayloadCursor) -> Result<PurgedPayloads> {
        let from = from.clone();
        self.write(move |c| {
            // Made in the job: a group that failed runs its jobs again.
            let mut chunk = payload_walk::Chunk::new(limit, &from);
            let tenants: Vec<(String, String)> = c
                .prepare_cached(
                    "SELECT t.id, coalesce(p.purged_to, '') FROM tenants t LEFT JOIN payload_purges p ON p.tenant_id = t.id
                     WHERE t.id > ?1 ORDER BY t.id LIMIT ?2",
                )?
                .query_map(rusqlite::params![chunk.after(), chunk.tenants_to_list()], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut walk = c.prepare_cached(
                "SELECT id, started_at, request_body IS NOT NULL OR response_body IS NOT NULL FROM attempts
                 WHERE tenant_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let mut clear =
                c.prepare_cached("UPDATE attempts SET request_body = NULL, response_body = NULL WHERE tenant_id = ?1 AND id = ?2")?;
            let mut stop = c.prepare_cached(
                "INSERT INTO payload_purges (tenant_id, purged_to) VALUES (?1, ?2)
                 ON CONFLICT (tenant_id) DO UPDATE SET purged_to = excluded.purged_to",
            )?;
            for (tenant, from) in tenants {
                let Some(fetch) = chunk.next_fetch() else { break };
                let rows = walk
                    .query_map(rusqlite::params![tenant, from, fetch], |row| {
                        Ok(payload_walk::Walked { id: row.get(0)?, started_at: row.get(1)?, has_bodies: row.get(2)? })
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                let step = payload_walk::step(rows, before, fetch);
                for id in &step.clear {
                    clear.execute([&tenant, id])?;
                }
                if let Some(to) = &step.walked_to {
                    stop.execute([&tenant, to])?;
                }
                if !chunk.record(&tenant, &step) {
                    break;
                }
            }
            Ok(chunk.finish())
        })
        .await
    }

    pub async fn purge_events(&self, before: i64, limit: i64, from: EventCursor) -> Result<(PurgedEvents, Option<EventCursor>)> {
        let read_limit = event_walk::read_limit(limit);
        self.write(move |c| {
            let scanned: Vec<event_walk::Scanned> = c
                .prepare_cached(&event_walk::scan_sql(["?1", "?2", "?3", "?4"]))?
                .query_map(rusqlite::params![before, from.received_at, from.seq, read_limit], |row| {
                    Ok(event_walk::Scanned { seq: row.get(0)?, received_at: row.get(1)?, may_go: row.get(2)? })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let (seqs, resume) = event_walk::page(&scanned, limit, read_limit);
            // Children first: the foreign keys are enforced.
            let mut attempts = c.prepare_cached(
                "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_seq = ?)
                 RETURNING request_body IS NOT NULL OR response_body IS NOT NULL",
            )?;
            let mut deliveries = c.prepare_cached("DELETE FROM deliveries WHERE event_seq = ?")?;
            let mut events = c.prepare_cached("DELETE FROM events WHERE seq = ?")?;
            let mut purged = PurgedEvents::default();
            for seq in seqs {
                for had_bodies in attempts.query_map([seq], |row| row.get::<_, bool>(0))? {
                    purged.attempts += 1;
                    purged.payloads += u64::from(had_bodies?);
                }
                purged.deliveries += deliveries.execute([seq])? as u64;
                purged.events += events.execute([seq])? as u64;
            }
            Ok((purged, resume))
        })
        .await
    }
}

/// Leases the deliveries due (`?2` is now), up to `?3`, until `?1`, none
/// of the tenants in the JSON array `?4` or the configurations in `?5`:
/// those waiting for an attempt, and those whose sender's lease ran out.
///
/// Waiting deliveries are read per configuration that may be claimed for,
/// through its own range of `deliveries_due` (configuration, then due
/// time), and only up to its `?3`-th due one: a configuration left alone
/// (queue full, breaker open) costs nothing however long its backlog, nor
/// does a long backlog cost more than `?3` rows.
///
/// Only the configurations with deliveries waiting are visited, found by
/// skipping through the same index from one configuration's range to the
/// next (`waiting`), and of those only the ones whose first is due are
/// looked up: a configuration with nothing waiting costs nothing, however
/// many there are. The claim runs at every poll, on the writer every tenant
/// shares. `CROSS JOIN` keeps `waiting` the outer loop, `INDEXED BY` keeps
/// SQLite (without statistics) from walking every delivery of a
/// configuration instead.
pub(super) const CLAIM_DUE: &str = "
    WITH RECURSIVE
         waiting(config_id) AS (
             SELECT (SELECT config_id FROM deliveries INDEXED BY deliveries_due
                     WHERE status = 'pending' AND lease_until IS NULL ORDER BY config_id LIMIT 1)
             UNION ALL
             SELECT (SELECT config_id FROM deliveries INDEXED BY deliveries_due
                     WHERE status = 'pending' AND lease_until IS NULL AND config_id > w.config_id
                     ORDER BY config_id LIMIT 1)
             FROM waiting w WHERE w.config_id IS NOT NULL),
         due AS (SELECT d.id, d.next_attempt_at
                 FROM waiting w CROSS JOIN configurations c CROSS JOIN deliveries d INDEXED BY deliveries_due
                 WHERE EXISTS (SELECT 1 FROM deliveries INDEXED BY deliveries_due
                               WHERE config_id = w.config_id AND status = 'pending' AND lease_until IS NULL
                                 AND next_attempt_at <= ?2)
                   AND c.id = w.config_id AND c.enabled = 1
                   AND c.tenant_id NOT IN (SELECT value FROM json_each(?4))
                   AND c.id NOT IN (SELECT value FROM json_each(?5))
                   AND d.config_id = c.id AND d.status = 'pending' AND d.lease_until IS NULL
                   AND d.next_attempt_at <= coalesce(
                       (SELECT next_attempt_at FROM deliveries INDEXED BY deliveries_due
                        WHERE config_id = c.id AND status = 'pending' AND lease_until IS NULL AND next_attempt_at <= ?2
                        ORDER BY next_attempt_at LIMIT 1 OFFSET ?3 - 1),
                       ?2)
                 ORDER BY d.next_attempt_at LIMIT ?3),
         lost AS (SELECT id, next_attempt_at FROM deliveries INDEXED BY deliveries_leased
                  WHERE status = 'pending' AND lease_until IS NOT NULL AND lease_until < ?2
                    AND next_attempt_at <= ?2
                    AND (SELECT enabled FROM configurations c WHERE c.id = deliveries.config_id) = 1
                    AND tenant_id NOT IN (SELECT value FROM json_each(?4))
                    AND config_id NOT IN (SELECT value FROM json_each(?5))
                  ORDER BY lease_until LIMIT ?3)
    UPDATE deliveries SET lease_until = ?1
    WHERE id IN (SELECT id FROM (SELECT * FROM due UNION ALL SELECT * FROM lost) ORDER BY next_attempt_at LIMIT ?3)
    RETURNING id";

/// Logs attempts, updates their deliveries, and counts their
/// configurations' failure streaks, one answer per attempt, in order. The
/// statements are looked up once for the whole group.
fn insert_attempts(c: &rusqlite::Connection, attempts: &[NewAttempt]) -> Result<Vec<FailureStreak>> {
    let mut insert = c.prepare_cached(
        "INSERT INTO attempts (id, tenant_id, delivery_id, number, started_at, duration_ms, method, uri,
                               response_status, outcome, error, request_headers, response_headers, request_body, response_body)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    let mut settle = c.prepare_cached(
        "UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = ?, lease_until = NULL, updated_at = ?
         WHERE id = ? AND tenant_id = ? AND status = 'pending' AND attempts < ?2",
    )?;
    let mut clear = c.prepare_cached("DELETE FROM failure_streaks WHERE config_id = ?")?;
    // Counted, then read back: with `RETURNING` SQLite would open a
    // temporary table for the row (see `ingest`'s usage count).
    let mut count = c.prepare_cached(
        "INSERT INTO failure_streaks (config_id, failures, since) VALUES (?, 1, ?)
         ON CONFLICT (config_id) DO UPDATE SET failures = failures + 1",
    )?;
    let mut read = c.prepare_cached("SELECT failures, since FROM failure_streaks WHERE config_id = ?")?;
    // Prepared at the first delivery handed on unwritten: a group of
    // retries has none.
    let mut writes: Option<UnwrittenWrites> = None;
    // Configurations whose streak this group has cleared and not counted
    // since: a group's successes are mostly to the same few receivers.
    let mut cleared: Vec<&ConfigId> = Vec::new();
    let mut streaks = Vec::with_capacity(attempts.len());
    for a in attempts {
        let status = a.outcome.settles_as();
        // The delivery's row before its attempt's (the attempt refers to it).
        match &a.unwritten {
            Some(unwritten) => {
                let writes = match &mut writes {
                    Some(prepared) => prepared,
                    None => writes.insert(UnwrittenWrites::prepare(c)?),
                };
                writes.write(unwritten, status, a.number, a.next_attempt_at, None)?;
            }
            None => {
                settle.execute(rusqlite::params![
                    status.as_str(),
                    a.number,
                    a.next_attempt_at,
                    now_ms(),
                    a.delivery_id.as_str(),
                    a.tenant_id.as_str()
                ])?;
            }
        }
        insert.execute(rusqlite::params![
            a.id.as_str(),
            a.tenant_id.as_str(),
            a.delivery_id.as_str(),
            a.number,
            a.started_at,
            a.duration_ms,
            a.method,
            a.uri,
            a.response_status,
            a.outcome.as_str(),
            a.error.as_deref().map(text::encode),
            a.request_headers,
            a.response_headers,
            a.request_body.as_deref().map(text::encode),
            a.response_body.as_deref().map(text::encode_bytes)
        ])?;
        if a.outcome == AttemptOutcome::Succeeded {
            if !cleared.contains(&&a.config_id) {
                clear.execute([a.config_id.as_str()])?;
                cleared.push(&a.config_id);
            }
            streaks.push(FailureStreak::default());
            continue;
        }
        cleared.retain(|config| **config != a.config_id);
        count.execute(rusqlite::params![a.config_id.as_str(), now_ms()])?;
        let (failures, since) = read.query_row([a.config_id.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))?;
        streaks.push(FailureStreak { failures, since });
    }
    Ok(streaks)
}

/// The statements writing the rows of deliveries handed on unwritten,
/// prepared once per job: looked up per row, the statement cache hashed
/// their text for every delivery on the writer everyone shares.
struct UnwrittenWrites<'c> {
    config_exists: rusqlite::CachedStatement<'c>,
    upsert: rusqlite::CachedStatement<'c>,
    mark_routed: rusqlite::CachedStatement<'c>,
}

impl<'c> UnwrittenWrites<'c> {
    fn prepare(c: &'c rusqlite::Connection) -> Result<Self> {
        Ok(Self {
            config_exists: c.prepare_cached("SELECT 1 FROM configurations WHERE id = ?")?,
            upsert: c.prepare_cached(
                "INSERT INTO deliveries (id, tenant_id, event_seq, config_id, config_version, status, reason, error_kind,
                                         script_logs, body, headers, attempts, next_attempt_at, lease_until, created_at, updated_at,
                                         fuel_used)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status, attempts = excluded.attempts,
                                                next_attempt_at = excluded.next_attempt_at, lease_until = NULL, updated_at = excluded.updated_at
                 WHERE ?14 IS NULL AND deliveries.status = 'pending' AND deliveries.attempts <= excluded.attempts",
            )?,
            mark_routed: c
                .prepare_cached("DELETE FROM unrouted WHERE seq = ?1 AND ?2 <= (SELECT count(*) FROM deliveries WHERE event_seq = ?1)")?,
        })
    }

    /// Writes the row of a delivery handed on unwritten, `status` after
    /// `attempts` attempts, and marks its event routed if that was the last
    /// row its routing awaited. With `lease_until` it only shows the delivery
    /// (pending, held by its sender) and leaves a row already written alone;
    /// without, it settles the row a lease wrote, if that is still pending.
    /// A delivery whose configuration was deleted meanwhile is written failed,
    /// as the deletion ended the others.
    fn write(
        &mut self,
        unwritten: &Unwritten,
        status: DeliveryStatus,
        attempts: i64,
        next_attempt_at: Option<i64>,
        lease_until: Option<i64>,
    ) -> Result<()> {
        let d = &unwritten.delivery;
        // Only a delivery left pending can outlive its configuration. (Asked
        // apart: as `INSERT … SELECT` with the test in it, the insert cost the
        // writer 10 % more per event.)
        let gone =
            status == DeliveryStatus::Pending && self.config_exists.query_row([d.config_id.as_str()], |_| Ok(())).optional()?.is_none();
        let (status, reason, error_kind, next_attempt_at, lease_until) = match gone {
            true => (DeliveryStatus::Failed, Some(config_deleted!(reason)), Some(config_deleted!(kind)), None, None),
            false => (status, d.reason.as_deref(), d.error_kind.as_deref(), next_attempt_at, lease_until),
        };
        self.upsert.execute(rusqlite::params![
            d.id.as_str(),
            unwritten.tenant.as_str(),
            unwritten.event_seq,
            d.config_id.as_str(),
            d.config_version,
            status.as_str(),
            reason,
            error_kind,
            d.script_logs,
            d.body,
            d.headers,
            attempts,
            next_attempt_at,
            lease_until,
            unwritten.routed_at,
            now_ms(),
            d.fuel_used
        ])?;
        self.mark_routed.execute([unwritten.event_seq, unwritten.awaiting])?;
        Ok(())
    }
}

/// Records the script a configuration runs from `version` on, unless its
/// newest record says the same.
fn insert_config_script(c: &rusqlite::Connection, tenant: &TenantId, id: &ConfigId, version: i64, write: &ConfigWrite) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO configuration_scripts (config_id, version, tenant_id, script_id, script_sha256, params, changed_at, changed_by)
         SELECT ?1, ?2, ?3, ?4, (SELECT sha256 FROM scripts WHERE id = ?4 AND tenant_id = ?3), ?5, ?6, ?7
         WHERE NOT EXISTS (SELECT 1 FROM (SELECT script_id, params FROM configuration_scripts
                                          WHERE config_id = ?1 ORDER BY version DESC LIMIT 1) newest
                           WHERE newest.script_id IS ?4 AND newest.params = ?5)
         ON CONFLICT DO NOTHING",
    )?
    .execute(rusqlite::params![
        id.as_str(),
        version,
        tenant.as_str(),
        write.script_id.as_ref().map(|s| s.as_str()),
        write.script_params,
        now_ms(),
        write.changed_by.as_ref().map(|k| k.as_str())
    ])?;
    Ok(())
}

/// A script a configuration names must be the tenant's own.
fn check_script_owner(c: &rusqlite::Connection, tenant: &TenantId, script: Option<&ScriptId>) -> Result<()> {
    let Some(script) = script else { return Ok(()) };
    let found: Option<i64> = c
        .query_row("SELECT 1 FROM scripts WHERE tenant_id = ? AND id = ?", [tenant.as_str(), script.as_str()], |row| row.get(0))
        .optional()?;
    found.map(|_| ()).ok_or(StoreError::UnknownReference("script"))
}

/// After a conditional write matched nothing: was the row missing or stale?
fn stale_or_missing(c: &rusqlite::Connection, tenant: &TenantId, id: &ConfigId) -> StoreError {
    let current = c
        .query_row("SELECT version FROM configurations WHERE tenant_id = ? AND id = ?", [tenant.as_str(), id.as_str()], |row| row.get(0))
        .optional();
    match current {
        Ok(Some(current)) => StoreError::StaleVersion { current },
        Ok(None) => StoreError::NotFound,
        Err(e) => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(n: i64) -> NewAttempt {
        NewAttempt {
            id: AttemptId::generate(),
            tenant_id: TenantId::generate(),
            delivery_id: DeliveryId::generate(),
            config_id: ConfigId::generate(),
            number: n,
            started_at: 0,
            duration_ms: 1,
            method: "POST".into(),
            uri: "http://127.0.0.1:9/".into(),
            response_status: Some(200),
            outcome: AttemptOutcome::Succeeded,
            error: None,
            request_headers: "{}".into(),
            response_headers: None,
            request_body: None,
            response_body: None,
            next_attempt_at: None,
            unwritten: None,
        }
    }

    /// Groups of attempts are handed to the writer while the groups before
    /// them are not durable yet, up to [`ATTEMPT_GROUPS_IN_FLIGHT`]; each
    /// caller hears its own group's fate.
    #[tokio::test]
    async fn attempt_groups_reach_the_writer_before_those_before_them_are_durable() {
        let (writer, mut jobs) = mpsc::channel::<Box<dyn Job>>(64);
        let (attempts, queue) = mpsc::channel::<AttemptJob>(64);
        tokio::spawn(write_attempts(writer, queue));
        let wait = Duration::from_secs(10);
        let record = |n| {
            let (reply, answer) = oneshot::channel();
            attempts.try_send((attempt(n), reply)).map_err(|_| "full").expect("queued");
            answer
        };

        // Each group held by the writer, unanswered: the next still comes.
        let mut held = Vec::new();
        for n in 0..ATTEMPT_GROUPS_IN_FLIGHT.max(2) {
            let answer = record(n as i64);
            let job = tokio::time::timeout(wait, jobs.recv()).await.expect("handed to the writer").expect("a job");
            held.push((job, answer));
        }
        // Three more wait for room, and then go as one group.
        let waiting: Vec<_> = (10..13).map(record).collect();
        assert!(tokio::time::timeout(Duration::from_millis(300), jobs.recv()).await.is_err(), "more groups in flight than allowed");

        // The second group fails; its caller hears why, and room is made.
        let (job, answer) = held.remove(1);
        job.answer(Err("the disk is full".into()));
        let heard = answer.await.expect("answered");
        assert!(matches!(heard, Err(StoreError::Commit(ref e)) if e.contains("the disk is full")), "{heard:?}");
        let group = tokio::time::timeout(wait, jobs.recv()).await.expect("handed on once there is room").expect("a job");

        // That group fails as a whole: each of its attempts is written alone,
        // and each caller hears its own attempt's fate.
        group.answer(Err("a row cannot be stored".into()));
        for _ in 0..3 {
            let mut alone = tokio::time::timeout(wait, jobs.recv()).await.expect("written alone").expect("a job");
            // Not run against the schema: the job's own failure is its answer.
            let conn = rusqlite::Connection::open_in_memory().unwrap();
            assert!(alone.run(&conn).is_err());
            alone.answer(Ok(()));
        }
        for answer in waiting {
            let heard = answer.await.expect("answered");
            assert!(matches!(heard, Err(StoreError::Sqlite(_))), "{heard:?}");
        }

        // The rest are answered, newest first: each caller hears its own.
        for (n, (job, answer)) in held.into_iter().enumerate().rev() {
            job.answer(Err(format!("flush {n} failed")));
            let heard = answer.await.expect("answered");
            assert!(matches!(heard, Err(StoreError::Commit(ref e)) if *e == format!("flush {n} failed")), "{heard:?}");
        }
        assert!(tokio::time::timeout(Duration::from_millis(300), jobs.recv()).await.is_err(), "nothing more to write");
    }

    /// A connection waiting with [`wait_for_lock`]: a lock let go within its
    /// patience is taken, one held past it fails as busy, and each wait
    /// counts from its own start.
    #[test]
    fn a_lock_is_waited_for_as_long_as_the_patience_and_no_longer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks.db");
        let holder = rusqlite::Connection::open(&path).unwrap();
        holder.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x)").unwrap();
        let waiter = rusqlite::Connection::open(&path).unwrap();
        waiter.busy_handler(Some(|attempt| wait_for_lock(attempt, Duration::from_millis(300)))).unwrap();
        // Every wait on one thread, as the writer's are.
        let (go, went) = std::sync::mpsc::channel::<()>();
        let (done, results) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            while went.recv().is_ok() {
                let started = Instant::now();
                let taken = waiter.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (1); COMMIT");
                done.send((taken, started.elapsed())).unwrap();
            }
        });

        for _ in 0..2 {
            holder.execute_batch("BEGIN IMMEDIATE").unwrap();
            go.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            holder.execute_batch("COMMIT").unwrap();
            let (taken, _) = results.recv().unwrap();
            taken.expect("taken once let go, within the patience");
        }

        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        go.send(()).unwrap();
        let (refused, waited) = results.recv().unwrap();
        let refused = refused.expect_err("held past the patience");
        assert_eq!(refused.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy), "{refused}");
        assert!(waited >= Duration::from_millis(300), "gave up after {waited:?}");
    }
}
