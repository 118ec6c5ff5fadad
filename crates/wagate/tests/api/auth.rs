//! The authentication matrix, against a live gateway and a live JWKS on loopback.

use reqwest::Method;
use serde_json::json;
use wagate::config::Layer;
use wagate_auth::testing::{JwksServer, RSA_PUBLIC_PEM, TestKey, claims, jwks, now_secs, sign, sign_as, sign_hs256, unsigned};

use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with};

const ISS: &str = "https://login.example.test";
const AUD: &str = "wagate";

async fn app_with_jwks(server: &JwksServer) -> TestApp {
    let env = Layer {
        jwks_url: Some(server.url().to_owned()),
        jwt_issuer: Some(ISS.into()),
        jwt_audience: Some(AUD.into()),
        ..Layer::default()
    };
    spawn_app_with(Backend::Sqlite, env).await.unwrap()
}

fn good_claims(org: &str, role: &str) -> serde_json::Value {
    let mut c = claims(org, role);
    c["iss"] = json!(ISS);
    c["aud"] = json!([AUD, "other"]);
    c
}

async fn status_of(app: &TestApp, token: &str) -> (u16, String) {
    let a = app.call(Method::GET, "/api/v1/sessions", Some(token), None).await;
    let code = a.json()["error"]["code"].as_str().unwrap_or("").to_owned();
    (a.status.as_u16(), code)
}

#[tokio::test]
async fn jwt_matrix() {
    let server = JwksServer::start(jwks(&[(TestKey::Rsa, "rsa1"), (TestKey::Ec, "ec1"), (TestKey::Ed, "ed1")])).await;
    let app = app_with_jwks(&server).await;

    for (key, kid) in [(TestKey::Rsa, "rsa1"), (TestKey::Ec, "ec1"), (TestKey::Ed, "ed1")] {
        let t = sign(key, Some(kid), &good_claims("acme", "admin"));
        assert_eq!(status_of(&app, &t).await, (200, String::new()), "{kid} accepted");
    }

    let unauthorized = (401, "unauthorized".to_owned());
    let c = good_claims("acme", "admin");
    assert_eq!(status_of(&app, &unsigned(Some("rsa1"), &c)).await, unauthorized, "alg none");
    assert_eq!(status_of(&app, &sign_hs256(RSA_PUBLIC_PEM.as_bytes(), Some("rsa1"), &c)).await, unauthorized, "HS256 with the public key");
    assert_eq!(
        status_of(&app, &sign_as(TestKey::Rsa, jsonwebtoken::Algorithm::RS384, Some("rsa1"), &c)).await,
        unauthorized,
        "RS384 is not on the allow-list"
    );
    let mut tampered = sign(TestKey::Rsa, Some("rsa1"), &c);
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(status_of(&app, &tampered).await, unauthorized, "bad signature");
    assert_eq!(status_of(&app, &sign(TestKey::EcAlt, Some("ec1"), &c)).await, unauthorized, "signed by another key under a known kid");

    let mut expired = c.clone();
    expired["exp"] = json!(now_secs() - 3600);
    assert_eq!(status_of(&app, &sign(TestKey::Rsa, Some("rsa1"), &expired)).await, unauthorized, "expired");
    let mut no_exp = c.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(status_of(&app, &sign(TestKey::Rsa, Some("rsa1"), &no_exp)).await, unauthorized, "exp required");
    let mut early = c.clone();
    early["nbf"] = json!(now_secs() + 3600);
    assert_eq!(status_of(&app, &sign(TestKey::Rsa, Some("rsa1"), &early)).await, unauthorized, "nbf in the future");
    let mut wrong_iss = c.clone();
    wrong_iss["iss"] = json!("https://evil.test");
    assert_eq!(status_of(&app, &sign(TestKey::Rsa, Some("rsa1"), &wrong_iss)).await, unauthorized, "wrong iss");
    let mut wrong_aud = c.clone();
    wrong_aud["aud"] = json!("someone-else");
    assert_eq!(status_of(&app, &sign(TestKey::Rsa, Some("rsa1"), &wrong_aud)).await, unauthorized, "wrong aud");
    let mut no_org = c.clone();
    no_org.as_object_mut().unwrap().remove("org_id");
    assert_eq!(status_of(&app, &sign(TestKey::Rsa, Some("rsa1"), &no_org)).await, unauthorized, "no organization");
    assert_eq!(status_of(&app, "not-a-jwt").await, unauthorized, "malformed");
    assert_eq!(status_of(&app, "a.b.c").await, unauthorized, "malformed segments");
}

#[tokio::test]
async fn unknown_kid_triggers_exactly_one_refetch() {
    let server = JwksServer::start(jwks(&[(TestKey::Rsa, "rsa1")])).await;
    let app = app_with_jwks(&server).await;
    // The gateway loads the JWKS at start-up, in the background; let that happen first so that
    // the refetch counted below is the one the unknown kid causes.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.hits() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the JWKS is fetched at start-up");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let ok = sign(TestKey::Rsa, Some("rsa1"), &good_claims("acme", "admin"));
    assert_eq!(status_of(&app, &ok).await.0, 200);
    let before = server.hits();

    // A rotated key appears in the JWKS: the first token naming it refetches once and passes.
    server.set_jwks(jwks(&[(TestKey::Rsa, "rsa1"), (TestKey::Ec, "ec-new")]));
    let rotated = sign(TestKey::Ec, Some("ec-new"), &good_claims("acme", "admin"));
    assert_eq!(status_of(&app, &rotated).await.0, 200);
    assert_eq!(server.hits(), before + 1, "one refetch for the unknown kid");

    // Another unknown kid within 10 s: refused without fetching again.
    let unknown = sign(TestKey::Ed, Some("never-seen"), &good_claims("acme", "admin"));
    assert_eq!(status_of(&app, &unknown).await.0, 401);
    assert_eq!(status_of(&app, &unknown).await.0, 401);
    assert_eq!(server.hits(), before + 1, "no refetch storm");
}

