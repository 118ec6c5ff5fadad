//! The one connection this process writes through, and group commit.
//!
//! Every write of the process takes a turn on one connection (an async mutex, first come first
//! served): writers queue there instead of meeting in SQLite's busy handler, and the connection
//! keeps a warm page cache.
//!
//! Transactions commit in groups. The first write transaction to take the turn begins a SQLite
//! transaction (`BEGIN IMMEDIATE`); when it commits, it does not run `COMMIT` but passes the turn
//! on with the transaction still open, and whoever was queued behind it joins that transaction
//! under a savepoint of its own. A transaction that is dropped instead of committed rolls back to
//! its savepoint and leaves the others' writes alone. Each member then asks for the turn again;
//! the first of them to get it finds the others done and commits the whole group at once, and
//! every member's `commit` returns that one result. Nobody's `commit` returns before its writes
//! are committed, and the group is bounded: members ask for the turn again behind the writers
//! queued when they finished, so it closes once those are through. One transaction per group
//! instead of one per writer spares a `BEGIN`, a `COMMIT` and the pages written at each commit,
//! which is most of a small transaction's cost.
//!
//! A member's savepoint costs no round trip of its own: it is opened by the member's first
//! statement (`SAVEPOINT s3; INSERT ...`, see [`WriteTx::sql`]), since every round trip to the
//! connection's worker thread is two thread switches, which is what a small transaction's time
//! goes to. A group takes at most [`MAX_GROUP`] members, which bounds the distinct statements
//! the connection caches.
//!
//! The statements that end a group run in a task of their own, so that a caller that gives up
//! waiting (a dropped request) cannot leave the connection with a transaction open and nobody
//! to close it.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::{AssertSqlSafe, SqlSafeStr, SqliteConnection};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use crate::sql::db_err;
use crate::{Result, StoreError};

/// Members of one group at most; the next writer begins a new one.
pub(crate) const MAX_GROUP: u32 = 32;

pub(crate) struct Writer {
    pub(crate) conn: SqliteConnection,
    /// The transaction open on the connection, if any.
    group: Option<Arc<Group>>,
    /// Savepoints taken in the open transaction (their names are `s1`, `s2`, ...).
    savepoints: u32,
    /// A rollback owed by a transaction dropped where it could not run it.
    undo: Option<Undo>,
    /// Bumped after every commit that appended events.
    commits: Arc<watch::Sender<u64>>,
}

#[derive(Clone, Copy)]
enum Undo {
    /// The whole transaction (it was dropped by the transaction that began it, before anyone
    /// joined).
    All,
    /// Back to a member's savepoint.
    To(u32),
}

/// The writers whose work commits in one SQLite transaction.
struct Group {
    /// The outcome, once the transaction has ended.
    done: watch::Sender<Option<Result<(), String>>>,
    /// Some member appended events.
    appended: AtomicBool,
}

impl Group {
    fn new() -> Arc<Self> {
        Arc::new(Self { done: watch::Sender::new(None), appended: AtomicBool::new(false) })
    }

    fn outcome(&self) -> Option<Result<()>> {
        self.done.borrow().as_ref().map(|r| r.clone().map_err(StoreError::Backend))
    }
}

async fn run(conn: &mut SqliteConnection, statement: impl SqlSafeStr) -> Result<()> {
    sqlx::raw_sql(statement).execute(conn).await.map_err(db_err)?;
    Ok(())
}

fn savepoint(verb: &str, n: u32) -> AssertSqlSafe<String> {
    AssertSqlSafe(format!("{verb} s{n}"))
}

impl Writer {
    pub(crate) fn new(conn: SqliteConnection, commits: Arc<watch::Sender<u64>>) -> Self {
        Self { conn, group: None, savepoints: 0, undo: None, commits }
    }

