//! Storage for wagate.
//!
//! One trait per aggregate ([`ApiKeyStore`], [`SessionStore`], [`EventStore`], [`WebhookStore`],
//! [`DeliveryStore`], [`MessageStore`]), gathered in
//! [`Store`], with a [`UnitOfWork`] for writes that commit together. Two implementations,
//! chosen once from the database URL: `sqlite://PATH` (the default, WAL mode) and
//! `postgres://...`, each with its own plain `sqlx` queries and embedded migrations (applied by
//! [`connect`]); one behaviour suite (`tests/behaviour.rs`) runs against both. Every method
//! that touches a tenant's resource takes the organization, so a query can never reach another
//! organization's rows.

use std::sync::Arc;

use async_trait::async_trait;

mod cache;
mod keystamp;
pub mod owner;
mod postgres;
mod rows;
mod sql;
mod sqlite;
mod wal;
#[cfg(feature = "testing")]
pub mod testing;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
use wagate_core::{
    ApiKeyId, ApiKeyRecord, Event, EventId, EventType, Identity, InstanceId, NewEvent, NewSession,
    OrgId, Session, SessionId, SessionStatus, Timestamp,
};

pub mod messages;
pub use messages::{Accepted, Chat, Idempotency, MessageFilter, MessageStore, ReactionRecord, StatusUpdate};

mod webhooks;
pub use webhooks::{
    AttemptRecord, Claimed, DeliveryRecord, DeliveryStore, FanOut, NextStep, ReplayWindow, WebhookStore, WebhookUpdate,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken (e.g. a duplicate session name in one organization).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database failed or is unreachable. The message is for logs, never for clients.
    #[error("database error: {0}")]
    Backend(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One page of a newest-first list.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest<'a, K = SessionId> {
    /// 1..=500
    pub size: u32,
    /// Return items strictly older than this id (the last id of the previous page).
    pub after: Option<&'a K>,
}

#[derive(Debug, Clone)]
pub struct Page<T, K = SessionId> {
    pub items: Vec<T>,
    /// Present when more items follow: the id to pass as `after` for the next page.
    pub next: Option<K>,
}

impl PageRequest<'_> {
    pub const MAX_SIZE: u32 = 500;
}

/// The page size actually used: `size` clamped to `1..=500`.
pub(crate) fn page_size(size: u32) -> u32 {
    size.clamp(1, PageRequest::MAX_SIZE)
}

impl<T, K: Clone> Page<T, K> {
    /// Builds a page from up to `size + 1` newest-first items: the extra one, if present, only
    /// says that another page follows, which starts after this page's last item.
    pub(crate) fn from_overfetched(
        mut items: Vec<T>,
        size: u32,
        id: impl Fn(&T) -> &K,
    ) -> Self {
        let more = items.len() > size as usize;
        items.truncate(size as usize);
        let next = if more {
            items.last().map(|last| id(last).clone())
        } else {
            None
        };
        Self { items, next }
    }
}

/// A change of a session's user-set fields: `None` leaves a field as it is, `Some(None)` clears
/// it, `Some(Some(v))` sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionSettings<'a> {
    pub name: Option<Option<&'a str>>,
    /// The linked-device name; cleared means the gateway-wide default.
    pub device_name: Option<Option<&'a str>>,
    /// Messages per minute (1 to 600); cleared means the gateway-wide default.
    pub send_per_minute: Option<Option<u32>>,
    /// Whether chats show "typing…" before a text is sent.
    pub send_typing: Option<bool>,
}

impl<'a> SessionSettings<'a> {
    /// Only the name.
    pub fn name(name: Option<&'a str>) -> Self {
        Self { name: Some(name), ..Self::default() }
    }

    /// Only the linked-device name.
    pub fn device_name(device_name: Option<&'a str>) -> Self {
        Self { device_name: Some(device_name), ..Self::default() }
    }
}

/// What to do with the stored identity in a state update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityUpdate {
    Keep,
    Set(Identity),
    Clear,
}

/// A change of a session's run state, written by the supervisor.
#[derive(Debug, Clone)]
pub struct SessionStateUpdate {
    pub status: SessionStatus,
    /// Replaces the stored reason (None clears it).
    pub status_reason: Option<String>,
    /// None keeps the stored value.
    pub desired_running: Option<bool>,
    pub identity: IdentityUpdate,
    pub at: Timestamp,
}

/// What changed in a session-state update: the session as written and the status it had.
#[derive(Debug, Clone)]
pub struct StateChange {
    pub session: Session,
    pub previous: SessionStatus,
}

/// Which events a reader wants (all of the organization's when both are `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub session: Option<SessionId>,
    /// `None`: every type; `Some`: only these (never empty).
    pub types: Option<Vec<EventType>>,
}

impl EventFilter {
    pub fn matches(&self, event: &Event) -> bool {
        self.session.as_ref().is_none_or(|s| event.session.as_ref() == Some(s))
            && self.types.as_ref().is_none_or(|types| types.contains(&event.kind))
    }

