//! A cache of API keys found valid, so that an authenticated request needs no key query.
//!
//! It is used only when the store can tell cheaply that keys changed
//! ([`ApiKeyStore::api_keys_version`]): the whole cache is dropped as soon as that version
//! differs from the one its entries were read under, so a key revoked by any process is
//! refused by the next request. Entries also expire after [`KeyCache::TTL`], which bounds what a
//! change that was never stamped (a writer killed between commit and stamp, a hand edit of the
//! database) can be missed for. Only keys that were valid when read are cached; each use still
//! checks expiry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use wagate_core::ApiKeyRecord;
use wagate_store::ApiKeysVersion;

struct Entry {
    record: ApiKeyRecord,
    read_at: Instant,
}

#[derive(Default)]
struct Inner {
    version: Option<ApiKeysVersion>,
    entries: HashMap<[u8; 32], Entry>,
}

#[derive(Default)]
pub(crate) struct KeyCache {
    inner: Mutex<Inner>,
}

impl KeyCache {
    /// How long an entry is trusted without a query even if no change was stamped.
    pub(crate) const TTL: Duration = Duration::from_secs(5);
    /// At most this many keys are kept (a gateway has far fewer; reaching it clears the cache).
    pub(crate) const CAPACITY: usize = 10_000;

    /// The cached record for `hash`, if it was read under `version` less than [`Self::TTL`] ago.
    /// A different `version` empties the cache.
    pub(crate) fn get(&self, version: ApiKeysVersion, hash: &[u8; 32]) -> Option<ApiKeyRecord> {
        let mut inner = self.lock();
        if inner.version != Some(version) {
            inner.entries.clear();
            inner.version = Some(version);
            return None;
        }
        let entry = inner.entries.get(hash)?;
        if entry.read_at.elapsed() >= Self::TTL {
            inner.entries.remove(hash);
            return None;
        }
        Some(entry.record.clone())
    }

    /// Keeps `record`, read from the store after `version` was observed, unless the version
    /// moved on meanwhile (the record may predate that change).
    pub(crate) fn put(&self, version: ApiKeysVersion, record: ApiKeyRecord, read_at: Instant) {
        let mut inner = self.lock();
        if inner.version != Some(version) {
            return;
        }
        if inner.entries.len() >= Self::CAPACITY {
            inner.entries.clear();
        }
        inner.entries.insert(record.hash, Entry { record, read_at });
    }

    /// Sets the cached copy's last use (a use being recorded, or the old value back after
    /// recording failed).
    pub(crate) fn touched(&self, hash: &[u8; 32], at: Option<wagate_core::Timestamp>) {
        if let Some(entry) = self.lock().entries.get_mut(hash) {
            entry.record.last_used_at = at;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The data stays consistent even if a holder panicked (every update is one statement).
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use wagate_core::{ApiKeyId, Capabilities, OrgId};

    use super::*;

    fn record(hash: u8) -> ApiKeyRecord {
        ApiKeyRecord {
            id: ApiKeyId::generate(),
            org: OrgId::parse("acme").unwrap(),
            name: "ci".into(),
            capabilities: Capabilities::ALL,
            hash: [hash; 32],
            created_at: wagate_core::now(),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        }
    }

    #[test]
    fn entries_live_while_the_version_holds() {
        let cache = KeyCache::default();
        let v1 = ApiKeysVersion::new(1, 0);
        assert!(cache.get(v1, &[1; 32]).is_none());
        cache.put(v1, record(1), Instant::now());
        assert_eq!(cache.get(v1, &[1; 32]).unwrap().hash, [1; 32]);
        assert!(cache.get(v1, &[2; 32]).is_none());
        // Another version empties the cache.
        let v2 = ApiKeysVersion::new(1, 1);
        assert!(cache.get(v2, &[1; 32]).is_none());
        assert!(cache.get(v1, &[1; 32]).is_none(), "going back does not bring entries back");
    }

    #[test]
    fn a_record_read_before_a_change_is_not_kept_after_it() {
        let cache = KeyCache::default();
        let v1 = ApiKeysVersion::new(1, 0);
        let v2 = ApiKeysVersion::new(1, 1);
        assert!(cache.get(v1, &[1; 32]).is_none());
        // Another request sees the change before this one stores what it read under v1.
        assert!(cache.get(v2, &[1; 32]).is_none());
        cache.put(v1, record(1), Instant::now());
        assert!(cache.get(v2, &[1; 32]).is_none());
    }

    #[test]
    fn entries_expire() {
        let cache = KeyCache::default();
        let v = ApiKeysVersion::new(7, 7);
        assert!(cache.get(v, &[1; 32]).is_none());
        cache.put(v, record(1), Instant::now().checked_sub(KeyCache::TTL).unwrap());
        assert!(cache.get(v, &[1; 32]).is_none());
    }

    #[test]
    fn a_full_cache_starts_over() {
        let cache = KeyCache::default();
        let v = ApiKeysVersion::new(1, 0);
        assert!(cache.get(v, &[0; 32]).is_none());
        for i in 0..KeyCache::CAPACITY {
            let mut r = record(0);
            r.hash[..8].copy_from_slice(&(i as u64).to_le_bytes());
            cache.put(v, r, Instant::now());
        }
        assert_eq!(cache.lock().entries.len(), KeyCache::CAPACITY);
        cache.put(v, record(9), Instant::now());
        assert_eq!(cache.lock().entries.len(), 1);
    }
}
