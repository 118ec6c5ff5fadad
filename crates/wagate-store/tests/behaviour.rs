//! One storage behaviour suite, run against every backend.
//!
//! Each scenario is an `async fn(Arc<dyn Store>)` that starts from an empty store. The
//! `scenarios!` macro at the bottom turns each into two tests: `sqlite::NAME` (a fresh file in
//! a temporary directory) and `postgres::NAME` (a fresh database on the server named by
//! `WAGATE_TEST_POSTGRES_URL`, skipped when that is not set).

use std::future::Future;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use wagate_core::{
    ApiKeyId, ApiKeyRecord, Capabilities, Capability, EngineKind, Identity, InstanceId, NewSession,
    OrgId, Phone, Session, SessionId, SessionStatus, Timestamp,
};
use wagate_store::prelude::*;
use wagate_store::{IdentityUpdate, PageRequest, SessionSettings, SessionStateUpdate, StoreError, testing};

// ---------------------------------------------------------------------------------------------
// Runners

/// A URL for a database file that does not exist yet, in a directory that does not either.
fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!(
        "sqlite://{}",
        dir.path().join("nested/data/wagate.db").display()
    )
}

async fn on_sqlite<F, Fut>(scenario: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let store = wagate_store::connect(&sqlite_url(&dir))
        .await
        .expect("sqlite store");
    assert_eq!(store.backend(), "sqlite");
    scenario(store).await;
}

async fn on_postgres<F, Fut>(scenario: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(admin) = testing::postgres_url_from_env() else {
        eprintln!("skipped: {} not set", testing::POSTGRES_URL_ENV);
        return;
    };
    let (url, _guard) = testing::fresh_postgres(&admin)
        .await
        .expect("fresh postgres database");
    let store = wagate_store::connect(&url).await.expect("postgres store");
    assert_eq!(store.backend(), "postgres");
    scenario(store).await;
}

// ---------------------------------------------------------------------------------------------
// Fixtures

fn org(s: &str) -> OrgId {
    OrgId::parse(s).unwrap()
}

/// `n` fresh ids in creation (ascending) order. ULIDs made within one millisecond are random
/// relative to each other, so sort them rather than trust generation order.
fn ascending_session_ids(n: usize) -> Vec<SessionId> {
    let mut ids: Vec<SessionId> = (0..n).map(|_| SessionId::generate()).collect();
    ids.sort();
    ids
}

fn random_hash() -> [u8; 32] {
    let mut hash = [0; 32];
    hash[..16].copy_from_slice(&ulid::Ulid::new().0.to_be_bytes());
    hash[16..].copy_from_slice(&ulid::Ulid::new().0.to_be_bytes());
    hash
}

fn api_key(org_id: &OrgId, name: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        id: ApiKeyId::generate(),
        org: org_id.clone(),
        name: name.to_owned(),
        capabilities: [Capability::Send, Capability::Read].into_iter().collect(),
        hash: random_hash(),
        created_at: wagate_core::now(),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    }
}

fn new_session(org_id: &OrgId, name: Option<&str>) -> NewSession {
    new_session_with_id(SessionId::generate(), org_id, name)
}

fn new_session_with_id(id: SessionId, org_id: &OrgId, name: Option<&str>) -> NewSession {
    NewSession {
        id,
        org: org_id.clone(),
        instance_id: InstanceId::generate(),
        name: name.map(str::to_owned),
        engine: EngineKind::Sandbox,
        status: SessionStatus::Stopped,
        desired_running: false,
        device_name: None,
        created_at: wagate_core::now(),
    }
}

fn identity() -> Identity {
    Identity {
        phone: Phone::parse("628123456789").unwrap(),
        jid: "628123456789@s.whatsapp.net".to_owned(),
        lid: Some("123456789012345@lid".to_owned()),
        push_name: Some("Support Desk".to_owned()),
        platform: Some("android".to_owned()),
    }
}

fn state(
    status: SessionStatus,
    desired_running: Option<bool>,
    identity: IdentityUpdate,
) -> SessionStateUpdate {
    SessionStateUpdate {
        status,
        status_reason: None,
        desired_running,
        identity,
        at: wagate_core::now(),
    }
}

fn later(t: Timestamp, ms: i64) -> Timestamp {
    t + chrono::Duration::milliseconds(ms)
}

