//! The error envelope: every non-2xx answer is
//! `{"error": {"code": "...", "message": "...", "details": {...}}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use wagate_engine::EngineError;
use wagate_runtime::supervisor::SupervisorError;
use wagate_store::StoreError;

/// The machine-readable error codes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    ValidationError,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    RateLimited,
    Internal,
    NotImplemented,
    UpstreamUnavailable,
    /// The request took longer than the gateway's request timeout (HTTP 504).
    Timeout,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::ValidationError => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorCode::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The code for a status produced outside our handlers (router fallbacks, layers).
    pub fn for_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 | 422 | 415 => ErrorCode::ValidationError,
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            405 => ErrorCode::MethodNotAllowed,
            409 => ErrorCode::Conflict,
            413 => ErrorCode::PayloadTooLarge,
            429 => ErrorCode::RateLimited,
            501 => ErrorCode::NotImplemented,
            502 => ErrorCode::UpstreamUnavailable,
            408 | 504 => ErrorCode::Timeout,
            _ => ErrorCode::Internal,
        }
    }
}

/// An error answer. Build one with the constructors; `?` converts store and supervisor errors.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Map<String, Value>,
    retry_after: Option<u64>,
    /// The `Allow` header of a 405.
    allow: Option<String>,
}

/// The envelope as documented in the OpenAPI document.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// Human-readable; never contains internal details.
    #[schema(example = "session not found")]
    pub message: String,
    /// Machine-readable context, e.g. `{"field": "phone", "reason": "digits only, no leading +"}`.
    #[schema(value_type = Object)]
    pub details: Map<String, Value>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: Map::new(), retry_after: None, allow: None }
    }

    pub fn with_detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// `validation_error` naming the offending field.
    pub fn validation(field: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self::new(ErrorCode::ValidationError, format!("invalid {field}: {reason}"))
            .with_detail("field", field)
            .with_detail("reason", reason)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(capability: &str) -> Self {
        Self::new(ErrorCode::Forbidden, format!("this credential lacks the `{capability}` capability"))
            .with_detail("capability", capability)
    }

    /// The one not-found answer for sessions: identical for unknown ids and other
    /// organizations' sessions.
    pub fn session_not_found() -> Self {
        Self::new(ErrorCode::NotFound, "session not found")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// 405 with the exact `Allow` header (also named in `details.allow`).
    pub fn method_not_allowed(allow: &str) -> Self {
        let mut e = Self::new(ErrorCode::MethodNotAllowed, "method not allowed").with_detail("allow", allow);
        e.allow = Some(allow.to_owned());
        e
    }

    /// `validation_error` with a message of its own (the client's terms), naming the field.
    pub fn invalid(field: &str, message: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, message).with_detail("field", field).with_detail("reason", reason.into())
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// An unexpected failure: the cause is logged here, the client gets a fixed message.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut e = Self::new(ErrorCode::RateLimited, "too many requests; retry later");
        e.retry_after = Some(retry_after_secs.max(1));
        e
    }

    pub fn body(&self) -> Value {
        json!({ "error": { "code": self.code, "message": self.message, "details": self.details } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.code.status(), axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(allow) = self.allow.as_deref().and_then(|a| HeaderValue::from_str(a).ok()) {
            res.headers_mut().insert(header::ALLOW, allow);
        }
        res
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => ApiError::conflict(format!("{what} is already taken")).with_detail("field", what),
            other => ApiError::internal(&other),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::AlreadyPaired => {
                ApiError::new(ErrorCode::ValidationError, "session is already paired").with_detail("reason", "already_paired")
            }
            EngineError::InvalidState(msg) => ApiError::conflict(msg),
            EngineError::Invalid { field, message } => ApiError::validation(field, message),
            EngineError::RateLimited { retry_after } => {
                ApiError::rate_limited(retry_after.map(|d| d.as_secs()).unwrap_or(60))
            }
            EngineError::Refused { code, message } => {
                ApiError::new(ErrorCode::Conflict, format!("WhatsApp refused: {message}")).with_detail("reason", code)
            }
            EngineError::Unsupported(what) => {
                ApiError::new(ErrorCode::NotImplemented, format!("{what} is not supported by this session's engine"))
            }
            EngineError::Upstream(msg) => {
                tracing::warn!(error = %msg, "WhatsApp connection failed while serving a request");
                ApiError::new(ErrorCode::UpstreamUnavailable, "the WhatsApp connection failed")
            }
            EngineError::Internal(msg) => ApiError::internal(&msg),
        }
    }
}

impl From<SupervisorError> for ApiError {
    fn from(e: SupervisorError) -> Self {
        match e {
            SupervisorError::Conflict(msg) => ApiError::conflict(msg),
            SupervisorError::AlreadyPaired => EngineError::AlreadyPaired.into(),
            SupervisorError::NotSandbox => ApiError::not_found("sandbox routes exist only for sandbox sessions"),
            SupervisorError::Unsupported(kind) => ApiError::new(
                ErrorCode::NotImplemented,
                format!("the {} engine is not available in this gateway", kind.as_str()),
            ),
            SupervisorError::Engine(e) => e.into(),
            SupervisorError::Store(e) => e.into(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
