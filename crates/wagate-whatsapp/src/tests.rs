//! Unit tests of the event mapping and the error mapping, driven by constructed
//! `whatsapp-rust` events.

use std::time::Duration;

use wagate_core::{Identity, Phone};
use wagate_engine::{EngineError, EngineEvent, QrCode};
use whatsapp_rust::Jid;
use whatsapp_rust::chrono::{TimeZone, Utc};
use whatsapp_rust::pair_code::{PairCodeError, PairError};
use whatsapp_rust::request::IqError;
use whatsapp_rust::transport::DisconnectReason;
use whatsapp_rust::types::events::{self as ev, ConnectFailureReason, Event, TempBanReason};

use crate::mapping::{EventMapper, SelfInfo};
use crate::session::pair_error;

const PHONE: &str = "628123456789";
const LID: &str = "123456789012345";

fn now() -> wagate_core::Timestamp {
    Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap()
}

fn unpaired() -> SelfInfo {
    SelfInfo::default()
}

fn paired_self(push_name: &str) -> SelfInfo {
    SelfInfo { pn: Some(Jid::pn_device(PHONE, 7)), lid: Some(Jid::lid_device(LID, 7)), push_name: push_name.into() }
}

fn identity(push_name: Option<&str>, platform: Option<&str>) -> Identity {
    Identity {
        phone: Phone::parse(PHONE).unwrap(),
        jid: format!("{PHONE}@s.whatsapp.net"),
        lid: Some(format!("{LID}@lid")),
        push_name: push_name.map(Into::into),
        platform: platform.map(Into::into),
    }
}

fn qr(code: &str, secs: u64) -> Event {
    Event::PairingQrCode(ev::PairingQrCode::builder().code(code.into()).timeout(Duration::from_secs(secs)).build())
}

fn pair_success(business: &str, platform: &str) -> Event {
    Event::PairSuccess(
        ev::PairSuccess::builder()
            .id(Jid::pn_device(PHONE, 7))
            .lid(Jid::lid_device(LID, 7))
            .business_name(business.into())
            .platform(platform.into())
            .build(),
    )
}

fn connected() -> Event {
    Event::Connected(ev::Connected::builder().build())
}

#[test]
fn qr_codes_carry_their_expiry_and_each_rotation_replaces_the_last() {
    let mut m = EventMapper::new(None);
    let first = m.map(&qr("ref1,a,b,c,9", 60), now(), &unpaired());
    assert_eq!(
        first,
        vec![EngineEvent::Qr(QrCode { code: "ref1,a,b,c,9".into(), expires_at: now() + whatsapp_rust::chrono::Duration::seconds(60) })]
    );
    let later = now() + whatsapp_rust::chrono::Duration::seconds(60);
    let second = m.map(&qr("ref2,a,b,c,9", 20), later, &unpaired());
    assert_eq!(
        second,
        vec![EngineEvent::Qr(QrCode { code: "ref2,a,b,c,9".into(), expires_at: later + whatsapp_rust::chrono::Duration::seconds(20) })]
    );
    assert!(!m.is_terminal());
}

#[test]
fn qr_exhaustion_is_reported_and_ends_the_session() {
    for disconnected in [true, false] {
        let mut m = EventMapper::new(None);
        let out = m.map(
            &Event::PairingQrCodesExhausted(ev::PairingQrCodesExhausted::builder().disconnected(disconnected).build()),
            now(),
            &unpaired(),
        );
        assert_eq!(out, vec![EngineEvent::QrExhausted]);
        assert!(m.is_terminal(), "no reconnect into a new round of codes");
    }
}

#[test]
fn pair_success_reports_the_identity() {
    let mut m = EventMapper::new(None);
    let out = m.map(&pair_success("", "android"), now(), &unpaired());
    assert_eq!(out, vec![EngineEvent::Paired(identity(None, Some("android")))]);
    assert!(m.is_paired());
    assert!(!m.is_terminal());
}

#[test]
fn pair_success_of_a_business_takes_its_name() {
    let mut m = EventMapper::new(None);
    let out = m.map(&pair_success("Acme Support", "smba"), now(), &unpaired());
    assert_eq!(out, vec![EngineEvent::Paired(identity(Some("Acme Support"), Some("smba")))]);
}