    /// The type list as the SQL backends bind it: a JSON array of names.
    pub(crate) fn types_json(&self) -> Option<String> {
        rows::event_types_json(self.types.as_deref())
    }
}

/// Organizations and their API keys.
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// Creates the organization if it does not exist.
    async fn ensure_org(&self, org: &OrgId) -> Result<()>;

    /// Atomically: when the database holds no organization and no API key, creates `key.org`
    /// and inserts `key`, returning true. Otherwise changes nothing and returns false.
    async fn bootstrap(&self, key: &ApiKeyRecord) -> Result<bool>;

    /// Inserts a key (creating its organization if new).
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()>;
    /// The key whose SHA-256 is `hash`, revoked or not.
    async fn find_api_key_by_hash(&self, hash: &[u8; 32]) -> Result<Option<ApiKeyRecord>>;
    /// An organization's keys, newest first.
    async fn list_api_keys(&self, org: &OrgId) -> Result<Vec<ApiKeyRecord>>;
    /// Marks the key revoked (keeping the first revocation time). False when no such key.
    async fn revoke_api_key(&self, id: &ApiKeyId, at: Timestamp) -> Result<bool>;
    /// Records a use of the key.
    async fn touch_api_key(&self, id: &ApiKeyId, at: Timestamp) -> Result<()>;
    /// Cheap and synchronous (no query): a value that differs once any process, this one or
    /// another (the CLI), has committed a change to API keys (a new key, a revocation) since
    /// the value was read. `None` when the backend cannot tell without a query; callers must
    /// then look keys up every time.
    fn api_keys_version(&self) -> Option<ApiKeysVersion> {
        None
    }
}

/// See [`ApiKeyStore::api_keys_version`]. Only equality means anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiKeysVersion {
    file: u64,
    len: u64,
}

impl ApiKeysVersion {
    /// For stores outside this crate: any two numbers that together change on every change.
    pub const fn new(file: u64, len: u64) -> Self {
        Self { file, len }
    }
}

/// Sessions. Every status change (creation included) appends its `session.status` event in
/// the same transaction.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Inserts a session (creating its organization if new) with its first `session.status`
    /// event (`previousStatus: null`). `Conflict` when another session of the organization has
    /// the same non-null name, or the instance id is taken.
    async fn insert_session(&self, new: &NewSession) -> Result<Session>;
    async fn get_session(&self, org: &OrgId, id: &SessionId) -> Result<Option<Session>>;
    /// Unscoped lookup, for the supervisor only (never with a client-supplied id alone).
    async fn get_session_unscoped(&self, id: &SessionId) -> Result<Option<Session>>;
    /// Lookup by the wawp instance id (the caller then checks the organization).
    async fn get_session_by_instance(&self, instance: &InstanceId) -> Result<Option<Session>>;
    /// An organization's sessions, newest first.
    async fn list_sessions(&self, org: &OrgId, page: PageRequest<'_>) -> Result<Page<Session>>;
    /// Applies `settings` in one write (fields left `None` are unchanged). `Ok(None)` when no
    /// such session in the organization; `Conflict("name")` on a duplicate name, with nothing
    /// changed.
    async fn update_session_settings(
        &self,
        org: &OrgId,
        id: &SessionId,
        settings: &SessionSettings<'_>,
        at: Timestamp,
    ) -> Result<Option<Session>>;
    /// False when no such session in the organization.
    async fn delete_session(&self, org: &OrgId, id: &SessionId) -> Result<bool>;
    /// Every session with `desired_running`, oldest first (resumed at start-up).
    async fn sessions_to_resume(&self) -> Result<Vec<Session>>;
    /// Number of sessions per status, across organizations (for `/metrics`): every status, in
    /// [`SessionStatus::ALL`] order, zero included (so a gauge drops back to 0).
    async fn count_sessions_by_status(&self) -> Result<Vec<(SessionStatus, u64)>>;
}

