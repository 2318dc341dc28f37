//! `ApiError`, the single place where failures become HTTP status codes, and the error envelope
//! `{"error", "detail", "timestamp", "request_id"}` that every 4xx/5xx body takes.
//!
//! Handlers return `ApiError`; its response carries only the status and an [`ErrorDetail`]
//! extension. The [`envelope`] middleware, which knows the request id, turns that into the body,
//! and also wraps errors produced outside handlers (unknown route, wrong method, rejected body).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tower_http::request_id::RequestId;

use crate::chaos::RunError;
use crate::faults::FaultError;
use crate::store::StoreError;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request body is not valid JSON or does not fit the schema (422).
    #[error("{0}")]
    Unprocessable(String),
    /// The request body is over the size limit (413).
    #[error("{0}")]
    TooLarge(String),
    #[error(transparent)]
    Fault(#[from] FaultError),
    #[error(transparent)]
    Redis(#[from] StoreError),
    #[error(transparent)]
    Run(#[from] RunError),
    /// Missing or wrong bearer token (401).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Refused whatever the credentials (403).
    #[error("{0}")]
    Forbidden(&'static str),
}

/// The `detail` of an error response, picked up by [`envelope`], and extra envelope fields
/// (e.g. `line`/`column` of a script error).
#[derive(Debug, Clone)]
pub struct ErrorDetail(pub String, pub Option<serde_json::Value>);

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Fault(FaultError::AlreadyActive(_) | FaultError::Conflict(_)) => StatusCode::CONFLICT,
            Self::Fault(FaultError::Halted(_)) => StatusCode::LOCKED,
            Self::Fault(FaultError::NotFound(_)) => StatusCode::NOT_FOUND,
            Self::Fault(FaultError::Invalid(_) | FaultError::Unsupported(_)) => StatusCode::BAD_REQUEST,
            Self::Fault(FaultError::Backend(_)) => StatusCode::BAD_GATEWAY,
            Self::Fault(FaultError::Unavailable(_) | FaultError::ShuttingDown) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Redis(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Run(RunError::Invalid(_) | RunError::Compile(_)) => StatusCode::BAD_REQUEST,
            Self::Run(RunError::NotFound(_)) => StatusCode::NOT_FOUND,
            Self::Run(RunError::Busy(_)) => StatusCode::CONFLICT,
            Self::Run(RunError::Halted(_)) => StatusCode::LOCKED,
            Self::Run(RunError::ShuttingDown | RunError::StoreDown(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = self.status().into_response();
        let extra = match &self {
            Self::Run(RunError::Compile(e)) => Some(serde_json::json!({"line": e.line, "column": e.column})),
            _ => None,
        };
        if let Self::Unauthorized(_) = self {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res.extensions_mut().insert(ErrorDetail(self.to_string(), extra));
        res
    }
}

/// The body of every 4xx and 5xx response (but `/health`'s 503, its own health report).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// The HTTP reason phrase (`Bad Request`, `Unprocessable Entity`, …).
    pub error: String,
    /// What went wrong and, where it can, what to do: the field, the limit, the script line.
    pub detail: String,
    pub timestamp: String,
    /// The request's `X-Request-ID` (given or generated), also in the service's logs.
    pub request_id: String,
    /// A script that does not compile (400 from `POST /chaos/run`): where, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    pub line: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    pub column: Option<Option<u64>>,
}

/// JSON body extractor for the chaos endpoints: an empty body means "all defaults", any
/// content type is read as JSON, and a bad body is a 422 naming the field.
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(format!("The request body is too large: {e}"))
            } else {
                ApiError::Unprocessable(format!("Could not read the request body: {e}"))
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        // serde reads a struct from a JSON array too (`[]` would mean "all defaults"): only an
        // object is a body.
        if !bytes.trim_ascii_start().starts_with(b"{")
            && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok()
        {
            return Err(ApiError::Unprocessable("Invalid JSON body: expected a JSON object".into()));
        }
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de).map(JsonBody).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let is_data = inner.classify() == serde_json::error::Category::Data;
            if !is_data || path == "." || path == "?" || path.is_empty() {
                ApiError::Unprocessable(format!("Invalid JSON body: {inner}"))
            } else {
                ApiError::Unprocessable(format!("Invalid value for field '{path}': {inner}"))
            }
        })
    }
}

/// Query-string extractor: a malformed query (a wrong type, a repeated key) is a 422 naming it,
/// as a malformed body is, instead of axum's plain-text 400.
pub struct QueryParams<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| ApiError::Unprocessable(format!("Invalid query string: {}", e.body_text())))
    }
}

/// Renders every error response as the envelope and logs it once, inside the request's span.
pub async fn envelope(req: Request, next: Next) -> Response {
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();

    let mut res = next.run(req).await;
    let status = res.status();
    let mut extra = None;
    let detail = match res.extensions_mut().remove::<ErrorDetail>() {
        Some(ErrorDetail(d, x)) => {
            extra = x;
            d
        }
        None if status.is_client_error() || status.is_server_error() => {
            if is_json(&res) {
                return res; // a JSON error body of its own, e.g. /health's "unhealthy" report
            }
            default_detail(status, &method, &path, res.headers().get(header::ALLOW))
        }
        None => return res,
    };
    if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), %detail, "request failed");
    } else {
        tracing::debug!(status = status.as_u16(), %detail, "request rejected");
    }
    let (line, column) = match &extra {
        Some(x) => (x["line"].as_u64(), x["column"].as_u64()),
        None => (None, None),
    };
    let body = ErrorBody {
        error: status.canonical_reason().unwrap_or("Error").to_string(),
        detail,
        timestamp: crate::timestamp(),
        request_id,
        line: extra.as_ref().map(|_| line),
        column: extra.as_ref().map(|_| column),
    };
    let mut out = (status, axum::Json(body)).into_response();
    // Keep headers such as Allow (405) and Retry-After that the original response carried.
    for (name, value) in res.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

fn is_json(res: &Response) -> bool {
    res.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

fn default_detail(status: StatusCode, method: &Method, path: &str, allow: Option<&HeaderValue>) -> String {
    match status {
        StatusCode::NOT_FOUND => format!("No route for {method} {path}; see GET /openapi.json for the API"),
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = allow.and_then(|v| v.to_str().ok()).unwrap_or("another method");
            format!("Method {method} is not allowed on {path}; use {allowed}")
        }
        StatusCode::PAYLOAD_TOO_LARGE => "The request body is too large".to_string(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "Send the body as application/json".to_string(),
        _ => status.canonical_reason().unwrap_or("Error").to_string(),
    }
}