#[test]
fn connected_after_pairing_adds_only_what_is_new() {
    let mut m = EventMapper::new(None);
    m.map(&pair_success("", "android"), now(), &unpaired());
    // The store now knows the push name: the identity is completed before Connected.
    let out = m.map(&connected(), now(), &paired_self("Support"));
    assert_eq!(out, vec![EngineEvent::Paired(identity(Some("Support"), Some("android"))), EngineEvent::Connected]);
    assert!(m.take_connected());
    // A later Connected with nothing new is just Connected.
    let out = m.map(&connected(), now(), &paired_self("Support"));
    assert_eq!(out, vec![EngineEvent::Connected]);
}

#[test]
fn connected_of_a_resumed_session_fills_the_identity_from_the_client() {
    let mut m = EventMapper::new(None);
    let out = m.map(&connected(), now(), &paired_self(""));
    assert_eq!(out, vec![EngineEvent::Paired(identity(None, None)), EngineEvent::Connected]);

    // With the stored identity given at start, nothing is re-reported.
    let mut m = EventMapper::new(Some(identity(Some("Support"), Some("android"))));
    let out = m.map(&connected(), now(), &paired_self("Support"));
    assert_eq!(out, vec![EngineEvent::Connected]);
}

#[test]
fn connected_without_an_own_jid_is_just_connected() {
    let mut m = EventMapper::new(None);
    assert_eq!(m.map(&connected(), now(), &unpaired()), vec![EngineEvent::Connected]);
}

#[test]
fn disconnected_is_remembered_for_the_reconnect_report() {
    let mut m = EventMapper::new(None);
    let out = m.map(
        &Event::Disconnected(ev::Disconnected::builder().reason(DisconnectReason::StreamEnded).build()),
        now(),
        &unpaired(),
    );
    assert!(out.is_empty(), "the session loop reports Reconnecting with attempt and delay");
    assert_eq!(m.take_disconnect_reason().as_deref(), Some("connection lost: stream ended (EOF)"));
    assert_eq!(m.take_disconnect_reason(), None, "consumed");
    assert!(!m.is_terminal());
}

#[test]
fn logged_out_by_the_phone_or_at_login() {
    let mut m = EventMapper::new(Some(identity(None, None)));
    let out = m.map(
        &Event::LoggedOut(ev::LoggedOut::builder().on_connect(false).reason(ConnectFailureReason::LoggedOut).build()),
        now(),
        &paired_self(""),
    );
    assert_eq!(out, vec![EngineEvent::LoggedOut { reason: "device_removed".into() }]);
    assert!(m.is_terminal());
    assert!(!m.is_paired());

    let mut m = EventMapper::new(Some(identity(None, None)));
    let out = m.map(
        &Event::LoggedOut(ev::LoggedOut::builder().on_connect(true).reason(ConnectFailureReason::AccountLocked).build()),
        now(),
        &paired_self(""),
    );
    assert_eq!(out, vec![EngineEvent::LoggedOut { reason: "refused at login: account_locked (403)".into() }]);
    assert!(m.is_terminal());
}

#[test]
fn stream_replaced_is_terminal() {
    let mut m = EventMapper::new(None);
    let out = m.map(&Event::StreamReplaced(ev::StreamReplaced::builder().build()), now(), &unpaired());
    assert_eq!(out, vec![EngineEvent::StreamReplaced]);
    assert!(m.is_terminal());
}

#[test]
fn temporary_ban_fails_the_session() {
    let mut m = EventMapper::new(None);
    let out = m.map(
        &Event::TemporaryBan(
            ev::TemporaryBan::builder()
                .code(TempBanReason::BlockedByUsers)
                .expire(whatsapp_rust::chrono::Duration::seconds(3600))
                .build(),
        ),
        now(),
        &unpaired(),
    );
    assert_eq!(out, vec![EngineEvent::Failed { reason: "temporary_ban: 102: too many people blocked you; expires in 3600s".into() }]);
    assert!(m.is_terminal());
}

#[test]
fn client_outdated_fails_the_session() {
    let mut m = EventMapper::new(None);
    let out = m.map(&Event::ClientOutdated(ev::ClientOutdated::builder().build()), now(), &unpaired());
    assert_eq!(out, vec![EngineEvent::Failed { reason: "client_outdated".into() }]);
    assert!(m.is_terminal());
}

