//! Request extractors that answer bad input with the API's JSON errors.
//!
//! axum's stock extractors reject with plain-text bodies and their own
//! statuses (a too-large JSON body is a text 413, a bad path a text 400).
//! The contract wants `{"error": {...}}` everywhere, so these wrappers run
//! the stock logic and turn every rejection into an [`ApiError`].

use axum::body::HttpBody as Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use super::app::SharedApp;
use super::error::ApiError;

/// Header marking a request a follower forwarded to the leader. A request
/// carrying it is never forwarded again (one hop at most, so two nodes
/// that disagree about who leads cannot bounce a request forever).
pub const FORWARDED_HEADER: &str = "x-raftkv-forwarded";

/// What forwarding needs to replay a request: method, path and query, and
/// whether it was already forwarded.
#[derive(Clone, Debug)]
pub struct RequestInfo {
    pub method: Method,
    /// The request target as received (a cheap clone of the request's:
    /// most requests are never forwarded).
    pub uri: Uri,
    pub forwarded: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for RequestInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(RequestInfo::from_parts(parts))
    }
}

impl RequestInfo {
    /// What forwarding needs, from a request's head.
    pub fn from_parts(parts: &Parts) -> RequestInfo {
        RequestInfo {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            forwarded: parts.headers.contains_key(FORWARDED_HEADER),
        }
    }

    /// Path and query exactly as received (still percent-encoded).
    pub fn path_and_query(&self) -> &str {
        self.uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or_else(|| self.uri.path())
    }
}

/// The raw request body, at most `--max-body-bytes` long.
///
/// A declared `Content-Length` over the limit is refused before reading a
/// byte; a body without one (chunked) is read through a counting limiter
/// that stops at the limit, so a client can never make the server buffer
/// more than the limit.
pub struct LimitedBody(pub Bytes);

impl FromRequest<SharedApp> for LimitedBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &SharedApp) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        read_limited_body(&parts.headers, body, app.cfg.max_body_bytes)
            .await
            .map(LimitedBody)
    }
}

/// Reads a request body of at most `max` bytes (see [`LimitedBody`]).
pub async fn read_limited_body<B>(headers: &HeaderMap, body: B, max: u64) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || ApiError::TooLarge(format!("request body exceeds {max} bytes"));
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ApiError::BadRequest("invalid Content-Length".into()))?;
        if len > max {
            return Err(too_large());
        }
    }
    // `max` is at most BODY_BYTES_CEILING (64 MiB), so it fits a usize.
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(ApiError::BadRequest(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// Parses a JSON body into `T`; any failure is a 400 saying what is wrong.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest("a JSON body is required".to_string()));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Like [`parse_json`], but an empty body means `T::default()`.
pub fn parse_optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(body)
}

/// A key from the URL path, percent-decoded, UTF-8.
pub struct KeyPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for KeyPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(key) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("invalid key in the path: {e}")))?;
        Ok(KeyPath(key))
    }
}

/// A node id from the URL path.
pub struct IdPath(pub u64);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<u64>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("invalid node id in the path: {e}")))?;
        if id == 0 {
            return Err(ApiError::BadRequest("node id 0 is reserved".into()));
        }
        Ok(IdPath(id))
    }
}

/// Query parameters parsed into `T`; a bad parameter is a 400.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(t) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("invalid query parameters: {e}")))?;
        Ok(QueryParams(t))
    }
}
