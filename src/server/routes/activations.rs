//! `POST /v1/models/NAME:activations`, for the web page: one encoded image in (a predict request
//! of one instance), its `serving_default` prediction and every layer's activation picture out,
//! drawn as `alexnet activations` draws them ([`crate::compare::visualize`]) and sent as
//! base64 PNGs. Not part of TF Serving's API; not batched (one image, for a person watching).

use std::sync::Arc;

use axum::Json;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use crate::compare::visualize;
use crate::serve::export::SERVING_SIGNATURE;
use crate::server::error::ApiError;
use crate::server::model::{Column, LoadedModel};
use crate::server::request::{self, Limits};

pub async fn activations(model: Arc<LoadedModel>, body: &[u8], limits: &Limits) -> Result<Response, ApiError> {
    if !model.takes_images() {
        return Err(ApiError::bad_request(format!("the '{SERVING_SIGNATURE}' signature of this model does not take encoded images")));
    }
    let req = request::parse_predict(body, &model, &Limits { max_instances: 1, ..*limits })?;
    let Column::Bytes(mut images) = req.input else {
        return Err(ApiError::bad_request("activations are drawn for the serving_default signature: send one {\"b64\": ...} image"));
    };
    let image = images.remove(0);
    let version = model.version;
    let answer =
        tokio::task::spawn_blocking(move || draw(&model, &image)).await.map_err(|e| ApiError::internal(format!("drawing the activations panicked: {e}")))??;
    Ok(([("x-model-version", version.to_string())], Json(answer)).into_response())
}

/// The prediction, the class names and one PNG per layer.
fn draw(model: &LoadedModel, image: &[u8]) -> Result<Value, ApiError> {
    let (outputs, layers) = model.activations(image).map_err(ApiError::from_run)?;
    let mut pictures = vec![];
    for (name, a) in &layers {
        let img = visualize::picture(a.view()).map_err(|e| ApiError::internal(format!("cannot draw {name}: {e:#}")))?;
        let mut png = std::io::Cursor::new(vec![]);
        img.write_to(&mut png, image::ImageFormat::Png).map_err(|e| ApiError::internal(format!("cannot encode {name}: {e}")))?;
        let png = base64::engine::general_purpose::STANDARD.encode(png.into_inner());
        pictures.push(json!({ "name": name, "shape": a.shape(), "png": png }));
    }
    let mut answer = request::answer(&outputs, false);
    answer["class_names"] = json!(model.class_names);
    answer["layers"] = Value::Array(pictures);
    Ok(answer)
}
