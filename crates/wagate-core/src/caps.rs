//! Capabilities, roles and the authenticated principal.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{ApiKeyId, OrgId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Session lifecycle, pairing, identity, API keys, webhooks.
    Manage,
    /// Send messages, presence, mark read.
    Send,
    /// List and get sessions, messages, events.
    Read,
}

impl Capability {
    pub const ALL: [Capability; 3] = [Capability::Manage, Capability::Send, Capability::Read];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Manage => "manage",
            Capability::Send => "send",
            Capability::Read => "read",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    fn bit(self) -> u8 {
        match self {
            Capability::Manage => 1,
            Capability::Send => 2,
            Capability::Read => 4,
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of capabilities (a three-bit set).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(u8);

impl Capabilities {
    pub const NONE: Capabilities = Capabilities(0);
    pub const ALL: Capabilities = Capabilities(7);

    pub fn contains(self, c: Capability) -> bool {
        self.0 & c.bit() != 0
    }

    pub fn with(self, c: Capability) -> Self {
        Self(self.0 | c.bit())
    }

    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL.into_iter().filter(move |c| self.contains(*c))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses a comma-separated list such as `manage,send,read`. Empty items are ignored;
    /// an unknown item is an error naming it.
    pub fn parse_list(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .try_fold(Self::NONE, |acc, p| Capability::parse(p).map(|c| acc.with(c)).ok_or_else(|| p.to_owned()))
    }

    /// The canonical comma-separated form, in `manage,send,read` order.
    pub fn to_list(self) -> String {
        self.iter().map(Capability::as_str).collect::<Vec<_>>().join(",")
    }
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        iter.into_iter().fold(Self::NONE, Self::with)
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Capabilities({})", self.to_list())
    }
}

/// A person's role, read from the login JWT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Owner,
    Admin,
    Member,
    Viewer,
    Other(String),
}

impl Role {
    pub fn parse(s: &str) -> Self {
        match s {
            "owner" => Role::Owner,
            "admin" => Role::Admin,
            "member" => Role::Member,
            "viewer" => Role::Viewer,
            other => Role::Other(other.to_owned()),
        }
    }

    /// `owner`/`admin` → all; `member` → send, read; `viewer` → read; anything else → none.
    pub fn capabilities(&self) -> Capabilities {
        match self {
            Role::Owner | Role::Admin => Capabilities::ALL,
            Role::Member => [Capability::Send, Capability::Read].into_iter().collect(),
            Role::Viewer => [Capability::Read].into_iter().collect(),
            Role::Other(_) => Capabilities::NONE,
        }
    }
}

/// How the caller authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A person, through a frontend-minted JWT (`sub` claim if present).
    User { subject: Option<String> },
    /// A script or service, through an API key.
    ApiKey { id: ApiKeyId },
}

/// The authenticated caller of a request: always exactly one organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub org: OrgId,
    pub capabilities: Capabilities,
    pub kind: PrincipalKind,
}

impl Principal {
    pub fn can(&self, c: Capability) -> bool {
        self.capabilities.contains(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_mapping_matches_the_contract() {
        assert_eq!(Role::parse("owner").capabilities(), Capabilities::ALL);
        assert_eq!(Role::parse("admin").capabilities(), Capabilities::ALL);
        let member = Role::parse("member").capabilities();
        assert!(member.contains(Capability::Send) && member.contains(Capability::Read) && !member.contains(Capability::Manage));
        assert_eq!(Role::parse("viewer").capabilities().to_list(), "read");
        assert!(Role::parse("Owner").capabilities().is_empty());
        assert!(Role::parse("").capabilities().is_empty());
    }

    #[test]
    fn capability_lists_parse_and_print() {
        assert_eq!(Capabilities::parse_list("read, manage").unwrap().to_list(), "manage,read");
        assert_eq!(Capabilities::parse_list("manage,send,read").unwrap(), Capabilities::ALL);
        assert_eq!(Capabilities::parse_list("manage,root"), Err("root".to_owned()));
    }
}
