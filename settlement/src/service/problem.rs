//! Problem documents (RFC 9457, `application/problem+json`) with a stable `code`.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body::Frame;
use serde_json::{json, Value};

use super::wire::{status_of, WireError};
use crate::error::RegistryError;

/// An error answer: an HTTP status, a stable machine-readable `code`, a human `detail`, and
/// the registry error's fields when there is one.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    code: String,
    detail: String,
    members: Value,
}

impl Problem {
    /// A problem with no extension members beyond `code`.
    pub fn new(status: u16, code: &str, detail: impl Into<String>) -> Problem {
        Problem {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: code.to_string(),
            detail: detail.into(),
            members: Value::Null,
        }
    }

    /// `503`: try again (the same request, with the same id).
    pub fn unavailable(detail: impl Into<String>) -> Problem {
        Problem::new(503, "unavailable", detail)
    }

    /// `400`: the request is malformed.
    pub fn malformed(detail: impl Into<String>) -> Problem {
        Problem::new(400, "malformed", detail)
    }
}

impl From<RegistryError> for Problem {
    fn from(e: RegistryError) -> Self {
        let detail = e.to_string();
        let status = status_of(&e);
        let members = serde_json::to_value(WireError::from(e)).unwrap_or(Value::Null);
        let code = members["code"].as_str().unwrap_or("storage").to_string();
        Problem { members, ..Problem::new(status, &code, detail) }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("error");
        let mut body = json!({
            "type": format!("https://cccx.dev/problems/registry/{}", self.code.replace('_', "-")),
            "title": title,
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
        });
        if let (Value::Object(b), Value::Object(members)) = (&mut body, self.members) {
            for (k, v) in members {
                b.entry(k).or_insert(v);
            }
        }
        (self.status, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string()).into_response()
    }
}

/// The problem of a body that is not the JSON the route takes.
pub fn json_error(e: JsonRejection) -> Problem {
    match e {
        JsonRejection::MissingJsonContentType(_) => {
            Problem::new(415, "unsupported_media_type", "send the body as application/json")
        }
        JsonRejection::BytesRejection(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::new(413, "payload_too_large", r.body_text())
        }
        other => Problem::malformed(other.body_text()),
    }
}

/// The problem of a malformed path.
pub fn path_error(e: PathRejection) -> Problem {
    Problem::malformed(e.body_text())
}

/// The problem of a malformed query.
pub fn query_error(e: QueryRejection) -> Problem {
    Problem::malformed(e.body_text())
}

/// A body that fails at once: the status line and headers go out, then the connection is cut.
struct CutOff;

impl http_body::Body for CutOff {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Poll::Ready(Some(Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "injected fault"))))
    }
}

/// `response` with its body lost on the way: the client sees the status, then a broken
/// connection.
pub fn cut_off(response: Response) -> Response {
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::new(CutOff))
}
