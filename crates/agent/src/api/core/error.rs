//! Errors in OpenAI's format (`{"error": {"message", "type", "param", "code"}}`), request
//! bodies parsed with every error a 400 naming the field (as OpenAI answers, never
//! axum's 422), and server-sent events.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::serving::GenError;

/// Seconds a client told 429 should wait before retrying.
pub const RETRY_AFTER_SECS: &str = "1";

/// An error answered in OpenAI's format.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's string code (`model_not_found`); the numeric status when `None`.
    pub code: Option<&'static str>,
    /// The request field at fault, when known.
    pub param: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            code: None,
            param: None,
        }
    }

    /// A 400 `invalid_request_error`.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// OpenAI's 404 for a model this server does not serve.
    pub fn model_not_found(requested: &str, served: &str) -> Self {
        Self {
            code: Some("model_not_found"),
            param: Some("model"),
            ..Self::new(
                StatusCode::NOT_FOUND,
                format!("The model '{requested}' does not exist; this cluster serves '{served}'"),
            )
        }
    }

    /// The JSON body of the error.
    pub fn body(&self) -> Value {
        let code = self.code.map_or(json!(self.status.as_u16()), |c| json!(c));
        json!({"error": {
            "message": self.message,
            "type": error_kind(self.status),
            "param": self.param,
            "code": code,
        }})
    }
}

impl From<GenError> for ApiError {
    fn from(e: GenError) -> Self {
        let status = match e {
            GenError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GenError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GenError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GenError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
        };
        Self::new(status, e.to_string())
    }
}

fn error_kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        503 => "service_unavailable",
        _ => "server_error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        resp
    }
}

/// A request body as read by axum: the bytes, or why they could not be read (too large).
pub type RawBody = Result<Bytes, BytesRejection>;

/// A JSON request body as `T`, whatever its content type (`curl -d` sends a form type).
/// A body too large is a 413; every other failure a 400 whose message names the field at
/// fault (`'messages[0].role': invalid type: integer ...`), as OpenAI answers malformed
/// bodies.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: RawBody) -> Result<T, ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    parse_json(&body)
}

/// [`parse_body`] of bytes already read.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad(
            "the request body is empty: send a JSON object",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad(format!("the request body is not valid JSON: {inner}"))
        } else if path.is_empty() || path == "." {
            ApiError::bad(format!("invalid request body: {inner}"))
        } else {
            ApiError::bad(format!("invalid request body: '{path}': {inner}"))
        }
    })
}

/// An error as one server-sent event (a stream has already answered 200).
pub fn error_event(err: &ApiError) -> Event {
    Event::default().data(err.body().to_string())
}

/// A server-sent-event response fed by `rx` (a task writes the events; it stops when the
/// client leaves and the channel closes).
pub fn sse_response(rx: tokio::sync::mpsc::Receiver<Event>) -> Response {
    use futures::StreamExt;
    let body =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    axum::response::sse::Sse::new(body)
        .keep_alive(axum::response::sse::KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        messages: Vec<Msg>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Msg {
        role: String,
    }

    #[test]
    fn body_errors_are_400_and_name_the_field() {
        for (body, field) in [
            (r#"{"messages": null}"#, "messages"),
            (r#"{"messages": "hi"}"#, "messages"),
            (r#"{"messages": [123]}"#, "messages[0]"),
            (r#"{"messages": [{"role": 5}]}"#, "messages[0].role"),
            (r#"{"messages": [{}]}"#, "messages[0]"),
        ] {
            let e = parse_json::<Body>(body.as_bytes()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(
                e.message.contains(&format!("'{field}'")),
                "{body}: {}",
                e.message
            );
        }
        let e = parse_json::<Body>(b"{}").unwrap_err();
        assert!(e.message.contains("messages"), "{}", e.message);
        assert_eq!(parse_json::<Body>(b" ").unwrap_err().status, 400);
        assert_eq!(parse_json::<Body>(b"{").unwrap_err().status, 400);
    }

    #[test]
    fn model_not_found_is_openais_404() {
        let e = ApiError::model_not_found("gpt-4", "m");
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.body()["error"]["code"], "model_not_found");
        assert_eq!(e.body()["error"]["type"], "invalid_request_error");
        assert_eq!(ApiError::bad("x").body()["error"]["code"], 400);
    }
}
