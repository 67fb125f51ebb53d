//! `tensorflow.serving.PredictionService`: Predict runs a signature as the REST `:predict` does
//! (same checks, same batching queue, same session), GetModelMetadata lists the signatures as a
//! `SignatureDefMap` packed in an `Any`, as TF Serving sends it.

use tonic::{Request, Response, Status};

use crate::proto::tensorflow as tf;
use crate::proto::tensorflow::serving as pb;
use crate::serve::export::SERVING_SIGNATURE;
use crate::server::error::ApiError;
use crate::server::metrics;
use crate::server::model::LoadedModel;
use crate::server::routes::{AppState, find_model};

use super::{answered_spec, spec_version, tensor};

pub struct Prediction {
    pub state: AppState,
}

/// Why the tf.Example APIs are not served, for their UNIMPLEMENTED answers.
const NO_EXAMPLES: &str = "needs a signature that takes serialized tf.Example protos, which alexnet export does not write: \
     call Predict (signature serving_default takes encoded images), or POST /v1/models/NAME:classify on the REST API";

#[tonic::async_trait]
impl pb::prediction_service_server::PredictionService for Prediction {
    async fn classify(&self, _: Request<pb::ClassificationRequest>) -> Result<Response<pb::ClassificationResponse>, Status> {
        Err(Status::unimplemented(format!("Classify {NO_EXAMPLES}")))
    }

    async fn regress(&self, _: Request<pb::RegressionRequest>) -> Result<Response<pb::RegressionResponse>, Status> {
        Err(Status::unimplemented(format!("Regress {NO_EXAMPLES}")))
    }

    async fn multi_inference(&self, _: Request<pb::MultiInferenceRequest>) -> Result<Response<pb::MultiInferenceResponse>, Status> {
        Err(Status::unimplemented(format!("MultiInference {NO_EXAMPLES}")))
    }

    async fn predict(&self, request: Request<pb::PredictRequest>) -> Result<Response<pb::PredictResponse>, Status> {
        let started = std::time::Instant::now();
        let name = request.get_ref().model_spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
        let answer = self.answer_predict(request).await;
        let status = answer.as_ref().map_or_else(|e| super::code_name(e.code()), |_| "OK".to_string());
        metrics::request(&name, "predict", "GRPC", &status, started.elapsed());
        answer
    }

    async fn get_model_metadata(&self, request: Request<pb::GetModelMetadataRequest>) -> Result<Response<pb::GetModelMetadataResponse>, Status> {
        self.metadata(request).await
    }
}

impl Prediction {
    async fn answer_predict(&self, request: Request<pb::PredictRequest>) -> Result<Response<pb::PredictResponse>, Status> {
        let deadline = super::deadline(&request);
        let req = request.into_inner();
        let spec = req.model_spec.unwrap_or_default();
        let model = self.model(&spec)?;
        let sig_name = if spec.signature_name.is_empty() { SERVING_SIGNATURE } else { spec.signature_name.as_str() };
        let sig = model.signatures.get(sig_name).ok_or_else(|| {
            let have: Vec<&str> = model.signatures.keys().map(|s| s.as_str()).collect();
            ApiError::bad_request(format!("the model has no signature \"{sig_name}\" (it has {})", have.join(", ")))
        })?;
        if let Some(unknown) = req.output_filter.iter().find(|k| !sig.outputs.iter().any(|o| o.key == **k)) {
            return Err(ApiError::bad_request(format!("output tensor alias not found in signature: {unknown} (signature '{sig_name}')")).into());
        }
        let input = tensor::column(&req.inputs, sig, &self.state.limits)?;
        let run = self.state.runner.run(model.clone(), sig.name.clone(), input);
        let outputs = match deadline {
            Some(at) => tokio::time::timeout_at(at, run)
                .await
                .map_err(|_| Status::deadline_exceeded("Deadline exceeded: the call's deadline passed before its answer"))??,
            None => run.await?,
        };
        let outputs =
            outputs.iter().filter(|o| req.output_filter.is_empty() || req.output_filter.contains(&o.key)).map(|o| (o.key.clone(), tensor::proto(o))).collect();
        Ok(Response::new(pb::PredictResponse { model_spec: Some(answered_spec(&spec.name, model.version, sig_name)), outputs }))
    }

    async fn metadata(&self, request: Request<pb::GetModelMetadataRequest>) -> Result<Response<pb::GetModelMetadataResponse>, Status> {
        let req = request.into_inner();
        let spec = req.model_spec.unwrap_or_default();
        if req.metadata_field.is_empty() {
            return Err(Status::invalid_argument("GetModelMetadataRequest must specify at least one metadata_field (signature_def)"));
        }
        if let Some(other) = req.metadata_field.iter().find(|f| *f != "signature_def") {
            return Err(Status::invalid_argument(format!("Metadata field {other} is not supported (only signature_def)")));
        }
        let model = self.model(&spec)?;
        let map = pb::SignatureDefMap { signature_def: model.signatures.values().map(|s| (s.name.clone(), signature_def(s))).collect() };
        let any = prost_types::Any { type_url: "type.googleapis.com/tensorflow.serving.SignatureDefMap".into(), value: prost::Message::encode_to_vec(&map) };
        Ok(Response::new(pb::GetModelMetadataResponse {
            model_spec: Some(answered_spec(&spec.name, model.version, "")),
            metadata: [("signature_def".to_string(), any)].into(),
        }))
    }

    fn model(&self, spec: &pb::ModelSpec) -> Result<std::sync::Arc<LoadedModel>, ApiError> {
        find_model(&self.state, &spec.name, spec_version(spec)?)
    }
}

fn signature_def(s: &crate::server::model::Signature) -> tf::SignatureDef {
    tf::SignatureDef {
        inputs: [(s.input.key.clone(), tensor::tensor_info(&s.input))].into(),
        outputs: s.outputs.iter().map(|o| (o.key.clone(), tensor::tensor_info(o))).collect(),
        method_name: s.method_name.clone(),
        defaults: Default::default(),
    }
}
