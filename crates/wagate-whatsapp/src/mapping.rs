//! From `whatsapp-rust` events to [`EngineEvent`]s.
//!
//! [`EventMapper::map`] is pure: it sees one crate event, the current time and a snapshot
//! of the device's own identity, updates its small state and says what to report. The
//! session loop (`session.rs`) feeds it and reads the state back to decide whether and
//! when to reconnect, so every decision here is unit-tested with constructed events.

use wagate_core::{Identity, Phone, Timestamp};
use wagate_engine::{EngineEvent, QrCode};
use whatsapp_rust::Jid;
use whatsapp_rust::types::events::{ConnectFailureReason, Event, EventKind};

/// The device's own identity as the client's store knows it (`client.pn()`, `client.lid()`,
/// `client.push_name()`), read just before mapping an event.
#[derive(Debug, Clone, Default)]
pub(crate) struct SelfInfo {
    pub pn: Option<Jid>,
    pub lid: Option<Jid>,
    pub push_name: String,
}

/// The crate event kinds the engine listens to; the bus does not even materialise others.
pub(crate) const INTEREST: &[EventKind] = &[
    EventKind::Connected,
    EventKind::Disconnected,
    EventKind::PairSuccess,
    EventKind::PairError,
    EventKind::LoggedOut,
    EventKind::PairingQrCode,
    EventKind::PairingCode,
    EventKind::PairingCodeRefresh,
    EventKind::PairingCodeError,
    EventKind::PairingQrCodesExhausted,
    EventKind::QrScannedWithoutMultidevice,
    EventKind::ClientOutdated,
    EventKind::StreamReplaced,
    EventKind::TemporaryBan,
    EventKind::ConnectFailure,
    EventKind::StreamError,
    EventKind::AppStateSyncFailed,
];

/// State carried between events of one session.
#[derive(Debug, Default)]
pub(crate) struct EventMapper {
    /// The identity last reported (or given at start for a paired session).
    identity: Option<Identity>,
    /// A terminal event was reported: the session must not reconnect.
    terminal: bool,
    /// Why the current connection ended, if the crate said.
    disconnect_reason: Option<String>,
    /// `Connected` was seen since the last [`EventMapper::take_connected`].
    connected: bool,
}

impl EventMapper {
    pub fn new(identity: Option<Identity>) -> Self {
        Self { identity, ..Self::default() }
    }

    /// Whether the device is known to be paired.
    #[cfg(test)]
    pub fn is_paired(&self) -> bool {
        self.identity.is_some()
    }

    /// A terminal event (logged out, replaced, banned, outdated, QR codes exhausted, refused
    /// login) was reported; reconnecting would be wrong.
    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// Why the last connection ended, as the crate reported it (consumed).
    pub fn take_disconnect_reason(&mut self) -> Option<String> {
        self.disconnect_reason.take()
    }

    /// Whether the connection reached `Connected` since the last call (consumed).
    pub fn take_connected(&mut self) -> bool {
        std::mem::take(&mut self.connected)
    }

