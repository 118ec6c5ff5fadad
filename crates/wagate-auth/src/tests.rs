//! Authenticator tests against a small fake store.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use wagate_core::{ApiKeyId, ApiKeyRecord, Capabilities, Capability, OrgId, Timestamp};
use wagate_store::{ApiKeyStore, ApiKeysVersion, Result as StoreResult, StoreError};

use super::*;
use crate::testing::{JwksServer, TestKey, claims, jwks, sign};

/// Holds API keys only: the authenticator needs no other part of the store.
#[derive(Default)]
struct FakeStore {
    keys: Mutex<Vec<ApiKeyRecord>>,
    touches: Mutex<Vec<(ApiKeyId, Timestamp)>>,
    lookups: Mutex<u32>,
    fail: AtomicBool,
    fail_touch: AtomicBool,
    /// When set, the store reports a version that inserts and revocations bump (as SQLite's
    /// stamp file does), so the authenticator caches.
    version: Mutex<Option<u64>>,
}

impl FakeStore {
    fn check(&self) -> StoreResult<()> {
        if self.fail.load(Ordering::SeqCst) { Err(StoreError::Backend("connection reset".into())) } else { Ok(()) }
    }
    fn touches(&self) -> Vec<(ApiKeyId, Timestamp)> {
        self.touches.lock().unwrap().clone()
    }
    fn versioned() -> Self {
        Self { version: Mutex::new(Some(0)), ..Self::default() }
    }
    fn bump(&self) {
        if let Some(v) = self.version.lock().unwrap().as_mut() {
            *v += 1;
        }
    }
    fn lookups(&self) -> u32 {
        *self.lookups.lock().unwrap()
    }
}

#[async_trait]
impl ApiKeyStore for FakeStore {
    async fn ensure_org(&self, _org: &OrgId) -> StoreResult<()> {
        Ok(())
    }
    async fn bootstrap(&self, _key: &ApiKeyRecord) -> StoreResult<bool> {
        unimplemented!()
    }
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        self.keys.lock().unwrap().push(key.clone());
        self.bump();
        Ok(())
    }
    async fn find_api_key_by_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<ApiKeyRecord>> {
        self.check()?;
        *self.lookups.lock().unwrap() += 1;
        Ok(self.keys.lock().unwrap().iter().find(|k| &k.hash == hash).cloned())
    }
    async fn list_api_keys(&self, _org: &OrgId) -> StoreResult<Vec<ApiKeyRecord>> {
        unimplemented!()
    }
    async fn revoke_api_key(&self, id: &ApiKeyId, at: Timestamp) -> StoreResult<bool> {
        let mut keys = self.keys.lock().unwrap();
        let Some(k) = keys.iter_mut().find(|k| &k.id == id) else { return Ok(false) };
        k.revoked_at.get_or_insert(at);
        drop(keys);
        self.bump();
        Ok(true)
    }
    async fn touch_api_key(&self, id: &ApiKeyId, at: Timestamp) -> StoreResult<()> {
        self.check()?;
        if self.fail_touch.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("disk full".into()));
        }
        self.touches.lock().unwrap().push((id.clone(), at));
        if let Some(k) = self.keys.lock().unwrap().iter_mut().find(|k| &k.id == id) {
            k.last_used_at = Some(at);
        }
        Ok(())
    }
    fn api_keys_version(&self) -> Option<ApiKeysVersion> {
        self.version.lock().unwrap().map(|v| ApiKeysVersion::new(v, 0))
    }
}

fn org(s: &str) -> OrgId {
    OrgId::parse(s).unwrap()
}

fn record(key: &GeneratedKey, org_name: &str, caps: Capabilities) -> ApiKeyRecord {
    ApiKeyRecord {
        id: ApiKeyId::generate(),
        org: org(org_name),
        name: "ci".into(),
        capabilities: caps,
        hash: key.hash,
        created_at: wagate_core::now(),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    }
}

async fn setup(
    rec: impl FnOnce(&GeneratedKey) -> ApiKeyRecord,
) -> (Arc<FakeStore>, Authenticator, GeneratedKey, ApiKeyId) {
    setup_on(FakeStore::default(), rec).await
}

async fn setup_on(
    store: FakeStore,
    rec: impl FnOnce(&GeneratedKey) -> ApiKeyRecord,
) -> (Arc<FakeStore>, Authenticator, GeneratedKey, ApiKeyId) {
    let store = Arc::new(store);
    let key = apikey::generate();
    let r = rec(&key);
    let id = r.id.clone();
    store.insert_api_key(&r).await.unwrap();
    let auth = Authenticator::new(store.clone(), None);
    (store, auth, key, id)
}

/// Waits for spawned touches to land.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
}