    /// Runs a rollback that a dropped transaction owed. (It stays owed until it has run, and
    /// running it twice does no harm.) Afterwards the connection is fit for the next writer,
    /// whatever happened: if a partial rollback fails, the whole group is rolled back and fails.
    async fn settle(&mut self) {
        match self.undo {
            None => {}
            Some(Undo::All) => {
                // May fail if the transaction never began; either way none is open after.
                let _ = run(&mut self.conn, "ROLLBACK").await;
                self.undo = None;
                self.end_group(Err("rolled back".to_owned()));
            }
            Some(Undo::To(n)) => {
                let undone = run(&mut self.conn, savepoint("ROLLBACK TO", n)).await;
                self.undo = None;
                if let Err(e) = undone {
                    // SQLite already ended the transaction (some errors roll it back whole), or
                    // cannot undo part of it: the group cannot commit.
                    let _ = run(&mut self.conn, "ROLLBACK").await;
                    self.end_group(Err(format!("a transaction of the group failed to roll back: {e}")));
                }
            }
        }
    }

    /// Begins a transaction of this turn's own, outside any group: for several statements that
    /// must commit once, without waiting for a group. Only on a turn from
    /// [`WriteLock::statement`]. If it is not committed (an error, or the caller dropped), the
    /// next turn rolls it back first.
    pub(crate) async fn begin_alone(&mut self) -> Result<()> {
        debug_assert!(self.group.is_none(), "a group is open");
        self.undo = Some(Undo::All);
        run(&mut self.conn, "BEGIN IMMEDIATE").await
    }

    /// Commits the transaction [`Writer::begin_alone`] began.
    pub(crate) async fn commit_alone(&mut self) -> Result<()> {
        run(&mut self.conn, "COMMIT").await?;
        self.undo = None;
        Ok(())
    }

    /// Commits the open transaction, if any, and tells its members.
    async fn close(&mut self) {
        self.settle().await;
        if self.group.is_none() {
            return;
        }
        let outcome = match run(&mut self.conn, "COMMIT").await {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = run(&mut self.conn, "ROLLBACK").await;
                Err(e.to_string())
            }
        };
        self.end_group(outcome);
    }

    fn end_group(&mut self, outcome: Result<(), String>) {
        self.savepoints = 0;
        let Some(group) = self.group.take() else { return };
        if outcome.is_ok() && group.appended.load(Ordering::Acquire) {
            self.commits.send_modify(|n| *n += 1);
        }
        group.done.send_replace(Some(outcome));
    }
}

/// Ends the open transaction of the writer from a task of its own (see the module's notes).
async fn close_in_task(mut writer: OwnedMutexGuard<Writer>) {
    let _ = tokio::spawn(async move { writer.close().await }).await;
}

/// The write connection and its turn.
#[derive(Clone)]
pub(crate) struct WriteLock(Arc<Mutex<Writer>>);

impl WriteLock {
    pub(crate) fn new(writer: Writer) -> Self {
        Self(Arc::new(Mutex::new(writer)))
    }

    /// The turn on the write connection with no transaction open (an open group is committed
    /// first): a single statement run through it commits by itself.
    pub(crate) async fn statement(&self) -> OwnedMutexGuard<Writer> {
        loop {
            let mut writer = Arc::clone(&self.0).lock_owned().await;
            writer.settle().await;
            if writer.group.is_none() {
                return writer;
            }
            close_in_task(writer).await;
        }
    }

    /// Begins a write transaction: a new group, or a member of the open one.
    pub(crate) async fn begin(&self) -> Result<WriteTx> {
        loop {
            let mut writer = Arc::clone(&self.0).lock_owned().await;
            writer.settle().await;
            let (group, savepoint) = match writer.group.clone() {
                Some(_) if writer.savepoints >= MAX_GROUP => {
                    close_in_task(writer).await;
                    continue;
                }
                Some(group) => {
                    writer.savepoints += 1;
                    (group, Some(writer.savepoints))
                }
                None => {
                    let group = Group::new();
                    writer.group = Some(Arc::clone(&group));
                    // Owed until it has run: a caller dropped meanwhile leaves no transaction open.
                    writer.undo = Some(Undo::All);
                    // IMMEDIATE takes SQLite's write lock up front (a transaction that reads
                    // before it writes could not upgrade if another process's writer came first).
                    let began = run(&mut writer.conn, "BEGIN IMMEDIATE").await;
                    writer.undo = None;
                    if let Err(e) = began {
                        writer.end_group(Err(e.to_string()));
                        return Err(e);
                    }
                    (group, None)
                }
            };
            return Ok(WriteTx { writer: Some(writer), lock: self.clone(), group, savepoint, owed: savepoint, appended: false });
        }
    }
}

