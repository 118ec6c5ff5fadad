//! Request extractors whose rejections are our own `validation_error`s naming the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult, ErrorCode};

/// A JSON body. An empty body reads as `{}` (custom methods whose body is optional);
/// unknown fields are rejected by the request types (`deny_unknown_fields`).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
            let essence = ct.split(';').next().unwrap_or_default().trim();
            if !(essence == "application/json" || essence.ends_with("+json")) {
                return Err(ApiError::validation("body", "Content-Type must be application/json"));
            }
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large")
            } else {
                ApiError::validation("body", "could not read the request body")
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Deserializes `bytes` (empty = `{}`) and turns a failure into a `validation_error`
/// whose `details.field` is the path of the offending field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { bytes };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
    de.end().map_err(|e| ApiError::validation("body", format!("malformed JSON: {e}")))?;
    Ok(value)
}

fn json_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    if inner.is_syntax() || inner.is_eof() || inner.is_io() {
        return ApiError::validation("body", format!("malformed JSON: {inner}"));
    }
    let msg = inner.to_string();
    // serde's messages name the field in backticks for unknown and missing fields.
    let backticked = msg.split('`').nth(1).map(str::to_owned);
    let join = |leaf: &str| if path == "." || path.is_empty() { leaf.to_owned() } else { format!("{path}.{leaf}") };
    let strip_position = |m: &str| m.split(" at line ").next().unwrap_or(m).to_owned();
    if let (true, Some(field)) = (msg.starts_with("unknown field"), &backticked) {
        // The path already ends at the unknown key.
        let full = if path.ends_with(field.as_str()) { path.clone() } else { join(field) };
        return ApiError::validation(&full, "unknown field");
    }
    if let (true, Some(field)) = (msg.starts_with("missing field"), &backticked) {
        return ApiError::validation(&join(field), "is required");
    }
    // A body that is not an object at all (e.g. an array) is reported on `body`.
    let field = if path == "." || path.is_empty() || path.starts_with('[') { "body".to_owned() } else { path };
    ApiError::validation(&field, strip_position(&msg))
}

/// The query string as raw pairs; handlers validate each parameter by name.
pub struct RawQuery(pub Vec<(String, String)>);

impl RawQuery {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RawQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or_default();
        let pairs = form_urlencoded_pairs(q);
        Ok(RawQuery(pairs))
    }
}

/// `pageSize` of a list: default 50, at least 1; above 500 means 500.
pub fn page_size(query: &RawQuery) -> ApiResult<u32> {
    match query.get("pageSize") {
        None | Some("") => Ok(50),
        Some(raw) => match raw.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n.min(500)),
            _ => Err(ApiError::validation("pageSize", "must be an integer from 1 to 500")),
        },
    }
}

/// The opaque `nextPageToken` of a list whose pages continue after the resource `id`.
pub fn encode_page_token(id: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

/// `pageToken` of a list, decoded back into the id it was made from by `parse`.
pub fn decode_page_token<T>(query: &RawQuery, parse: impl FnOnce(&str) -> Option<T>) -> ApiResult<Option<T>> {
    use base64::Engine as _;
    match query.get("pageToken") {
        None | Some("") => Ok(None),
        Some(token) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| parse(&s))
            .map(Some)
            .ok_or_else(|| ApiError::validation("pageToken", "not a token returned by this API")),
    }
}

fn form_urlencoded_pairs(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        phone: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    fn field(r: Result<Body, ApiError>) -> String {
        r.unwrap_err().details["field"].as_str().unwrap().to_owned()
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field(parse_json(br#"{"phone":"1","extra":1}"#)), "extra");
        assert_eq!(field(parse_json(br#"{}"#)), "phone");
        assert_eq!(field(parse_json(br#"{"phone":1}"#)), "phone");
        assert_eq!(field(parse_json(br#"{"phone":"1","inner":{"n":"x"}}"#)), "inner.n");
        assert_eq!(field(parse_json(br#"{"phone":"1","inner":{"m":1}}"#)), "inner.m");
        assert_eq!(field(parse_json(br#"{"phone":"#)), "body");
        assert_eq!(field(parse_json(br#"{"phone":"1"} x"#)), "body");
        assert_eq!(field(parse_json(br#"[1]"#)), "body");
    }

    #[test]
    fn query_pairs_are_decoded() {
        let q = form_urlencoded_pairs("a=1&b=x%20y&c=a+b&d");
        assert_eq!(q, vec![("a".into(), "1".into()), ("b".into(), "x y".into()), ("c".into(), "a b".into()), ("d".into(), "".into())]);
    }
}
