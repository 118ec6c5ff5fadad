//! Login JWT verification against a JWKS served on 127.0.0.1:0.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use wagate_auth::testing::{
    JwksServer, RSA_PUBLIC_PEM, TestKey, claims, jwks, now_secs, sign, sign_as, sign_hs256, unsigned,
};
use wagate_auth::{AuthError, JwtConfig, JwtVerifier};
use wagate_core::{Capabilities, Capability, OrgId, PrincipalKind};

const ISS: &str = "https://login.example.test";
const AUD: &str = "wagate";

fn all_keys() -> String {
    jwks(&[(TestKey::Rsa, "k-rsa"), (TestKey::Ec, "k-ec"), (TestKey::Ed, "k-ed")])
}

fn config(server: &JwksServer) -> JwtConfig {
    JwtConfig { issuer: Some(ISS.into()), audience: Some(AUD.into()), ..JwtConfig::new(server.url()) }
}

fn verifier(config: JwtConfig) -> JwtVerifier {
    JwtVerifier::new(config).unwrap()
}

/// Valid claims for ten minutes with the test issuer and audience.
fn good(org: &str, role: &str) -> Value {
    let mut c = claims(org, role);
    c["iss"] = json!(ISS);
    c["aud"] = json!(AUD);
    c
}

fn with(mut c: Value, key: &str, value: Value) -> Value {
    c[key] = value;
    c
}

fn without(mut c: Value, key: &str) -> Value {
    c.as_object_mut().unwrap().remove(key);
    c
}

async fn start() -> (JwksServer, JwtVerifier) {
    let server = JwksServer::start(all_keys()).await;
    let v = verifier(config(&server));
    (server, v)
}

