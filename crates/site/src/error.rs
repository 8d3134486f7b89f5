//! The site's errors. Every error maps to one HTTP status and a JSON body
//! `{"error": "...", "field": "..."}` (`field` when one input field is to blame).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// Bad input: 400, naming the field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The request conflicts with what is stored (duplicate name, runtime in use): 409.
    #[error("{message}")]
    Conflict {
        field: Option<String>,
        message: String,
    },
    #[error("{0}")]
    NotFound(String),
    /// A body field names something that does not exist (a runtime ID): 404, naming the field.
    #[error("{field}: {message}")]
    Missing { field: String, message: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// A body over the site's limit: 413.
    #[error("{0}")]
    TooLarge(String),
    /// A body the endpoint does not take in that media type: 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Something the site depends on is not ready (a session still starting): 503.
    #[error("{0}")]
    Unavailable(String),
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("Docker engine: {0}")]
    Engine(String),
    #[error("image store: {0}")]
    Store(#[from] nbrt_oci::OciError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = SiteError> = std::result::Result<T, E>;

impl SiteError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        SiteError::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// What a `NotFound` for the thing body field `field` names becomes (other errors stay).
    pub fn missing_as(field: &str, e: SiteError) -> Self {
        match e {
            SiteError::NotFound(message) => SiteError::Missing {
                field: field.to_string(),
                message,
            },
            e => e,
        }
    }

    pub fn conflict(field: Option<&str>, message: impl Into<String>) -> Self {
        SiteError::Conflict {
            field: field.map(str::to_string),
            message: message.into(),
        }
    }

    pub fn engine(e: impl std::fmt::Display) -> Self {
        SiteError::Engine(e.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            SiteError::Invalid { .. } => StatusCode::BAD_REQUEST,
            SiteError::Conflict { .. } => StatusCode::CONFLICT,
            SiteError::NotFound(_) | SiteError::Missing { .. } => StatusCode::NOT_FOUND,
            SiteError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            SiteError::Forbidden(_) => StatusCode::FORBIDDEN,
            SiteError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            SiteError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            SiteError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            SiteError::Engine(_) => StatusCode::BAD_GATEWAY,
            SiteError::Db(_)
            | SiteError::Store(_)
            | SiteError::Io { .. }
            | SiteError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            SiteError::Invalid { field, .. } | SiteError::Missing { field, .. } => Some(field),
            SiteError::Conflict { field, .. } => field.as_deref(),
            _ => None,
        }
    }
}

impl IntoResponse for SiteError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!("{self}");
        }
        let mut body = serde_json::json!({ "error": self.to_string(), "status": status.as_u16() });
        if let Some(f) = self.field() {
            body["field"] = serde_json::Value::String(f.to_string());
        }
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"nbrt\""),
            );
        }
        resp
    }
}
