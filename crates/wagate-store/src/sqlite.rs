//! The SQLite store: one file, WAL journal, foreign keys on.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};

use crate::sql::{impl_sql_store, open_failure};
use crate::{Result, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Readers run concurrently under WAL; writers queue on the file lock (up to the busy timeout).
const MAX_CONNECTIONS: u32 = 8;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteStore {
    pool: SqlitePool,
    /// Keeps the WAL file small (see `wal.rs`); stopped when the store is dropped.
    checkpointer: tokio::task::AbortHandle,
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
        Ok(Self { pool, checkpointer })
    }

    /// The pool, for callers that need raw access (tests, maintenance).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// `BEGIN IMMEDIATE` takes the write lock up front, so two bootstraps cannot both read an
    /// empty database (a deferred transaction would fail to upgrade instead of waiting).
    async fn begin_bootstrap(&self) -> sqlx::Result<Transaction<'static, Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }
}

impl_sql_store!(SqliteStore, Sqlite, "sqlite");
