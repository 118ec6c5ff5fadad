//! `/api/v1/webhooks`: webhook endpoints, their deliveries and custom methods.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use wagate_core::{
    Capability, Delivery, DeliveryAttempt, DeliveryId, DeliveryStatus, DisabledReason, EventType, Principal, SessionId,
    Timestamp, Webhook, WebhookId,
};
use wagate_runtime::{CreateWebhook, WebhookError};
use wagate_store::{PageRequest, ReplayWindow, WebhookUpdate};

use crate::custom::{Call, Incoming, Methods, split_segment};
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::extract::{ApiJson, RawQuery, decode_page_token, encode_page_token, page_size, parse_json};
use crate::sessions::no_body;
use crate::state::{AppState, Auth};

/// Longest accepted webhook URL.
const MAX_URL_LEN: usize = 2048;
const MAX_DESCRIPTION_LEN: usize = 500;

/// A webhook endpoint.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    #[schema(example = "wh_01J9Z3QK8M5W4X6Y7Z8A9B0C1D")]
    pub id: String,
    #[schema(example = "https://crm.example.com/wagate")]
    pub url: String,
    /// `["*"]` (every type) or the event types delivered.
    #[schema(example = json!(["message.received", "message.status"]))]
    pub events: Vec<String>,
    /// `null`: every session of the organization.
    pub session_id: Option<String>,
    pub description: Option<String>,
    pub enabled: bool,
    /// Why it is disabled: `manual` (`PATCH {enabled: false}`), `gone` (the endpoint answered
    /// 410), `failing` (no successful delivery for 5 days); `null` while enabled.
    pub disabled_reason: Option<DisabledReason>,
    /// The signing secret (`whsec_` + base64 of 32 bytes). Present only in the answer of the
    /// create call; `:rotateSecret` gives a new one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

