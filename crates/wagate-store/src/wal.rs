//! Keeps the SQLite write-ahead log small.
//!
//! SQLite never shrinks the `-wal` file on its own: after a write burst it keeps its
//! high-water size, and when readers kept the automatic checkpoints from completing, or no
//! write came after the burst to trigger one, it also keeps every frame. Two measures:
//! `journal_size_limit` makes each WAL reset truncate the file to [`JOURNAL_SIZE_LIMIT`], and a
//! background task checks the file's size every [`CHECK_EVERY`] and, when it is over the limit,
//! runs `PRAGMA wal_checkpoint(TRUNCATE)` with a short busy timeout (so it never holds writers
//! back for long; a busy attempt is simply retried on the next check).

use std::path::PathBuf;
use std::time::Duration;

use sqlx::SqlitePool;

/// The size the WAL is truncated to at each reset, and above which the task checkpoints.
pub(crate) const JOURNAL_SIZE_LIMIT: u64 = 1024 * 1024;
/// How often the task looks at the WAL's size (one `stat`).
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a checkpoint waits for readers and writers before giving up until the next check.
const CHECKPOINT_BUSY_TIMEOUT_MS: u64 = 250;

/// Starts the checkpoint task for the database at `db_path`; abort the handle to stop it.
pub(crate) fn spawn_checkpointer(pool: SqlitePool, db_path: PathBuf, busy_timeout: Duration) -> tokio::task::AbortHandle {
    let mut wal = db_path.into_os_string();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if pool.is_closed() {
                return;
            }
            let Ok(meta) = tokio::fs::metadata(&wal).await else { continue };
            if meta.len() <= JOURNAL_SIZE_LIMIT {
                continue;
            }
            match checkpoint(&pool, busy_timeout).await {
                Ok((busy, log, done)) => {
                    tracing::debug!(wal_bytes = meta.len(), busy, log, done, "sqlite WAL checkpoint")
                }
                Err(e) => tracing::warn!(error = %crate::sql::describe(&e), "sqlite WAL checkpoint failed"),
            }
        }
    })
    .abort_handle()
}

/// `(busy, log frames, checkpointed frames)` of one `wal_checkpoint(TRUNCATE)`.
async fn checkpoint(pool: &SqlitePool, busy_timeout: Duration) -> sqlx::Result<(i64, i64, i64)> {
    let mut conn = pool.acquire().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA busy_timeout = {CHECKPOINT_BUSY_TIMEOUT_MS}")))
        .execute(&mut *conn)
        .await?;
    let result = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(TRUNCATE)")
        .fetch_one(&mut *conn)
        .await;
    let restored = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA busy_timeout = {}", busy_timeout.as_millis())))
        .execute(&mut *conn)
        .await;
    if restored.is_err() {
        // Never hand a connection with the short timeout back to the pool.
        drop(conn.detach());
    }
    result
}
