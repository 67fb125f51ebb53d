//! TensorFlow Serving's REST API (<https://www.tensorflow.org/tfx/serving/api_rest>):
//!
//! - `GET /v1/models/NAME[/versions/N]`: version status (`model_version_status`);
//! - `GET /v1/models/NAME[/versions/N]/metadata`: the signatures, as `saved_model_cli` lists them;
//! - `POST /v1/models/NAME[/versions/N]:predict`: see [`crate::server::request`];
//! - `POST /v1/models/NAME[/versions/N]:classify`: `{"examples": [...]}` -> every class's name
//!   and probability per example (TF Serving's classify answer, from a predict signature).
//!
//! The answering version is also named in an `x-model-version` header (TF Serving's REST
//! answers do not say it), which lets a client see a hot swap happen.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tensorflow::DataType;

use crate::server::BodyRead;
use crate::server::error::ApiError;
use crate::server::metrics;
use crate::server::model::{LoadedModel, TensorSpec};
use crate::server::request;
use crate::server::routes::{AppState, Target, activations};

pub async fn get(State(state): State<AppState>, Path(path): Path<String>) -> Result<Json<Value>, ApiError> {
    let target = Target::parse(&path)?;
    if let Some(verb) = &target.verb {
        return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("use POST for :{verb}")));
    }
    if target.metadata {
        let model = target.model(&state)?;
        return Ok(Json(metadata(&state.model_name, &model)));
    }
    // Status also lists versions that are not served (loading, failed, replaced).
    let status = if target.name == state.model_name { state.versions.status_json(target.version) } else { None };
    status.map(Json).ok_or_else(|| match target.version {
        Some(v) => ApiError::not_found(format!("Could not find version {v} of model {}", target.name)),
        None => ApiError::not_found(format!("Could not find any versions of model {}", target.name)),
    })
}

pub async fn post(
    State(state): State<AppState>,
    Path(path): Path<String>,
    Extension(body_read): Extension<BodyRead>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    body_read.arrived();
    let target = Target::parse(&path)?;
    let started = std::time::Instant::now();
    let answer = answer_post(&state, &target, body).await;
    if let Some(api) = target.verb.as_deref().filter(|v| ["predict", "classify"].contains(v)) {
        let status = answer.as_ref().map_or_else(|e| e.code_name(), |_| "OK");
        metrics::request(&target.name, api, "REST", status, started.elapsed());
    }
    answer
}

async fn answer_post(state: &AppState, target: &Target, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let state = state.clone();
    let body = body.map_err(|e| body_error(e, state.max_body_bytes))?;
    let model = target.model(&state)?;
    match target.verb.as_deref() {
        Some("predict") => predict(&state, model, &body).await,
        Some("classify") => classify(&state, model, &body).await,
        Some("activations") => activations::activations(model, &body, &state.limits).await,
        Some(other) => Err(ApiError::not_found(format!("unknown method ':{other}' (this server answers :predict, :classify and :activations)"))),
        None => Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "POST needs a method: /v1/models/NAME:predict")),
    }
}

async fn predict(state: &AppState, model: std::sync::Arc<LoadedModel>, body: &[u8]) -> Result<Response, ApiError> {
    let req = request::parse_predict(body, &model, &state.limits)?;
    let outputs = state.runner.run(model.clone(), req.signature, req.input).await?;
    Ok(([("x-model-version", model.version.to_string())], Json(request::answer(&outputs, req.columnar))).into_response())
}

/// `:classify`, TF Serving's classification API over a predict signature: every class's name and
/// probability per example.
async fn classify(state: &AppState, model: std::sync::Arc<LoadedModel>, body: &[u8]) -> Result<Response, ApiError> {
    let req = request::parse_classify(body, &model, &state.limits)?;
    let outputs = state.runner.run(model.clone(), req.signature, req.input).await?;
    let answer = request::classify_answer(&outputs, model.class_names.as_deref())?;
    Ok(([("x-model-version", model.version.to_string())], Json(answer)).into_response())
}

fn body_error(e: BytesRejection, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(e.status(), format!("the request body is over the limit of {limit} bytes (--max-body-bytes)"))
    } else {
        ApiError::new(e.status(), format!("cannot read the request body: {}", e.body_text()))
    }
}

/// `GetModelMetadata`'s JSON: the model spec and every served signature.
fn metadata(name: &str, model: &LoadedModel) -> Value {
    let sigs: serde_json::Map<String, Value> = model
        .signatures
        .values()
        .map(|s| {
            let outputs: serde_json::Map<String, Value> = s.outputs.iter().map(|o| (o.key.clone(), tensor_info(o))).collect();
            (s.name.clone(), json!({ "inputs": { s.input.key.clone(): tensor_info(&s.input) }, "outputs": outputs, "method_name": s.method_name }))
        })
        .collect();
    json!({
        "model_spec": { "name": name, "signature_name": "", "version": model.version.to_string() },
        "metadata": { "signature_def": { "signature_def": sigs } }
    })
}

fn tensor_info(t: &TensorSpec) -> Value {
    let shape = match &t.shape {
        Some(dims) => {
            json!({ "dim": dims.iter().map(|d| json!({ "size": d.unwrap_or(-1).to_string(), "name": "" })).collect::<Vec<_>>(), "unknown_rank": false })
        }
        None => json!({ "dim": [], "unknown_rank": true }),
    };
    let name = format!("{}:{}", t.output.operation.name().unwrap_or_default(), t.output.index);
    json!({ "dtype": dtype_name(t.dtype), "tensor_shape": shape, "name": name })
}

fn dtype_name(d: DataType) -> String {
    match d {
        DataType::Float => "DT_FLOAT".into(),
        DataType::Int64 => "DT_INT64".into(),
        DataType::String => "DT_STRING".into(),
        other => format!("DT_{}", other.to_string().to_uppercase()),
    }
}