#[tokio::test]
async fn api_key_authenticates_to_its_org_and_capabilities() {
    let caps = Capabilities::NONE.with(Capability::Send).with(Capability::Read);
    let (_store, auth, key, id) = setup(|k| record(k, "acme", caps)).await;
    let p = auth.authenticate(&key.secret).await.unwrap();
    assert_eq!(p.org, org("acme"));
    assert_eq!(p.capabilities, caps);
    assert_eq!(p.kind, PrincipalKind::ApiKey { id });
    assert!(!p.can(Capability::Manage));
}

#[tokio::test]
async fn unknown_and_malformed_api_keys_are_rejected() {
    let (store, auth, key, _) = setup(|k| record(k, "acme", Capabilities::ALL)).await;
    let other = apikey::generate();
    assert_eq!(auth.authenticate(&other.secret).await, Err(AuthError::InvalidApiKey));
    // Format errors are rejected before any lookup.
    let before = *store.lookups.lock().unwrap();
    let mut typo = key.secret.clone().into_bytes();
    typo[12] = if typo[12] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    for bad in [typo.as_str(), "wag_", "wag_short", &key.secret[..key.secret.len() - 1]] {
        assert_eq!(auth.authenticate(bad).await, Err(AuthError::Malformed), "{bad}");
    }
    assert_eq!(*store.lookups.lock().unwrap(), before);
    assert_eq!(auth.authenticate("").await, Err(AuthError::Missing));
    assert_eq!(auth.authenticate("   ").await, Err(AuthError::Missing));
}

#[tokio::test]
async fn revocation_takes_effect_at_once() {
    let (store, auth, key, id) = setup(|k| record(k, "acme", Capabilities::ALL)).await;
    assert!(auth.authenticate(&key.secret).await.is_ok());
    assert!(store.revoke_api_key(&id, wagate_core::now()).await.unwrap());
    assert_eq!(auth.authenticate(&key.secret).await, Err(AuthError::Revoked));
}

#[tokio::test]
async fn a_versioned_store_is_asked_once_until_keys_change() {
    let (store, auth, key, id) = setup_on(FakeStore::versioned(), |k| record(k, "acme", Capabilities::ALL)).await;
    for _ in 0..5 {
        assert!(auth.authenticate(&key.secret).await.is_ok());
    }
    assert_eq!(store.lookups(), 1, "one query, then the cache");
    settle().await;
    assert_eq!(store.touches().len(), 1, "the use is still recorded");

    // Another key appearing is a change: one more query, and the answer is the same.
    let other = apikey::generate();
    store.insert_api_key(&record(&other, "acme", Capabilities::ALL)).await.unwrap();
    assert!(auth.authenticate(&key.secret).await.is_ok());
    assert_eq!(store.lookups(), 2);

    // A revocation (by any process: the store's version is what tells) is seen at once.
    assert!(store.revoke_api_key(&id, wagate_core::now()).await.unwrap());
    assert_eq!(auth.authenticate(&key.secret).await, Err(AuthError::Revoked));
    assert_eq!(auth.authenticate(&key.secret).await, Err(AuthError::Revoked), "a refused key is not cached");
    assert_eq!(store.lookups(), 4);
}

#[tokio::test]
async fn a_cached_key_still_expires_on_time() {
    let soon = wagate_core::now() + chrono::Duration::milliseconds(300);
    let (_s, auth, key, _) = setup_on(FakeStore::versioned(), |k| ApiKeyRecord {
        expires_at: Some(soon),
        ..record(k, "acme", Capabilities::ALL)
    })
    .await;
    assert!(auth.authenticate(&key.secret).await.is_ok());
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    assert_eq!(auth.authenticate(&key.secret).await, Err(AuthError::ApiKeyExpired));
}

#[tokio::test]
async fn expired_keys_are_rejected() {
    let past = wagate_core::now() - chrono::Duration::seconds(1);
    let (_s, auth, key, _) =
        setup(|k| ApiKeyRecord { expires_at: Some(past), ..record(k, "acme", Capabilities::ALL) }).await;
    assert_eq!(auth.authenticate(&key.secret).await, Err(AuthError::ApiKeyExpired));

    let future = wagate_core::now() + chrono::Duration::hours(1);
    let (_s, auth, key, _) =
        setup(|k| ApiKeyRecord { expires_at: Some(future), ..record(k, "acme", Capabilities::ALL) }).await;
    assert!(auth.authenticate(&key.secret).await.is_ok());
}

