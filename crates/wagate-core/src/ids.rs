//! Resource identifiers: a type prefix plus a ULID (`sess_01J...`), and the 12-character
//! wawp instance id.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("expected an id of the form {prefix}<ULID>")]
    Malformed { prefix: &'static str },
}

/// A ULID greater than every one this process made before. Plain ULIDs made in the same
/// millisecond order by their random part, which would let "newest first" lists swap two
/// resources created together; the generator increments the random part instead.
pub fn monotonic_ulid() -> ulid::Ulid {
    static GENERATOR: std::sync::Mutex<ulid::Generator> = std::sync::Mutex::new(ulid::Generator::new());
    let mut generator = GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // Overflow needs 2^80 ids in one millisecond; a fresh ULID is the safe answer then.
    generator.generate().unwrap_or_else(|_| ulid::Ulid::new())
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id. Ids sort by creation order (newest last), also within one
            /// millisecond: see [`monotonic_ulid`].
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, monotonic_ulid()))
            }

            /// Parses `prefix + ULID` (the ULID in canonical upper-case Crockford base32).
            pub fn parse(s: &str) -> Result<Self, IdError> {
                let rest = s.strip_prefix($prefix).ok_or(IdError::Malformed { prefix: $prefix })?;
                let ulid = ulid::Ulid::from_string(rest).map_err(|_| IdError::Malformed { prefix: $prefix })?;
                if ulid.to_string() != rest {
                    return Err(IdError::Malformed { prefix: $prefix });
                }
                Ok(Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

prefixed_id!(
    /// A session: one attached (or to-be-attached) WhatsApp number.
    SessionId,
    "sess_"
);
prefixed_id!(
    /// An API key's public id (not the secret).
    ApiKeyId,
    "key_"
);
prefixed_id!(
    /// An event of the event log.
    EventId,
    "evt_"
);
prefixed_id!(
    /// A message, inbound or outbound, as the gateway stores it (not WhatsApp's own id).
    MessageId,
    "msg_"
);
prefixed_id!(
    /// A webhook endpoint.
    WebhookId,
    "wh_"
);
prefixed_id!(
    /// One event's delivery to one webhook.
    DeliveryId,
    "dlv_"
);

impl EventId {
    /// When the id was made (the ULID's millisecond timestamp).
    pub fn created_at(&self) -> crate::Timestamp {
        let ulid = ulid::Ulid::from_string(&self.0[Self::PREFIX.len()..]).unwrap_or_default();
        chrono::DateTime::from_timestamp_millis(ulid.timestamp_ms() as i64).unwrap_or_default()
    }
}

/// An organization: an opaque, non-empty string (a JWT org claim or `keys create --org`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrgId(String);

impl OrgId {
    pub const MAX_LEN: usize = 200;

    pub fn parse(s: &str) -> Option<Self> {
        let ok = !s.is_empty() && s.len() <= Self::MAX_LEN && !s.chars().any(char::is_control);
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrgId({})", self.0)
    }
}

/// The 12-character (A-Z, 0-9) instance id of the wawp-compatible API.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceId(String);

impl InstanceId {
    pub const LEN: usize = 12;
    const ALPHABET: &'static [u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

    pub fn generate() -> Self {
        let mut rng = rand::thread_rng();
        let s = (0..Self::LEN)
            .map(|_| Self::ALPHABET[rng.gen_range(0..Self::ALPHABET.len())] as char)
            .collect();
        Self(s)
    }

    pub fn parse(s: &str) -> Option<Self> {
        let ok = s.len() == Self::LEN && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for InstanceId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s).ok_or(IdError::Malformed { prefix: "" })
    }
}

impl From<InstanceId> for String {
    fn from(id: InstanceId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_round_trip_and_reject_garbage() {
        let id = SessionId::generate();
        assert!(id.as_str().starts_with("sess_"));
        assert_eq!(SessionId::parse(id.as_str()).unwrap(), id);
        for bad in ["", "sess_", "key_01J9Z3QK8M0000000000000000", "sess_01j9z3qk8m0000000000000000", "sess_nope", "sess_01J9Z3QK8M0000000000000000x"] {
            assert!(SessionId::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn ids_made_together_sort_in_creation_order() {
        let ids: Vec<_> = (0..1000).map(|_| SessionId::generate()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
    }

    #[test]
    fn instance_ids_are_twelve_upper_alnum() {
        let id = InstanceId::generate();
        assert_eq!(id.as_str().len(), 12);
        assert!(InstanceId::parse(id.as_str()).is_some());
        assert!(InstanceId::parse("a1b2c3d4e5f6").is_none());
        assert!(InstanceId::parse("A1B2C3D4E5F").is_none());
        assert!(InstanceId::parse("A1B2C3D4E5F6G").is_none());
    }

    #[test]
    fn org_ids_are_non_empty_printable() {
        assert!(OrgId::parse("acme").is_some());
        assert!(OrgId::parse("").is_none());
        assert!(OrgId::parse("a\nb").is_none());
    }
}
