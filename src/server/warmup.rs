//! Warmup as TensorFlow Serving does it: before a version is AVAILABLE, the requests recorded in
//! its `assets.extra/tf_serving_warmup_requests` (a TFRecord file of `PredictionLog` protos, at
//! most 1,000) are run once, so the first real requests do not pay for TensorFlow's lazy
//! allocations and kernel choices. The same file warms the version up in TF Serving itself.
//!
//! Only `predict_log` records are replayed: classify, regress and multi-inference records need
//! tf.Example signatures, which an export does not have, and fail the load with a message (TF
//! Serving also fails a load whose warmup fails).

use anyhow::{Context, Result, bail, ensure};
use prost::Message;

use crate::observe::events::decode_records;
use crate::proto::tensorflow::serving::{PredictionLog, prediction_log::LogType};
use crate::serve::export::SERVING_SIGNATURE;
use crate::server::batching::timed_run;
use crate::server::grpc::tensor;
use crate::server::model::LoadedModel;
use crate::server::request::Limits;

/// Where TF Serving looks for the warmup records, under a version folder.
pub const WARMUP_FILE: &str = "assets.extra/tf_serving_warmup_requests";
/// TF Serving's limit on warmup records.
pub const MAX_RECORDS: usize = 1000;

/// Runs every warmup record of `model`'s folder; the number run (0 without a warmup file).
pub fn replay(model: &LoadedModel) -> Result<usize> {
    let path = model.dir.join(WARMUP_FILE);
    if !path.is_file() {
        return Ok(0);
    }
    let name = path.display().to_string();
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read the warmup file {name}"))?;
    let records = decode_records(&bytes, &name)?;
    ensure!(records.len() <= MAX_RECORDS, "{name} holds {} warmup records, more than TF Serving's limit of {MAX_RECORDS}", records.len());
    // Recorded requests are trusted as the model's own files are: no size limits.
    let limits = Limits { max_instances: usize::MAX, max_pixels: u64::MAX };
    for (i, record) in records.iter().enumerate() {
        let log = PredictionLog::decode(*record).with_context(|| format!("{name}: record {i} is not a PredictionLog"))?;
        let Some(LogType::PredictLog(predict)) = log.log_type else {
            bail!("{name}: record {i} is not a predict_log (only Predict requests can be replayed: the export has no tf.Example signatures)");
        };
        let request = predict.request.with_context(|| format!("{name}: record {i} is a predict_log without a request"))?;
        let wanted = request.model_spec.as_ref().map(|s| s.signature_name.as_str()).filter(|s| !s.is_empty()).unwrap_or(SERVING_SIGNATURE);
        let sig = model.signatures.get(wanted).with_context(|| format!("{name}: record {i} asks for signature '{wanted}', which the model lacks"))?;
        let input = tensor::column(&request.inputs, sig, &limits).map_err(|e| anyhow::anyhow!("{name}: record {i}: {}", e.message))?;
        timed_run(model, &sig.name, &input).with_context(|| format!("{name}: record {i} failed to run"))?;
    }
    Ok(records.len())
}
