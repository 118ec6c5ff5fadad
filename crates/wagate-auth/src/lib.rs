//! Authentication for wagate.
//!
//! A bearer token is either an API key (`wag_...`, see [`apikey`]) looked up by its SHA-256 in
//! the [`ApiKeyStore`], or a login JWT verified against a JWKS (see [`jwt`]). [`Authenticator`] picks
//! the path by the `wag_` prefix and turns either into a [`Principal`].
//!
//! Nothing in this crate logs, displays or stores a token or a key secret.

use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;
use wagate_core::{Principal, PrincipalKind};
use wagate_store::ApiKeyStore;

pub mod apikey;
mod cache;
mod error;
pub mod jwt;
#[cfg(feature = "testing")]
pub mod testing;

pub use apikey::{ApiKeyFormatError, GeneratedKey};
pub use error::AuthError;
pub use jwt::{JwksError, JwtConfig, JwtVerifier};

/// A key's `last_used_at` is rewritten at most this often.
pub const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

/// Turns bearer tokens into principals.
#[derive(Clone)]
pub struct Authenticator {
    store: Arc<dyn ApiKeyStore>,
    jwt: Option<Arc<JwtVerifier>>,
    /// Keys found valid, used while the store says keys have not changed (see `cache.rs`).
    cache: Arc<cache::KeyCache>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("jwt", &self.jwt).finish_non_exhaustive()
    }
}

impl Authenticator {
    /// `jwt` is `None` when no JWKS is configured: then only API keys are accepted.
    pub fn new(store: Arc<dyn ApiKeyStore>, jwt: Option<Arc<JwtVerifier>>) -> Self {
        Self { store, jwt, cache: Arc::default() }
    }

    pub fn jwt(&self) -> Option<&Arc<JwtVerifier>> {
        self.jwt.as_ref()
    }

    /// Authenticates the token of an `Authorization: Bearer <token>` header.
    ///
    /// Tokens starting with `wag_` are API keys; anything else is a login JWT.
    pub async fn authenticate(&self, bearer_token: &str) -> Result<Principal, AuthError> {
        let token = bearer_token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if apikey::looks_like_api_key(token) {
            return self.authenticate_api_key(token).await;
        }
        match &self.jwt {
            Some(verifier) => verifier.verify(token).await,
            None => Err(AuthError::JwtNotConfigured),
        }
    }

    async fn authenticate_api_key(&self, token: &str) -> Result<Principal, AuthError> {
        let hash = apikey::parse(token).map_err(|e| {
            tracing::debug!(reason = %e, "malformed API key");
            AuthError::Malformed
        })?;
        let version = self.store.api_keys_version();
        let cached = version.and_then(|v| self.cache.get(v, &hash));
        let from_cache = cached.is_some();
        let read_at = std::time::Instant::now();
        let record = match cached {
            Some(record) => record,
            None => self
                .store
                .find_api_key_by_hash(&hash)
                .await
                .map_err(|e| AuthError::Unavailable(format!("API key lookup: {e}")))?
                .ok_or(AuthError::InvalidApiKey)?,
        };
        // The store matched on the hash already; compare again without leaking timing, in case a
        // backend ever matches loosely (prefix, collation, ...).
        if !bool::from(record.hash.ct_eq(&hash)) {
            return Err(AuthError::InvalidApiKey);
        }
        if record.revoked_at.is_some() {
            tracing::debug!(key = %record.id, "revoked API key used");
            return Err(AuthError::Revoked);
        }
        let now = wagate_core::now();
        if record.expires_at.is_some_and(|at| at <= now) {
            tracing::debug!(key = %record.id, "expired API key used");
            return Err(AuthError::ApiKeyExpired);
        }
        let stale = record.last_used_at.is_none_or(|at| {
            now.signed_duration_since(at) >= chrono::Duration::from_std(TOUCH_INTERVAL).unwrap_or_default()
        });
        if let Some(version) = version.filter(|_| !from_cache) {
            self.cache.put(version, record.clone(), read_at);
        }
        if stale {
            // The cached copy counts as used at once, so concurrent requests do not all write;
            // a failed write puts the old time back, so a later request tries again.
            self.cache.touched(&hash, Some(now));
            let store = self.store.clone();
            let cache = Arc::clone(&self.cache);
            let id = record.id.clone();
            let previous = record.last_used_at;
            tokio::spawn(async move {
                if let Err(e) = store.touch_api_key(&id, now).await {
                    tracing::warn!(key = %id, error = %e, "could not record API key use");
                    cache.touched(&hash, previous);
                }
            });
        }
        Ok(Principal {
            org: record.org,
            capabilities: record.capabilities,
            kind: PrincipalKind::ApiKey { id: record.id },
        })
    }
}

/// Extracts the token from an `Authorization` header value (`Bearer <token>`, scheme
/// case-insensitive). `Missing` when the value is empty or not a bearer credential.
pub fn bearer_token(header_value: &str) -> Result<&str, AuthError> {
    let value = header_value.trim();
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let token = token.trim();
    if token.is_empty() { Err(AuthError::Missing) } else { Ok(token) }
}

#[cfg(test)]
mod tests;
