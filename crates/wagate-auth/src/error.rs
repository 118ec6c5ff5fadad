//! Why authentication failed.

/// Why a request could not be authenticated.
///
/// Every variant but [`AuthError::Unavailable`] is the caller's fault and maps to 401; its
/// [`client_message`](AuthError::client_message) is safe to send back. `Unavailable` (the JWKS is
/// unreachable and no key is cached, or the store failed) maps to 500 and its text is for logs
/// only. No variant ever carries a token or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm not allowed")]
    DisallowedAlgorithm,
    #[error("token signed by an unknown key")]
    UnknownKey,
    #[error("invalid token signature")]
    InvalidSignature,
    #[error("token has no expiry")]
    MissingExpiry,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("wrong token issuer")]
    WrongIssuer,
    #[error("wrong token audience")]
    WrongAudience,
    #[error("token has no valid organization claim")]
    MissingOrg,
    #[error("login tokens are not accepted (no JWKS configured)")]
    JwtNotConfigured,
    #[error("invalid API key")]
    InvalidApiKey,
    #[error("API key revoked")]
    Revoked,
    #[error("API key expired")]
    ApiKeyExpired,
    /// Infrastructure failure; the text is for logs, never for clients.
    #[error("authentication unavailable: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// A short message that is safe to return to the client.
    pub fn client_message(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing bearer token",
            AuthError::Malformed => "malformed token",
            AuthError::DisallowedAlgorithm => "token algorithm not allowed",
            AuthError::UnknownKey => "token signed by an unknown key",
            AuthError::InvalidSignature => "invalid token signature",
            AuthError::MissingExpiry => "token has no expiry",
            AuthError::Expired => "token expired",
            AuthError::NotYetValid => "token not yet valid",
            AuthError::WrongIssuer => "wrong token issuer",
            AuthError::WrongAudience => "wrong token audience",
            AuthError::MissingOrg => "token has no valid organization claim",
            AuthError::JwtNotConfigured => "login tokens are not accepted by this gateway",
            AuthError::InvalidApiKey => "invalid API key",
            AuthError::Revoked => "API key revoked",
            AuthError::ApiKeyExpired => "API key expired",
            AuthError::Unavailable(_) => "authentication is temporarily unavailable",
        }
    }

    /// True for infrastructure failures (answer 500), false for bad credentials (answer 401).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, AuthError::Unavailable(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_is_the_only_server_error_and_hides_details_from_clients() {
        let e = AuthError::Unavailable("jwks fetch: connection refused to 10.0.0.1".into());
        assert!(e.is_unavailable());
        assert!(!e.client_message().contains("10.0.0.1"));
        assert!(!AuthError::Expired.is_unavailable());
        assert!(!AuthError::Revoked.is_unavailable());
    }
}
