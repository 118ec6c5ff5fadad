//! The SQLite store: one file, WAL journal, foreign keys on.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions as _, SqliteConnection, SqlitePool};
use tokio::sync::watch;
use wagate_core::{Event, NewEvent, SessionId};

use crate::cache::{SessionCache, WriteGuard};
use crate::sql::{self, db_err, open_failure};
use crate::{Result, SessionStateUpdate, StateChange, Store, StoreError, UnitOfWork};

mod api_keys;
mod events;
mod sessions;
mod webhooks;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Readers run concurrently under WAL; writers queue on the file lock (up to the busy timeout).
const MAX_CONNECTIONS: u32 = 8;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteStore {
    pool: SqlitePool,
    /// Bumped after every commit that appended events.
    commits: Arc<watch::Sender<u64>>,
    /// Keeps the WAL file small (see `wal.rs`); stopped when the store is dropped.
    checkpointer: tokio::task::AbortHandle,
    /// The one connection this process writes through, and whose turn it is (see
    /// [`SqliteStore::begin_write`]).
    writer: Arc<tokio::sync::Mutex<Writer>>,
    /// Tells every process that API keys changed (see `keystamp.rs`).
    keystamp: Option<crate::keystamp::KeyStamp>,
    /// Sessions read by id (see `cache.rs`).
    sessions: Arc<SessionCache>,
}

/// The write connection. `open` is true while a transaction begun on it has not ended.
pub(crate) struct Writer {
    pub(crate) conn: SqliteConnection,
    open: bool,
}

impl Writer {
    async fn run(&mut self, statement: &'static str) -> Result<()> {
        sqlx::query(statement).execute(&mut self.conn).await.map_err(db_err)?;
        Ok(())
    }
}

/// A write transaction on the write connection, holding this process's turn to write until it
/// ends. Dropped without [`WriteTx::commit`], it is rolled back (at once from a task, or by the
/// next writer).
pub(crate) struct WriteTx {
    writer: Option<tokio::sync::OwnedMutexGuard<Writer>>,
}

impl WriteTx {
    pub(crate) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.writer.as_mut().expect("a transaction until it ends").conn
    }

    pub(crate) async fn commit(mut self) -> Result<()> {
        let writer = self.writer.as_mut().expect("a transaction until it ends");
        writer.run("COMMIT").await?;
        writer.open = false;
        Ok(())
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        let Some(mut writer) = self.writer.take().filter(|w| w.open) else { return };
        // Roll back now, so SQLite's write lock is not held until this process writes again;
        // the turn passes on once that is done.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if writer.run("ROLLBACK").await.is_ok() {
                    writer.open = false;
                }
            });
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.checkpointer.abort();
    }
}

impl SqliteStore {
    /// Opens (creating if missing, with its directory) the database named by a `sqlite://PATH`
    /// URL and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Backend(format!("invalid sqlite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("journal_size_limit", crate::wal::JOURNAL_SIZE_LIMIT.to_string());
        let path = options.get_filename();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Backend(format!(
                    "cannot create the database directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let pool = match SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(BUSY_TIMEOUT * 2)
            .connect_with(options.clone())
            .await
        {
            Ok(pool) => pool,
            Err(e) => {
                let why = open_failure::<SqliteConnection>(e, &options).await;
                return Err(StoreError::Backend(format!(
                    "cannot open the sqlite database: {why}"
                )));
            }
        };
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Backend(format!("sqlite migrations failed: {e}")))?;
        let checkpointer = crate::wal::spawn_checkpointer(pool.clone(), path.to_path_buf(), BUSY_TIMEOUT);
        let keystamp = crate::keystamp::KeyStamp::beside(path);
        let conn = match options.connect().await {
            Ok(conn) => conn,
            Err(e) => return Err(StoreError::Backend(format!("cannot open the sqlite database: {e}"))),
        };
        let writer = Arc::new(tokio::sync::Mutex::new(Writer { conn, open: false }));
        Ok(Self { pool, commits: Arc::new(watch::Sender::new(0)), checkpointer, writer, keystamp, sessions: Arc::default() })
    }

    /// This process's turn on its write connection, with no transaction open. Every write of
    /// this process goes through it: a single statement as is (it commits by itself), several
    /// through [`SqliteStore::begin_write`]. Writers of this process thus queue on an async
    /// mutex instead of meeting in SQLite's busy handler, which makes a blocked writer sleep and
    /// retry and under contention costs far more than queueing; and the connection, kept for the
    /// store's life, keeps a warm page cache, where a pooled one would find it stale after
    /// every other connection's write.
    pub(crate) async fn writer(&self) -> Result<tokio::sync::OwnedMutexGuard<Writer>> {
        let mut writer = Arc::clone(&self.writer).lock_owned().await;
        if writer.open {
            // The last transaction was dropped where no task could roll it back.
            writer.run("ROLLBACK").await?;
            writer.open = false;
        }
        Ok(writer)
    }

    /// Starts a write transaction on the write connection. `BEGIN IMMEDIATE` takes SQLite's
    /// write lock up front (a transaction that reads before it writes could not upgrade if
    /// another process's writer came first).
    pub(crate) async fn begin_write(&self) -> Result<WriteTx> {
        let mut writer = self.writer().await?;
        writer.run("BEGIN IMMEDIATE").await?;
        writer.open = true;
        Ok(WriteTx { writer: Some(writer) })
    }

    /// The pool, for callers that need raw access (tests, maintenance).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query(sql::PING).execute(&self.pool).await.map_err(db_err)?;
        Ok(())
    }

    async fn begin(&self) -> Result<Box<dyn UnitOfWork>> {
        let tx = self.begin_write().await?;
        Ok(Box::new(SqliteUnitOfWork {
            tx,
            appended: false,
            commits: Arc::clone(&self.commits),
            sessions: Arc::clone(&self.sessions),
            writing: Vec::new(),
        }))
    }
}

struct SqliteUnitOfWork {
    tx: WriteTx,
    appended: bool,
    commits: Arc<watch::Sender<u64>>,
    sessions: Arc<SessionCache>,
    /// Dropped after the transaction ends (declared after `tx`, so dropped after it).
    writing: Vec<WriteGuard>,
}

#[async_trait]
impl UnitOfWork for SqliteUnitOfWork {
    async fn update_session_state(&mut self, id: &SessionId, update: &SessionStateUpdate) -> Result<Option<StateChange>> {
        self.writing.push(self.sessions.writing(id));
        sessions::update_state(self.tx.conn(), id, update).await
    }

    async fn append_event(&mut self, event: &NewEvent) -> Result<Event> {
        let event = events::insert(self.tx.conn(), event).await?;
        self.appended = true;
        Ok(event)
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let Self { tx, appended, commits, writing, .. } = *self;
        tx.commit().await?;
        drop(writing);
        if appended {
            commits.send_modify(|n| *n += 1);
        }
        Ok(())
    }
}
