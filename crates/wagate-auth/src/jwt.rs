//! Login JWTs minted by the operator's frontend, verified against a JWKS.
//!
//! * The JWKS is fetched over HTTP(S) and cached by `kid`. A token naming an unknown `kid`
//!   triggers one refetch, unless such an on-demand fetch (an unknown `kid`, or the first token
//!   loading the cache) was attempted within [`JwtConfig::refetch_min_interval`]: so at most one
//!   token-triggered fetch per interval, however many random `kid`s arrive. Scheduled refreshes
//!   ([`JwtVerifier::spawn_refresh`], [`JwtVerifier::refresh`]) do not count, so a key published
//!   just after a scheduled refresh is still picked up by the first token naming it.
//! * Only RS256, ES256 and EdDSA are accepted, and the algorithm comes from the key (RSA → RS256,
//!   EC P-256 → ES256, OKP Ed25519 → EdDSA; a JWK's own `alg` must agree). A token whose header
//!   `alg` differs from its key's is rejected, which rules out `none`, HMAC with a public key and
//!   every other confusion. Keys of other types or curves are ignored.
//! * `exp` is required, `nbf` checked (both with [`JwtConfig::leeway`]); `iss` must equal the
//!   configured issuer and `aud` (a string or an array) contain the configured audience.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use wagate_core::{OrgId, Principal, PrincipalKind, Role};

use crate::AuthError;

/// Longest token accepted (checked before any parsing).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;

/// How login JWTs are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// Where the JWKS is fetched from (`WAGATE_JWKS_URL`).
    pub jwks_url: String,
    /// When set, `iss` must equal it (`WAGATE_JWT_ISSUER`).
    pub issuer: Option<String>,
    /// When set, `aud` must be it or an array containing it (`WAGATE_JWT_AUDIENCE`).
    pub audience: Option<String>,
    /// The claim naming the organization (`WAGATE_JWT_ORG_CLAIM`, default `org_id`).
    pub org_claim: String,
    /// The claim naming the role (`WAGATE_JWT_ROLE_CLAIM`, default `role`).
    pub role_claim: String,
    /// An unknown `kid` triggers no refetch if another on-demand fetch was attempted this
    /// recently (10 s). Scheduled refreshes do not count.
    pub refetch_min_interval: Duration,
    /// How often [`JwtVerifier::spawn_refresh`] refetches the JWKS (5 min).
    pub refresh_interval: Duration,
    /// Clock skew allowed on `exp` and `nbf` (30 s).
    pub leeway: Duration,
    /// Timeout of one JWKS fetch (5 s).
    pub fetch_timeout: Duration,
}

impl JwtConfig {
    /// The defaults, for a JWKS at `jwks_url`.
    pub fn new(jwks_url: impl Into<String>) -> Self {
        Self {
            jwks_url: jwks_url.into(),
            issuer: None,
            audience: None,
            org_claim: "org_id".to_owned(),
            role_claim: "role".to_owned(),
            refetch_min_interval: Duration::from_secs(10),
            refresh_interval: Duration::from_secs(5 * 60),
            leeway: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a JWKS could not be loaded or a verifier built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS fetch failed: {0}")]
    Fetch(String),
    #[error("JWKS is not a valid JWK set: {0}")]
    Parse(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// One usable verification key.
struct VerifyKey {
    alg: Algorithm,
    key: DecodingKey,
    validation: Validation,
    /// RS256 signatures are checked with `ring` (the RSA public operation of the RustCrypto
    /// backend costs about 0.3 ms; ring's about 20 µs). `validation` then checks claims only.
    rsa: Option<ring::signature::RsaPublicKeyComponents<Vec<u8>>>,
}

impl VerifyKey {
    fn decode(&self, token: &str) -> Result<jsonwebtoken::TokenData<Map<String, Value>>, AuthError> {
        if let Some(rsa) = &self.rsa {
            let (signing_input, signature) = token.rsplit_once('.').ok_or(AuthError::Malformed)?;
            let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| AuthError::Malformed)?;
            rsa.verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, signing_input.as_bytes(), &signature)
                .map_err(|_| AuthError::InvalidSignature)?;
        }
        jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation).map_err(|e| map_jwt_error(e.kind()))
    }
}

/// The usable keys of one JWKS document.
#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
    all: Vec<Arc<VerifyKey>>,
}