impl From<&Webhook> for WebhookView {
    fn from(w: &Webhook) -> Self {
        let events = match &w.events {
            None => vec!["*".to_owned()],
            Some(types) => types.iter().map(|t| t.as_str().to_owned()).collect(),
        };
        Self {
            id: w.id.to_string(),
            url: w.url.clone(),
            events,
            session_id: w.session.as_ref().map(|s| s.to_string()),
            description: w.description.clone(),
            enabled: w.enabled,
            disabled_reason: w.disabled_reason,
            secret: None,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
    /// Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateWebhookRequest {
    /// `http` or `https`, at most 2,048 characters. Loopback, private, link-local, multicast
    /// and unspecified addresses are refused (also a host name that resolves only to them),
    /// unless the gateway runs with `WAGATE_WEBHOOK_ALLOW_PRIVATE=true` (loopback and private).
    #[schema(example = "https://crm.example.com/wagate", max_length = 2048)]
    pub url: String,
    /// Event types to deliver; `["*"]` or absent: every type. `webhook.test` events are always
    /// delivered to the webhook they test.
    #[schema(example = json!(["message.received"]))]
    pub events: Option<Vec<String>>,
    /// Only this session's events (a session of the organization); absent: every session.
    pub session_id: Option<String>,
    /// Up to 500 characters.
    #[schema(max_length = 500)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatchWebhookRequest {
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    /// `null` removes it.
    #[serde(default, deserialize_with = "crate::sessions::present")]
    #[schema(value_type = Option<String>, max_length = 500)]
    pub description: Option<Option<String>>,
    /// `true` enables the webhook (whatever disabled it) and delivers what waited meanwhile, in
    /// event order; `false` disables it (events keep being queued for it).
    pub enabled: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretView {
    /// The new signing secret. The previous one keeps signing beside it for 24 hours.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplayRequest {
    /// Replay events created at or after this time (RFC 3339).
    #[schema(value_type = String, format = DateTime)]
    pub since: String,
    /// ...and before this time (exclusive); absent: up to now.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub until: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayView {
    /// Deliveries queued: every stored event of the window that the webhook accepts.
    pub queued: u64,
}

/// One attempt of a delivery.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub duration_ms: u64,
    /// The HTTP status answered; `null` when no answer came (timeout, connection error,
    /// refused address).
    pub response_status: Option<u16>,
    /// `null` on success.
    pub error: Option<String>,
}

/// One event's delivery to one webhook.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    #[schema(example = "dlv_01J9Z3QK8M5W4X6Y7Z8A9B0C1D")]
    pub id: String,
    pub webhook_id: String,
    /// Also the `webhook-id` header of every attempt.
    pub event_id: String,
    #[schema(example = "message.received")]
    pub event_type: String,
    pub status: DeliveryStatus,
    /// Every attempt so far, oldest first.
    pub attempts: Vec<AttemptView>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_attempt_at: Option<Timestamp>,
    /// When `pending`: the earliest time of the next attempt.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<Timestamp>,
    /// The last attempt's HTTP status.
    pub response_status: Option<u16>,
    /// The last attempt's error.
    pub error: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

impl DeliveryView {
    fn new(d: &Delivery, attempts: &[DeliveryAttempt]) -> Self {
        Self {
            id: d.id.to_string(),
            webhook_id: d.webhook.to_string(),
            event_id: d.event.to_string(),
            event_type: d.event_type.as_str().to_owned(),
            status: d.status,
            attempts: attempts
                .iter()
                .map(|a| AttemptView { at: a.at, duration_ms: a.duration_ms, response_status: a.response_status, error: a.error.clone() })
                .collect(),
            last_attempt_at: d.last_attempt_at,
            next_attempt_at: d.next_attempt_at,
            response_status: d.response_status,
            error: d.error.clone(),
            created_at: d.created_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
    /// Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Url(e) => ApiError::validation("url", e.to_string()),
            WebhookError::UnknownSession => ApiError::validation("sessionId", "no such session in this organization"),
            WebhookError::Store(e) => e.into(),
        }
    }
}

fn webhook_not_found() -> ApiError {
    ApiError::not_found("webhook not found")
}

fn delivery_not_found() -> ApiError {
    ApiError::not_found("delivery not found")
}

/// The caller's webhook `raw_id`: malformed, unknown and other organizations' ids all answer
/// the same `not_found`.
async fn webhook(state: &AppState, principal: &Principal, raw_id: &str) -> ApiResult<Webhook> {
    let id = WebhookId::parse(raw_id).map_err(|_| webhook_not_found())?;
    state.webhooks.get(&principal.org, &id).await?.ok_or_else(webhook_not_found)
}

fn parse_url(raw: &str) -> ApiResult<String> {
    if raw.len() > MAX_URL_LEN {
        return Err(ApiError::validation("url", format!("must be at most {MAX_URL_LEN} characters")));
    }
    Ok(raw.trim().to_owned())
}

/// `["*"]` is every type (`None`); otherwise a non-empty set of known types.
fn parse_events(raw: &[String]) -> ApiResult<Option<Vec<EventType>>> {
    if raw.iter().any(|t| t == "*") {
        return if raw.len() == 1 { Ok(None) } else { Err(ApiError::validation("events", "`*` stands alone: every type")) };
    }
    if raw.is_empty() {
        return Err(ApiError::validation("events", "must name at least one event type, or be [\"*\"]"));
    }
    let mut types = BTreeSet::new();
    for name in raw {
        let kind = EventType::parse(name).ok_or_else(|| {
            let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            ApiError::validation("events", format!("unknown event type `{name}`; known: {}", known.join(", ")))
        })?;
        types.insert(kind);
    }
    Ok(Some(types.into_iter().collect()))
}

fn parse_description(raw: &str) -> ApiResult<Option<String>> {
    let trimmed = raw.trim();
    if trimmed.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(ApiError::validation("description", format!("must be at most {MAX_DESCRIPTION_LEN} characters")));
    }
    if trimmed.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ApiError::validation("description", "must not contain control characters"));
    }
    Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
}

fn parse_time(field: &str, raw: &str) -> ApiResult<Timestamp> {
    chrono::DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| ApiError::validation(field, "must be an RFC 3339 time, e.g. 2026-11-29T12:00:00Z"))
}

