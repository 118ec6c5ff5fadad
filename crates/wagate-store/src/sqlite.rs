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
mod messages;
mod sessions;
mod webhooks;
mod writer;

use writer::{WriteLock, WriteTx, Writer};

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
    /// The one connection this process writes through, and whose turn it is (see `writer.rs`).
    writer: WriteLock,
    /// Tells every process that API keys changed (see `keystamp.rs`).
    keystamp: Option<crate::keystamp::KeyStamp>,
    /// Sessions read by id (see `cache.rs`).
    sessions: Arc<SessionCache>,
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
            .pragma("journal_size_limit", crate::wal::JOURNAL_SIZE_LIMIT.to_string())
            // Savepoints (see `writer.rs`) and sorts journal to memory, not to a temporary file.
            .pragma("temp_store", "memory");
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
        // The write connection caches each statement once per savepoint number (see
        // `writer.rs`), beside the others.
        let conn = match options.clone().statement_cache_capacity(100 + 4 * writer::MAX_GROUP as usize).connect().await {
            Ok(conn) => conn,
            Err(e) => return Err(StoreError::Backend(format!("cannot open the sqlite database: {e}"))),
        };
        let commits = Arc::new(watch::Sender::new(0));
        let writer = WriteLock::new(Writer::new(conn, Arc::clone(&commits)));
        Ok(Self { pool, commits, checkpointer, writer, keystamp, sessions: Arc::default() })
    }

    /// This process's turn on its write connection, with no transaction open: a single
    /// statement run through it commits by itself. Every write of this process goes through the
    /// write connection (see `writer.rs`), several statements through
    /// [`SqliteStore::begin_write`].
    pub(crate) async fn writer(&self) -> tokio::sync::OwnedMutexGuard<Writer> {
        self.writer.statement().await
    }

    /// Starts a write transaction on the write connection; it commits with its group (see
    /// `writer.rs`).
    pub(crate) async fn begin_write(&self) -> Result<WriteTx> {
        self.writer.begin().await
    }

    /// A read transaction: every statement in it sees the database as of its first read (WAL
    /// snapshot), so rows read by two queries agree with each other.
    pub(crate) async fn read_snapshot(&self) -> Result<sqlx::Transaction<'_, sqlx::Sqlite>> {
        self.pool.begin().await.map_err(db_err)
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
        Ok(Box::new(SqliteUnitOfWork { tx, sessions: Arc::clone(&self.sessions), writing: Vec::new() }))
    }
}

struct SqliteUnitOfWork {
    tx: WriteTx,
    sessions: Arc<SessionCache>,
    /// Dropped after the transaction ends (declared after `tx`, so dropped after it).
    writing: Vec<WriteGuard>,
}

#[async_trait]
impl UnitOfWork for SqliteUnitOfWork {
    async fn update_session_state(&mut self, id: &SessionId, update: &SessionStateUpdate) -> Result<Option<StateChange>> {
        self.writing.push(self.sessions.writing(id));
        sessions::update_state(&mut self.tx, id, update).await
    }

    async fn append_event(&mut self, event: &NewEvent) -> Result<Event> {
        events::insert(&mut self.tx, event).await
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let Self { tx, writing, .. } = *self;
        tx.commit().await?;
        drop(writing);
        Ok(())
    }
}
