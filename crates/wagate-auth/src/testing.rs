//! Test helpers (cargo feature `testing`): fixed TEST-ONLY keys, JWKS documents, token signing,
//! and a JWKS server on `127.0.0.1:0` that counts its hits.
//!
//! The private keys under `tests/fixtures/` are public test material; never use them for
//! anything but tests.
//!
//! ```ignore
//! let server = JwksServer::start(jwks(&[(TestKey::Rsa, "k1")])).await;
//! let verifier = JwtVerifier::new(JwtConfig::new(server.url()))?;
//! let token = sign(TestKey::Rsa, Some("k1"), &claims("acme", "admin"));
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const RSA_PRIVATE_PEM: &str = include_str!("../tests/fixtures/TEST_ONLY_rsa2048_private.pem");
const P256_PRIVATE_PEM: &str = include_str!("../tests/fixtures/TEST_ONLY_p256_private.pem");
const P256_ALT_PRIVATE_PEM: &str = include_str!("../tests/fixtures/TEST_ONLY_p256_alt_private.pem");
const ED25519_PRIVATE_PEM: &str = include_str!("../tests/fixtures/TEST_ONLY_ed25519_private.pem");
/// The public key of the test Ed25519 key, base64url (jsonwebtoken cannot derive it).
const ED25519_PUBLIC_X: &str = "aToKk_CMi80WSbOMxuQxaqgALkfhEOQK-eFO-MvDxms";

/// The test RSA key's public key (SPKI PEM), e.g. to forge an HS256 token "signed" with it.
pub const RSA_PUBLIC_PEM: &str = include_str!("../tests/fixtures/TEST_ONLY_rsa2048_public.pem");

/// One of the fixed test keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TestKey {
    /// RSA 2048, RS256.
    Rsa,
    /// EC P-256, ES256.
    Ec,
    /// A second EC P-256 key (rotation, wrong-key tests).
    EcAlt,
    /// Ed25519, EdDSA.
    Ed,
}

impl TestKey {
    pub const ALL: [TestKey; 4] = [TestKey::Rsa, TestKey::Ec, TestKey::EcAlt, TestKey::Ed];

    /// The algorithm this key signs with.
    pub fn algorithm(self) -> Algorithm {
        match self {
            TestKey::Rsa => Algorithm::RS256,
            TestKey::Ec | TestKey::EcAlt => Algorithm::ES256,
            TestKey::Ed => Algorithm::EdDSA,
        }
    }

    /// The private key as an [`EncodingKey`].
    pub fn encoding_key(self) -> EncodingKey {
        crate::jwt::ensure_crypto_provider();
        let key = match self {
            TestKey::Rsa => EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()),
            TestKey::Ec => EncodingKey::from_ec_pem(P256_PRIVATE_PEM.as_bytes()),
            TestKey::EcAlt => EncodingKey::from_ec_pem(P256_ALT_PRIVATE_PEM.as_bytes()),
            TestKey::Ed => EncodingKey::from_ed_pem(ED25519_PRIVATE_PEM.as_bytes()),
        };
        key.expect("test key fixture parses")
    }

    /// The public JWK (`kid`, `alg`, `use: sig` set).
    pub fn jwk(self, kid: &str) -> Value {
        let mut jwk = match self {
            TestKey::Ed => json!({ "kty": "OKP", "crv": "Ed25519", "x": ED25519_PUBLIC_X }),
            _ => {
                let jwk = Jwk::from_encoding_key(&self.encoding_key(), self.algorithm()).expect("public JWK");
                serde_json::to_value(jwk).expect("JWK serializes")
            }
        };
        let obj = jwk.as_object_mut().expect("JWK is an object");
        obj.insert("kid".into(), json!(kid));
        obj.insert("use".into(), json!("sig"));
        obj.insert("alg".into(), serde_json::to_value(self.algorithm()).expect("alg serializes"));
        jwk
    }
}

/// A JWKS document holding `keys`, each under its `kid`.
pub fn jwks(keys: &[(TestKey, &str)]) -> String {
    json!({ "keys": keys.iter().map(|(k, kid)| k.jwk(kid)).collect::<Vec<_>>() }).to_string()
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Claims valid for ten minutes: `sub: "user-1"`, `org_id`, `role`, `iat`, `exp`.
pub fn claims(org: &str, role: &str) -> Value {
    let now = now_secs();
    json!({ "sub": "user-1", "org_id": org, "role": role, "iat": now, "exp": now + 600 })
}

/// Signs `claims` with `key` and its own algorithm.
pub fn sign(key: TestKey, kid: Option<&str>, claims: &Value) -> String {
    sign_as(key, key.algorithm(), kid, claims)
}

/// Signs `claims` with `key` under header algorithm `alg` (e.g. RS384 with the RSA key).
pub fn sign_as(key: TestKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key.encoding_key()).expect("test token signs")
}

/// An HS256 token whose HMAC secret is `secret` (e.g. [`RSA_PUBLIC_PEM`]: the classic
/// algorithm-confusion attack).
pub fn sign_hs256(secret: &[u8], kid: Option<&str>, claims: &Value) -> String {
    crate::jwt::ensure_crypto_provider();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("test token signs")
}

/// An unsigned `alg: none` token.
pub fn unsigned(kid: Option<&str>, claims: &Value) -> String {
    let mut header = json!({ "alg": "none", "typ": "JWT" });
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    format!("{}.{}.", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()))
}

struct ServerState {
    jwks: RwLock<String>,
    hits: AtomicU64,
    failing: AtomicBool,
}

/// A JWKS served at `http://127.0.0.1:<port>/jwks.json`, counting requests. Stops when dropped.
pub struct JwksServer {
    url: String,
    state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    /// Serves `jwks_json` on a fresh port.
    pub async fn start(jwks_json: impl Into<String>) -> Self {
        let state = Arc::new(ServerState {
            jwks: RwLock::new(jwks_json.into()),
            hits: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        });
        let app = axum::Router::new().route("/jwks.json", axum::routing::get(serve)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url: format!("http://{addr}/jwks.json"), state, task }
    }

    /// The JWKS URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Replaces the served document (key rotation).
    pub fn set_jwks(&self, jwks_json: impl Into<String>) {
        *self.state.jwks.write().unwrap_or_else(|e| e.into_inner()) = jwks_json.into();
    }

    /// While set, every request answers 503.
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Requests served so far.
    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(State(state): State<Arc<ServerState>>) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    if state.failing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let body = state.jwks.read().unwrap_or_else(|e| e.into_inner()).clone();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