impl KeySet {
    fn lookup(&self, kid: Option<&str>) -> Option<Arc<VerifyKey>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            // A token without `kid` is accepted only when there is no choice to make.
            None if self.all.len() == 1 => self.all.first().cloned(),
            None => None,
        }
    }
}

#[derive(Default)]
struct FetchState {
    /// Last fetch attempt caused by a token (unknown `kid`, or the first token of a cold cache).
    last_on_demand: Option<Instant>,
    /// Whether a JWKS was ever loaded (always true for static keys).
    loaded: bool,
    last_error: Option<String>,
}

/// Verifies login JWTs. Cheap to share (`Arc`); all methods take `&self`.
pub struct JwtVerifier {
    config: JwtConfig,
    /// `None` for static keys (never fetched).
    http: Option<reqwest::Client>,
    keys: RwLock<Arc<KeySet>>,
    state: Mutex<FetchState>,
    /// Serializes fetches so a burst of unknown `kid`s causes one fetch.
    fetch_lock: tokio::sync::Mutex<()>,
    fetch_count: AtomicU64,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("config", &self.config)
            .field("static", &self.http.is_none())
            .field("keys", &self.key_count())
            .field("fetch_count", &self.fetch_count())
            .finish()
    }
}

impl JwtVerifier {
    /// A verifier fetching its keys from `config.jwks_url` (lazily, on the first token, or at
    /// once with [`refresh`](Self::refresh) / [`spawn_refresh`](Self::spawn_refresh)).
    pub fn new(config: JwtConfig) -> Result<Self, JwksError> {
        let url = reqwest::Url::parse(&config.jwks_url).map_err(|e| JwksError::Client(format!("JWKS URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(JwksError::Client("JWKS URL must be http or https".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(config.fetch_timeout)
            .connect_timeout(config.fetch_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("wagate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| JwksError::Client(e.to_string()))?;
        Ok(Self::build(config, Some(http), KeySet::default(), false))
    }

    /// A verifier with fixed keys that never fetches (benchmarks, tests). `config.jwks_url` is
    /// ignored.
    pub fn with_static_keys(config: JwtConfig, jwks_json: &str) -> Result<Self, JwksError> {
        let keys = parse_jwks(jwks_json.as_bytes(), config.leeway)?;
        Ok(Self::build(config, None, keys, true))
    }

    fn build(config: JwtConfig, http: Option<reqwest::Client>, keys: KeySet, loaded: bool) -> Self {
        ensure_crypto_provider();
        Self {
            config,
            http,
            keys: RwLock::new(Arc::new(keys)),
            state: Mutex::new(FetchState { loaded, ..FetchState::default() }),
            fetch_lock: tokio::sync::Mutex::new(()),
            fetch_count: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &JwtConfig {
        &self.config
    }

    /// Number of JWKS fetches attempted so far.
    pub fn fetch_count(&self) -> u64 {
        self.fetch_count.load(Ordering::Relaxed)
    }

    /// Number of usable keys currently cached.
    pub fn key_count(&self) -> usize {
        self.current_keys().all.len()
    }

    /// Fetches the JWKS now (ignoring the refetch interval) and returns the number of usable
    /// keys. On failure the cached keys are kept. A no-op for static keys.
    pub async fn refresh(&self) -> Result<usize, AuthError> {
        if self.http.is_none() {
            return Ok(self.key_count());
        }
        let _guard = self.fetch_lock.lock().await;
        self.fetch_locked(false).await
    }

    /// Refreshes the JWKS at once and then every [`JwtConfig::refresh_interval`], until the
    /// verifier is dropped or the task aborted. Failures are logged and the cached keys kept.
    pub fn spawn_refresh(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let period = self.config.refresh_interval.max(Duration::from_millis(10));
        let fetches = self.http.is_some();
        tokio::spawn(async move {
            if !fetches {
                return;
            }
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(verifier) = weak.upgrade() else { return };
                match verifier.refresh().await {
                    Ok(n) => tracing::debug!(keys = n, "JWKS refreshed"),
                    Err(e) => tracing::warn!(error = %e, "JWKS background refresh failed; keeping cached keys"),
                }
            }
        })
    }

    /// Verifies a login JWT and maps its claims to a [`Principal`].
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        let header = parse_header(token)?;
        let alg = allowed_algorithm(&header.alg).ok_or(AuthError::DisallowedAlgorithm)?;
        let key = self.find_key(header.kid.as_deref()).await?;
        if key.alg != alg {
            return Err(AuthError::DisallowedAlgorithm);
        }
        let data = key.decode(token)?;
        self.principal(&data.claims)
    }

    fn current_keys(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FetchState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn find_key(&self, kid: Option<&str>) -> Result<Arc<VerifyKey>, AuthError> {
        if let Some(key) = self.current_keys().lookup(kid) {
            return Ok(key);
        }
        // A `kid`-less token cannot be helped by a refetch once a JWKS is loaded.
        let worth_fetching = kid.is_some() || !self.state().loaded;
        if worth_fetching && self.http.is_some() {
            let _guard = self.fetch_lock.lock().await;
            // Someone else may have fetched while we waited: look again first.
            if let Some(key) = self.current_keys().lookup(kid) {
                return Ok(key);
            }
            let recent = self.state().last_on_demand.is_some_and(|t| t.elapsed() < self.config.refetch_min_interval);
            if !recent {
                // A failure is recorded in `state` and reported below.
                let _ = self.fetch_locked(true).await;
            }
            if let Some(key) = self.current_keys().lookup(kid) {
                return Ok(key);
            }
        }
        let state = self.state();
        if !state.loaded {
            let why = state.last_error.clone().unwrap_or_else(|| "JWKS not loaded yet".to_owned());
            return Err(AuthError::Unavailable(why));
        }
        tracing::debug!(kid = kid.unwrap_or("(none)"), "JWT signed by an unknown key");
        Err(AuthError::UnknownKey)
    }

    /// Fetches and installs the JWKS; the caller holds `fetch_lock`. `on_demand`: caused by a
    /// token (counts towards `refetch_min_interval`).
    async fn fetch_locked(&self, on_demand: bool) -> Result<usize, AuthError> {
        let Some(http) = &self.http else { return Ok(self.key_count()) };
        self.fetch_count.fetch_add(1, Ordering::Relaxed);
        if on_demand {
            self.state().last_on_demand = Some(Instant::now());
        }
        let result = match fetch_jwks(http, &self.config.jwks_url).await {
            Ok(body) => parse_jwks(&body, self.config.leeway),
            Err(e) => Err(e),
        };
        match result {
            Ok(keys) => {
                let n = keys.all.len();
                if n == 0 {
                    tracing::warn!(url = %self.config.jwks_url, "JWKS holds no usable RS256/ES256/EdDSA key");
                }
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
                let mut state = self.state();
                state.loaded = true;
                state.last_error = None;
                Ok(n)
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::warn!(url = %self.config.jwks_url, error = %msg, "JWKS fetch failed");
                self.state().last_error = Some(msg.clone());
                Err(AuthError::Unavailable(msg))
            }
        }
    }

    /// Checks issuer and audience and maps the claims to a principal.
    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, AuthError> {
        if let Some(issuer) = &self.config.issuer {
            match claims.get("iss") {
                Some(Value::String(iss)) if iss == issuer => {}
                _ => return Err(AuthError::WrongIssuer),
            }
        }
        if let Some(audience) = &self.config.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience.as_str())),
                _ => false,
            };
            if !ok {
                return Err(AuthError::WrongAudience);
            }
        }
        let org = claims
            .get(&self.config.org_claim)
            .and_then(Value::as_str)
            .and_then(OrgId::parse)
            .ok_or(AuthError::MissingOrg)?;
        let capabilities = claims
            .get(&self.config.role_claim)
            .and_then(Value::as_str)
            .map(|r| Role::parse(r).capabilities())
            .unwrap_or_default();
        let subject = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
        Ok(Principal { org, capabilities, kind: PrincipalKind::User { subject } })
    }
}

/// Selects jsonwebtoken's RustCrypto backend explicitly, so verification keeps working (instead
/// of panicking) should feature unification ever also enable its `aws_lc_rs` backend.
pub(crate) fn ensure_crypto_provider() {
    // Err only means a provider is installed already.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Reads `alg` and `kid` from the (unverified) header.
fn parse_header(token: &str) -> Result<RawHeader, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(AuthError::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD.decode(header).map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

fn allowed_algorithm(alg: &str) -> Option<Algorithm> {
    match alg {
        "RS256" => Some(Algorithm::RS256),
        "ES256" => Some(Algorithm::ES256),
        "EdDSA" => Some(Algorithm::EdDSA),
        _ => None,
    }
}

fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::MissingRequiredClaim(c) if c == "exp" => AuthError::MissingExpiry,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::DisallowedAlgorithm
        }
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidToken
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => AuthError::Malformed,
        // Bad signature bytes, a key the crypto provider rejects, ...
        other => {
            tracing::debug!(error = ?other, "JWT verification failed");
            AuthError::InvalidSignature
        }
    }
}

async fn fetch_jwks(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, JwksError> {
    let fetch_err = |e: reqwest::Error| JwksError::Fetch(e.without_url().to_string());
    let mut resp = http.get(url).header("accept", "application/json").send().await.map_err(fetch_err)?;
    if !resp.status().is_success() {
        return Err(JwksError::Fetch(format!("HTTP status {}", resp.status())));
    }
    if resp.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
        return Err(JwksError::Fetch("JWKS document too large".into()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(fetch_err)? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_JWKS_BYTES {
            return Err(JwksError::Fetch("JWKS document too large".into()));
        }
    }
    Ok(body)
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<Value>,
}

/// Parses a JWKS document, keeping the RS256/ES256/EdDSA signing keys and skipping the rest.
fn parse_jwks(json: &[u8], leeway: Duration) -> Result<KeySet, JwksError> {
    let raw: RawJwks = serde_json::from_slice(json).map_err(|e| JwksError::Parse(e.to_string()))?;
    let mut set = KeySet::default();
    for value in raw.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            tracing::debug!("skipping a JWK of an unsupported type");
            continue;
        };
        let kid = jwk.common.key_id.clone();
        let Some(key) = usable_key(&jwk, leeway) else {
            tracing::debug!(kid = kid.as_deref().unwrap_or("(none)"), "skipping an unusable JWK");
            continue;
        };
        let key = Arc::new(key);
        if let Some(kid) = kid {
            if set.by_kid.contains_key(&kid) {
                tracing::warn!(kid = %kid, "JWKS has a duplicate kid; keeping the first key");
                continue;
            }
            set.by_kid.insert(kid, key.clone());
        }
        set.all.push(key);
    }
    Ok(set)
}

fn usable_key(jwk: &Jwk, leeway: Duration) -> Option<VerifyKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))) {
        return None;
    }
    let mut rsa = None;
    let (alg, key_alg) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = URL_SAFE_NO_PAD.decode(&p.n).ok()?;
            let bits = n.iter().position(|&b| b != 0).map_or(0, |i| (n.len() - i) * 8);
            if bits < MIN_RSA_BITS {
                return None;
            }
            let e = URL_SAFE_NO_PAD.decode(&p.e).ok()?;
            rsa = Some(ring::signature::RsaPublicKeyComponents { n, e });
            (Algorithm::RS256, KeyAlgorithm::RS256)
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            let (x, y) = (URL_SAFE_NO_PAD.decode(&p.x).ok()?, URL_SAFE_NO_PAD.decode(&p.y).ok()?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            if URL_SAFE_NO_PAD.decode(&p.x).ok()?.len() != 32 {
                return None;
            }
            (Algorithm::EdDSA, KeyAlgorithm::EdDSA)
        }
        _ => return None,
    };
    if jwk.common.key_algorithm.is_some_and(|a| a != key_alg) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    let mut validation = Validation::new(alg);
    validation.leeway = leeway.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp"]);
    // Issuer and audience are checked by `JwtVerifier::principal` (exact string match), because
    // jsonwebtoken skips the issuer check when `iss` is absent and rejects any `aud` when no
    // audience is configured.
    validation.validate_aud = false;
    validation.iss = None;
    if rsa.is_some() {
        // The signature was checked with ring in `VerifyKey::decode`, before this runs; the
        // claims (exp, nbf) are still validated here. The suggested replacement,
        // `dangerous::insecure_decode`, would skip the claim checks too.
        #[allow(deprecated)]
        validation.insecure_disable_signature_validation();
    }
    Some(VerifyKey { alg, key, validation, rsa })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let c = JwtConfig::new("https://idp.example/jwks.json");
        assert_eq!(c.org_claim, "org_id");
        assert_eq!(c.role_claim, "role");
        assert_eq!(c.refetch_min_interval, Duration::from_secs(10));
        assert_eq!(c.refresh_interval, Duration::from_secs(300));
        assert_eq!(c.leeway, Duration::from_secs(30));
        assert_eq!(c.fetch_timeout, Duration::from_secs(5));
        assert_eq!((c.issuer, c.audience), (None, None));
    }

    #[test]
    fn only_three_algorithms_are_allowed() {
        assert_eq!(allowed_algorithm("RS256"), Some(Algorithm::RS256));
        assert_eq!(allowed_algorithm("ES256"), Some(Algorithm::ES256));
        assert_eq!(allowed_algorithm("EdDSA"), Some(Algorithm::EdDSA));
        for alg in ["none", "None", "HS256", "HS512", "RS384", "RS512", "PS256", "ES384", "rs256", ""] {
            assert_eq!(allowed_algorithm(alg), None, "{alg}");
        }
    }

    #[test]
    fn header_parsing_rejects_garbage() {
        assert_eq!(parse_header("abc").err(), Some(AuthError::Malformed));
        assert_eq!(parse_header("a.b").err(), Some(AuthError::Malformed));
        assert_eq!(parse_header("a.b.c.d").err(), Some(AuthError::Malformed));
        assert_eq!(parse_header("!!.b.c").err(), Some(AuthError::Malformed));
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","kid":"k1"}"#);
        let parsed = parse_header(&format!("{h}.e30.sig")).unwrap();
        assert_eq!((parsed.alg.as_str(), parsed.kid.as_deref()), ("ES256", Some("k1")));
        let no_alg = URL_SAFE_NO_PAD.encode(br#"{"kid":"k1"}"#);
        assert_eq!(parse_header(&format!("{no_alg}.e30.sig")).err(), Some(AuthError::Malformed));
    }

    #[test]
    fn jwks_parsing_skips_unusable_keys() {
        let x32 = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let short_n = URL_SAFE_NO_PAD.encode([0xffu8; 128]); // 1024-bit modulus
        let jwks = serde_json::json!({ "keys": [
            { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" },
            { "kty": "RSA", "kid": "small-rsa", "n": short_n, "e": "AQAB" },
            { "kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": x32 },
            { "kty": "OKP", "kid": "ed-wrong-alg", "crv": "Ed25519", "x": x32, "alg": "ES256" },
            { "kty": "OKP", "kid": "ed-enc", "crv": "Ed25519", "x": x32, "use": "enc" },
            { "kty": "EC", "kid": "p384", "crv": "P-384", "x": x32, "y": x32 },
            { "kty": "XYZ", "kid": "weird" },
            { "kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([8u8; 32]) },
        ]});
        let set = parse_jwks(jwks.to_string().as_bytes(), Duration::from_secs(30)).unwrap();
        assert_eq!(set.all.len(), 1);
        assert_eq!(set.by_kid.keys().collect::<Vec<_>>(), vec!["ed"]);
        assert_eq!(set.by_kid["ed"].alg, Algorithm::EdDSA);
        assert!(parse_jwks(b"not json", Duration::ZERO).is_err());
        assert!(parse_jwks(b"{}", Duration::ZERO).is_err());
    }

    #[test]
    fn kidless_tokens_need_exactly_one_key() {
        let x = |b: u8| URL_SAFE_NO_PAD.encode([b; 32]);
        let one = serde_json::json!({ "keys": [{ "kty": "OKP", "kid": "a", "crv": "Ed25519", "x": x(1) }] });
        let two = serde_json::json!({ "keys": [
            { "kty": "OKP", "kid": "a", "crv": "Ed25519", "x": x(1) },
            { "kty": "OKP", "crv": "Ed25519", "x": x(2) },
        ]});
        let one = parse_jwks(one.to_string().as_bytes(), Duration::ZERO).unwrap();
        let two = parse_jwks(two.to_string().as_bytes(), Duration::ZERO).unwrap();
        assert!(one.lookup(None).is_some());
        assert!(one.lookup(Some("a")).is_some());
        assert!(one.lookup(Some("b")).is_none());
        assert!(two.lookup(None).is_none());
        assert!(two.lookup(Some("a")).is_some());
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(JwtVerifier::new(JwtConfig::new("not a url")).is_err());
        assert!(JwtVerifier::new(JwtConfig::new("file:///etc/passwd")).is_err());
        assert!(JwtVerifier::new(JwtConfig::new("http://127.0.0.1:1/jwks.json")).is_ok());
    }
}