/// The event log. Events are appended only through a [`UnitOfWork`]; these are its readers.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// An organization's events, newest first; `page.after` is the last event id of the
    /// previous page.
    async fn list_events(
        &self,
        org: &OrgId,
        filter: &EventFilter,
        page: PageRequest<'_, EventId>,
    ) -> Result<Page<Event, EventId>>;
    async fn get_event(&self, org: &OrgId, id: &EventId) -> Result<Option<Event>>;
    /// The stored events at these log positions, of any organization, in no set order (the
    /// ones past the retention are missing): what a batch of webhook deliveries sends.
    async fn events_at(&self, seqs: &[i64]) -> Result<Vec<Event>>;
    /// Up to `limit` events of every organization with a position after `after`, oldest
    /// first: the log as its in-process readers tail it.
    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<Event>>;
    /// As [`EventStore::events_after`], for one organization and filter.
    async fn org_events_after(
        &self,
        org: &OrgId,
        filter: &EventFilter,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>>;
    /// The position of the last event committed (0 when the log is empty).
    async fn last_event_seq(&self) -> Result<i64>;
    /// Deletes up to `limit` events created before `before`, oldest first; returns how many.
    async fn prune_events(&self, before: Timestamp, limit: u32) -> Result<u64>;
    /// Changes (to an unspecified value) after every commit that appended events: readers
    /// wait on it instead of polling.
    fn event_commits(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// Writes that commit together or not at all. Dropping it without [`UnitOfWork::commit`]
/// rolls everything back.
#[async_trait]
pub trait UnitOfWork: Send {
    /// Applies a run-state change. `Ok(None)` when the session no longer exists. The caller
    /// appends the `session.status` event when the status changed.
    async fn update_session_state(
        &mut self,
        id: &SessionId,
        update: &SessionStateUpdate,
    ) -> Result<Option<StateChange>>;
    /// Appends an event; it is visible to readers, in commit order, once this unit commits.
    async fn append_event(&mut self, event: &NewEvent) -> Result<Event>;
    async fn commit(self: Box<Self>) -> Result<()>;
}

#[async_trait]
pub trait Store: ApiKeyStore + SessionStore + EventStore + WebhookStore + DeliveryStore + MessageStore + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Cheap round trip, for `/readyz`.
    async fn ping(&self) -> Result<()>;

    /// Starts a unit of work (a write transaction). On SQLite it holds this process's turn to
    /// write until it ends: do every write of the task through it, never through the store's
    /// other methods meanwhile (they would wait for that same turn), and await nothing another
    /// writer must finish first. Its `commit` returns once it is committed; on SQLite, units of
    /// work that were waiting for the turn at the same time commit in one transaction (each can
    /// still fail or be dropped alone).
    async fn begin(&self) -> Result<Box<dyn UnitOfWork>>;

    /// Applies a run-state change and, when the status changed, appends its `session.status`
    /// event, in one transaction. `Ok(None)` when the session no longer exists.
    async fn update_session_state(
        &self,
        id: &SessionId,
        update: &SessionStateUpdate,
    ) -> Result<Option<Session>> {
        let mut uow = self.begin().await?;
        let Some(change) = uow.update_session_state(id, update).await? else {
            return Ok(None);
        };
        let session = change.session;
        if session.status != change.previous {
            let event = NewEvent::session_status(
                &session.org,
                &session.id,
                session.status,
                Some(change.previous),
                session.status_reason.as_deref(),
            );
            uow.append_event(&event).await?;
        }
        uow.commit().await?;
        Ok(Some(session))
    }
}

/// Everything a caller of the store needs in scope: `use wagate_store::prelude::*;`.
pub mod prelude {
    pub use crate::{ApiKeyStore, DeliveryStore, EventStore, MessageStore, SessionStore, Store, UnitOfWork, WebhookStore};
}

/// Opens the store named by `url` and applies its migrations.
///
/// `sqlite://PATH` creates the file (and its directory) if missing; `postgres://...` expects the
/// database to exist.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    // Only the scheme is ever echoed back: the rest of a URL may hold a password.
    let scheme = url
        .split_once(':')
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("sqlite") => Ok(Arc::new(SqliteStore::connect(url).await?)),
        Some("postgres" | "postgresql") => Ok(Arc::new(PostgresStore::connect(url).await?)),
        Some(other) => Err(StoreError::Backend(format!(
            "unsupported database URL scheme {other:?}: expected sqlite://PATH, postgres://..."
        ))),
        None => Err(StoreError::Backend(
            "database URL has no scheme: expected sqlite://PATH, postgres://..."
                .to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_know_whether_more_follow() {
        let ids: Vec<SessionId> = (0..4).map(|_| SessionId::generate()).collect();
        let page = Page::from_overfetched(ids.clone(), 3, |id| id);
        assert_eq!(page.items.len(), 3);
        assert_eq!(page.next.as_ref(), Some(&ids[2]));
        let page = Page::from_overfetched(ids[..3].to_vec(), 3, |id| id);
        assert_eq!(page.items.len(), 3);
        assert_eq!(page.next, None);
        let page = Page::from_overfetched(Vec::<SessionId>::new(), 3, |id| id);
        assert!(page.items.is_empty() && page.next.is_none());
    }

    #[test]
    fn page_sizes_are_clamped() {
        assert_eq!(page_size(0), 1);
        assert_eq!(page_size(50), 50);
        assert_eq!(page_size(10_000), 500);
    }

    #[tokio::test]
    async fn unknown_schemes_are_refused_without_echoing_the_url() {
        for url in ["mysql://root:hunter2@db/wagate", "hunter2", "file:///tmp/x", "memory://"] {
            let Err(StoreError::Backend(msg)) = connect(url).await else {
                panic!("{url} should be refused");
            };
            assert!(!msg.contains("hunter2") && !msg.contains("/tmp/x"), "{msg}");
        }
    }

    #[tokio::test]
    async fn bad_postgres_urls_do_not_leak_the_password() {
        let Err(StoreError::Backend(msg)) =
            connect("postgres://u:hunter2@127.0.0.1:1/db?sslmode=bogus").await
        else {
            panic!("should fail");
        };
        assert!(!msg.contains("hunter2"), "{msg}");
    }
}
