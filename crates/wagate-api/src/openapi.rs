//! The OpenAPI document, generated from the handlers' annotations.

use std::sync::OnceLock;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{error, events, ops, sandbox, sessions, wawp};

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

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wagate",
        description = "Self-hosted, multi-tenant WhatsApp gateway. Every error answer has the body \
                       `{\"error\": {\"code\", \"message\", \"details\"}}`; another organization's resource is \
                       `not_found`, exactly like an unknown one.",
        license(name = "AGPL-3.0-or-later", identifier = "AGPL-3.0-or-later")
    ),
    paths(
        sessions::create, sessions::list, sessions::get, sessions::patch, sessions::delete,
        sessions::start, sessions::stop, sessions::restart, sessions::logout,
        sessions::qr, sessions::request_pairing_code, sessions::me,
        sandbox::scan_qr, sandbox::enter_pairing_code, sandbox::disconnect, sandbox::unlink,
        events::list, events::get, events::stream,
        wawp::session_me,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi_json, ops::docs,
    ),
    components(schemas(error::ErrorEnvelope, error::ErrorBody, error::ErrorCode)),
    modifiers(&BearerAuth),
    tags(
        (name = "sessions", description = "A session is one attached (or to-be-attached) WhatsApp number, scoped to an organization."),
        (name = "pairing", description = "Attach a number by QR code or by phone pairing code."),
        (name = "sandbox", description = "Controls of the simulated network; only for `sandbox` sessions."),
        (name = "events", description = "The event log: every change a client can observe, committed with the change itself. Webhooks and the stream read it."),
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
