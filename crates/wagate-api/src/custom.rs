//! Routing of AIP custom methods (`/{resource}:verb`), for any resource or collection.
//!
//! axum's router has no suffix captures, so a resource is routed as one path segment
//! (`/api/v1/sessions/{segment}`, and collections as `/api/v1/{collection}`, for
//! `/api/v1/events:stream`) and the segment is split here on its first colon. A [`Methods`]
//! table lists what the resource answers: the standard methods on the bare segment (`GET`,
//! `PATCH`, `DELETE`, ...) and each custom verb with its HTTP method. Every request is read into
//! an [`Incoming`] first. Dispatch is decided before authentication, like axum's own routing:
//!
//! - a known verb (or the bare resource) with a method it does not take answers 405 with the
//!   exact `Allow` header of that verb;
//! - an unknown verb, or a bare segment when the table has no standard methods, answers 404.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ApiResult};
use crate::extract::RawQuery;
use crate::state::{AppState, Auth};

/// One request to a resource routed through a [`Methods`] table, read before the route is
/// decided. The credential is checked, but a failure is kept until the route is known (routing
/// comes before authentication).
pub struct Incoming {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: RawQuery,
    pub auth: Result<Auth, ApiError>,
    pub body: Bytes,
}

impl FromRequest<AppState> for Incoming {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let auth = Auth::from_request_parts(&mut parts, state).await;
        let query = RawQuery::from_request_parts(&mut parts, state).await.map_err(IntoResponse::into_response)?;
        let (method, headers) = (parts.method.clone(), parts.headers.clone());
        let body = Bytes::from_request(Request::from_parts(parts, body), state).await.map_err(IntoResponse::into_response)?;
        Ok(Self { method, headers, query, auth, body })
    }
}

/// What a handler in the table receives: the state, the authenticated caller, the resource id
/// (empty for a collection's methods), the headers, the query and the raw body (parse it with
/// [`crate::extract::parse_json`]).
pub struct Call {
    pub state: AppState,
    pub auth: Auth,
    pub id: String,
    pub headers: HeaderMap,
    pub query: RawQuery,
    pub body: Bytes,
}

type Fut = Pin<Box<dyn Future<Output = ApiResult<Response>> + Send>>;
type Handler = Arc<dyn Fn(Call) -> Fut + Send + Sync>;

/// A table of (verb → method → handler); `verb` `None` is the resource itself.
#[derive(Clone, Default)]
pub struct Methods {
    entries: Vec<(Option<&'static str>, Method, Handler)>,
}

/// Splits `id:verb` at the first colon.
pub fn split_segment(segment: &str) -> (&str, Option<&str>) {
    match segment.split_once(':') {
        Some((id, verb)) => (id, Some(verb)),
        None => (segment, None),
    }
}

impl Methods {
    pub fn new() -> Self {
        Self::default()
    }

    /// A standard method on the resource itself (`GET /things/{id}`).
    pub fn standard<F, R>(self, method: Method, handler: F) -> Self
    where
        F: Fn(Call) -> R + Send + Sync + 'static,
        R: Future<Output = ApiResult<Response>> + Send + 'static,
    {
        self.add(None, method, handler)
    }

    /// A custom method (`POST /things/{id}:verb`).
    pub fn verb<F, R>(self, verb: &'static str, method: Method, handler: F) -> Self
    where
        F: Fn(Call) -> R + Send + Sync + 'static,
        R: Future<Output = ApiResult<Response>> + Send + 'static,
    {
        self.add(Some(verb), method, handler)
    }

    fn add<F, R>(mut self, verb: Option<&'static str>, method: Method, handler: F) -> Self
    where
        F: Fn(Call) -> R + Send + Sync + 'static,
        R: Future<Output = ApiResult<Response>> + Send + 'static,
    {
        debug_assert!(
            !self.entries.iter().any(|(v, m, _)| *v == verb && *m == method),
            "duplicate entry {verb:?} {method}"
        );
        self.entries.push((verb, method, Arc::new(move |call| Box::pin(handler(call)) as Fut)));
        self
    }

    /// The exact `Allow` value for `verb`, or `None` when the table does not know it.
    pub fn allow(&self, verb: Option<&str>) -> Option<String> {
        let methods: Vec<&str> = self.entries.iter().filter(|(v, _, _)| *v == verb).map(|(_, m, _)| m.as_str()).collect();
        (!methods.is_empty()).then(|| methods.join(", "))
    }

    /// Routes one request: `id` is the resource id, `verb` the part after the colon (if any).
    /// The credential is checked only once the route is known.
    pub async fn dispatch(&self, state: AppState, id: &str, verb: Option<&str>, req: Incoming) -> ApiResult<Response> {
        let Some(allow) = self.allow(verb) else {
            return Err(match verb {
                Some(v) => ApiError::not_found(format!("unknown method `{v}`")),
                None => ApiError::not_found("route not found"),
            });
        };
        let handler = self
            .entries
            .iter()
            .find(|(v, m, _)| *v == verb && *m == req.method)
            .map(|(_, _, h)| Arc::clone(h))
            .ok_or_else(|| ApiError::method_not_allowed(&allow))?;
        let Incoming { headers, query, auth, body, .. } = req;
        handler(Call { state, auth: auth?, id: id.to_owned(), headers, query, body }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ok(_: Call) -> ApiResult<Response> {
        unreachable!("not called in these tests")
    }

    #[test]
    fn allow_lists_exactly_the_methods_of_one_verb() {
        let m = Methods::new()
            .standard(Method::GET, ok)
            .standard(Method::DELETE, ok)
            .verb("start", Method::POST, ok)
            .verb("watch", Method::GET, ok)
            .verb("watch", Method::POST, ok);
        assert_eq!(m.allow(None).as_deref(), Some("GET, DELETE"));
        assert_eq!(m.allow(Some("start")).as_deref(), Some("POST"));
        assert_eq!(m.allow(Some("watch")).as_deref(), Some("GET, POST"));
        assert_eq!(m.allow(Some("nope")), None);
        assert_eq!(Methods::new().verb("x", Method::POST, ok).allow(None), None);
    }

    #[test]
    fn segments_split_at_the_first_colon() {
        assert_eq!(split_segment("sess_1:start"), ("sess_1", Some("start")));
        assert_eq!(split_segment("sess_1"), ("sess_1", None));
        assert_eq!(split_segment("sandbox:a:b"), ("sandbox", Some("a:b")));
        assert_eq!(split_segment(":x"), ("", Some("x")));
    }
}
