//! The OpenAPI document, generated from the handlers' annotations.

use std::sync::OnceLock;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, ResponseBuilder};
use utoipa::openapi::content::ContentBuilder;
use utoipa::{Modify, OpenApi};

use crate::{error, events, messages, ops, sandbox, sessions, wawp, webhooks};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_owned());
        scheme.description = Some(
            "A login JWT minted by the operator's frontend (verified against its JWKS; organization and role come \
             from its claims), or an API key `wag_…` for scripts and services."
                .to_owned(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Answers every authenticated operation can give whatever it does: 401 (no or bad credential),
/// 403 (a credential without the capability), 414 (a URL over the server's limit), 504 (the
/// request timeout); and, for operations with
/// a body, 400 (malformed JSON) and 413 (body over the limit).
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let envelope = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(RefOr::Ref(Ref::from_schema_name("ErrorEnvelope")))).build(),
                    )
                    .build(),
            )
        };
        // An empty body is `{}`: for `POST /api/v1/sessions` all defaults, for `PATCH` of a
        // session or a webhook no change.
        let sessions = openapi.paths.paths.get_mut("/api/v1/sessions").and_then(|item| item.post.as_mut());
        let body = sessions.and_then(|op| op.request_body.as_mut());
        body.into_iter().for_each(|b| b.required = Some(utoipa::openapi::Required::False));
        for path in ["/api/v1/sessions/{session}", "/api/v1/webhooks/{webhook}"] {
            let patch = openapi.paths.paths.get_mut(path).and_then(|item| item.patch.as_mut());
            let body = patch.and_then(|op| op.request_body.as_mut());
            body.into_iter().for_each(|b| b.required = Some(utoipa::openapi::Required::False));
        }
        for item in openapi.paths.paths.values_mut() {
            let ops = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for op in ops.into_iter().flatten() {
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let mut add = |status: &str, description: &str| {
                    op.responses.responses.entry(status.to_owned()).or_insert_with(|| envelope(description));
                };
                if secured {
                    add("401", "`unauthorized`: no credential, or a malformed, expired, revoked or unknown one");
                    add("403", "`forbidden`: the credential lacks the capability this operation needs");
                }
                if op.request_body.is_some() {
                    add("400", "`validation_error`: malformed JSON, a missing, malformed or unknown field");
                    add("413", "`payload_too_large`: the body is over the limit");
                }
                add("414", "`validation_error`: the URL (path and query) is over 8,192 bytes");
                add("504", "`timeout`: the request took longer than the gateway's request timeout");
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wagate",
        description = include_str!("openapi_description.md"),
        license(name = "AGPL-3.0-or-later", identifier = "AGPL-3.0-or-later")
    ),
    paths(
        sessions::create, sessions::list, sessions::get, sessions::patch, sessions::delete,
        sessions::start, sessions::stop, sessions::restart, sessions::logout,
        sessions::qr, sessions::request_pairing_code, sessions::me,
        sandbox::scan_qr, sandbox::enter_pairing_code, sandbox::disconnect, sandbox::unlink, messages::receive,
        messages::send, messages::list, messages::get, messages::edit, messages::revoke, messages::media,
        messages::chats, messages::mark_read, messages::presence, messages::check_numbers,
        events::list, events::get, events::stream,
        webhooks::create, webhooks::list, webhooks::get, webhooks::patch, webhooks::delete,
        webhooks::rotate_secret, webhooks::test, webhooks::replay,
        webhooks::list_deliveries, webhooks::get_delivery, webhooks::retry_delivery,
        wawp::session_me,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi_json, ops::docs,
    ),
    components(schemas(error::ErrorEnvelope, error::ErrorBody, error::ErrorCode)),
    modifiers(&BearerAuth, &CommonResponses),
    tags(
        (name = "sessions", description = "A session is one attached (or to-be-attached) WhatsApp number, scoped to an organization."),
        (name = "pairing", description = "Attach a number by QR code or by phone pairing code."),
        (name = "sandbox", description = "Controls of the simulated network; only for `sandbox` sessions."),
        (name = "messages", description = "Messages in and out: a durable, paced send queue per session, every change an event (`message.received`, `message.sent`, `message.status`, `message.reaction`, `message.edited`, `message.revoked`). `message.sent` carries a message this account sent from another of its devices (its phone, WhatsApp Web), stored as `direction: outbound`, `fromMe: true`, `status: sent`; what the API sends is reported by `message.status` only."),
        (name = "events", description = "The event log: every change a client can observe, committed with the change itself. Webhooks and the stream read it."),
        (name = "webhooks", description = include_str!("webhooks_description.md")),
        (name = "wawp", description = "The wawp.net-compatible v2 surface."),
        (name = "operations", description = "Health, readiness, metrics and this document; no credential needed."),
    )
)]
pub struct ApiDoc;

/// The document as JSON, built once.
pub fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serializes"))
}