fn ids(sessions: &[Session]) -> Vec<SessionId> {
    sessions.iter().map(|s| s.id.clone()).collect()
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(result: wagate_store::Result<T>, field: &str) {
    match result {
        Err(StoreError::Conflict(f)) => assert_eq!(f, field, "conflict on the wrong rule"),
        other => panic!("expected Conflict({field:?}), got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios

async fn ping_answers(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
}

async fn bootstrap_happens_once(store: Arc<dyn Store>) {
    let default = org("default");
    let first = api_key(&default, "bootstrap");
    assert!(store.bootstrap(&first).await.unwrap());
    assert_eq!(
        store.find_api_key_by_hash(&first.hash).await.unwrap(),
        Some(first.clone())
    );

    let second = api_key(&default, "bootstrap again");
    assert!(!store.bootstrap(&second).await.unwrap());
    assert_eq!(
        store.find_api_key_by_hash(&second.hash).await.unwrap(),
        None
    );
    assert_eq!(store.list_api_keys(&default).await.unwrap(), vec![first]);

    // Another organization's bootstrap changes nothing either.
    let other = api_key(&org("other"), "bootstrap");
    assert!(!store.bootstrap(&other).await.unwrap());
    assert!(store.list_api_keys(&org("other")).await.unwrap().is_empty());
}

async fn bootstrap_refuses_once_an_organization_exists(store: Arc<dyn Store>) {
    store.ensure_org(&org("acme")).await.unwrap();
    store.ensure_org(&org("acme")).await.unwrap(); // idempotent
    let key = api_key(&org("default"), "bootstrap");
    assert!(!store.bootstrap(&key).await.unwrap());
    assert_eq!(store.find_api_key_by_hash(&key.hash).await.unwrap(), None);
}

async fn bootstrap_refuses_once_a_session_created_an_organization(store: Arc<dyn Store>) {
    store
        .insert_session(&new_session(&org("acme"), None))
        .await
        .unwrap();
    assert!(
        !store
            .bootstrap(&api_key(&org("default"), "bootstrap"))
            .await
            .unwrap()
    );
}

async fn concurrent_bootstraps_make_one_key(store: Arc<dyn Store>) {
    let keys: Vec<ApiKeyRecord> = (0..6)
        .map(|i| api_key(&org("default"), &format!("boot {i}")))
        .collect();
    let attempts = keys.iter().map(|key| {
        let store = store.clone();
        let key = key.clone();
        tokio::spawn(async move { store.bootstrap(&key).await })
    });
    let mut won = 0;
    for attempt in attempts.collect::<Vec<_>>() {
        if attempt.await.unwrap().unwrap() {
            won += 1;
        }
    }
    assert_eq!(won, 1);
    assert_eq!(store.list_api_keys(&org("default")).await.unwrap().len(), 1);
}

async fn api_keys_insert_find_and_list_newest_first(store: Arc<dyn Store>) {
    let acme = org("acme");
    let mut keys: Vec<ApiKeyRecord> = (0..4)
        .map(|i| api_key(&acme, &format!("key {i}")))
        .collect();
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    keys[1].capabilities = Capabilities::ALL;
    keys[2].expires_at = Some(later(keys[2].created_at, 30 * 24 * 3600 * 1000));
    keys[3].capabilities = Capabilities::NONE;
    // Insert out of order: listing follows ids, not insertion.
    for i in [2, 0, 3, 1] {
        store.insert_api_key(&keys[i]).await.unwrap();
    }
    let other = api_key(&org("globex"), "theirs");
    store.insert_api_key(&other).await.unwrap();

    for key in &keys {
        assert_eq!(
            store
                .find_api_key_by_hash(&key.hash)
                .await
                .unwrap()
                .as_ref(),
            Some(key)
        );
    }
    assert_eq!(
        store.find_api_key_by_hash(&random_hash()).await.unwrap(),
        None
    );

    let listed = store.list_api_keys(&acme).await.unwrap();
    let expected: Vec<ApiKeyRecord> = keys.iter().rev().cloned().collect();
    assert_eq!(listed, expected);
    assert_eq!(
        store.list_api_keys(&org("globex")).await.unwrap(),
        vec![other]
    );
    assert!(
        store
            .list_api_keys(&org("nobody"))
            .await
            .unwrap()
            .is_empty()
    );

    // Inserting a key created its organization: bootstrap is now refused.
    assert!(
        !store
            .bootstrap(&api_key(&org("default"), "late"))
            .await
            .unwrap()
    );
}

async fn api_key_uniqueness(store: Arc<dyn Store>) {
    let acme = org("acme");
    let key = api_key(&acme, "one");
    store.insert_api_key(&key).await.unwrap();

    let mut same_hash = api_key(&acme, "two");
    same_hash.hash = key.hash;
    assert_conflict(store.insert_api_key(&same_hash).await, "key_hash");

    let mut same_id = api_key(&org("globex"), "three");
    same_id.id = key.id.clone();
    assert_conflict(store.insert_api_key(&same_id).await, "id");

    // A failed insert leaves nothing behind.
    assert_eq!(store.list_api_keys(&acme).await.unwrap(), vec![key]);
    assert!(
        store
            .list_api_keys(&org("globex"))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn api_key_revoke_keeps_the_first_time(store: Arc<dyn Store>) {
    let key = api_key(&org("acme"), "ci");
    store.insert_api_key(&key).await.unwrap();

    let first = later(key.created_at, 1_000);
    assert!(store.revoke_api_key(&key.id, first).await.unwrap());
    assert!(
        store
            .revoke_api_key(&key.id, later(first, 5_000))
            .await
            .unwrap()
    );
    let stored = store
        .find_api_key_by_hash(&key.hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.revoked_at, Some(first));
    assert_eq!(
        stored,
        ApiKeyRecord {
            revoked_at: Some(first),
            ..key
        }
    );

    assert!(
        !store
            .revoke_api_key(&ApiKeyId::generate(), first)
            .await
            .unwrap()
    );
}

async fn api_key_touch_records_use(store: Arc<dyn Store>) {
    let key = api_key(&org("acme"), "ci");
    store.insert_api_key(&key).await.unwrap();
    let t1 = later(key.created_at, 1_500);
    store.touch_api_key(&key.id, t1).await.unwrap();
    assert_eq!(
        store
            .find_api_key_by_hash(&key.hash)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(t1)
    );
    let t2 = later(t1, 250);
    store.touch_api_key(&key.id, t2).await.unwrap();
    let stored = store
        .find_api_key_by_hash(&key.hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.last_used_at, Some(t2));
    assert_eq!(stored.revoked_at, None);
    // Touching an unknown key is harmless.
    store
        .touch_api_key(&ApiKeyId::generate(), t2)
        .await
        .unwrap();
}

async fn session_insert_and_scoped_lookups(store: Arc<dyn Store>) {
    let acme = org("acme");
    let mut new = new_session(&acme, Some("support"));
    new.engine = EngineKind::Whatsapp;
    new.status = SessionStatus::Starting;
    new.desired_running = true;
    let session = store.insert_session(&new).await.unwrap();
    let expected = Session {
        id: new.id.clone(),
        org: acme.clone(),
        instance_id: new.instance_id.clone(),
        name: Some("support".to_owned()),
        engine: EngineKind::Whatsapp,
        status: SessionStatus::Starting,
        status_reason: None,
        desired_running: true,
        identity: None,
        device_name: None,
        send_policy: wagate_core::SendPolicy::default(),
        created_at: new.created_at,
        updated_at: new.created_at,
    };
    assert_eq!(session, expected);

    assert_eq!(
        store.get_session(&acme, &new.id).await.unwrap(),
        Some(expected.clone())
    );
    assert_eq!(
        store.get_session(&org("globex"), &new.id).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .get_session(&acme, &SessionId::generate())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.get_session_unscoped(&new.id).await.unwrap(),
        Some(expected.clone())
    );
    assert_eq!(
        store
            .get_session_unscoped(&SessionId::generate())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .get_session_by_instance(&new.instance_id)
            .await
            .unwrap(),
        Some(expected)
    );
    assert_eq!(
        store
            .get_session_by_instance(&InstanceId::generate())
            .await
            .unwrap(),
        None
    );
}

async fn session_uniqueness(store: Arc<dyn Store>) {
    let acme = org("acme");
    let first = new_session(&acme, Some("support"));
    store.insert_session(&first).await.unwrap();

    assert_conflict(
        store
            .insert_session(&new_session(&acme, Some("support")))
            .await,
        "name",
    );
    let mut same_instance = new_session(&acme, Some("sales"));
    same_instance.instance_id = first.instance_id.clone();
    assert_conflict(store.insert_session(&same_instance).await, "instance_id");
    let same_id = new_session_with_id(first.id.clone(), &org("globex"), None);
    assert_conflict(store.insert_session(&same_id).await, "id");

    // The same name in another organization is fine, and any number of sessions may be unnamed.
    store
        .insert_session(&new_session(&org("globex"), Some("support")))
        .await
        .unwrap();
    store
        .insert_session(&new_session(&acme, None))
        .await
        .unwrap();
    store
        .insert_session(&new_session(&acme, None))
        .await
        .unwrap();

    let page = store
        .list_sessions(
            &acme,
            PageRequest {
                size: 50,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 3);
}

async fn session_list_paginates_newest_first(store: Arc<dyn Store>) {
    let acme = org("acme");
    let all = ascending_session_ids(7);
    // Insert out of order: pages follow ids.
    for i in [3, 0, 6, 1, 5, 2, 4] {
        store
            .insert_session(&new_session_with_id(all[i].clone(), &acme, None))
            .await
            .unwrap();
    }
    let globex_ids = ascending_session_ids(2);
    for id in &globex_ids {
        store
            .insert_session(&new_session_with_id(id.clone(), &org("globex"), None))
            .await
            .unwrap();
    }
    let newest_first: Vec<SessionId> = all.iter().rev().cloned().collect();

    let p1 = store
        .list_sessions(
            &acme,
            PageRequest {
                size: 3,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&p1.items), newest_first[0..3]);
    assert_eq!(p1.next.as_ref(), Some(&newest_first[2]));

    let p2 = store
        .list_sessions(
            &acme,
            PageRequest {
                size: 3,
                after: p1.next.as_ref(),
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&p2.items), newest_first[3..6]);
    assert_eq!(p2.next.as_ref(), Some(&newest_first[5]));

    let p3 = store
        .list_sessions(
            &acme,
            PageRequest {
                size: 3,
                after: p2.next.as_ref(),
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&p3.items), newest_first[6..7]);
    assert_eq!(p3.next, None);

    // A page that ends exactly at the last item has no next.
    let exact = store
        .list_sessions(
            &acme,
            PageRequest {
                size: 7,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&exact.items), newest_first);
    assert_eq!(exact.next, None);

    // Past the end.
    let beyond = store
        .list_sessions(
            &acme,
            PageRequest {
                size: 3,
                after: Some(&newest_first[6]),
            },
        )
        .await
        .unwrap();
    assert!(beyond.items.is_empty() && beyond.next.is_none());

    // Each organization sees only its own.
    let globex = store
        .list_sessions(
            &org("globex"),
            PageRequest {
                size: 3,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        ids(&globex.items),
        globex_ids.iter().rev().cloned().collect::<Vec<_>>()
    );
    assert_eq!(globex.next, None);
    let nobody = store
        .list_sessions(
            &org("nobody"),
            PageRequest {
                size: 3,
                after: None,
            },
        )
        .await
        .unwrap();
    assert!(nobody.items.is_empty() && nobody.next.is_none());
    // Another organization's cursor does not reveal anything either.
    let foreign_cursor = store
        .list_sessions(
            &org("nobody"),
            PageRequest {
                size: 3,
                after: Some(&newest_first[0]),
            },
        )
        .await
        .unwrap();
    assert!(foreign_cursor.items.is_empty());
}

async fn session_rename(store: Arc<dyn Store>) {
    let acme = org("acme");
    let a = store
        .insert_session(&new_session(&acme, Some("alpha")))
        .await
        .unwrap();
    let b = store
        .insert_session(&new_session(&acme, None))
        .await
        .unwrap();
    let g = store
        .insert_session(&new_session(&org("globex"), None))
        .await
        .unwrap();

    let t = later(a.created_at, 2_000);
    let renamed = store
        .update_session_settings(&acme, &b.id, &SessionSettings::name(Some("beta")), t)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renamed.name.as_deref(), Some("beta"));
    assert_eq!(renamed.updated_at, t);
    assert_eq!(renamed.created_at, b.created_at);
    assert_eq!(
        store.get_session(&acme, &b.id).await.unwrap(),
        Some(renamed)
    );

    assert_conflict(
        store.update_session_settings(&acme, &b.id, &SessionSettings::name(Some("alpha")), t).await,
        "name",
    );
    assert_eq!(
        store
            .get_session(&acme, &b.id)
            .await
            .unwrap()
            .unwrap()
            .name
            .as_deref(),
        Some("beta")
    );

    // Keeping one's own name is not a conflict; another organization may use it.
    store
        .update_session_settings(&acme, &a.id, &SessionSettings::name(Some("alpha")), t)
        .await
        .unwrap()
        .unwrap();
    store
        .update_session_settings(&org("globex"), &g.id, &SessionSettings::name(Some("alpha")), t)
        .await
        .unwrap()
        .unwrap();

    // Clearing frees the name.
    let cleared = store
        .update_session_settings(&acme, &a.id, &SessionSettings::name(None), t)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cleared.name, None);
    store
        .update_session_settings(&acme, &b.id, &SessionSettings::name(Some("alpha")), t)
        .await
        .unwrap()
        .unwrap();
    store
        .insert_session(&new_session(&acme, Some("beta")))
        .await
        .unwrap();

    // Not found: unknown id, or another organization's session.
    assert_eq!(
        store
            .update_session_settings(&acme, &SessionId::generate(), &SessionSettings::name(Some("x")), t)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .update_session_settings(&org("globex"), &a.id, &SessionSettings::name(Some("x")), t)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.get_session(&acme, &a.id).await.unwrap().unwrap().name,
        None
    );
}

async fn session_device_name_round_trips(store: Arc<dyn Store>) {
    let acme = org("acme");
    let mut new = new_session(&acme, Some("front"));
    new.device_name = Some("Front desk 🛎".to_owned());
    let named = store.insert_session(&new).await.unwrap();
    assert_eq!(named.device_name.as_deref(), Some("Front desk 🛎"));
    let plain = store
        .insert_session(&new_session(&acme, None))
        .await
        .unwrap();
    assert_eq!(plain.device_name, None);

    // Every read path carries it.
    let read = store.get_session(&acme, &named.id).await.unwrap().unwrap();
    assert_eq!(read, named);
    assert_eq!(
        store.get_session_unscoped(&named.id).await.unwrap(),
        Some(named.clone())
    );
    assert_eq!(
        store
            .get_session_by_instance(&named.instance_id)
            .await
            .unwrap(),
        Some(named.clone())
    );
    let page = store
        .list_sessions(
            &acme,
            PageRequest {
                size: 10,
                after: None,
            },
        )
        .await
        .unwrap();
    let listed: Vec<Option<&str>> = page
        .items
        .iter()
        .map(|s| s.device_name.as_deref())
        .collect();
    let mut expected = vec![Some("Front desk 🛎"), None];
    if plain.id > named.id {
        expected.reverse();
    }
    assert_eq!(listed, expected);

    // Renames and state updates keep it.
    let t = later(named.created_at, 1_000);
    let renamed = store
        .update_session_settings(&acme, &named.id, &SessionSettings::name(Some("reception")), t)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renamed.device_name.as_deref(), Some("Front desk 🛎"));
    let up = state(
        SessionStatus::Connected,
        Some(true),
        IdentityUpdate::Set(identity()),
    );
    let connected = store
        .update_session_state(&named.id, &up)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(connected.device_name.as_deref(), Some("Front desk 🛎"));

    // Set, change, clear.
    let t2 = later(named.created_at, 2_000);
    let set = store
        .update_session_settings(&acme, &plain.id, &SessionSettings::device_name(Some("Sales")), t2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(set.device_name.as_deref(), Some("Sales"));
    assert_eq!(set.updated_at, t2);
    assert_eq!(
        (set.name.clone(), set.status),
        (plain.name.clone(), plain.status)
    );
    assert_eq!(
        store.get_session(&acme, &plain.id).await.unwrap(),
        Some(set)
    );
    let t3 = later(named.created_at, 3_000);
    let cleared = store
        .update_session_settings(&acme, &named.id, &SessionSettings::device_name(None), t3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cleared.device_name, None);
    assert_eq!(cleared.updated_at, t3);
    assert_eq!(cleared.name.as_deref(), Some("reception"));
    assert_eq!(cleared.identity, Some(identity()));
    assert_eq!(
        store
            .get_session(&acme, &named.id)
            .await
            .unwrap()
            .unwrap()
            .device_name,
        None
    );

    // Not found: unknown id, or another organization's session (which stays unchanged).
    assert_eq!(
        store
            .update_session_settings(&acme, &SessionId::generate(), &SessionSettings::device_name(Some("x")), t3)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .update_session_settings(&org("globex"), &plain.id, &SessionSettings::device_name(Some("x")), t3)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .get_session(&acme, &plain.id)
            .await
            .unwrap()
            .unwrap()
            .device_name
            .as_deref(),
        Some("Sales")
    );
}

async fn session_settings_change_together_or_not_at_all(store: Arc<dyn Store>) {
    let acme = org("acme");
    let a = store.insert_session(&new_session(&acme, Some("alpha"))).await.unwrap();
    let b = store.insert_session(&new_session(&acme, Some("beta"))).await.unwrap();
    let t = later(b.created_at, 1_000);

    // Both fields in one write.
    let both = SessionSettings { name: Some(Some("gamma")), device_name: Some(Some("Front desk")), ..SessionSettings::default() };
    let s = store.update_session_settings(&acme, &b.id, &both, t).await.unwrap().unwrap();
    assert_eq!((s.name.as_deref(), s.device_name.as_deref()), (Some("gamma"), Some("Front desk")));

    // A duplicate name refuses the whole change: the device name is not written either.
    let clash = SessionSettings { name: Some(Some("alpha")), device_name: Some(Some("Other")), ..SessionSettings::default() };
    let err = store.update_session_settings(&acme, &b.id, &clash, later(t, 1_000)).await;
    assert!(matches!(err, Err(StoreError::Conflict(ref f)) if f == "name"), "{err:?}");
    let s = store.get_session(&acme, &b.id).await.unwrap().unwrap();
    assert_eq!((s.name.as_deref(), s.device_name.as_deref()), (Some("gamma"), Some("Front desk")));
    assert_eq!(s.updated_at, t);

    // Nothing to change still answers the session; fields left out are kept.
    let s = store.update_session_settings(&acme, &b.id, &SessionSettings::default(), t).await.unwrap().unwrap();
    assert_eq!((s.name.as_deref(), s.device_name.as_deref()), (Some("gamma"), Some("Front desk")));
    let s = store.update_session_settings(&acme, &a.id, &SessionSettings::device_name(None), t).await.unwrap().unwrap();
    assert_eq!((s.name.as_deref(), s.device_name), (Some("alpha"), None));
}

async fn session_state_updates(store: Arc<dyn Store>) {
    let acme = org("acme");
    let s = store
        .insert_session(&new_session(&acme, Some("main")))
        .await
        .unwrap();

    // Set identity and desired_running.
    let mut up = state(
        SessionStatus::Connected,
        Some(true),
        IdentityUpdate::Set(identity()),
    );
    up.at = later(s.created_at, 10);
    let connected = store
        .update_session_state(&s.id, &up)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(connected.status, SessionStatus::Connected);
    assert!(connected.desired_running);
    assert_eq!(connected.identity, Some(identity()));
    assert_eq!(connected.updated_at, up.at);
    assert_eq!(connected.name.as_deref(), Some("main"));
    assert_eq!(
        store.get_session(&acme, &s.id).await.unwrap(),
        Some(connected.clone())
    );

    // Keep: identity and desired_running stay; the reason is replaced.
    let mut up = state(SessionStatus::Reconnecting, None, IdentityUpdate::Keep);
    up.status_reason = Some("connection_lost".to_owned());
    up.at = later(s.created_at, 20);
    let reconnecting = store
        .update_session_state(&s.id, &up)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reconnecting.status, SessionStatus::Reconnecting);
    assert_eq!(
        reconnecting.status_reason.as_deref(),
        Some("connection_lost")
    );
    assert!(reconnecting.desired_running);
    assert_eq!(reconnecting.identity, Some(identity()));

    // A partial identity (optional parts absent) is stored as such.
    let partial = Identity {
        lid: None,
        push_name: None,
        platform: None,
        ..identity()
    };
    let up = state(
        SessionStatus::Connected,
        None,
        IdentityUpdate::Set(partial.clone()),
    );
    let s2 = store
        .update_session_state(&s.id, &up)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s2.identity, Some(partial));
    assert_eq!(
        s2.status_reason, None,
        "a None reason clears the stored one"
    );

    // Clear: identity gone, desired_running off.
    let mut up = state(SessionStatus::LoggedOut, Some(false), IdentityUpdate::Clear);
    up.status_reason = Some("logged_out_from_phone".to_owned());
    let logged_out = store
        .update_session_state(&s.id, &up)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(logged_out.identity, None);
    assert!(!logged_out.desired_running);
    assert_eq!(logged_out.status, SessionStatus::LoggedOut);
    assert_eq!(
        store.get_session(&acme, &s.id).await.unwrap(),
        Some(logged_out)
    );

    // Unknown session.
    let up = state(SessionStatus::Failed, None, IdentityUpdate::Keep);
    assert_eq!(
        store
            .update_session_state(&SessionId::generate(), &up)
            .await
            .unwrap(),
        None
    );
}

async fn session_delete_is_scoped(store: Arc<dyn Store>) {
    let acme = org("acme");
    let s = store
        .insert_session(&new_session(&acme, Some("main")))
        .await
        .unwrap();

    assert!(!store.delete_session(&org("globex"), &s.id).await.unwrap());
    assert!(store.get_session(&acme, &s.id).await.unwrap().is_some());

    assert!(store.delete_session(&acme, &s.id).await.unwrap());
    assert_eq!(store.get_session(&acme, &s.id).await.unwrap(), None);
    assert_eq!(
        store.get_session_by_instance(&s.instance_id).await.unwrap(),
        None
    );
    assert!(!store.delete_session(&acme, &s.id).await.unwrap());
    let up = state(SessionStatus::Failed, None, IdentityUpdate::Keep);
    assert_eq!(store.update_session_state(&s.id, &up).await.unwrap(), None);

    // Its name and instance id are free again.
    let mut again = new_session(&acme, Some("main"));
    again.instance_id = s.instance_id.clone();
    store.insert_session(&again).await.unwrap();
    let page = store
        .list_sessions(
            &acme,
            PageRequest {
                size: 10,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&page.items), vec![again.id]);
}

async fn sessions_to_resume_oldest_first(store: Arc<dyn Store>) {
    assert!(store.sessions_to_resume().await.unwrap().is_empty());
    let all = ascending_session_ids(5);
    let orgs = [org("acme"), org("globex")];
    for (i, id) in all.iter().enumerate().rev() {
        let mut new = new_session_with_id(id.clone(), &orgs[i % 2], None);
        new.desired_running = i != 2;
        store.insert_session(&new).await.unwrap();
    }
    // Stopping one turns it off; starting the other turns it on.
    store
        .update_session_state(
            &all[0],
            &state(SessionStatus::Stopped, Some(false), IdentityUpdate::Keep),
        )
        .await
        .unwrap();
    store
        .update_session_state(
            &all[2],
            &state(SessionStatus::Starting, Some(true), IdentityUpdate::Keep),
        )
        .await
        .unwrap();
    let resume = store.sessions_to_resume().await.unwrap();
    assert_eq!(ids(&resume), all[1..].to_vec());
}

async fn sessions_counted_by_status(store: Arc<dyn Store>) {
    let zero = store.count_sessions_by_status().await.unwrap();
    assert_eq!(
        zero,
        SessionStatus::ALL
            .iter()
            .map(|s| (*s, 0))
            .collect::<Vec<_>>()
    );

    let mut made = Vec::new();
    for (i, o) in ["acme", "acme", "globex", "globex", "initech"]
        .iter()
        .enumerate()
    {
        let s = store
            .insert_session(&new_session(&org(o), None))
            .await
            .unwrap();
        if i < 2 {
            store
                .update_session_state(
                    &s.id,
                    &state(SessionStatus::Connected, None, IdentityUpdate::Keep),
                )
                .await
                .unwrap();
        }
        made.push(s);
    }
    store
        .update_session_state(
            &made[2].id,
            &state(SessionStatus::Failed, None, IdentityUpdate::Keep),
        )
        .await
        .unwrap();

    let counts = store.count_sessions_by_status().await.unwrap();
    let count = |status| counts.iter().find(|(s, _)| *s == status).map(|(_, n)| *n);
    assert_eq!(counts.len(), SessionStatus::ALL.len());
    assert_eq!(count(SessionStatus::Connected), Some(2));
    assert_eq!(count(SessionStatus::Failed), Some(1));
    assert_eq!(count(SessionStatus::Stopped), Some(2));
    assert_eq!(count(SessionStatus::AwaitingPairing), Some(0));
}

async fn timestamps_round_trip(store: Arc<dyn Store>) {
    let instants = [
        Utc.timestamp_millis_opt(0).unwrap(),
        Utc.timestamp_millis_opt(1_700_000_000_000).unwrap(), // whole second
        Utc.timestamp_millis_opt(1_700_000_000_001).unwrap(),
        Utc.timestamp_millis_opt(1_700_000_000_999).unwrap(),
        Utc.timestamp_millis_opt(4_102_444_800_123).unwrap(), // 2100
        wagate_core::now(),
    ];
    let acme = org("acme");
    for t in instants {
        let mut new = new_session(&acme, None);
        new.created_at = t;
        let inserted = store.insert_session(&new).await.unwrap();
        assert_eq!(inserted.created_at, t);
        let read = store.get_session(&acme, &new.id).await.unwrap().unwrap();
        assert_eq!((read.created_at, read.updated_at), (t, t));

        let mut up = state(SessionStatus::Stopped, None, IdentityUpdate::Keep);
        up.at = later(t, 7);
        assert_eq!(
            store
                .update_session_state(&new.id, &up)
                .await
                .unwrap()
                .unwrap()
                .updated_at,
            later(t, 7)
        );

        let mut key = api_key(&acme, "ts");
        key.created_at = t;
        key.expires_at = Some(later(t, 1));
        key.revoked_at = Some(later(t, 2));
        key.last_used_at = Some(later(t, 3));
        store.insert_api_key(&key).await.unwrap();
        assert_eq!(
            store.find_api_key_by_hash(&key.hash).await.unwrap(),
            Some(key)
        );
    }
}

async fn text_survives_unchanged(store: Arc<dyn Store>) {
    // Organization ids are opaque: quotes, unicode and SQL-looking text are just data.
    let weird = org("o'rg \"x\"; DROP TABLE sessions; -- 🚀");
    let mut new = new_session(&weird, Some("名前 'quoted'"));
    new.desired_running = true;
    let s = store.insert_session(&new).await.unwrap();
    assert_eq!(
        store.get_session(&weird, &s.id).await.unwrap(),
        Some(s.clone())
    );
    let mut id = identity();
    id.push_name = Some("Zoë 🙂".to_owned());
    let up = state(
        SessionStatus::Connected,
        None,
        IdentityUpdate::Set(id.clone()),
    );
    assert_eq!(
        store
            .update_session_state(&s.id, &up)
            .await
            .unwrap()
            .unwrap()
            .identity,
        Some(id)
    );
    assert_eq!(
        store
            .list_sessions(
                &weird,
                PageRequest {
                    size: 5,
                    after: None
                }
            )
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// Reconnecting to the same database (SQL backends only)

#[tokio::test]
async fn sqlite_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    reconnect_keeps_data(&url).await;
    assert!(dir.path().join("nested/data/wagate.db").is_file());
}

#[tokio::test]
async fn postgres_migrations_are_idempotent() {
    let Some(admin) = testing::postgres_url_from_env() else {
        eprintln!("skipped: {} not set", testing::POSTGRES_URL_ENV);
        return;
    };
    let (url, _guard) = testing::fresh_postgres(&admin).await.unwrap();
    reconnect_keeps_data(&url).await;
}

async fn reconnect_keeps_data(url: &str) {
    let acme = org("acme");
    let (key, session) = {
        let store = wagate_store::connect(url).await.unwrap();
        let key = api_key(&acme, "persist");
        assert!(store.bootstrap(&key).await.unwrap());
        let mut new = new_session(&acme, Some("kept"));
        new.device_name = Some("Kept device".to_owned());
        (key, store.insert_session(&new).await.unwrap())
    };
    // Twice more, the second time while the first is still open.
    let again = wagate_store::connect(url).await.unwrap();
    let third = wagate_store::connect(url).await.unwrap();
    for store in [again, third] {
        assert_eq!(
            store.find_api_key_by_hash(&key.hash).await.unwrap(),
            Some(key.clone())
        );
        assert_eq!(
            store.get_session(&acme, &session.id).await.unwrap(),
            Some(session.clone())
        );
        assert!(!store.bootstrap(&api_key(&acme, "second")).await.unwrap());
    }
}

#[tokio::test]
async fn sqlite_url_forms_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    // `sqlite:PATH` as well as `sqlite://PATH`.
    let url = format!("sqlite:{}", dir.path().join("short.db").display());
    wagate_store::connect(&url)
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
    assert!(dir.path().join("short.db").is_file());
}

#[tokio::test]
async fn unopenable_sqlite_is_a_backend_error() {
    let dir = tempfile::tempdir().unwrap();
    // The path is a directory, not a database file.
    let result = wagate_store::connect(&format!("sqlite://{}", dir.path().display())).await;
    match result {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("unable to open"), "{msg}"),
        Err(other) => panic!("expected a backend error, got {other:?}"),
        Ok(_) => panic!("a directory is not a database"),
    }
}

#[tokio::test]
async fn unreachable_postgres_is_a_backend_error_without_the_password() {
    let result = wagate_store::connect("postgres://wagate:s3cret-pw@127.0.0.1:1/wagate").await;
    match result {
        Err(StoreError::Backend(msg)) => {
            assert!(!msg.contains("s3cret-pw"), "{msg}");
            assert!(msg.contains("refused"), "the cause should be named: {msg}");
        }
        Err(other) => panic!("expected a backend error, got {other:?}"),
        Ok(_) => panic!("nothing listens on port 1"),
    }
}

#[path = "behaviour/events.rs"]
mod events;
use events::*;

#[path = "behaviour/webhooks.rs"]
mod webhooks;
use webhooks::*;

#[path = "behaviour/messages.rs"]
mod messages;
use messages::*;

/// Reads by id are served from memory after the first (see `cache.rs`): each must still see
/// every write before it, whichever way the write went, and never cross an organization.
async fn reads_by_id_follow_every_write(store: Arc<dyn Store>) {
    let acme = org("acme");
    let s = store.insert_session(&new_session(&acme, Some("desk"))).await.unwrap();
    let read = || async { store.get_session(&acme, &s.id).await.unwrap().unwrap() };
    assert_eq!(read().await.name.as_deref(), Some("desk"));
    assert_eq!(store.get_session(&org("globex"), &s.id).await.unwrap(), None, "cached, still scoped");
    assert_eq!(store.get_session_unscoped(&s.id).await.unwrap().unwrap().org, acme);

    store.update_session_settings(&acme, &s.id, &SessionSettings::name(Some("front")), wagate_core::now()).await.unwrap();
    assert_eq!(read().await.name.as_deref(), Some("front"));
    assert_eq!(store.get_session_unscoped(&s.id).await.unwrap().unwrap().name.as_deref(), Some("front"));

    // A unit of work that is dropped changes nothing; one that commits is seen at once.
    let mut uow = store.begin().await.unwrap();
    uow.update_session_state(&s.id, &state(SessionStatus::Starting, Some(true), IdentityUpdate::Keep)).await.unwrap();
    drop(uow);
    assert_eq!(read().await.status, SessionStatus::Stopped);
    let mut uow = store.begin().await.unwrap();
    uow.update_session_state(&s.id, &state(SessionStatus::Connected, Some(true), IdentityUpdate::Set(identity())))
        .await
        .unwrap();
    uow.commit().await.unwrap();
    let now = read().await;
    assert_eq!((now.status, now.identity), (SessionStatus::Connected, Some(identity())));

    // Writers and readers racing: once the writers are done, a read by id agrees with a list
    // (which always queries).
    let statuses = [SessionStatus::Starting, SessionStatus::Connected, SessionStatus::Reconnecting, SessionStatus::Stopped];
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = Arc::clone(&store);
        let (acme, id) = (acme.clone(), s.id.clone());
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                store.update_session_state(&id, &state(statuses[i % 4], None, IdentityUpdate::Keep)).await.unwrap();
            } else {
                store.get_session(&acme, &id).await.unwrap().unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let listed = store.list_sessions(&acme, PageRequest { size: 10, after: None }).await.unwrap().items;
    assert_eq!(read().await, listed[0]);

    assert!(store.delete_session(&acme, &s.id).await.unwrap());
    assert_eq!(store.get_session(&acme, &s.id).await.unwrap(), None);
    assert_eq!(store.get_session_unscoped(&s.id).await.unwrap(), None);
}

/// Another process (the CLI) changing API keys is visible through `api_keys_version` without
/// a query, where the backend supports it (SQLite); a use of a key is not a change.
async fn api_key_changes_move_the_version(store: Arc<dyn Store>) {
    let Some(before) = store.api_keys_version() else {
        assert_eq!(store.backend(), "postgres", "only PostgreSQL has no cheap version");
        return;
    };
    let key = api_key(&org("acme"), "ci");
    store.insert_api_key(&key).await.unwrap();
    let inserted = store.api_keys_version().unwrap();
    assert_ne!(inserted, before);
    store.touch_api_key(&key.id, wagate_core::now()).await.unwrap();
    assert_eq!(store.api_keys_version().unwrap(), inserted, "a use is not a change");
    assert!(store.revoke_api_key(&key.id, wagate_core::now()).await.unwrap());
    assert_ne!(store.api_keys_version().unwrap(), inserted);
}

// ---------------------------------------------------------------------------------------------
// Every scenario on every backend

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { crate::on_sqlite(crate::$name).await; })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { crate::on_postgres(crate::$name).await; })*
        }
    };
}