fn accepted(body: impl Serialize) -> Response {
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// Create a webhook
///
/// The answer carries the signing `secret`; it is shown only here (and by `:rotateSecret`).
/// Every event committed from now on that matches `events` and `sessionId` is delivered, at
/// least once, signed (Standard Webhooks), in event order per webhook.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks",
    request_body = CreateWebhookRequest,
    responses((status = 201, body = WebhookView), (status = 400, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn create(State(state): State<AppState>, auth: Auth, ApiJson(req): ApiJson<CreateWebhookRequest>) -> ApiResult<Response> {
    let principal = auth.require(Capability::Manage)?;
    let url = parse_url(&req.url)?;
    let events = req.events.as_deref().map(parse_events).transpose()?.flatten();
    let session = req
        .session_id
        .as_deref()
        .map(|raw| SessionId::parse(raw).map_err(|_| ApiError::validation("sessionId", "must be a session id (sess_…)")))
        .transpose()?;
    let description = req.description.as_deref().map(parse_description).transpose()?.flatten();
    let created = state.webhooks.create(&principal.org, CreateWebhook { url, events, session, description }).await?;
    let mut view = WebhookView::from(&created);
    view.secret = Some(created.secret.expose().to_owned());
    let location = HeaderValue::from_str(&format!("/api/v1/webhooks/{}", created.id)).map_err(|e| ApiError::internal(&e))?;
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(view)).into_response())
}

/// List webhooks
///
/// The organization's webhooks, newest first (without their secrets).
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks",
    params(("pageSize" = Option<u32>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 50"),
           ("pageToken" = Option<String>, Query, description = "`nextPageToken` of the previous page")),
    responses((status = 200, body = WebhookList), (status = 400, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, auth: Auth, query: RawQuery) -> ApiResult<Json<WebhookList>> {
    let principal = auth.require(Capability::Manage)?;
    let size = page_size(&query)?;
    let after = decode_page_token(&query, |s| WebhookId::parse(s).ok())?;
    let page = state.webhooks.list(&principal.org, PageRequest { size, after: after.as_ref() }).await?;
    Ok(Json(WebhookList {
        webhooks: page.items.iter().map(WebhookView::from).collect(),
        next_page_token: page.next.map(|id| encode_page_token(id.as_str())),
    }))
}

/// Get a webhook
#[utoipa::path(get, path = "/api/v1/webhooks/{webhook}", tag = "webhooks",
    params(("webhook" = String, Path, description = "Webhook id (wh_…)")),
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn get(state: &AppState, auth: &Auth, id: &str) -> ApiResult<Response> {
    let principal = auth.require(Capability::Manage)?;
    Ok(Json(WebhookView::from(&webhook(state, principal, id).await?)).into_response())
}

/// Update a webhook
///
/// Fields left out are unchanged. `enabled: true` re-enables a disabled webhook, whatever
/// disabled it, and delivers every delivery that waited meanwhile (events committed while it
/// was disabled included), in event order.
#[utoipa::path(patch, path = "/api/v1/webhooks/{webhook}", tag = "webhooks",
    params(("webhook" = String, Path, description = "Webhook id (wh_…)")),
    request_body = PatchWebhookRequest,
    responses((status = 200, body = WebhookView), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn patch(state: &AppState, auth: &Auth, id: &str, req: PatchWebhookRequest) -> ApiResult<Response> {
    let principal = auth.require(Capability::Manage)?;
    let hook = webhook(state, principal, id).await?;
    let update = WebhookUpdate {
        url: req.url.as_deref().map(parse_url).transpose()?,
        events: req.events.as_deref().map(parse_events).transpose()?,
        description: req.description.map(|d| d.as_deref().map(parse_description).transpose().map(Option::flatten)).transpose()?,
        enabled: req.enabled,
    };
    if update == WebhookUpdate::default() {
        return Ok(Json(WebhookView::from(&hook)).into_response());
    }
    let updated = state.webhooks.update(&principal.org, &hook.id, update).await?.ok_or_else(webhook_not_found)?;
    Ok(Json(WebhookView::from(&updated)).into_response())
}

/// Delete a webhook
///
/// Deletes it with its deliveries; nothing more is sent to it.
#[utoipa::path(delete, path = "/api/v1/webhooks/{webhook}", tag = "webhooks",
    params(("webhook" = String, Path, description = "Webhook id (wh_…)")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn delete(state: &AppState, auth: &Auth, id: &str) -> ApiResult<Response> {
    let principal = auth.require(Capability::Manage)?;
    let hook = webhook(state, principal, id).await?;
    if !state.webhooks.delete(&principal.org, &hook.id).await? {
        return Err(webhook_not_found());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Rotate the signing secret
///
/// Answers a new secret. For 24 hours every delivery carries two signatures, space-separated
/// (the new secret's first), so receivers can switch at their pace.
#[utoipa::path(post, path = "/api/v1/webhooks/{webhook}:rotateSecret", tag = "webhooks",
    params(("webhook" = String, Path, description = "Webhook id (wh_…)")),
    responses((status = 200, body = SecretView), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn rotate_secret(state: &AppState, auth: &Auth, id: &str) -> ApiResult<Response> {
    let principal = auth.require(Capability::Manage)?;
    let hook = webhook(state, principal, id).await?;
    let rotated = state.webhooks.rotate_secret(&principal.org, &hook.id).await?.ok_or_else(webhook_not_found)?;
    Ok(Json(SecretView { secret: rotated.secret.expose().to_owned() }).into_response())
}

/// Send a test event
///
/// Appends a `webhook.test` event (`data: {webhookId}`, no session) to the event log and
/// queues it for this webhook only, whatever its `events` filter. Answers the queued delivery;
/// like every delivery, it waits while the webhook is disabled.
#[utoipa::path(post, path = "/api/v1/webhooks/{webhook}:test", tag = "webhooks",
    params(("webhook" = String, Path, description = "Webhook id (wh_…)")),
    responses((status = 202, body = DeliveryView), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn test(state: &AppState, auth: &Auth, id: &str) -> ApiResult<Response> {
    let principal = auth.require(Capability::Manage)?;
    let hook = webhook(state, principal, id).await?;
    let delivery = state.webhooks.test(&hook).await?;
    Ok(accepted(DeliveryView::new(&delivery, &[])))
}

/// Replay stored events
///
/// Queues again every stored event created in `[since, until)` that this webhook accepts
/// (its `events` and `sessionId`; its own `webhook.test` events), delivered or not before, in
/// event order. Events are stored for `WAGATE_EVENT_RETENTION` (default 7 days). Use it after
/// an outage of the receiver: `since` = when it went down.
#[utoipa::path(post, path = "/api/v1/webhooks/{webhook}:replay", tag = "webhooks",
    params(("webhook" = String, Path, description = "Webhook id (wh_…)")),
    request_body = ReplayRequest,
    responses((status = 202, body = ReplayView), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn replay(state: &AppState, auth: &Auth, id: &str, body: &[u8]) -> ApiResult<Response> {
    let principal = auth.require(Capability::Manage)?;
    let hook = webhook(state, principal, id).await?;
    let req: ReplayRequest = parse_json(body)?;
    let since = parse_time("since", &req.since)?;
    let until = req.until.as_deref().map(|raw| parse_time("until", raw)).transpose()?;
    if until.is_some_and(|until| until < since) {
        return Err(ApiError::validation("until", "must not be before `since`"));
    }
    let queued = state.webhooks.replay(&hook, ReplayWindow { since, until }).await?;
    Ok(accepted(ReplayView { queued }))
}

/// List a webhook's deliveries
///
/// Newest first, each with its attempts.
#[utoipa::path(get, path = "/api/v1/webhooks/{webhook}/deliveries", tag = "webhooks",
    params(("webhook" = String, Path, description = "Webhook id (wh_…)"),
           ("status" = Option<DeliveryStatus>, Query, description = "Only deliveries in this status"),
           ("pageSize" = Option<u32>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 50"),
           ("pageToken" = Option<String>, Query, description = "`nextPageToken` of the previous page")),
    responses((status = 200, body = DeliveryList), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn list_deliveries(State(state): State<AppState>, auth: Auth, Path(id): Path<String>, query: RawQuery) -> ApiResult<Json<DeliveryList>> {
    let principal = auth.require(Capability::Manage)?;
    let status = match query.get("status") {
        None => None,
        Some(raw) => Some(DeliveryStatus::parse(raw).ok_or_else(|| ApiError::validation("status", "must be pending, succeeded or failed"))?),
    };
    let size = page_size(&query)?;
    let after = decode_page_token(&query, |s| DeliveryId::parse(s).ok())?;
    let hook = webhook(&state, principal, &id).await?;
    let page = state.webhooks.deliveries(&principal.org, &hook.id, status, PageRequest { size, after: after.as_ref() }).await?;
    let deliveries = page.items.iter().map(|(d, attempts)| DeliveryView::new(d, attempts)).collect();
    Ok(Json(DeliveryList { deliveries, next_page_token: page.next.map(|id| encode_page_token(id.as_str())) }))
}

/// Get a delivery
#[utoipa::path(get, path = "/api/v1/webhooks/{webhook}/deliveries/{delivery}", tag = "webhooks",
    params(("webhook" = String, Path, description = "Webhook id (wh_…)"), ("delivery" = String, Path, description = "Delivery id (dlv_…)")),
    responses((status = 200, body = DeliveryView), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn get_delivery(state: &AppState, auth: &Auth, webhook_id: &str, id: &str) -> ApiResult<Response> {
    let principal = auth.require(Capability::Manage)?;
    let hook = webhook(state, principal, webhook_id).await?;
    let id = DeliveryId::parse(id).map_err(|_| delivery_not_found())?;
    let (delivery, attempts) = state.webhooks.delivery(&principal.org, &hook.id, &id).await?.ok_or_else(delivery_not_found)?;
    Ok(Json(DeliveryView::new(&delivery, &attempts)).into_response())
}

/// Retry a delivery
///
/// Queues the delivery again, due now, with a fresh retry schedule (a `failed` one included).
/// A disabled webhook's deliveries wait for it to be enabled.
#[utoipa::path(post, path = "/api/v1/webhooks/{webhook}/deliveries/{delivery}:retry", tag = "webhooks",
    params(("webhook" = String, Path, description = "Webhook id (wh_…)"), ("delivery" = String, Path, description = "Delivery id (dlv_…)")),
    responses((status = 202, body = DeliveryView), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn retry_delivery(state: &AppState, auth: &Auth, webhook_id: &str, id: &str) -> ApiResult<Response> {
    let principal = auth.require(Capability::Manage)?;
    let hook = webhook(state, principal, webhook_id).await?;
    let id = DeliveryId::parse(id).map_err(|_| delivery_not_found())?;
    state.webhooks.retry(&principal.org, &hook.id, &id).await?.ok_or_else(delivery_not_found)?;
    let (delivery, attempts) = state.webhooks.delivery(&principal.org, &hook.id, &id).await?.ok_or_else(delivery_not_found)?;
    Ok(accepted(DeliveryView::new(&delivery, &attempts)))
}

// ---- dispatch of `/api/v1/webhooks/{segment}` and `.../deliveries/{segment}` ----

fn methods() -> &'static Methods {
    static METHODS: LazyLock<Methods> = LazyLock::new(|| {
        Methods::new()
            .standard(Method::GET, |c: Call| async move { get(&c.state, &c.auth, &c.id).await })
            .standard(Method::PATCH, |c: Call| async move {
                let req: PatchWebhookRequest = parse_json(&c.body)?;
                patch(&c.state, &c.auth, &c.id, req).await
            })
            .standard(Method::DELETE, |c: Call| async move { delete(&c.state, &c.auth, &c.id).await })
            .verb("rotateSecret", Method::POST, |c: Call| async move {
                no_body(&c.body)?;
                rotate_secret(&c.state, &c.auth, &c.id).await
            })
            .verb("test", Method::POST, |c: Call| async move {
                no_body(&c.body)?;
                test(&c.state, &c.auth, &c.id).await
            })
            .verb("replay", Method::POST, |c: Call| async move { replay(&c.state, &c.auth, &c.id, &c.body).await })
    });
    &METHODS
}

/// Any method on `/api/v1/webhooks/{segment}`: the webhook itself or one of its custom methods.
pub async fn segment(State(state): State<AppState>, Path(segment): Path<String>, req: Incoming) -> ApiResult<Response> {
    let (id, verb) = split_segment(&segment);
    methods().dispatch(state, id, verb, req).await
}

/// A delivery's methods; the resource id is `webhook/delivery`.
fn delivery_methods() -> &'static Methods {
    static METHODS: LazyLock<Methods> = LazyLock::new(|| {
        Methods::new()
            .standard(Method::GET, |c: Call| async move {
                let (webhook, delivery) = c.id.split_once('/').unwrap_or_default();
                get_delivery(&c.state, &c.auth, webhook, delivery).await
            })
            .verb("retry", Method::POST, |c: Call| async move {
                no_body(&c.body)?;
                let (webhook, delivery) = c.id.split_once('/').unwrap_or_default();
                retry_delivery(&c.state, &c.auth, webhook, delivery).await
            })
    });
    &METHODS
}

/// Any method on `/api/v1/webhooks/{webhook}/deliveries/{segment}`.
pub async fn delivery_segment(
    State(state): State<AppState>,
    Path((webhook, segment)): Path<(String, String)>,
    req: Incoming,
) -> ApiResult<Response> {
    let (id, verb) = split_segment(&segment);
    delivery_methods().dispatch(state, &format!("{webhook}/{id}"), verb, req).await
}
