//! Sessions and API key records as stored.

use serde::{Deserialize, Serialize};

use crate::{ApiKeyId, Capabilities, InstanceId, OrgId, Phone, SendPolicy, SessionId, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// The real WhatsApp Web multi-device protocol.
    #[default]
    Whatsapp,
    /// A simulated WhatsApp network inside the gateway, for building and testing integrations.
    Sandbox,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Whatsapp => "whatsapp",
            EngineKind::Sandbox => "sandbox",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "whatsapp" => Some(EngineKind::Whatsapp),
            "sandbox" => Some(EngineKind::Sandbox),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Stopped,
    Starting,
    AwaitingPairing,
    Connected,
    Reconnecting,
    LoggedOut,
    Failed,
}

impl SessionStatus {
    pub const ALL: [SessionStatus; 7] = [
        SessionStatus::Stopped,
        SessionStatus::Starting,
        SessionStatus::AwaitingPairing,
        SessionStatus::Connected,
        SessionStatus::Reconnecting,
        SessionStatus::LoggedOut,
        SessionStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Stopped => "stopped",
            SessionStatus::Starting => "starting",
            SessionStatus::AwaitingPairing => "awaiting_pairing",
            SessionStatus::Connected => "connected",
            SessionStatus::Reconnecting => "reconnecting",
            SessionStatus::LoggedOut => "logged_out",
            SessionStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// The WhatsApp identity of a paired session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub phone: Phone,
    /// `628123456789@s.whatsapp.net`
    pub jid: String,
    /// `123456789012345@lid`
    pub lid: Option<String>,
    pub push_name: Option<String>,
    /// `android`, `iphone`, `smba` ... as the phone reports it.
    pub platform: Option<String>,
}

/// A session row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub org: OrgId,
    pub instance_id: InstanceId,
    pub name: Option<String>,
    pub engine: EngineKind,
    pub status: SessionStatus,
    /// Why the session is `failed`, `logged_out` or `stopped` by itself (machine-readable).
    pub status_reason: Option<String>,
    /// Whether the gateway should run this session (set by start, cleared by stop/logout);
    /// sessions with this set are resumed when the gateway starts.
    pub desired_running: bool,
    pub identity: Option<Identity>,
    /// The linked-device name shown on the phone (under Linked devices); `None` uses the
    /// gateway-wide default. Applied when the device pairs.
    pub device_name: Option<String>,
    /// How the session sends messages (pace, typing).
    pub send_policy: SendPolicy,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What a new session is created from.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: SessionId,
    pub org: OrgId,
    pub instance_id: InstanceId,
    pub name: Option<String>,
    pub engine: EngineKind,
    pub status: SessionStatus,
    pub desired_running: bool,
    /// The linked-device name; `None` uses the gateway-wide default.
    pub device_name: Option<String>,
    pub created_at: Timestamp,
}

/// An API key as stored: never the secret, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub org: OrgId,
    pub name: String,
    pub capabilities: Capabilities,
    /// SHA-256 of the whole key string.
    pub hash: [u8; 32],
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
}

pub type NewApiKey = ApiKeyRecord;