scenarios!(
    ping_answers,
    bootstrap_happens_once,
    bootstrap_refuses_once_an_organization_exists,
    bootstrap_refuses_once_a_session_created_an_organization,
    concurrent_bootstraps_make_one_key,
    api_keys_insert_find_and_list_newest_first,
    api_key_uniqueness,
    api_key_revoke_keeps_the_first_time,
    api_key_touch_records_use,
    session_insert_and_scoped_lookups,
    session_uniqueness,
    session_list_paginates_newest_first,
    session_rename,
    session_device_name_round_trips,
    session_settings_change_together_or_not_at_all,
    session_state_updates,
    session_delete_is_scoped,
    sessions_to_resume_oldest_first,
    sessions_counted_by_status,
    timestamps_round_trip,
    text_survives_unchanged,
    status_changes_append_events,
    a_unit_of_work_commits_all_or_nothing,
    event_lists_filter_and_paginate,
    events_are_read_in_log_order_after_a_position,
    concurrent_writers_never_make_a_resuming_reader_skip,
    concurrent_units_of_work_fail_alone,
    an_abandoned_commit_blocks_nobody,
    pruning_removes_only_old_events,
    commits_wake_readers,
    reads_by_id_follow_every_write,
    api_key_changes_move_the_version,
    webhooks_are_scoped_to_their_organization,
    webhook_updates_and_rotation,
    fan_out_queues_each_matching_pair_once,
    claims_follow_event_order_under_a_per_webhook_limit,
    attempts_are_recorded_with_their_outcome,
    attempts_recorded_in_a_batch_apply_in_order,
    test_events_and_replays_reach_only_their_webhook,
    concurrent_claims_never_overlap,
    outbound_messages_are_accepted_once_per_idempotency_key,
    statuses_only_move_forward_each_step_with_its_event,
    inbound_messages_are_stored_once_with_their_event,
    own_messages_from_other_devices_are_stored_once_as_sent,
    an_undecryptable_placeholder_gives_way_to_the_message_once,
    messages_and_chats_list_newest_first_within_their_session,
);