#[tokio::test]
async fn valid_tokens_of_each_algorithm_are_accepted() {
    let (server, v) = start().await;
    for (key, kid) in [(TestKey::Rsa, "k-rsa"), (TestKey::Ec, "k-ec"), (TestKey::Ed, "k-ed")] {
        let p = v.verify(&sign(key, Some(kid), &good("acme", "admin"))).await.unwrap_or_else(|e| panic!("{kid}: {e}"));
        assert_eq!(p.org, OrgId::parse("acme").unwrap());
        assert_eq!(p.capabilities, Capabilities::ALL);
        assert_eq!(p.kind, PrincipalKind::User { subject: Some("user-1".into()) });
    }
    assert_eq!(v.fetch_count(), 1);
    assert_eq!(server.hits(), 1);
    assert_eq!(v.key_count(), 3);
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let (_server, v) = start().await;
    for kid in [Some("k-rsa"), Some("k-ed"), None] {
        assert_eq!(v.verify(&unsigned(kid, &good("acme", "owner"))).await, Err(AuthError::DisallowedAlgorithm));
    }
    // Same with a junk signature part.
    let t = format!("{}sig", unsigned(Some("k-rsa"), &good("acme", "owner")));
    assert_eq!(v.verify(&t).await, Err(AuthError::DisallowedAlgorithm));
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_rejected() {
    let (_server, v) = start().await;
    let c = good("acme", "owner");
    assert_eq!(
        v.verify(&sign_hs256(RSA_PUBLIC_PEM.as_bytes(), Some("k-rsa"), &c)).await,
        Err(AuthError::DisallowedAlgorithm)
    );
    // ... and with the raw modulus bytes, and without a kid.
    let jwk = TestKey::Rsa.jwk("k-rsa");
    let n = jwk["n"].as_str().unwrap().as_bytes();
    assert_eq!(v.verify(&sign_hs256(n, Some("k-rsa"), &c)).await, Err(AuthError::DisallowedAlgorithm));
    assert_eq!(v.verify(&sign_hs256(RSA_PUBLIC_PEM.as_bytes(), None, &c)).await, Err(AuthError::DisallowedAlgorithm));
}

#[tokio::test]
async fn symmetric_keys_in_the_jwks_are_ignored() {
    let mut doc: Value = serde_json::from_str(&jwks(&[(TestKey::Ec, "k-ec")])).unwrap();
    doc["keys"].as_array_mut().unwrap().push(json!({ "kty": "oct", "kid": "k-hmac", "k": "c2VjcmV0c2VjcmV0c2VjcmV0" }));
    let server = JwksServer::start(doc.to_string()).await;
    let v = verifier(config(&server));
    assert_eq!(
        v.verify(&sign_hs256(b"secretsecretsecret", Some("k-hmac"), &good("acme", "owner"))).await,
        Err(AuthError::DisallowedAlgorithm)
    );
    assert_eq!(v.key_count(), 0, "nothing fetched for a disallowed algorithm");
    v.refresh().await.unwrap();
    assert_eq!(v.key_count(), 1);
}

#[tokio::test]
async fn header_alg_must_match_the_key() {
    let (_server, v) = start().await;
    let c = good("acme", "owner");
    // RS384 with the RSA key: a real RSA signature, but not the key's algorithm.
    assert_eq!(
        v.verify(&sign_as(TestKey::Rsa, Algorithm::RS384, Some("k-rsa"), &c)).await,
        Err(AuthError::DisallowedAlgorithm)
    );
    assert_eq!(
        v.verify(&sign_as(TestKey::Rsa, Algorithm::PS256, Some("k-rsa"), &c)).await,
        Err(AuthError::DisallowedAlgorithm)
    );
    // An ES256 token naming the RSA key, an EdDSA token naming the EC key.
    assert_eq!(v.verify(&sign(TestKey::Ec, Some("k-rsa"), &c)).await, Err(AuthError::DisallowedAlgorithm));
    assert_eq!(v.verify(&sign(TestKey::Ed, Some("k-ec"), &c)).await, Err(AuthError::DisallowedAlgorithm));
}

#[tokio::test]
async fn bad_signatures_are_rejected() {
    let (_server, v) = start().await;
    let c = good("acme", "owner");
    // Signed by another EC key under k-ec's kid.
    assert_eq!(v.verify(&sign(TestKey::EcAlt, Some("k-ec"), &c)).await, Err(AuthError::InvalidSignature));
    // Payload swapped after signing.
    for (key, kid) in [(TestKey::Rsa, "k-rsa"), (TestKey::Ec, "k-ec"), (TestKey::Ed, "k-ed")] {
        let token = sign(key, Some(kid), &good("acme", "viewer"));
        let forged = sign(key, Some(kid), &good("acme", "owner"));
        let parts: Vec<&str> = token.split('.').collect();
        let forged_payload = forged.split('.').nth(1).unwrap();
        let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(v.verify(&tampered).await, Err(AuthError::InvalidSignature), "{kid}");
    }
}

#[tokio::test]
async fn malformed_tokens_are_rejected() {
    let (_server, v) = start().await;
    for t in ["abc", "a.b.c", "a.b", "...."] {
        assert_eq!(v.verify(t).await, Err(AuthError::Malformed), "{t}");
    }
    // A good header with a payload that is not base64url: the signature is checked first.
    let good_token = sign(TestKey::Rsa, Some("k-rsa"), &good("acme", "owner"));
    let (header, rest) = good_token.split_once('.').unwrap();
    let sig = rest.split_once('.').unwrap().1;
    assert_eq!(v.verify(&format!("{header}.!!!.{sig}")).await, Err(AuthError::InvalidSignature));
    // A signed payload that is not a JSON object.
    let not_object = sign(TestKey::Rsa, Some("k-rsa"), &json!([1, 2]));
    assert_eq!(v.verify(&not_object).await, Err(AuthError::Malformed));
    assert_eq!(v.verify("").await, Err(AuthError::Missing));
    let huge = format!("{}.{}.sig", "a".repeat(10), "b".repeat(20_000));
    assert_eq!(v.verify(&huge).await, Err(AuthError::Malformed));
}

#[tokio::test]
async fn expiry_is_required_and_checked_with_leeway() {
    let (_server, v) = start().await;
    let now = now_secs();
    let c = good("acme", "owner");
    let t = |c: &Value| sign(TestKey::Ec, Some("k-ec"), c);
    assert_eq!(v.verify(&t(&with(c.clone(), "exp", json!(now - 120)))).await, Err(AuthError::Expired));
    assert_eq!(v.verify(&t(&without(c.clone(), "exp"))).await, Err(AuthError::MissingExpiry));
    assert_eq!(v.verify(&t(&with(c.clone(), "exp", json!("tomorrow")))).await, Err(AuthError::MissingExpiry));
    // Within the 30 s leeway.
    assert!(v.verify(&t(&with(c, "exp", json!(now - 5)))).await.is_ok());
}

#[tokio::test]
async fn nbf_in_the_future_is_rejected() {
    let (_server, v) = start().await;
    let now = now_secs();
    let c = good("acme", "owner");
    let t = |c: &Value| sign(TestKey::Rsa, Some("k-rsa"), c);
    assert_eq!(v.verify(&t(&with(c.clone(), "nbf", json!(now + 300)))).await, Err(AuthError::NotYetValid));
    assert!(v.verify(&t(&with(c.clone(), "nbf", json!(now + 5)))).await.is_ok(), "within leeway");
    assert!(v.verify(&t(&with(c, "nbf", json!(now - 60)))).await.is_ok());
}

#[tokio::test]
async fn issuer_must_match() {
    let (_server, v) = start().await;
    let c = good("acme", "owner");
    let t = |c: &Value| sign(TestKey::Ed, Some("k-ed"), c);
    assert_eq!(v.verify(&t(&with(c.clone(), "iss", json!("https://evil.example")))).await, Err(AuthError::WrongIssuer));
    assert_eq!(v.verify(&t(&without(c.clone(), "iss"))).await, Err(AuthError::WrongIssuer));
    assert_eq!(v.verify(&t(&with(c.clone(), "iss", json!([ISS])))).await, Err(AuthError::WrongIssuer));
    assert_eq!(v.verify(&t(&with(c, "iss", json!(format!("{ISS}/"))))).await, Err(AuthError::WrongIssuer));
}

#[tokio::test]
async fn audience_must_be_contained() {
    let (_server, v) = start().await;
    let c = good("acme", "owner");
    let t = |c: &Value| sign(TestKey::Ec, Some("k-ec"), c);
    assert_eq!(v.verify(&t(&with(c.clone(), "aud", json!("other")))).await, Err(AuthError::WrongAudience));
    assert_eq!(v.verify(&t(&with(c.clone(), "aud", json!(["other", "more"])))).await, Err(AuthError::WrongAudience));
    assert_eq!(v.verify(&t(&without(c.clone(), "aud"))).await, Err(AuthError::WrongAudience));
    assert!(v.verify(&t(&with(c, "aud", json!(["other", AUD])))).await.is_ok());
}

#[tokio::test]
async fn issuer_and_audience_are_free_when_not_configured() {
    let server = JwksServer::start(all_keys()).await;
    let v = verifier(JwtConfig::new(server.url()));
    let c = with(with(claims("acme", "member"), "aud", json!("anything")), "iss", json!("anyone"));
    assert!(v.verify(&sign(TestKey::Ec, Some("k-ec"), &c)).await.is_ok());
    assert!(v.verify(&sign(TestKey::Ec, Some("k-ec"), &claims("acme", "member"))).await.is_ok());
}

#[tokio::test]
async fn org_claim_is_required() {
    let (_server, v) = start().await;
    let c = good("acme", "owner");
    let t = |c: &Value| sign(TestKey::Ec, Some("k-ec"), c);
    assert_eq!(v.verify(&t(&without(c.clone(), "org_id"))).await, Err(AuthError::MissingOrg));
    assert_eq!(v.verify(&t(&with(c.clone(), "org_id", json!("")))).await, Err(AuthError::MissingOrg));
    assert_eq!(v.verify(&t(&with(c.clone(), "org_id", json!(42)))).await, Err(AuthError::MissingOrg));
    assert_eq!(v.verify(&t(&with(c, "org_id", json!("a\nb")))).await, Err(AuthError::MissingOrg));
}

#[tokio::test]
async fn claim_names_are_configurable() {
    let server = JwksServer::start(all_keys()).await;
    let v = verifier(JwtConfig {
        org_claim: "https://example.test/tenant".into(),
        role_claim: "wagate_role".into(),
        ..config(&server)
    });
    let c = json!({ "iss": ISS, "aud": AUD, "exp": now_secs() + 60,
        "https://example.test/tenant": "t-9", "wagate_role": "member", "org_id": "ignored", "role": "owner" });
    let p = v.verify(&sign(TestKey::Rsa, Some("k-rsa"), &c)).await.unwrap();
    assert_eq!(p.org.as_str(), "t-9");
    assert_eq!(p.capabilities.to_list(), "send,read");
    assert_eq!(p.kind, PrincipalKind::User { subject: None });
}

#[tokio::test]
async fn roles_map_to_capabilities() {
    let (_server, v) = start().await;
    let caps = |role: Option<&str>| {
        let c = match role {
            Some(r) => good("acme", r),
            None => without(good("acme", "x"), "role"),
        };
        let v = &v;
        async move { v.verify(&sign(TestKey::Ed, Some("k-ed"), &c)).await.unwrap().capabilities }
    };
    assert_eq!(caps(Some("owner")).await, Capabilities::ALL);
    assert_eq!(caps(Some("admin")).await, Capabilities::ALL);
    let member = caps(Some("member")).await;
    assert!(
        member.contains(Capability::Send) && member.contains(Capability::Read) && !member.contains(Capability::Manage)
    );
    assert_eq!(caps(Some("viewer")).await.to_list(), "read");
    assert!(caps(Some("superuser")).await.is_empty());
    assert!(caps(Some("Admin")).await.is_empty());
    assert!(caps(None).await.is_empty());
    let odd = with(good("acme", "x"), "role", json!(["admin"]));
    assert!(v.verify(&sign(TestKey::Ed, Some("k-ed"), &odd)).await.unwrap().capabilities.is_empty());
}

#[tokio::test]
async fn unknown_kid_refetches_once_then_waits_the_minimum_interval() {
    // Default config: 10 s between refetches.
    let server = JwksServer::start(all_keys()).await;
    let v = verifier(config(&server));
    let c = good("acme", "owner");
    assert_eq!(v.verify(&sign(TestKey::EcAlt, Some("k-new"), &c)).await, Err(AuthError::UnknownKey));
    assert_eq!(v.fetch_count(), 1);
    assert_eq!(v.verify(&sign(TestKey::EcAlt, Some("k-new-2"), &c)).await, Err(AuthError::UnknownKey));
    assert_eq!(v.fetch_count(), 1, "a second unknown kid within 10 s does not fetch");
    assert!(v.verify(&sign(TestKey::Ec, Some("k-ec"), &c)).await.is_ok());
    assert_eq!((v.fetch_count(), server.hits()), (1, 1));
}

#[tokio::test]
async fn unknown_kid_after_the_interval_triggers_exactly_one_refetch() {
    let server = JwksServer::start(all_keys()).await;
    let v = verifier(JwtConfig { refetch_min_interval: Duration::from_millis(500), ..config(&server) });
    let c = good("acme", "owner");
    assert!(v.verify(&sign(TestKey::Ec, Some("k-ec"), &c)).await.is_ok());
    assert_eq!(v.fetch_count(), 1);
    // Known kids never fetch.
    assert!(v.verify(&sign(TestKey::Rsa, Some("k-rsa"), &c)).await.is_ok());
    assert_eq!(v.fetch_count(), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(v.verify(&sign(TestKey::EcAlt, Some("k-new"), &c)).await, Err(AuthError::UnknownKey));
    assert_eq!(v.fetch_count(), 2);
    assert_eq!(v.verify(&sign(TestKey::EcAlt, Some("k-new"), &c)).await, Err(AuthError::UnknownKey));
    assert_eq!(v.verify(&sign(TestKey::EcAlt, Some("k-other"), &c)).await, Err(AuthError::UnknownKey));
    assert_eq!(v.fetch_count(), 2);
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn scheduled_refreshes_do_not_delay_an_unknown_kid_refetch() {
    // Default config: 10 s between token-triggered fetches.
    let server = JwksServer::start(jwks(&[(TestKey::Ec, "k1")])).await;
    let v = verifier(config(&server));
    assert_eq!(v.refresh().await, Ok(1), "as at start-up");
    server.set_jwks(jwks(&[(TestKey::Ec, "k1"), (TestKey::EcAlt, "k2")]));
    let c = good("acme", "owner");
    // The key appeared right after the scheduled fetch: the first token naming it refetches.
    assert!(v.verify(&sign(TestKey::EcAlt, Some("k2"), &c)).await.is_ok());
    assert_eq!(v.fetch_count(), 2);
    // That refetch counts: another unknown kid within 10 s does not fetch.
    assert_eq!(v.verify(&sign(TestKey::Ed, Some("k3"), &c)).await, Err(AuthError::UnknownKey));
    assert_eq!(v.fetch_count(), 2);
    // Scheduled refreshes are never rate-limited, and do not reset the window.
    assert_eq!(v.refresh().await, Ok(2));
    assert_eq!(v.verify(&sign(TestKey::Ed, Some("k3"), &c)).await, Err(AuthError::UnknownKey));
    assert_eq!((v.fetch_count(), server.hits()), (3, 3));
}

#[tokio::test]
async fn concurrent_unknown_kids_share_one_fetch() {
    let server = JwksServer::start(all_keys()).await;
    let v = Arc::new(verifier(config(&server)));
    let c = good("acme", "owner");
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let v = v.clone();
            let token = sign(TestKey::EcAlt, Some(&format!("k-unknown-{i}")), &c);
            tokio::spawn(async move { v.verify(&token).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), Err(AuthError::UnknownKey));
    }
    assert_eq!(v.fetch_count(), 1);
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn rotated_keys_are_picked_up() {
    let server = JwksServer::start(jwks(&[(TestKey::Ec, "k1")])).await;
    let v = verifier(JwtConfig { refetch_min_interval: Duration::from_millis(500), ..config(&server) });
    let c = good("acme", "owner");
    let old = sign(TestKey::Ec, Some("k1"), &c);
    let new = sign(TestKey::EcAlt, Some("k2"), &c);
    assert!(v.verify(&old).await.is_ok());
    server.set_jwks(jwks(&[(TestKey::Ec, "k1"), (TestKey::EcAlt, "k2")]));
    // Within the minimum interval the new kid is not fetched yet.
    assert_eq!(v.verify(&new).await, Err(AuthError::UnknownKey));
    assert_eq!(v.fetch_count(), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(v.verify(&new).await.is_ok());
    assert_eq!(v.fetch_count(), 2);
    assert!(v.verify(&old).await.is_ok());
    // The old key retired: gone after the next refresh.
    server.set_jwks(jwks(&[(TestKey::EcAlt, "k2")]));
    assert_eq!(v.refresh().await, Ok(1));
    assert_eq!(v.verify(&old).await, Err(AuthError::UnknownKey));
    assert!(v.verify(&new).await.is_ok());
}

#[tokio::test]
async fn kidless_tokens_need_a_single_key() {
    let c = good("acme", "owner");
    let server = JwksServer::start(jwks(&[(TestKey::Ed, "only")])).await;
    let v = verifier(config(&server));
    assert!(v.verify(&sign(TestKey::Ed, None, &c)).await.is_ok());

    let (_server, v) = start().await;
    // First call loads the JWKS, which has three keys: no way to choose.
    assert_eq!(v.verify(&sign(TestKey::Ed, None, &c)).await, Err(AuthError::UnknownKey));
    assert_eq!(v.verify(&sign(TestKey::Ed, None, &c)).await, Err(AuthError::UnknownKey));
    assert_eq!(v.fetch_count(), 1);
}

#[tokio::test]
async fn unreachable_jwks_without_cached_keys_is_unavailable() {
    let server = JwksServer::start(all_keys()).await;
    server.set_failing(true);
    let v = verifier(JwtConfig { refetch_min_interval: Duration::from_millis(500), ..config(&server) });
    let token = sign(TestKey::Ec, Some("k-ec"), &good("acme", "owner"));
    let err = v.verify(&token).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(!err.to_string().contains(&token));
    // Rate-limited: still unavailable, without another fetch.
    assert!(v.verify(&token).await.unwrap_err().is_unavailable());
    assert_eq!(v.fetch_count(), 1);
    server.set_failing(false);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(v.verify(&token).await.is_ok());
    assert_eq!(v.fetch_count(), 2);

    // Nothing listening at all.
    let v = verifier(JwtConfig::new("http://127.0.0.1:9/jwks.json"));
    assert!(v.verify(&token).await.unwrap_err().is_unavailable());
}

#[tokio::test]
async fn cached_keys_survive_a_jwks_outage() {
    let server = JwksServer::start(all_keys()).await;
    let v = verifier(JwtConfig { refetch_min_interval: Duration::from_millis(10), ..config(&server) });
    let c = good("acme", "owner");
    assert!(v.verify(&sign(TestKey::Ec, Some("k-ec"), &c)).await.is_ok());
    server.set_failing(true);
    assert!(v.refresh().await.unwrap_err().is_unavailable());
    assert!(v.verify(&sign(TestKey::Ec, Some("k-ec"), &c)).await.is_ok());
    tokio::time::sleep(Duration::from_millis(20)).await;
    // An unknown kid while the JWKS is down is a plain 401.
    assert_eq!(v.verify(&sign(TestKey::EcAlt, Some("k-x"), &c)).await, Err(AuthError::UnknownKey));
    assert_eq!(v.key_count(), 3);
}

/// Polls `cond` every 10 ms for up to 10 s.
async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn background_refresh_loads_at_once() {
    let server = JwksServer::start(jwks(&[(TestKey::Ec, "k1")])).await;
    let v = Arc::new(verifier(JwtConfig { refresh_interval: Duration::from_secs(3600), ..config(&server) }));
    let task = v.spawn_refresh();
    wait_until("the first refresh", || v.key_count() == 1).await;
    assert_eq!(v.fetch_count(), 1);
    assert!(v.verify(&sign(TestKey::Ec, Some("k1"), &good("acme", "owner"))).await.is_ok());
    assert_eq!(v.fetch_count(), 1);
    task.abort();
}

#[tokio::test]
async fn background_refresh_runs_until_the_verifier_is_dropped() {
    let server = JwksServer::start(jwks(&[(TestKey::Ec, "k1")])).await;
    let v = Arc::new(verifier(JwtConfig { refresh_interval: Duration::from_millis(50), ..config(&server) }));
    let task = v.spawn_refresh();
    wait_until("the first refresh", || v.key_count() == 1).await;
    server.set_jwks(jwks(&[(TestKey::Ec, "k1"), (TestKey::EcAlt, "k2")]));
    wait_until("a periodic refresh", || v.key_count() == 2).await;
    assert!(v.fetch_count() >= 2);
    drop(v);
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("task ends").unwrap();
}

#[tokio::test]
async fn static_keys_never_fetch() {
    let v = JwtVerifier::with_static_keys(
        JwtConfig { issuer: Some(ISS.into()), audience: Some(AUD.into()), ..JwtConfig::new("http://unused.invalid/") },
        &all_keys(),
    )
    .unwrap();
    let c = good("acme", "member");
    for (key, kid) in [(TestKey::Rsa, "k-rsa"), (TestKey::Ec, "k-ec"), (TestKey::Ed, "k-ed")] {
        assert!(v.verify(&sign(key, Some(kid), &c)).await.is_ok());
    }
    assert_eq!(v.verify(&sign(TestKey::EcAlt, Some("nope"), &c)).await, Err(AuthError::UnknownKey));
    assert_eq!(v.refresh().await, Ok(3));
    assert_eq!(v.fetch_count(), 0);
    let task = Arc::new(v).spawn_refresh();
    task.await.unwrap();
    assert!(JwtVerifier::with_static_keys(JwtConfig::new("http://x/"), "nope").is_err());
}