#[tokio::test]
async fn use_is_recorded_at_most_once_a_minute() {
    let (store, auth, key, id) = setup(|k| record(k, "acme", Capabilities::ALL)).await;
    auth.authenticate(&key.secret).await.unwrap();
    settle().await;
    let touches = store.touches();
    assert_eq!(touches.len(), 1);
    assert_eq!(touches[0].0, id);
    // last_used_at is now fresh: no more touches.
    auth.authenticate(&key.secret).await.unwrap();
    auth.authenticate(&key.secret).await.unwrap();
    settle().await;
    assert_eq!(store.touches().len(), 1);

    // A key last used two minutes ago is touched again.
    let old = wagate_core::now() - chrono::Duration::seconds(120);
    let (store, auth, key, _) =
        setup(|k| ApiKeyRecord { last_used_at: Some(old), ..record(k, "acme", Capabilities::ALL) }).await;
    auth.authenticate(&key.secret).await.unwrap();
    settle().await;
    assert_eq!(store.touches().len(), 1);

    // ... but not one used 10 s ago.
    let recent = wagate_core::now() - chrono::Duration::seconds(10);
    let (store, auth, key, _) =
        setup(|k| ApiKeyRecord { last_used_at: Some(recent), ..record(k, "acme", Capabilities::ALL) }).await;
    auth.authenticate(&key.secret).await.unwrap();
    settle().await;
    assert!(store.touches().is_empty());
}

#[tokio::test]
async fn store_failure_is_unavailable() {
    let (store, auth, key, _) = setup(|k| record(k, "acme", Capabilities::ALL)).await;
    store.fail.store(true, Ordering::SeqCst);
    let err = auth.authenticate(&key.secret).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(!err.to_string().contains(&key.secret));
}

#[tokio::test]
async fn failed_touch_does_not_fail_the_request() {
    // Without and with the key cache (a versioned store).
    for (fake, lookups) in [(FakeStore::default(), 2), (FakeStore::versioned(), 1)] {
        let (store, auth, key, _) = setup_on(fake, |k| record(k, "acme", Capabilities::ALL)).await;
        store.fail_touch.store(true, Ordering::SeqCst);
        assert!(auth.authenticate(&key.secret).await.is_ok());
        settle().await;
        assert!(store.touches().is_empty());
        // Still stale, so the next request tries again.
        store.fail_touch.store(false, Ordering::SeqCst);
        assert!(auth.authenticate(&key.secret).await.is_ok());
        settle().await;
        assert_eq!(store.touches().len(), 1);
        assert_eq!(store.lookups(), lookups);
    }
}

#[tokio::test]
async fn errors_never_contain_the_secret() {
    let (_s, auth, key, _) = setup(|k| record(k, "acme", Capabilities::ALL)).await;
    let mut bad = key.secret.clone();
    bad.pop();
    bad.push('!');
    for token in [bad, apikey::generate().secret] {
        let err = auth.authenticate(&token).await.unwrap_err();
        assert!(!err.to_string().contains(&token[4..]));
        assert!(!format!("{err:?}").contains(&token[4..]));
        assert!(!err.client_message().contains(&token[4..]));
    }
}

#[tokio::test]
async fn jwt_path_is_401_without_a_jwks() {
    let (_s, auth, _, _) = setup(|k| record(k, "acme", Capabilities::ALL)).await;
    let token = sign(TestKey::Ec, Some("k1"), &claims("acme", "admin"));
    assert_eq!(auth.authenticate(&token).await, Err(AuthError::JwtNotConfigured));
    assert!(!AuthError::JwtNotConfigured.is_unavailable());
}

#[tokio::test]
async fn both_paths_through_one_authenticator() {
    let server = JwksServer::start(jwks(&[(TestKey::Ec, "k1")])).await;
    let store = Arc::new(FakeStore::default());
    let key = apikey::generate();
    store.insert_api_key(&record(&key, "svc-org", Capabilities::ALL)).await.unwrap();
    let verifier = Arc::new(JwtVerifier::new(JwtConfig::new(server.url())).unwrap());
    let auth = Authenticator::new(store, Some(verifier));

    let user = auth.authenticate(&sign(TestKey::Ec, Some("k1"), &claims("acme", "viewer"))).await.unwrap();
    assert_eq!(user.org, org("acme"));
    assert_eq!(user.capabilities.to_list(), "read");
    assert_eq!(user.kind, PrincipalKind::User { subject: Some("user-1".into()) });

    let svc = auth.authenticate(&key.secret).await.unwrap();
    assert_eq!(svc.org, org("svc-org"));
    // A `wag_`-prefixed token never goes to the JWT path, even when a JWKS is configured.
    assert_eq!(auth.authenticate("wag_notakey").await, Err(AuthError::Malformed));
    assert_eq!(auth.authenticate("not-a-jwt").await, Err(AuthError::Malformed));
}

#[test]
fn bearer_header_parsing() {
    assert_eq!(bearer_token("Bearer abc"), Ok("abc"));
    assert_eq!(bearer_token("bearer   abc  "), Ok("abc"));
    assert_eq!(bearer_token("BEARER abc"), Ok("abc"));
    assert_eq!(bearer_token("Basic abc"), Err(AuthError::Missing));
    assert_eq!(bearer_token("Bearer"), Err(AuthError::Missing));
    assert_eq!(bearer_token("Bearer   "), Err(AuthError::Missing));
    assert_eq!(bearer_token(""), Err(AuthError::Missing));
}
