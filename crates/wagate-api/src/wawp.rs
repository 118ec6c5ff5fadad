//! The wawp.net-compatible v2 surface, for users moving from wawp.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;
use wagate_core::{Capability, InstanceId, SessionStatus};

use crate::error::{ApiError, ApiResult, ErrorCode, ErrorEnvelope};
use crate::extract::RawQuery;
use crate::state::{AppState, authenticate};

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WawpMe {
    #[schema(example = "201012345678@c.us")]
    pub id: String,
    #[schema(example = "John Doe")]
    pub push_name: String,
    #[schema(example = "android")]
    pub platform: String,
    pub me: WawpMeInner,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WawpMeInner {
    #[schema(example = "201012345678@c.us")]
    pub id: String,
    #[schema(example = "John Doe")]
    pub name: String,
}

/// About WhatsApp data (wawp-compatible)
///
/// The profile of the WhatsApp account connected to an instance. The access token (an API
/// key with `manage`) comes in the `access_token` query parameter or an `access-token` header.
#[utoipa::path(get, path = "/v2/session/me", tag = "wawp",
    params(("instance_id" = String, Query, pattern = "^[A-Z0-9]{12}$", description = "The 12-character instance id"),
           ("access_token" = Option<String>, Query, description = "API access token (or the `access-token` header)")),
    responses((status = 200, body = WawpMe), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope), (status = 502, body = ErrorEnvelope)))]
pub async fn session_me(State(state): State<AppState>, query: RawQuery, headers: HeaderMap) -> ApiResult<Json<WawpMe>> {
    let instance = match query.get("instance_id") {
        None | Some("") => return Err(ApiError::validation("instance_id", "is required")),
        Some(raw) => InstanceId::parse(raw).ok_or_else(|| ApiError::validation("instance_id", "must be 12 characters A-Z, 0-9"))?,
    };
    let token = query
        .get("access_token")
        .filter(|t| !t.is_empty())
        .or_else(|| headers.get("access-token").and_then(|v| v.to_str().ok()).filter(|t| !t.is_empty()))
        .ok_or_else(|| ApiError::unauthorized("missing access_token"))?;
    let principal = authenticate(&state, token).await?;
    if !principal.can(Capability::Manage) {
        return Err(ApiError::unauthorized("this access token lacks the `manage` capability"));
    }
    let not_found = || ApiError::not_found("instance not found");
    let session = state.sessions.by_instance(&principal.org, &instance).await?.ok_or_else(not_found)?;
    let identity = session.identity.as_ref().ok_or_else(|| ApiError::not_found("instance is not paired yet"))?;
    if session.status == SessionStatus::Failed {
        return Err(ApiError::new(ErrorCode::UpstreamUnavailable, "the WhatsApp connection failed")
            .with_detail("reason", session.status_reason.clone().unwrap_or_default()));
    }
    let id = format!("{}@c.us", identity.phone);
    let name = identity.push_name.clone().unwrap_or_default();
    Ok(Json(WawpMe {
        id: id.clone(),
        push_name: name.clone(),
        platform: identity.platform.clone().unwrap_or_else(|| "unknown".to_owned()),
        me: WawpMeInner { id, name },
    }))
}
