//! OpenAI-style errors: `{"error": {"message", "type", "param", "code"}}` with an HTTP status. Every
//! refusal of a request is one of these; the connection and the server go on.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> ApiError {
        ApiError { status, body: ErrorBody { message, kind, param: None, code: Some(code) } }
    }

    /// 400: the request names `param` and its value is not acceptable.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        let mut e =
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_value", message.into());
        e.body.param = Some(param.into());
        e
    }

    /// 400: the body is not JSON, or not JSON of the request's shape.
    pub fn malformed(param: Option<String>, message: String) -> ApiError {
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_json", message);
        e.body.param = param;
        e
    }

    pub fn unknown_model(model: &str, served: &str) -> ApiError {
        let message = format!("the model `{model}` does not exist; this server serves `{served}`");
        let mut e = ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", "model_not_found", message);
        e.body.param = Some("model".into());
        e
    }

    pub fn unauthorized() -> ApiError {
        let message = "missing or incorrect API key: send `Authorization: Bearer KEY`".to_string();
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", "invalid_api_key", message)
    }

    pub fn too_large(limit: usize) -> ApiError {
        let message = format!("the request body is larger than the server's limit of {limit} bytes");
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", "body_too_large", message)
    }

    pub fn queue_full(max_queue: usize) -> ApiError {
        let message = format!("the server's queue of {max_queue} requests is full; retry later");
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "queue_full", message)
    }

    pub fn shutting_down() -> ApiError {
        let message = "the server is shutting down".to_string();
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "shutting_down", message)
    }

    pub fn not_found(path: &str) -> ApiError {
        let message = format!("no endpoint {path}");
        ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", "unknown_url", message)
    }

    /// 500: the model failed (a device error); the message says how.
    pub fn internal(message: String) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal_error", message)
    }

    /// The `{"error": …}` object, as a JSON value (also sent as an SSE event when a stream fails).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.body })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.json())).into_response()
    }
}
