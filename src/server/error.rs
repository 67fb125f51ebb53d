//! Errors as TensorFlow Serving's REST API returns them: an HTTP status and `{"error": "..."}`,
//! the message naming what was wrong with the request.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// A failed session run: TensorFlow's InvalidArgument (what the decode ops return for data
    /// they cannot decode) is the client's fault, anything else the server's.
    pub fn from_run(e: anyhow::Error) -> ApiError {
        let invalid = ApiError::is_input_error(&e);
        let text = format!("{e:#}");
        // The first line without the graph's node names ("[[{{node ...}}]]").
        let line = text.lines().next().unwrap_or("").split(" [[").next().unwrap_or("").trim().to_string();
        if invalid { ApiError::bad_request(format!("the model refused the input: {line}")) } else { ApiError::internal(format!("the model failed: {line}")) }
    }
}

impl ApiError {
    /// Whether a session run failed on its input (InvalidArgument) rather than in the model.
    pub fn is_input_error(e: &anyhow::Error) -> bool {
        e.downcast_ref::<tensorflow::Status>().is_some_and(|s| s.code() == tensorflow::Code::InvalidArgument)
    }
}

impl ApiError {
    /// The gRPC code's name of this error (TF Serving's status label): what a gRPC client gets.
    pub fn code_name(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => "INVALID_ARGUMENT",
            StatusCode::NOT_FOUND => "NOT_FOUND",
            StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
            StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => "DEADLINE_EXCEEDED",
            StatusCode::NOT_IMPLEMENTED => "UNIMPLEMENTED",
            _ => "INTERNAL",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}