    /// Maps one crate event. Most events map to nothing; `Connected` may map to two
    /// (`Paired` with a newly learned identity, then `Connected`).
    pub fn map(&mut self, event: &Event, now: Timestamp, me: &SelfInfo) -> Vec<EngineEvent> {
        match event {
            // ── pairing ────────────────────────────────────────────────────────────────
            Event::PairingQrCode(qr) => {
                let ttl = chrono::Duration::from_std(qr.timeout).unwrap_or(chrono::Duration::zero());
                vec![EngineEvent::Qr(QrCode { code: qr.code.clone(), expires_at: now + ttl })]
            }
            Event::PairingQrCodesExhausted(_) => {
                // With `disconnected == false` the socket stays up for a pair-code flow, but
                // the supervisor stops the session on `QrExhausted` either way; never
                // reconnect into a fresh round of codes nobody asked for.
                self.terminal = true;
                vec![EngineEvent::QrExhausted]
            }
            Event::PairSuccess(ps) => {
                let business = Some(ps.business_name.clone()).filter(|s| !s.is_empty());
                let push_name = business.or_else(|| Some(me.push_name.clone()).filter(|s| !s.is_empty()));
                match identity_from(&ps.id, Some(&ps.lid), push_name, Some(ps.platform.clone())) {
                    Some(identity) => {
                        self.identity = Some(identity.clone());
                        vec![EngineEvent::Paired(identity)]
                    }
                    None => {
                        tracing::warn!(jid = %ps.id, "pair success with a JID that is not a phone number; identity left for Connected");
                        Vec::new()
                    }
                }
            }
            // The phone code comes back as the return value of `pair_with_code`, which
            // `request_pairing_code` returns; its failures are that call's error.
            Event::PairingCode(_) | Event::PairingCodeError(_) => Vec::new(),
            Event::PairingCodeRefresh(_) => {
                // The shown code is void; the API has no event for it, the user asks again.
                tracing::info!("WhatsApp asked to refresh the pairing code; the previous one is void");
                Vec::new()
            }
            Event::PairError(pe) => {
                // The phone's pairing attempt failed its checks; the QR rotation goes on.
                tracing::warn!(error = %pe.error, "pairing attempt from the phone failed");
                Vec::new()
            }
            Event::QrScannedWithoutMultidevice(_) => {
                tracing::warn!("QR scanned by a phone without multi-device support");
                Vec::new()
            }
            Event::PairPasskeyRequest(_) | Event::PairPasskeyConfirmation(_) | Event::PairPasskeyError(_) => {
                // Passkey-gated linking needs a WebAuthn authenticator we do not have; the
                // QR and phone-code flows are the supported ones.
                tracing::warn!("WhatsApp asked for passkey-gated linking, which wagate does not support");
                Vec::new()
            }

            // ── connection ─────────────────────────────────────────────────────────────
            Event::Connected(_) => {
                self.connected = true;
                let mut out = Vec::with_capacity(2);
                if let Some(pn) = &me.pn {
                    let push_name = Some(me.push_name.clone())
                        .filter(|s| !s.is_empty())
                        .or_else(|| self.identity.as_ref().and_then(|i| i.push_name.clone()));
                    let platform = self.identity.as_ref().and_then(|i| i.platform.clone());
                    if let Some(fresh) = identity_from(pn, me.lid.as_ref(), push_name, platform) {
                        let fresh = merge(self.identity.as_ref(), fresh);
                        if self.identity.as_ref() != Some(&fresh) {
                            self.identity = Some(fresh.clone());
                            out.push(EngineEvent::Paired(fresh));
                        }
                    }
                }
                out.push(EngineEvent::Connected);
                out
            }
            Event::Disconnected(d) => {
                // Reported as `Reconnecting` by the session loop, which knows the attempt
                // number and the delay.
                self.disconnect_reason = Some(format!("connection lost: {}", d.reason));
                Vec::new()
            }
            Event::ConnectFailure(cf) => {
                let mut reason = format!("connect_failure: {}", failure_name(cf.reason));
                if let Some(msg) = cf.message.as_deref().filter(|m| !m.is_empty()) {
                    reason.push_str(": ");
                    reason.push_str(msg);
                }
                if cf.reason.should_reconnect() {
                    // 500/503: the server is unwell; the loop retries with backoff.
                    self.disconnect_reason = Some(reason);
                    Vec::new()
                } else {
                    self.terminal = true;
                    vec![EngineEvent::Failed { reason }]
                }
            }
            Event::StreamError(se) => {
                // Informational: the crate keeps the connection for code-less/unknown stream
                // errors; if the server then closes, `Disconnected` follows.
                tracing::warn!(code = %se.code, "WhatsApp stream error");
                Vec::new()
            }
            Event::AppStateSyncFailed(f) => {
                // The connection stays usable (`connected` says whether Connected follows).
                tracing::warn!(fatal = ?f.fatal, retryable = ?f.retryable, connected = f.connected, "app-state sync incomplete");
                Vec::new()
            }

            // ── terminal ───────────────────────────────────────────────────────────────
            Event::LoggedOut(lo) => {
                self.terminal = true;
                self.identity = None;
                let reason = if lo.on_connect {
                    format!("refused at login: {}", failure_name(lo.reason))
                } else if lo.reason == ConnectFailureReason::LoggedOut {
                    // `<stream:error code="401">` on an open stream: the phone removed the
                    // device (`<conflict type="device_removed"/>`). Same word as the sandbox.
                    "device_removed".to_owned()
                } else {
                    format!("unlinked: {}", failure_name(lo.reason))
                };
                vec![EngineEvent::LoggedOut { reason }]
            }
            Event::StreamReplaced(_) => {
                self.terminal = true;
                vec![EngineEvent::StreamReplaced]
            }
            Event::TemporaryBan(ban) => {
                self.terminal = true;
                let mut reason = format!("temporary_ban: {}; expires in {}s", ban.code, ban.expire.num_seconds().max(0));
                if let Some(url) = ban.url.as_deref().filter(|u| !u.is_empty()) {
                    reason.push_str("; appeal: ");
                    reason.push_str(url);
                }
                vec![EngineEvent::Failed { reason }]
            }
            Event::ClientOutdated(_) => {
                self.terminal = true;
                vec![EngineEvent::Failed { reason: "client_outdated".to_owned() }]
            }

            // ── deliberately ignored ───────────────────────────────────────────────────
            // Traffic: messages and receipts take their own path (`traffic.rs`); acks and
            // undecryptable messages are handled by the crate. None of them is in INTEREST.
            Event::Messages(_) | Event::Receipt(_) | Event::ServerAck(_) | Event::UndecryptableMessage(_) => Vec::new(),
            // Raw stanzas and server pushes: no session-level meaning.
            Event::Notification(_) | Event::RawNode(_) | Event::MexNotification(_) | Event::DirtyState(_) => Vec::new(),
            // Presence, profiles and contacts of other people.
            Event::ChatPresence(_)
            | Event::Presence(_)
            | Event::PictureUpdate(_)
            | Event::UserAboutUpdate(_)
            | Event::ContactUpdated(_)
            | Event::ContactNumberChanged(_)
            | Event::ContactSyncRequested(_)
            | Event::ContactUpdate(_)
            | Event::PushNameUpdate(_)
            | Event::BusinessStatusUpdate(_)
            | Event::DisappearingModeChanged(_)
            | Event::DeviceListUpdate(_)
            | Event::IdentityChange(_) => Vec::new(),
            // Our own push name changed: picked up from `client.push_name()` on the next
            // `Connected`.
            Event::SelfPushNameUpdated(_) => Vec::new(),
            // Groups, newsletters, calls.
            Event::GroupUpdate(_)
            | Event::NewsletterLiveUpdate(_)
            | Event::IncomingCall(_)
            | Event::MissedCall(_)
            | Event::CallEndedElsewhere(_) => Vec::new(),
            // App-state (chat settings, labels) and history sync.
            Event::PinUpdate(_)
            | Event::MuteUpdate(_)
            | Event::ArchiveUpdate(_)
            | Event::StarUpdate(_)
            | Event::MarkChatAsReadUpdate(_)
            | Event::DeleteChatUpdate(_)
            | Event::ClearChatUpdate(_)
            | Event::UserStatusMuteUpdate(_)
            | Event::DeleteMessageForMeUpdate(_)
            | Event::LabelEditUpdate(_)
            | Event::LabelAssociationUpdate(_)
            | Event::HistorySync(_)
            | Event::OfflineSyncPreview(_)
            | Event::OfflineSyncCompleted(_) => Vec::new(),
            // `Event` is `#[non_exhaustive]`: a kind added by a later crate version is
            // ignored until someone maps it (it is not in INTEREST either).
            _ => Vec::new(),
        }
    }
}