/// The CLI changes keys from another process: the gateway's store sees the change in its
/// version at once, without a query.
#[tokio::test]
async fn sqlite_a_key_change_in_another_store_moves_the_version() {
    let dir = tempfile::tempdir().expect("temp dir");
    let gateway = wagate_store::connect(&sqlite_url(&dir)).await.unwrap();
    let cli = wagate_store::connect(&sqlite_url(&dir)).await.unwrap();
    let key = api_key(&org("acme"), "ci");
    cli.insert_api_key(&key).await.unwrap();
    let seen = gateway.api_keys_version().unwrap();
    assert!(cli.revoke_api_key(&key.id, wagate_core::now()).await.unwrap());
    assert_ne!(gateway.api_keys_version().unwrap(), seen);
}

/// On SQLite a commit passes the turn on with the transaction open, for whoever queued to join
/// it. A caller that stops waiting for its commit then (a dropped request), and whose only
/// companion rolls back, still has its writes committed: nobody else has to write first.
#[tokio::test]
async fn sqlite_an_abandoned_commit_still_commits() {
    use wagate_core::{EventType, NewEvent};
    let dir = tempfile::tempdir().expect("temp dir");
    let store = wagate_store::connect(&sqlite_url(&dir)).await.unwrap();
    let acme = org("acme");
    let mut a = store.begin().await.unwrap();
    let mine = a.append_event(&NewEvent::new(&acme, None, EventType::WebhookTest, &serde_json::json!({"a": 1}))).await.unwrap();

    let (began, b_began) = tokio::sync::oneshot::channel();
    let (go, b_go) = tokio::sync::oneshot::channel::<()>();
    let b = tokio::spawn({
        let store = Arc::clone(&store);
        let acme = acme.clone();
        async move {
            let mut b = store.begin().await.unwrap();
            b.append_event(&NewEvent::new(&acme, None, EventType::WebhookTest, &serde_json::json!({"b": 1}))).await.unwrap();
            began.send(()).unwrap();
            let _ = b_go.await;
            drop(b);
        }
    });
    // B is queued for the turn A holds.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let commit_a = tokio::spawn(async move { a.commit().await });
    b_began.await.expect("A's commit passed the turn to B");
    commit_a.abort();
    assert!(commit_a.await.unwrap_err().is_cancelled());
    go.send(()).unwrap();
    b.await.unwrap();

    let visible = async {
        while store.get_event(&acme, &mine.id).await.unwrap().is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), visible).await.expect("A's event is committed");
    assert_eq!(store.events_after(0, 10).await.unwrap().len(), 1, "B's is not");
}
