//! One owner per data store: a running gateway holds a lock on its data directory (and, on
//! PostgreSQL, a session-level advisory lock on its database) for its whole life, so a second
//! gateway on the same state refuses to start instead of running the same sessions twice.
//!
//! Both locks die with the process (the OS drops the file lock, PostgreSQL ends the session),
//! so a crash or `kill -9` never blocks the next start. Short-lived writers such as the
//! `wagate keys` commands do not take them.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sqlx::{Connection, PgConnection};

/// The lock file's name inside the data directory (or beside a SQLite file kept elsewhere).
pub const LOCK_FILE: &str = "wagate.lock";

/// The fixed key of the PostgreSQL advisory lock (`wagate` in ASCII).
pub const PG_ADVISORY_KEY: i64 = 0x7761_6761_7465;

#[derive(Debug, thiserror::Error)]
pub enum OwnerLockError {
    /// Another process holds the lock. The message is the one line to show the operator.
    #[error("{0}")]
    InUse(String),
    /// The lock could not be taken for another reason (permissions, the database is down).
    #[error("{0}")]
    Failed(String),
}

/// Held for the life of the gateway; dropping it releases the locks.
#[derive(Debug)]
pub struct OwnerLock {
    _files: Vec<File>,
    _pg: Option<PgConnection>,
}

/// Takes the owner locks for a gateway on `data_dir` with the database at `database_url`:
/// the data directory's lock file always (it holds the engines' keys), a lock file beside a
/// SQLite database kept outside the data directory, and the advisory lock of a PostgreSQL
/// database. Creates the data directory when missing.
pub async fn acquire_owner_lock(data_dir: &Path, database_url: &str) -> Result<OwnerLock, OwnerLockError> {
    let mut files = vec![lock_dir(data_dir, "data directory")?];
    let lower = database_url.to_ascii_lowercase();
    if lower.starts_with("sqlite:") {
        if let Some(dir) = sqlite_dir(database_url)
            && !same_dir(&dir, data_dir)
        {
            files.push(lock_dir(&dir, "database directory")?);
        }
        return Ok(OwnerLock { _files: files, _pg: None });
    }
    let pg = if lower.starts_with("postgres:") || lower.starts_with("postgresql:") {
        Some(lock_postgres(database_url).await?)
    } else {
        None
    };
    Ok(OwnerLock { _files: files, _pg: pg })
}

/// Takes `dir/wagate.lock` (exclusive, non-blocking) and writes our pid into it.
pub fn lock_dir(dir: &Path, what: &str) -> Result<File, OwnerLockError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| OwnerLockError::Failed(format!("cannot create the {what} {}: {e}", dir.display())))?;
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| OwnerLockError::Failed(format!("cannot open the lock file {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            let by = if !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()) {
                format!(" (pid {pid})")
            } else {
                String::new()
            };
            return Err(OwnerLockError::InUse(format!(
                "the {what} {} is in use by another wagate process{by}",
                dir.display()
            )));
        }
        Err(TryLockError::Error(e)) => {
            return Err(OwnerLockError::Failed(format!("cannot lock {}: {e}", path.display())));
        }
    }
    // Best effort: the pid only makes the refusal message more helpful.
    let _ = file.set_len(0);
    let _ = file.seek(SeekFrom::Start(0));
    let _ = writeln!(file, "{}", std::process::id());
    let _ = file.flush();
    Ok(file)
}

/// The directory of a `sqlite://PATH` database, when the URL names a file.
fn sqlite_dir(url: &str) -> Option<PathBuf> {
    let rest = url.split_once(':')?.1;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next()?;
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    let parent = Path::new(path).parent()?;
    Some(if parent.as_os_str().is_empty() { PathBuf::from(".") } else { parent.to_path_buf() })
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// One dedicated connection holding `pg_try_advisory_lock(PG_ADVISORY_KEY)` for as long as it
/// stays open.
async fn lock_postgres(url: &str) -> Result<PgConnection, OwnerLockError> {
    let mut conn = PgConnection::connect(url).await.map_err(|e| {
        OwnerLockError::Failed(format!("cannot connect to postgres: {}", crate::sql::describe(&e)))
    })?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(PG_ADVISORY_KEY)
        .fetch_one(&mut conn)
        .await
        .map_err(|e| OwnerLockError::Failed(format!("cannot take the postgres owner lock: {}", crate::sql::describe(&e))))?;
    if !locked {
        return Err(OwnerLockError::InUse(
            "the PostgreSQL database is in use by another wagate gateway (it holds the owner lock)".to_owned(),
        ));
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_directory_is_refused_with_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_dir(dir.path(), "data directory").unwrap();
        let Err(OwnerLockError::InUse(msg)) = lock_dir(dir.path(), "data directory") else {
            panic!("the second lock must be refused");
        };
        assert!(msg.contains("in use by another wagate process"), "{msg}");
        assert!(msg.contains(&format!("(pid {})", std::process::id())), "{msg}");
        drop(first);
        lock_dir(dir.path(), "data directory").expect("free again once the owner is gone");
    }

    #[test]
    fn sqlite_directories() {
        assert_eq!(sqlite_dir("sqlite:///var/lib/x/w.db?mode=rwc"), Some(PathBuf::from("/var/lib/x")));
        assert_eq!(sqlite_dir("sqlite://w.db"), Some(PathBuf::from(".")));
        assert_eq!(sqlite_dir("sqlite::memory:"), None);
    }
}
