//! [`ApiKeyService`]: creating, listing and revoking API keys (the `keys` commands), and the
//! bootstrap key of an empty database.

use std::sync::Arc;

use wagate_core::{ApiKeyId, ApiKeyRecord, Capabilities, OrgId, Timestamp};
use wagate_store::StoreError;
use wagate_store::prelude::*;

/// A key to create.
#[derive(Debug, Clone)]
pub struct CreateApiKey {
    pub org: OrgId,
    /// Trimmed, not empty.
    pub name: String,
    pub capabilities: Capabilities,
    pub expires_at: Option<Timestamp>,
}

/// A key just created: the stored record and the secret, which is shown once and never kept.
pub struct CreatedApiKey {
    pub record: ApiKeyRecord,
    pub secret: String,
}

impl std::fmt::Debug for CreatedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedApiKey").field("record", &self.record.id).field("secret", &"[redacted]").finish()
    }
}

/// Generates a key for `req`, created now.
fn generate(req: CreateApiKey) -> CreatedApiKey {
    let key = wagate_auth::apikey::generate();
    let record = ApiKeyRecord {
        id: ApiKeyId::generate(),
        org: req.org,
        name: req.name,
        capabilities: req.capabilities,
        hash: key.hash,
        created_at: wagate_core::now(),
        expires_at: req.expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    CreatedApiKey { record, secret: key.secret }
}

pub struct ApiKeyService {
    store: Arc<dyn Store>,
}

impl ApiKeyService {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Creates a key (and its organization, if new).
    pub async fn create(&self, req: CreateApiKey) -> Result<CreatedApiKey, StoreError> {
        let created = generate(req);
        self.store.insert_api_key(&created.record).await?;
        Ok(created)
    }

    /// On an empty database (no organization, no key): creates `org` and one key with every
    /// capability, and returns it. `None` otherwise.
    pub async fn bootstrap(&self, org: OrgId) -> Result<Option<CreatedApiKey>, StoreError> {
        let created =
            generate(CreateApiKey { org, name: "bootstrap".to_owned(), capabilities: Capabilities::ALL, expires_at: None });
        Ok(self.store.bootstrap(&created.record).await?.then_some(created))
    }

    /// An organization's keys, newest first.
    pub async fn list(&self, org: &OrgId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.store.list_api_keys(org).await
    }

    /// Revokes the key at once. False when there is no such key.
    pub async fn revoke(&self, id: &ApiKeyId) -> Result<bool, StoreError> {
        self.store.revoke_api_key(id, wagate_core::now()).await
    }
}
