//! The in-process store: everything in one mutex-guarded structure, nothing persisted.
//!
//! It exists so benchmarks can measure the gateway without a database, so it keeps the same
//! contract as the SQL stores (uniqueness rules, ordering, scoping), and indexes what the hot
//! paths look up (key hash, instance id, per-organization session lists).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use wagate_core::{
    ApiKeyId, ApiKeyRecord, InstanceId, NewSession, OrgId, Session, SessionId, SessionStatus,
    Timestamp,
};

use crate::{IdentityUpdate, Page, PageRequest, Result, SessionSettings, SessionStateUpdate, Store, StoreError};

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Organization -> creation time.
    orgs: HashMap<OrgId, Timestamp>,
    keys: BTreeMap<ApiKeyId, ApiKeyRecord>,
    key_by_hash: HashMap<[u8; 32], ApiKeyId>,
    sessions: BTreeMap<SessionId, Session>,
    /// Each organization's session ids, ordered (ULID order = creation order).
    sessions_by_org: HashMap<OrgId, BTreeSet<SessionId>>,
    session_by_instance: HashMap<InstanceId, SessionId>,
    /// Named sessions only.
    session_by_name: HashMap<(OrgId, String), SessionId>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> Result<MutexGuard<'_, State>> {
        // Nothing below panics while holding the lock; if something ever does, refuse to serve
        // possibly half-updated state rather than propagate the panic.
        self.state
            .lock()
            .map_err(|_| StoreError::Backend("memory store poisoned by a panic".to_owned()))
    }
}

impl State {
    fn ensure_org(&mut self, org: &OrgId, at: Timestamp) {
        self.orgs.entry(org.clone()).or_insert(at);
    }

    fn check_new_key(&self, key: &ApiKeyRecord) -> Result<()> {
        if self.keys.contains_key(&key.id) {
            return Err(StoreError::Conflict("id".to_owned()));
        }
        if self.key_by_hash.contains_key(&key.hash) {
            return Err(StoreError::Conflict("key_hash".to_owned()));
        }
        Ok(())
    }

    fn insert_key(&mut self, key: &ApiKeyRecord) {
        self.ensure_org(&key.org, key.created_at);
        self.key_by_hash.insert(key.hash, key.id.clone());
        self.keys.insert(key.id.clone(), key.clone());
    }