#[test]
fn connect_failure_fails_unless_the_server_asks_to_retry() {
    let mut m = EventMapper::new(None);
    let out = m.map(
        &Event::ConnectFailure(
            ev::ConnectFailure::builder().reason(ConnectFailureReason::BadUserAgent).message("nope".into()).build(),
        ),
        now(),
        &unpaired(),
    );
    assert_eq!(out, vec![EngineEvent::Failed { reason: "connect_failure: bad_user_agent (409): nope".into() }]);
    assert!(m.is_terminal());

    let mut m = EventMapper::new(None);
    let out = m.map(
        &Event::ConnectFailure(ev::ConnectFailure::builder().reason(ConnectFailureReason::ServiceUnavailable).build()),
        now(),
        &unpaired(),
    );
    assert!(out.is_empty());
    assert!(!m.is_terminal());
    assert_eq!(m.take_disconnect_reason().as_deref(), Some("connect_failure: service_unavailable (503)"));
}

#[test]
fn informational_events_map_to_nothing() {
    let events = [
        Event::PairingCode(ev::PairingCode::builder().code("ABCD1234".into()).timeout(Duration::from_secs(180)).build()),
        Event::PairingCodeRefresh(ev::PairingCodeRefresh::builder().force_manual(false).build()),
        Event::PairingCodeError(ev::PairingCodeError::builder().error("x".into()).build()),
        Event::PairError(
            ev::PairError::builder()
                .id(Jid::pn_device(PHONE, 7))
                .lid(Jid::lid_device(LID, 7))
                .business_name(String::new())
                .platform("android".into())
                .error("hmac-mismatch".into())
                .build(),
        ),
        Event::QrScannedWithoutMultidevice(ev::QrScannedWithoutMultidevice::builder().build()),
        Event::StreamError(ev::StreamError::builder().code("500".into()).build()),
        Event::AppStateSyncFailed(
            ev::AppStateSyncFailed::builder()
                .fatal(vec!["critical_block".into()])
                .retryable(vec![])
                .skipped(vec![])
                .connected(true)
                .build(),
        ),
        Event::OfflineSyncCompleted(ev::OfflineSyncCompleted::builder().count(0).build()),
    ];
    let mut m = EventMapper::new(None);
    for e in &events {
        assert!(m.map(e, now(), &unpaired()).is_empty(), "{:?} should map to nothing", e.kind());
    }
    assert!(!m.is_terminal());
    assert!(!m.is_paired());
    assert_eq!(m.take_disconnect_reason(), None);
}

#[test]
fn pairing_code_errors_map_to_engine_errors() {
    assert!(matches!(
        pair_error(PairError::PairCode(PairCodeError::PhoneNumberTooShort)),
        EngineError::Invalid { field: "phone", .. }
    ));
    assert!(matches!(
        pair_error(PairError::PairCode(PairCodeError::CodeAlreadyOutstanding { remaining: Duration::from_secs(90) })),
        EngineError::InvalidState(m) if m.contains("90s")
    ));
    let server = |code: u16, text: &str, backoff: Option<u32>| {
        PairError::RequestFailed(IqError::ServerError { code, text: text.into(), error_type: None, backoff })
    };
    match pair_error(server(429, "rate-overlimit", Some(60))) {
        EngineError::RateLimited { retry_after } => assert_eq!(retry_after, Some(Duration::from_secs(60))),
        other => panic!("{other:?}"),
    }
    // The server reuses bad-request for its per-number throttle.
    assert!(matches!(pair_error(server(400, "bad-request", None)), EngineError::RateLimited { retry_after: None }));
    assert!(matches!(
        pair_error(server(452, "feature-not-available", None)),
        EngineError::Invalid { field: "phone", message } if message.contains("QR")
    ));
    assert!(matches!(pair_error(server(403, "forbidden", None)), EngineError::Invalid { field: "phone", .. }));
    assert!(matches!(pair_error(server(500, "internal-server-error", None)), EngineError::Upstream(_)));
    assert!(matches!(pair_error(PairError::RequestFailed(IqError::Timeout)), EngineError::Upstream(_)));
    assert!(matches!(pair_error(PairError::RequestFailed(IqError::NotConnected)), EngineError::Upstream(_)));
}
