//! The PostgreSQL store.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::sql::{impl_sql_store, open_failure};
use crate::{Result, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const MAX_CONNECTIONS: u32 = 16;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to an existing database named by a `postgres://` URL and applies the
    /// migrations (sqlx serializes concurrent migrators with an advisory lock).
    pub async fn connect(url: &str) -> Result<Self> {
        // Error texts of URL parsing may echo parts of the URL; keep them out of messages.
        let options: PgConnectOptions = url
            .parse()
            .map_err(|_| StoreError::Backend("invalid postgres URL".to_owned()))?;
        let pool = match PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
        {
            Ok(pool) => pool,
            Err(e) => {
                let why = open_failure::<PgConnection>(e, &options).await;
                return Err(StoreError::Backend(format!(
                    "cannot connect to postgres: {why}"
                )));
            }
        };
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Backend(format!("postgres migrations failed: {e}")))?;
        Ok(Self { pool })
    }

    /// The pool, for callers that need raw access (tests, maintenance).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Locks both tables against writers for the length of the transaction, so two gateways
    /// starting at once (or a `keys create` racing a first start) cannot both see an empty
    /// database. `EXCLUSIVE` still lets readers through. Tables are locked in the same order
    /// (organizations, then api_keys) as every other writer touches them.
    async fn begin_bootstrap(&self) -> sqlx::Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("LOCK TABLE organizations, api_keys IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

impl_sql_store!(PostgresStore, Postgres, "postgres");
