//! The PostgreSQL store.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
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

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const MAX_CONNECTIONS: u32 = 16;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PostgresStore {
    pool: PgPool,
    /// Bumped after every commit that appended events.
    commits: Arc<watch::Sender<u64>>,
    /// Sessions read by id (see `cache.rs`).
    sessions: Arc<SessionCache>,
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
        Ok(Self { pool, commits: Arc::new(watch::Sender::new(0)), sessions: Arc::default() })
    }

    /// A read-only transaction whose statements all see one snapshot (`REPEATABLE READ`), so
    /// rows read by two queries agree with each other.
    pub(crate) async fn read_snapshot(&self) -> Result<Transaction<'_, Postgres>> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query(sql::READ_SNAPSHOT).execute(&mut *tx).await.map_err(db_err)?;
        Ok(tx)
    }

    /// The pool, for callers that need raw access (tests, maintenance).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query(sql::PING).execute(&self.pool).await.map_err(db_err)?;
        Ok(())
    }

    async fn begin(&self) -> Result<Box<dyn UnitOfWork>> {
        let tx = self.pool.begin().await.map_err(db_err)?;
        Ok(Box::new(PgUnitOfWork {
            tx,
            appended: false,
            commits: Arc::clone(&self.commits),
            sessions: Arc::clone(&self.sessions),
            writing: Vec::new(),
        }))
    }
}

/// A unit of work. Appending an event takes the event log's lock until commit, so a unit
/// appends its events last, after its other writes.
struct PgUnitOfWork {
    tx: Transaction<'static, Postgres>,
    appended: bool,
    commits: Arc<watch::Sender<u64>>,
    sessions: Arc<SessionCache>,
    /// Dropped after the transaction ends (declared after `tx`, so dropped after it).
    writing: Vec<WriteGuard>,
}

#[async_trait]
impl UnitOfWork for PgUnitOfWork {
    async fn update_session_state(&mut self, id: &SessionId, update: &SessionStateUpdate) -> Result<Option<StateChange>> {
        self.writing.push(self.sessions.writing(id));
        sessions::update_state(&mut self.tx, id, update).await
    }

    async fn append_event(&mut self, event: &NewEvent) -> Result<Event> {
        let event = events::insert(&mut self.tx, event).await?;
        self.appended = true;
        Ok(event)
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let Self { tx, appended, commits, writing, .. } = *self;
        tx.commit().await.map_err(db_err)?;
        drop(writing);
        if appended {
            commits.send_modify(|n| *n += 1);
        }
        Ok(())
    }
}
