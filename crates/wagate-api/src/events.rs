//! `/api/v1/events`: the event log, listed, read one by one, and streamed (Server-Sent Events).
//!
//! Every body here is built from [`Event::envelope_json`], so the list, the single event, the
//! stream and (later) webhook deliveries show an event byte for byte the same.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::LazyLock;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, future};
use serde::Serialize;
use wagate_core::{Capability, Event, EventId, EventType, SessionId, Timestamp};
use wagate_store::{EventFilter, PageRequest};

use crate::custom::{Call, Methods};
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::extract::{RawQuery, decode_page_token, encode_page_token, page_size};
use crate::state::{AppState, Auth};

/// An event: the one record of a change, exactly as every reader receives it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    #[schema(example = "evt_01J9Z3QK8M5W4X6Y7Z8A9B0C1D")]
    pub id: String,
    /// `session.status`, `message.received`, `message.sent`, `message.status`,
    /// `message.reaction`, `message.edited`, `message.revoked` or `webhook.test`.
    #[serde(rename = "type")]
    #[schema(example = "session.status")]
    pub kind: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// The session the event happened on (`null` for events of the organization).
    pub session_id: Option<String>,
    /// By type; `session.status`: `{status, previousStatus, statusReason}`.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// One page of events, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventList {
    pub events: Vec<EventView>,
    /// Absent on the last page.
    pub next_page_token: Option<String>,
}

fn json_response(body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `sessionId` and `types` of the list and the stream.
fn filter(query: &RawQuery) -> ApiResult<EventFilter> {
    let session = match query.get("sessionId") {
        None | Some("") => None,
        Some(raw) => Some(
            SessionId::parse(raw).map_err(|_| ApiError::validation("sessionId", "must be a session id (sess_…)"))?,
        ),
    };
    let types = match query.get("types") {
        None | Some("") => None,
        Some(raw) => {
            // A set: repeats collapse, order does not matter.
            let mut types = BTreeMap::new();
            for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let kind = EventType::parse(name).ok_or_else(|| {
                    let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                    ApiError::validation("types", format!("unknown event type `{name}`; known: {}", known.join(", ")))
                })?;
                types.insert(kind, ());
            }
            (!types.is_empty()).then(|| types.into_keys().collect())
        }
    };
    Ok(EventFilter { session, types })
}

/// List events
///
/// The organization's events, newest first. Events are kept for `WAGATE_EVENT_RETENTION`
/// (default 7 days).
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    params(
        ("sessionId" = Option<String>, Query, description = "Only this session's events"),
        ("types" = Option<String>, Query, description = "Comma-separated event types, e.g. `session.status,message.received`"),
        ("pageSize" = Option<u32>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 50"),
        ("pageToken" = Option<String>, Query, description = "`nextPageToken` of the previous page"),
    ),
    responses(
        (status = 200, body = EventList),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
    ),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, auth: Auth, query: RawQuery) -> ApiResult<Response> {
    let principal = auth.require(Capability::Read)?;
    let filter = filter(&query)?;
    let size = page_size(&query)?;
    let after = decode_page_token(&query, |s| EventId::parse(s).ok())?;
    let page = state.store.list_events(&principal.org, &filter, PageRequest { size, after: after.as_ref() }).await?;
    let mut body = String::from("{\"events\":[");
    for (i, event) in page.items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&event.envelope_json());
    }
    body.push(']');
    if let Some(next) = page.next {
        body.push_str(",\"nextPageToken\":");
        body.push_str(&serde_json::to_string(&encode_page_token(next.as_str())).expect("a string serializes"));
    }
    body.push('}');
    Ok(json_response(body))
}

/// Get an event
#[utoipa::path(get, path = "/api/v1/events/{event}", tag = "events",
    params(("event" = String, Path, description = "Event id (evt_…)")),
    responses(
        (status = 200, body = EventView),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
    ),
    security(("bearer" = [])))]
