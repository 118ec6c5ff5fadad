//! Helpers for tests that need a real database (enable the `testing` feature).
//!
//! Tests never share a database: [`fresh_postgres`] creates a uniquely named database on the
//! server given by an admin URL and drops it again when its guard goes away.
//!
//! ```no_run
//! # async fn demo() -> wagate_store::Result<()> {
//! let Some(admin) = wagate_store::testing::postgres_url_from_env() else {
//!     eprintln!("skipped: {} not set", wagate_store::testing::POSTGRES_URL_ENV);
//!     return Ok(());
//! };
//! let (url, _guard) = wagate_store::testing::fresh_postgres(&admin).await?;
//! let store = wagate_store::connect(&url).await?;
//! # let _ = store; Ok(()) }
//! ```

use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::{Result, StoreError};

/// The environment variable naming a PostgreSQL server tests may create databases on, e.g.
/// `postgres://postgres@127.0.0.1:5432/postgres`.
pub const POSTGRES_URL_ENV: &str = "WAGATE_TEST_POSTGRES_URL";

/// The admin URL from [`POSTGRES_URL_ENV`], when set and not empty.
pub fn postgres_url_from_env() -> Option<String> {
    std::env::var(POSTGRES_URL_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// Creates an empty database `wagate_test_<ulid>` on the server of `admin_url` (a URL whose user
/// may create databases) and returns its URL, plus a guard that drops it.
pub async fn fresh_postgres(admin_url: &str) -> Result<(String, TestDbGuard)> {
    let name = format!(
        "wagate_test_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let mut url = url::Url::parse(admin_url)
        .map_err(|_| StoreError::Backend("invalid postgres admin URL".to_owned()))?;
    url.set_path(&format!("/{name}"));

    let mut admin = PgConnection::connect(admin_url).await.map_err(|e| {
        StoreError::Backend(format!(
            "cannot connect to the postgres admin database: {}",
            crate::sql::describe(&e)
        ))
    })?;
    // The name is ours (a lowercase ULID), so formatting it into the statement is safe.
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .map_err(crate::sql::db_err)?;
    admin.close().await.ok();

    Ok((
        url.to_string(),
        TestDbGuard {
            admin_url: admin_url.to_owned(),
            name,
        },
    ))
}

/// Drops its test database when dropped (best effort, `WITH (FORCE)` so open pools do not
/// block it). Safe to drop inside or outside an async runtime: the work runs on a separate
/// thread with its own runtime.
#[derive(Debug)]
pub struct TestDbGuard {
    admin_url: String,
    name: String,
}

impl TestDbGuard {
    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDbGuard {
    fn drop(&mut self) {
        let admin_url = std::mem::take(&mut self.admin_url);
        let name = std::mem::take(&mut self.name);
        let cleanup = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return eprintln!("test database {name} not dropped: no runtime: {e}"),
            };
            runtime.block_on(async {
                let dropped = async {
                    let mut admin = PgConnection::connect(&admin_url).await?;
                    sqlx::query(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await?;
                    admin.close().await
                };
                if let Err(e) = dropped.await {
                    eprintln!(
                        "test database {name} not dropped: {}",
                        crate::sql::describe(&e)
                    );
                }
            });
        });
        // Waiting keeps databases from outliving the test process; a failure was reported above.
        let _ = cleanup.join();
    }
}
