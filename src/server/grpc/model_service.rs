//! `tensorflow.serving.ModelService`: GetModelStatus lists the versions as the REST API's
//! `GET /v1/models/NAME` does (AVAILABLE, LOADING, END with the load error).

use tonic::{Request, Response, Status};

use crate::proto::tensorflow::error::Code;
use crate::proto::tensorflow::serving as pb;
use crate::server::error::ApiError;
use crate::server::routes::AppState;
use pb::model_version_status::State;

pub struct Models {
    pub state: AppState,
}

#[tonic::async_trait]
impl pb::model_service_server::ModelService for Models {
    async fn get_model_status(&self, request: Request<pb::GetModelStatusRequest>) -> Result<Response<pb::GetModelStatusResponse>, Status> {
        let spec = request.into_inner().model_spec.unwrap_or_default();
        let version = super::spec_version(&spec)?;
        let lines = if spec.name == self.state.model_name { self.state.versions.statuses(version) } else { vec![] };
        if lines.is_empty() {
            return Err(match version {
                Some(v) => ApiError::not_found(format!("Could not find version {v} of model {}", spec.name)),
                None => ApiError::not_found(format!("Could not find any versions of model {}", spec.name)),
            }
            .into());
        }
        let model_version_status = lines
            .into_iter()
            .map(|(v, s)| {
                let state = match s.state {
                    "AVAILABLE" => State::Available,
                    "LOADING" => State::Loading,
                    "END" => State::End,
                    _ => State::Unknown,
                };
                let (error_code, error_message) = match s.error {
                    Some(e) => (Code::Unknown, e),
                    None => (Code::Ok, String::new()),
                };
                pb::ModelVersionStatus {
                    version: v as i64,
                    state: state as i32,
                    status: Some(pb::StatusProto { error_code: error_code as i32, error_message }),
                }
            })
            .collect();
        Ok(Response::new(pb::GetModelStatusResponse { model_version_status }))
    }

    async fn handle_reload_config_request(&self, _: Request<pb::ReloadConfigRequest>) -> Result<Response<pb::ReloadConfigResponse>, Status> {
        Err(Status::failed_precondition("this server serves one model from --model_base_path; start it with --model_config_file to reload a model config"))
    }
}