#[tokio::test]
async fn roles_map_to_capabilities_and_orgs_are_isolated() {
    let server = JwksServer::start(jwks(&[(TestKey::Ec, "k")])).await;
    let app = app_with_jwks(&server).await;
    let token = |org: &str, role: &str| sign(TestKey::Ec, Some("k"), &good_claims(org, role));
    let create = |t: String| {
        let app = &app;
        async move { app.call(Method::POST, "/api/v1/sessions", Some(&t), Some(json!({"engine": "sandbox", "start": false}))).await }
    };

    let s = create(token("acme", "owner")).await;
    assert_eq!(s.status, 201);
    let id = s.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(create(token("acme", "admin")).await.status, 201);
    create(token("acme", "member")).await.assert_error(403, "forbidden");
    create(token("acme", "viewer")).await.assert_error(403, "forbidden");
    create(token("acme", "superuser")).await.assert_error(403, "forbidden");

    let get = |t: String| {
        let app = &app;
        let id = id.clone();
        async move { app.call(Method::GET, &format!("/api/v1/sessions/{id}"), Some(&t), None).await }
    };
    assert_eq!(get(token("acme", "viewer")).await.status, 200);
    assert_eq!(get(token("acme", "member")).await.status, 200);
    get(token("acme", "nobody")).await.assert_error(403, "forbidden");
    get(token("globex", "owner")).await.assert_error(404, "not_found");
    // The JWT org and the bootstrap org are different organizations too.
    app.get(&format!("/api/v1/sessions/{id}")).await.assert_error(404, "not_found");
}

#[tokio::test]
async fn api_key_matrix() {
    let app = spawn_app().await;
    let no_token = app.call(Method::GET, "/api/v1/sessions", None, None).await;
    no_token.assert_error(401, "unauthorized");
    let basic = app.client.get(app.url("/api/v1/sessions")).header("authorization", "Basic dXNlcjpwdw==").send().await.unwrap();
    assert_eq!(basic.status(), 401);
    assert_eq!(status_of(&app, "wag_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").await, (401, "unauthorized".into()), "bad checksum");
    // A well-formed key that was never issued.
    let stranger = wagate_auth::apikey::generate();
    assert_eq!(status_of(&app, &stranger.secret).await.0, 401);
    // JWTs are off without a JWKS.
    assert_eq!(status_of(&app, &sign(TestKey::Rsa, Some("rsa1"), &good_claims("acme", "admin"))).await.0, 401);

    // Capabilities.
    let (reader, _) = app.key_for("default", "read").await;
    assert_eq!(status_of(&app, &reader).await.0, 200);
    let create = app.call(Method::POST, "/api/v1/sessions", Some(&reader), Some(json!({"engine": "sandbox"}))).await;
    let details = create.assert_error(403, "forbidden");
    assert_eq!(details["capability"], "manage");
    let (sender, _) = app.key_for("default", "send").await;
    app.call(Method::GET, "/api/v1/sessions", Some(&sender), None).await.assert_error(403, "forbidden");

    // Revocation takes effect on the very next request.
    let (key, id) = app.key_for("default", "manage,read").await;
    assert_eq!(status_of(&app, &key).await.0, 200);
    assert!(app.store.revoke_api_key(&id, wagate_core::now()).await.unwrap());
    assert_eq!(status_of(&app, &key).await, (401, "unauthorized".into()));

    // lastUsedAt is recorded.
    let keys = app.store.list_api_keys(&wagate_core::OrgId::parse("default").unwrap()).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let keys = app.store.list_api_keys(&wagate_core::OrgId::parse("default").unwrap()).await.unwrap();
        if keys.iter().find(|k| k.name == "test read").is_some_and(|k| k.last_used_at.is_some()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "lastUsedAt recorded: {keys:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(keys.len() >= 4);
}

#[tokio::test]
async fn expired_api_keys_are_refused() {
    let app = spawn_app().await;
    let key = wagate_auth::apikey::generate();
    let record = wagate_core::ApiKeyRecord {
        id: wagate_core::ApiKeyId::generate(),
        org: wagate_core::OrgId::parse("default").unwrap(),
        name: "old".into(),
        capabilities: wagate_core::Capabilities::ALL,
        hash: key.hash,
        created_at: wagate_core::now() - chrono::Duration::days(2),
        expires_at: Some(wagate_core::now() - chrono::Duration::days(1)),
        revoked_at: None,
        last_used_at: None,
    };
    app.store.insert_api_key(&record).await.unwrap();
    assert_eq!(status_of(&app, &key.secret).await, (401, "unauthorized".into()));
}
