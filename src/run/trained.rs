//! Reading a trained run back: its recipe and the network parameters of its newest checkpoint,
//! for evaluation, export, prediction and the activation comparison (none of which needs the
//! training graph).

use std::path::{Path, PathBuf};

use anyhow::{Result, ensure};

use crate::graph::model;
use crate::graph::params::LayerParams;
use crate::run::checkpoint;
use crate::run::config::TrainConfig;

/// The checkpoint key of a weight's moving average after the weight's own (TensorFlow 1's
/// `ExponentialMovingAverage` name).
pub const EMA_SUFFIX: &str = "/ExponentialMovingAverage";

/// A trained run, ready for inference: its recipe and the parameters of its newest checkpoint.
pub struct TrainedRun {
    pub config: TrainConfig,
    pub params: Vec<LayerParams>,
    /// The checkpoint prefix the parameters came from, and its epoch.
    pub checkpoint: PathBuf,
    pub epoch: usize,
}

/// Loads a run's config and the network parameters of its latest checkpoint (their moving
/// averages where the run kept them; the optimizer's slots and the epoch counter stay behind). Shared by eval, export and predict.
pub fn load_trained(run_dir: &Path) -> Result<TrainedRun> {
    load_trained_at(run_dir, "latest")
}

/// The same from the checkpoint `which` names: `latest`, `best` or `epoch-N`.
pub fn load_trained_at(run_dir: &Path, which: &str) -> Result<TrainedRun> {
    let config = TrainConfig::read(run_dir)?;
    let (checkpoint, epoch) = checkpoint::named(run_dir, which)?;
    let specs = model::param_specs(&config.model);
    // A run that kept moving averages is used with them (as its validation and best were).
    let suffix = if config.ema > 0.0 { EMA_SUFFIX } else { "" };
    let keys: Vec<String> = specs.iter().flat_map(|s| s.variable_names()).map(|k| format!("{k}{suffix}")).collect();
    let tensors = checkpoint::read_f32(&checkpoint, &keys)?;
    let mut params = vec![];
    for (spec, pair) in specs.iter().zip(tensors.chunks(2)) {
        let (w, b) = (&pair[0], &pair[1]);
        let w_dims: Vec<usize> = w.dims().iter().map(|&d| d as usize).collect();
        ensure!(
            w_dims == spec.weights && b.dims() == [spec.biases as u64],
            "checkpoint {} holds {} of shape {:?} and biases of {:?}, but the run's config.json says {:?} and [{}] (was config.json edited?)",
            checkpoint.display(),
            keys[params.len() * 2],
            w_dims,
            b.dims(),
            spec.weights,
            spec.biases
        );
        params.push(LayerParams {
            layer: spec.layer,
            weights: ndarray::ArrayD::from_shape_vec(w_dims, w.to_vec())?,
            biases: ndarray::Array1::from(b.to_vec()),
        });
    }
    Ok(TrainedRun { config, params, checkpoint, epoch })
}