    fn session_in_org(&self, org: &OrgId, id: &SessionId) -> Option<&Session> {
        self.sessions.get(id).filter(|s| &s.org == org)
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<()> {
        self.state().map(drop)
    }

    async fn ensure_org(&self, org: &OrgId) -> Result<()> {
        self.state()?.ensure_org(org, wagate_core::now());
        Ok(())
    }

    async fn bootstrap(&self, key: &ApiKeyRecord) -> Result<bool> {
        let mut state = self.state()?;
        if !state.orgs.is_empty() || !state.keys.is_empty() {
            return Ok(false);
        }
        state.insert_key(key);
        Ok(true)
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        let mut state = self.state()?;
        state.check_new_key(key)?;
        state.insert_key(key);
        Ok(())
    }

    async fn find_api_key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<ApiKeyRecord>> {
        let state = self.state()?;
        Ok(state
            .key_by_hash
            .get(hash)
            .and_then(|id| state.keys.get(id))
            .cloned())
    }

    async fn list_api_keys(&self, org: &OrgId) -> Result<Vec<ApiKeyRecord>> {
        let state = self.state()?;
        Ok(state
            .keys
            .values()
            .rev()
            .filter(|k| &k.org == org)
            .cloned()
            .collect())
    }

    async fn revoke_api_key(&self, id: &ApiKeyId, at: Timestamp) -> Result<bool> {
        let mut state = self.state()?;
        Ok(match state.keys.get_mut(id) {
            Some(key) => {
                key.revoked_at.get_or_insert(at);
                true
            }
            None => false,
        })
    }

    async fn touch_api_key(&self, id: &ApiKeyId, at: Timestamp) -> Result<()> {
        if let Some(key) = self.state()?.keys.get_mut(id) {
            key.last_used_at = Some(at);
        }
        Ok(())
    }

    async fn insert_session(&self, new: &NewSession) -> Result<Session> {
        let mut state = self.state()?;
        if state.sessions.contains_key(&new.id) {
            return Err(StoreError::Conflict("id".to_owned()));
        }
        if state.session_by_instance.contains_key(&new.instance_id) {
            return Err(StoreError::Conflict("instance_id".to_owned()));
        }
        let name_key = new.name.as_ref().map(|n| (new.org.clone(), n.clone()));
        if let Some(k) = &name_key
            && state.session_by_name.contains_key(k)
        {
            return Err(StoreError::Conflict("name".to_owned()));
        }
        let session = Session {
            id: new.id.clone(),
            org: new.org.clone(),
            instance_id: new.instance_id.clone(),
            name: new.name.clone(),
            engine: new.engine,
            status: new.status,
            status_reason: None,
            desired_running: new.desired_running,
            identity: None,
            device_name: new.device_name.clone(),
            created_at: new.created_at,
            updated_at: new.created_at,
        };
        state.ensure_org(&new.org, new.created_at);
        state
            .sessions_by_org
            .entry(new.org.clone())
            .or_default()
            .insert(new.id.clone());
        state
            .session_by_instance
            .insert(new.instance_id.clone(), new.id.clone());
        if let Some(k) = name_key {
            state.session_by_name.insert(k, new.id.clone());
        }
        state.sessions.insert(new.id.clone(), session.clone());
        Ok(session)
    }

    async fn get_session(&self, org: &OrgId, id: &SessionId) -> Result<Option<Session>> {
        Ok(self.state()?.session_in_org(org, id).cloned())
    }

    async fn get_session_unscoped(&self, id: &SessionId) -> Result<Option<Session>> {
        Ok(self.state()?.sessions.get(id).cloned())
    }

    async fn get_session_by_instance(&self, instance: &InstanceId) -> Result<Option<Session>> {
        let state = self.state()?;
        Ok(state
            .session_by_instance
            .get(instance)
            .and_then(|id| state.sessions.get(id))
            .cloned())
    }

    async fn list_sessions(&self, org: &OrgId, page: PageRequest<'_>) -> Result<Page<Session>> {
        let size = crate::page_size(page.size);
        let state = self.state()?;
        let Some(ids) = state.sessions_by_org.get(org) else {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        };
        let older = match page.after {
            Some(after) => ids.range::<SessionId, _>(..after),
            None => ids.range::<SessionId, _>(..),
        };
        let items = older
            .rev()
            .take(size as usize + 1)
            .filter_map(|id| state.sessions.get(id).cloned())
            .collect();
        Ok(Page::from_overfetched(items, size, |s| &s.id))
    }

    async fn update_session_settings(
        &self,
        org: &OrgId,
        id: &SessionId,
        settings: &SessionSettings<'_>,
        at: Timestamp,
    ) -> Result<Option<Session>> {
        let mut state = self.state()?;
        let Some(old_name) = state.session_in_org(org, id).map(|s| s.name.clone()) else {
            return Ok(None);
        };
        if let Some(name) = settings.name {
            if let Some(name) = name
                && let Some(holder) = state.session_by_name.get(&(org.clone(), name.to_owned()))
                && holder != id
            {
                return Err(StoreError::Conflict("name".to_owned()));
            }
            if let Some(old) = old_name {
                state.session_by_name.remove(&(org.clone(), old));
            }
            if let Some(name) = name {
                state.session_by_name.insert((org.clone(), name.to_owned()), id.clone());
            }
        }
        let Some(session) = state.sessions.get_mut(id) else {
            return Ok(None);
        };
        if let Some(name) = settings.name {
            session.name = name.map(str::to_owned);
        }
        if let Some(device_name) = settings.device_name {
            session.device_name = device_name.map(str::to_owned);
        }
        session.updated_at = at;
        Ok(Some(session.clone()))
    }

    async fn update_session_state(
        &self,
        id: &SessionId,
        update: &SessionStateUpdate,
    ) -> Result<Option<Session>> {
        let mut state = self.state()?;
        let Some(session) = state.sessions.get_mut(id) else {
            return Ok(None);
        };
        session.status = update.status;
        session.status_reason.clone_from(&update.status_reason);
        if let Some(desired) = update.desired_running {
            session.desired_running = desired;
        }
        match &update.identity {
            IdentityUpdate::Keep => {}
            IdentityUpdate::Set(identity) => session.identity = Some(identity.clone()),
            IdentityUpdate::Clear => session.identity = None,
        }
        session.updated_at = update.at;
        Ok(Some(session.clone()))
    }

    async fn delete_session(&self, org: &OrgId, id: &SessionId) -> Result<bool> {
        let mut state = self.state()?;
        if state.session_in_org(org, id).is_none() {
            return Ok(false);
        }
        let Some(session) = state.sessions.remove(id) else {
            return Ok(false);
        };
        if let Some(ids) = state.sessions_by_org.get_mut(org) {
            ids.remove(id);
        }
        state.session_by_instance.remove(&session.instance_id);
        if let Some(name) = session.name {
            state.session_by_name.remove(&(session.org, name));
        }
        Ok(true)
    }

    async fn sessions_to_resume(&self) -> Result<Vec<Session>> {
        let state = self.state()?;
        Ok(state
            .sessions
            .values()
            .filter(|s| s.desired_running)
            .cloned()
            .collect())
    }

    async fn count_sessions_by_status(&self) -> Result<Vec<(SessionStatus, u64)>> {
        let state = self.state()?;
        Ok(crate::rows::complete_counts(
            state.sessions.values().map(|s| (s.status, 1)),
        ))
    }
}