/// A write transaction, holding the turn on the write connection until it commits. Dropped
/// without [`WriteTx::commit`], its writes are rolled back (at once from a task, or by the next
/// writer) and the rest of its group is left alone.
pub(crate) struct WriteTx {
    writer: Option<OwnedMutexGuard<Writer>>,
    lock: WriteLock,
    group: Arc<Group>,
    /// `None` for the transaction that began the group.
    savepoint: Option<u32>,
    /// The savepoint, until a statement has opened it.
    owed: Option<u32>,
    appended: bool,
}

impl WriteTx {
    /// `statement` as this transaction's next statement should run it: the first statement of
    /// a member of an open transaction opens the member's savepoint in the same round trip.
    /// Run it through [`WriteTx::conn`], and use numbered parameters (`$1`) in it.
    pub(crate) fn sql(&mut self, statement: &'static str) -> AssertSqlSafe<Cow<'static, str>> {
        match self.owed.take() {
            Some(n) => AssertSqlSafe(Cow::Owned(format!("SAVEPOINT s{n}; {statement}"))),
            None => AssertSqlSafe(Cow::Borrowed(statement)),
        }
    }

    /// The connection, for this transaction's next statement (opening the member's savepoint
    /// first if no statement did).
    pub(crate) async fn conn(&mut self) -> Result<&mut SqliteConnection> {
        let writer = self.writer.as_mut().expect("the turn until commit");
        if let Some(n) = self.owed {
            run(&mut writer.conn, savepoint("SAVEPOINT", n)).await?;
            self.owed = None;
        }
        Ok(&mut writer.conn)
    }

    /// Marks this transaction as one that appended events: subscribers are woken once it commits.
    pub(crate) fn appended(&mut self) {
        self.appended = true;
    }

    /// Commits: returns once the group this transaction belongs to has committed (or failed).
    pub(crate) async fn commit(mut self) -> Result<()> {
        if self.appended {
            self.group.appended.store(true, Ordering::Release);
        }
        // Pass the turn on with the transaction open; whoever is queued joins it.
        drop(self.writer.take());
        let waiting = Waiting { lock: self.lock.clone(), group: Arc::clone(&self.group), armed: true };
        waiting.until_committed().await
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        let Some(mut writer) = self.writer.take() else { return };
        writer.undo = match (self.savepoint, self.owed) {
            // It ran no statement.
            (Some(_), Some(_)) => return,
            (Some(n), None) => Some(Undo::To(n)),
            (None, _) => Some(Undo::All),
        };
        // Roll back now, so SQLite's write lock is not held until this process writes again;
        // the turn passes on once that is done. Without a runtime, the next writer does it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { writer.settle().await });
        }
    }
}

/// A member of a group waiting for it to commit. If the wait is given up (the caller dropped),
/// a task takes it over, so the group still commits.
struct Waiting {
    lock: WriteLock,
    group: Arc<Group>,
    armed: bool,
}

impl Waiting {
    async fn until_committed(mut self) -> Result<()> {
        let mut done = self.group.done.subscribe();
        let turn = tokio::select! {
            biased;
            () = async { let _ = done.wait_for(Option::is_some).await; } => None,
            writer = Arc::clone(&self.lock.0).lock_owned() => Some(writer),
        };
        // Groups end only under the turn, so if this one has not ended, it is the transaction
        // open on the connection, and every member queued before has finished: commit it.
        if let Some(writer) = turn.filter(|_| self.group.outcome().is_none()) {
            close_in_task(writer).await;
        }
        self.armed = false;
        self.group.outcome().unwrap_or_else(|| Err(StoreError::Backend("write transaction ended without an outcome".into())))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.armed || self.group.outcome().is_some() {
            return;
        }
        let (lock, group) = (self.lock.clone(), Arc::clone(&self.group));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let writer = Arc::clone(&lock.0).lock_owned().await;
                if group.outcome().is_none() {
                    close_in_task(writer).await;
                }
            });
        }
    }
}