/// `{"phone", "PN@s.whatsapp.net", "N@lid"}` from the device JIDs (which carry a device
/// number). `None` when the PN user is not a valid phone number.
fn identity_from(pn: &Jid, lid: Option<&Jid>, push_name: Option<String>, platform: Option<String>) -> Option<Identity> {
    let phone = Phone::parse(&pn.user).ok()?;
    let lid = lid.filter(|l| !l.user.is_empty()).map(|l| format!("{}@lid", l.user));
    Some(Identity {
        jid: format!("{}@s.whatsapp.net", phone.as_str()),
        phone,
        lid,
        push_name,
        platform: platform.filter(|p| !p.is_empty()),
    })
}

/// Keeps what `fresh` does not know from `known` (same phone only).
fn merge(known: Option<&Identity>, mut fresh: Identity) -> Identity {
    if let Some(known) = known.filter(|k| k.phone == fresh.phone) {
        if fresh.lid.is_none() {
            fresh.lid.clone_from(&known.lid);
        }
        if fresh.push_name.is_none() {
            fresh.push_name.clone_from(&known.push_name);
        }
        if fresh.platform.is_none() {
            fresh.platform.clone_from(&known.platform);
        }
    }
    fresh
}

/// A stable snake-case name (with the wire code) for a `<failure reason>`.
pub(crate) fn failure_name(reason: ConnectFailureReason) -> String {
    let name = match reason {
        ConnectFailureReason::Generic => "generic",
        ConnectFailureReason::LoggedOut => "logged_out",
        ConnectFailureReason::TempBanned => "temp_banned",
        ConnectFailureReason::AccountLocked => "account_locked",
        ConnectFailureReason::UnknownLogout => "unknown_logout",
        ConnectFailureReason::ClientOutdated => "client_outdated",
        ConnectFailureReason::BadUserAgent => "bad_user_agent",
        ConnectFailureReason::CatExpired => "cat_expired",
        ConnectFailureReason::CatInvalid => "cat_invalid",
        ConnectFailureReason::NotFound => "not_found",
        ConnectFailureReason::ClientUnknown => "client_unknown",
        ConnectFailureReason::InternalServerError => "internal_server_error",
        ConnectFailureReason::Experimental => "experimental",
        ConnectFailureReason::ServiceUnavailable => "service_unavailable",
        ConnectFailureReason::Unknown(_) => "unknown",
    };
    format!("{name} ({})", reason.code())
}
