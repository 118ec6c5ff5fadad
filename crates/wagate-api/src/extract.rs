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
/// whose `details.field` is the path of the offending field and whose message says what the
/// client sent wrong in JSON terms (never a Rust type name).
/// A nested object field (`#[serde(default, deserialize_with = "object")]`): absent or `null`
/// is `None`; anything but a JSON object is refused. (serde's derived structs also take an
/// array of their fields in order, which no schema here allows.) The object is read through
/// the same deserializer, so an error inside it still names its own field.
pub(crate) fn object<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use std::marker::PhantomData;

    use serde::de::{MapAccess, Visitor};

    struct Nullable<T>(PhantomData<T>);
    struct Object<T>(PhantomData<T>);

    impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for Nullable<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
            de.deserialize_map(Object(PhantomData)).map(Some)
        }
    }

    impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for Object<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }

    de.deserialize_option(Nullable(PhantomData))
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // No body at all is `{}`; a body of only whitespace is not JSON.
    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { bytes };
    // serde would also read a struct from an array of its fields (`[]` as `{}`): a body is an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b == b'[') {
        return Err(ApiError::invalid("body", "the request body must be a JSON object", "not a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
    de.end().map_err(|e| malformed(&e))?;
    Ok(value)
}

fn malformed(e: &serde_json::Error) -> ApiError {
    let what = strip_position(&e.to_string());
    ApiError::invalid(
        "body",
        format!("the request body is not valid JSON ({what} at line {}, column {})", e.line(), e.column()),
        "malformed JSON",
    )
}

fn strip_position(m: &str) -> String {
    m.split(" at line ").next().unwrap_or(m).to_owned()
}

/// The text between the first pair of backticks.
fn backticked(msg: &str) -> Option<&str> {
    msg.split('`').nth(1)
}

/// serde's "expected ..." phrase in JSON terms: `struct Foo`/`a map` → "an object", `u32` →
/// "a non-negative integer", and so on.
fn json_kind(expected: &str) -> String {
    let e = expected.trim();
    let kind = if e.starts_with("struct ") || e.starts_with("a map") || e == "map" {
        "an object"
    } else if e.starts_with("a sequence") || e.starts_with("tuple") || e == "sequence" {
        "an array"
    } else if e.contains("string") || e == "a character" {
        "a string"
    } else if e.contains("bool") {
        "a boolean"
    } else if e.starts_with('u') && e[1..].chars().all(|c| c.is_ascii_digit()) {
        "a non-negative integer"
    } else if e.starts_with('i') && e[1..].chars().all(|c| c.is_ascii_digit()) {
        "an integer"
    } else if e.starts_with('f') && e[1..].chars().all(|c| c.is_ascii_digit()) {
        "a number"
    } else if e.contains("unit") {
        "null"
    } else if e.starts_with("enum ") {
        "one of the documented values"
    } else {
        return e.to_owned();
    };
    kind.to_owned()
}

fn json_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    if inner.is_syntax() || inner.is_eof() || inner.is_io() {
        return malformed(&inner);
    }
    let msg = strip_position(&inner.to_string());
    let at_root = path == "." || path.is_empty();
    let join = |leaf: &str| if at_root { leaf.to_owned() } else { format!("{path}.{leaf}") };
    if let (true, Some(field)) = (msg.starts_with("unknown field"), backticked(&msg)) {
        // The path already ends at the unknown key.
        let full = if path.ends_with(field) { path.clone() } else { join(field) };
        return ApiError::invalid(&full, format!("unknown field `{full}`"), "unknown field");
    }
    if let (true, Some(field)) = (msg.starts_with("missing field"), backticked(&msg)) {
        let full = join(field);
        return ApiError::invalid(&full, format!("`{full}` is required"), "is required");
    }
    // A body that is not an object at all (e.g. an array) is reported on `body`.
    if at_root || path.starts_with('[') {
        return ApiError::invalid("body", "the request body must be a JSON object", "must be a JSON object");
    }
    let reason = if let Some(rest) = msg.strip_prefix("unknown variant ") {
        // "unknown variant `x`, expected `a` or `b`" / "expected one of `a`, `b`, `c`"
        match rest.split_once(", expected ") {
            Some((_, allowed)) => format!("must be {allowed}"),
            None => "is not an accepted value".to_owned(),
        }
    } else if msg.starts_with("invalid type") || msg.starts_with("invalid value") {
        // "invalid type: integer `1`, expected a string"
        match msg.split_once(", expected ") {
            Some((_, expected)) => format!("must be {}", json_kind(expected)),
            None => "has the wrong type".to_owned(),
        }
    } else if msg.starts_with("invalid length") {
        // An array where an object was expected is read as its fields in order.
        if msg.contains("expected struct") { "must be an object" } else { "has the wrong number of elements" }.to_owned()
    } else {
        // Messages of our own `Deserialize` impls are written for clients already.
        msg
    };
    ApiError::invalid(&path, format!("`{path}` {reason}"), reason)
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

/// `pageSize` of a list: 1 to 500, default 50.
pub fn page_size(query: &RawQuery) -> ApiResult<u32> {
    match query.get("pageSize") {
        None => Ok(50),
        Some(raw) => match raw.parse::<u32>() {
            Ok(n @ 1..=500) => Ok(n),
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

    #[test]
    fn only_a_missing_body_reads_as_an_empty_object() {
        assert!(parse_json::<Inner>(b"").is_err(), "`n` is required");
        assert_eq!(parse_json::<Body>(b"\n").unwrap_err().details["field"], "body");
    }

    #[test]
    fn a_body_is_an_object_never_an_array() {
        let e = parse_json::<Body>(b" [\"628123456789\"]").unwrap_err();
        assert_eq!(e.details["field"], "body");
        assert!(e.message.contains("JSON object"), "{}", e.message);
    }
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

    fn message(r: Result<Body, ApiError>) -> String {
        r.unwrap_err().message
    }

    #[test]
    fn messages_speak_json_not_rust() {
        assert_eq!(message(parse_json(br#"[1]"#)), "the request body must be a JSON object");
        assert_eq!(message(parse_json(br#""x""#)), "the request body must be a JSON object");
        assert_eq!(message(parse_json(br#"{"phone":1}"#)), "`phone` must be a string");
        assert_eq!(message(parse_json(br#"{"phone":"1","extra":1}"#)), "unknown field `extra`");
        assert_eq!(message(parse_json(br#"{}"#)), "`phone` is required");
        assert_eq!(message(parse_json(br#"{"phone":"1","inner":{"n":"x"}}"#)), "`inner.n` must be a non-negative integer");
        assert_eq!(message(parse_json(br#"{"phone":"1","inner":{"n":-1}}"#)), "`inner.n` must be a non-negative integer");
        assert_eq!(message(parse_json(br#"{"phone":"1","inner":[]}"#)), "`inner` must be an object");
        assert!(message(parse_json(br#"{"phone":"#)).starts_with("the request body is not valid JSON"));
        for bad in [&br#"[1]"#[..], br#"{"phone":1}"#, br#"{"phone":"1","inner":{"n":"x"}}"#, br#"{"phone":"1","inner":[]}"#] {
            let m = message(parse_json(bad));
            assert!(!m.contains("struct") && !m.contains("u32") && !m.contains("Body"), "{m}");
        }
    }

    #[test]
    fn query_pairs_are_decoded() {
        let q = form_urlencoded_pairs("a=1&b=x%20y&c=a+b&d");
        assert_eq!(q, vec![("a".into(), "1".into()), ("b".into(), "x y".into()), ("c".into(), "a b".into()), ("d".into(), "".into())]);
    }
}
