//! Organizations and API keys on SQLite.

use async_trait::async_trait;
use sqlx::sqlite::SqliteArguments;
use sqlx::query::Query;
use sqlx::{Sqlite, SqliteConnection};
use wagate_core::{ApiKeyId, ApiKeyRecord, OrgId, Timestamp};

use super::SqliteStore;
use crate::rows::ApiKeyRow;
use crate::sql::{self, db_err};
use crate::{ApiKeyStore, ApiKeysVersion, Result};

fn bind_api_key<'q>(query: Query<'q, Sqlite, SqliteArguments>, key: &'q ApiKeyRecord) -> Query<'q, Sqlite, SqliteArguments> {
    query
        .bind(key.id.as_str())
        .bind(key.org.as_str())
        .bind(key.name.as_str())
        .bind(key.capabilities.to_list())
        .bind(&key.hash[..])
        .bind(key.created_at)
        .bind(key.expires_at)
        .bind(key.revoked_at)
        .bind(key.last_used_at)
}

pub(super) async fn ensure_org(conn: &mut SqliteConnection, org: &OrgId, at: Timestamp) -> Result<()> {
    sqlx::query(sql::ENSURE_ORG).bind(org.as_str()).bind(at).execute(conn).await.map_err(db_err)?;
    Ok(())
}

async fn insert_key(conn: &mut SqliteConnection, key: &ApiKeyRecord) -> Result<()> {
    ensure_org(conn, &key.org, key.created_at).await?;
    bind_api_key(sqlx::query(sql::INSERT_API_KEY), key).execute(conn).await.map_err(db_err)?;
    Ok(())
}

#[async_trait]
impl ApiKeyStore for SqliteStore {
    async fn ensure_org(&self, org: &OrgId) -> Result<()> {
        ensure_org(&mut self.writer().await.conn, org, wagate_core::now()).await
    }

    async fn bootstrap(&self, key: &ApiKeyRecord) -> Result<bool> {
        // The write lock is taken up front, so two bootstraps cannot both read an empty database.
        let mut tx = self.begin_write().await?;
        let taken: bool = sqlx::query_scalar(sql::ANY_ORG_OR_KEY).fetch_one(tx.conn().await?).await.map_err(db_err)?;
        if taken {
            return Ok(false);
        }
        insert_key(tx.conn().await?, key).await?;
        tx.commit().await?;
        self.keys_changed();
        Ok(true)
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        let mut tx = self.begin_write().await?;
        insert_key(tx.conn().await?, key).await?;
        tx.commit().await?;
        self.keys_changed();
        Ok(())
    }

    async fn find_api_key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<ApiKeyRecord>> {
        sqlx::query_as::<_, ApiKeyRow>(sql::FIND_API_KEY_BY_HASH)
            .bind(&hash[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .map(ApiKeyRow::into_record)
            .transpose()
    }

    async fn list_api_keys(&self, org: &OrgId) -> Result<Vec<ApiKeyRecord>> {
        sqlx::query_as::<_, ApiKeyRow>(sql::LIST_API_KEYS)
            .bind(org.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(ApiKeyRow::into_record)
            .collect()
    }

    async fn revoke_api_key(&self, id: &ApiKeyId, at: Timestamp) -> Result<bool> {
        let done = sqlx::query(sql::REVOKE_API_KEY).bind(id.as_str()).bind(at).execute(&mut self.writer().await.conn).await.map_err(db_err)?;
        self.keys_changed();
        Ok(done.rows_affected() > 0)
    }

    async fn touch_api_key(&self, id: &ApiKeyId, at: Timestamp) -> Result<()> {
        sqlx::query(sql::TOUCH_API_KEY).bind(id.as_str()).bind(at).execute(&mut self.writer().await.conn).await.map_err(db_err)?;
        Ok(())
    }

    fn api_keys_version(&self) -> Option<ApiKeysVersion> {
        self.keystamp.as_ref().and_then(|stamp| stamp.version())
    }
}

impl SqliteStore {
    /// Called after a commit that changed API keys (not after a mere use).
    fn keys_changed(&self) {
        if let Some(stamp) = &self.keystamp {
            stamp.bump();
        }
    }
}