pub async fn get(State(state): State<AppState>, auth: Auth, Path(raw_id): Path<String>) -> ApiResult<Response> {
    let principal = auth.require(Capability::Read)?;
    let not_found = || ApiError::not_found("event not found");
    let id = EventId::parse(&raw_id).map_err(|_| not_found())?;
    let event = state.store.get_event(&principal.org, &id).await?.ok_or_else(not_found)?;
    Ok(json_response(event.envelope_json()))
}

/// Stream events
///
/// `text/event-stream`: each event as `id: evt_…`, `event: <type>`, `data: <the event as one
/// JSON line>`, and a comment line at least every 15 s while idle. Reconnect with
/// `Last-Event-ID` (header, or `?lastEventId=`) to receive first every stored event after that
/// one, in order, then the live ones, with no gap and no duplicate (also across a gateway
/// restart). Without it, only events from now on. An id older than the retention
/// (`WAGATE_EVENT_RETENTION`) answers 409; an id this organization never had, 400.
#[utoipa::path(get, path = "/api/v1/events:stream", tag = "events",
    params(
        ("sessionId" = Option<String>, Query, description = "Only this session's events"),
        ("types" = Option<String>, Query, description = "Comma-separated event types"),
        ("lastEventId" = Option<String>, Query, description = "Resume after this event (the `Last-Event-ID` header wins when both are sent)"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event"),
    ),
    responses(
        (status = 200, content_type = "text/event-stream", body = String, description = "The event stream"),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope, description = "The resume id is older than the retention"),
    ),
    security(("bearer" = [])))]
pub async fn stream(state: &AppState, auth: &Auth, headers: &HeaderMap, query: &RawQuery) -> ApiResult<Response> {
    let principal = auth.require(Capability::Read)?;
    let filter = filter(query)?;
    let resume = match headers.get("last-event-id") {
        Some(value) => Some(value.to_str().map_err(|_| ApiError::validation("Last-Event-ID", "must be an event id (evt_…)"))?.trim()),
        None => query.get("lastEventId").map(str::trim),
    };
    let after = match resume.filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(resume_position(state, &principal.org, raw).await?),
    };
    let events = state
        .events
        .subscribe(principal.org.clone(), filter, after)
        .take_while(|item| {
            if let Err(e) = item {
                // The client resumes from the last id it received.
                tracing::warn!(error = %e, "event stream ended: cannot read the event log");
            }
            future::ready(item.is_ok())
        })
        .filter_map(|item| future::ready(item.ok().map(|event| Ok::<_, Infallible>(sse_event(&event)))));
    let keep_alive = KeepAlive::new().interval(state.events.config().keep_alive);
    Ok(Sse::new(events).keep_alive(keep_alive).into_response())
}

/// The custom methods of the events collection (`/api/v1/events:verb`).
pub fn methods() -> &'static Methods {
    static METHODS: LazyLock<Methods> = LazyLock::new(|| {
        Methods::new()
            .verb("stream", Method::GET, |c: Call| async move { stream(&c.state, &c.auth, &c.headers, &c.query).await })
    });
    &METHODS
}

fn sse_event(event: &Event) -> SseEvent {
    SseEvent::default().id(event.id.as_str()).event(event.kind.as_str()).data(event.envelope_json())
}

/// The log position to resume after.
async fn resume_position(state: &AppState, org: &wagate_core::OrgId, raw: &str) -> ApiResult<i64> {
    let field = "lastEventId";
    let id = EventId::parse(raw).map_err(|_| ApiError::validation(field, "must be an event id (evt_…)"))?;
    if let Some(event) = state.store.get_event(org, &id).await? {
        return Ok(event.seq);
    }
    if id.created_at() < wagate_runtime::events::retention_cutoff(state.events.config().retention) {
        return Err(ApiError::conflict(
            "the event to resume after is older than the event retention; list the events to catch up, then stream without an id",
        )
        .with_detail("field", field));
    }
    Err(ApiError::validation(field, "no such event in this organization"))
}
