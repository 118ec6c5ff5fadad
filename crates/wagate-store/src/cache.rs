//! Sessions read by id, kept in memory so that the hottest read of the API (a client polling
//! one session) needs no query.
//!
//! This is sound because one gateway process owns its database (see [`crate::owner`]) and
//! every write of a session row goes through this crate, which brackets it with a
//! [`WriteGuard`]: while a write is in flight the session is neither served from nor put into
//! the cache, and when the write ends (committed, failed, or its future dropped) the entry is
//! dropped and every read that started before is refused a place in the cache. Entries also
//! expire after [`SessionCache::TTL`], which bounds the one window this cannot see (a write
//! whose commit was already sent when its future was dropped).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use wagate_core::{OrgId, Session, SessionId};

#[derive(Default)]
struct Inner {
    /// Bumped when a write ends; a read may be cached only if none ended since it began.
    generation: u64,
    /// Sessions with a write in flight, and how many.
    writing: HashMap<SessionId, u32>,
    entries: HashMap<SessionId, (Session, Instant)>,
}

#[derive(Default)]
pub(crate) struct SessionCache {
    inner: Mutex<Inner>,
}

/// Taken before a read from the database; see [`SessionCache::put`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

impl SessionCache {
    pub(crate) const TTL: Duration = Duration::from_secs(2);
    /// More sessions than one gateway runs; reaching it starts the cache over.
    pub(crate) const CAPACITY: usize = 100_000;

    /// The session `id` of `org`: `Some(Some(_))` from the cache, `Some(None)` when the cached
    /// session belongs to another organization (so: not found), `None` when not cached.
    pub(crate) fn get(&self, org: Option<&OrgId>, id: &SessionId) -> Option<Option<Session>> {
        let inner = self.lock();
        let (session, read_at) = inner.entries.get(id)?;
        if read_at.elapsed() >= Self::TTL {
            return None;
        }
        Some(org.is_none_or(|org| session.org == *org).then(|| session.clone()))
    }

    /// The session from the cache, else from `read` (a query scoped as `org` is), kept for
    /// the next read.
    pub(crate) async fn read_through(
        &self,
        org: Option<&OrgId>,
        id: &SessionId,
        read: impl Future<Output = crate::Result<Option<Session>>>,
    ) -> crate::Result<Option<Session>> {
        if let Some(cached) = self.get(org, id) {
            return Ok(cached);
        }
        let ticket = self.ticket();
        let found = read.await?;
        if let Some(session) = &found {
            self.put(ticket, session);
        }
        Ok(found)
    }

    pub(crate) fn ticket(&self) -> Ticket {
        Ticket(self.lock().generation)
    }

    /// Keeps `session`, read after `ticket` was taken, unless a write of any session ended
    /// since or one of this session is in flight.
    pub(crate) fn put(&self, ticket: Ticket, session: &Session) {
        let mut inner = self.lock();
        if inner.generation != ticket.0 || inner.writing.contains_key(&session.id) {
            return;
        }
        if inner.entries.len() >= Self::CAPACITY {
            inner.entries.clear();
        }
        inner.entries.insert(session.id.clone(), (session.clone(), Instant::now()));
    }

    /// Marks a write of session `id` in flight until the guard is dropped (after the commit).
    pub(crate) fn writing(self: &Arc<Self>, id: &SessionId) -> WriteGuard {
        let mut inner = self.lock();
        *inner.writing.entry(id.clone()).or_default() += 1;
        inner.entries.remove(id);
        WriteGuard { cache: Arc::clone(self), id: id.clone() }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update is consistent on its own, so a panic elsewhere leaves nothing half done.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A write of one session in flight. Hold it until the transaction has ended.
pub(crate) struct WriteGuard {
    cache: Arc<SessionCache>,
    id: SessionId,
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        let mut inner = self.cache.lock();
        if let Some(n) = inner.writing.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                inner.writing.remove(&self.id);
            }
        }
        inner.generation += 1;
        inner.entries.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use wagate_core::{EngineKind, InstanceId, SessionStatus};

    use super::*;

    fn session(org: &str) -> Session {
        let now = wagate_core::now();
        Session {
            id: SessionId::generate(),
            org: OrgId::parse(org).unwrap(),
            instance_id: InstanceId::generate(),
            name: None,
            engine: EngineKind::Sandbox,
            status: SessionStatus::Stopped,
            status_reason: None,
            desired_running: false,
            identity: None,
            device_name: None,
            send_policy: wagate_core::SendPolicy::default(),
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn a_cached_session_is_served_to_its_organization_only() {
        let cache = Arc::new(SessionCache::default());
        let s = session("acme");
        assert!(cache.get(Some(&s.org), &s.id).is_none());
        cache.put(cache.ticket(), &s);
        assert_eq!(cache.get(Some(&s.org), &s.id), Some(Some(s.clone())));
        assert_eq!(cache.get(None, &s.id), Some(Some(s.clone())));
        assert_eq!(cache.get(Some(&OrgId::parse("globex").unwrap()), &s.id), Some(None));
    }

    #[test]
    fn a_read_that_overlaps_a_write_is_not_kept() {
        let cache = Arc::new(SessionCache::default());
        let s = session("acme");
        // Read began, then a write began and ended: what was read may be old.
        let ticket = cache.ticket();
        drop(cache.writing(&s.id));
        cache.put(ticket, &s);
        assert!(cache.get(None, &s.id).is_none());
        // A read while the write is in flight is not kept either, whatever its ticket.
        let guard = cache.writing(&s.id);
        cache.put(cache.ticket(), &s);
        assert!(cache.get(None, &s.id).is_none());
        drop(guard);
        cache.put(cache.ticket(), &s);
        assert!(cache.get(None, &s.id).is_some());
    }

    #[test]
    fn a_write_drops_the_entry() {
        let cache = Arc::new(SessionCache::default());
        let s = session("acme");
        cache.put(cache.ticket(), &s);
        let guard = cache.writing(&s.id);
        assert!(cache.get(None, &s.id).is_none(), "not served while written");
        drop(guard);
        assert!(cache.get(None, &s.id).is_none());
    }

    #[test]
    fn two_writes_in_flight_both_must_end() {
        let cache = Arc::new(SessionCache::default());
        let s = session("acme");
        let a = cache.writing(&s.id);
        let b = cache.writing(&s.id);
        drop(a);
        cache.put(cache.ticket(), &s);
        assert!(cache.get(None, &s.id).is_none());
        drop(b);
        cache.put(cache.ticket(), &s);
        assert!(cache.get(None, &s.id).is_some());
    }
}
