//! A run's description: the recipe it was started with ([`TrainConfig`], saved as the run
//! directory's `config.json`) and its learning-rate [`Schedule`]. Training writes it; evaluation,
//! export and prediction read it back.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::data::images::Preprocess;
use crate::data::pipeline::Augment;
use crate::graph::model::{ModelConfig, Precision};
use crate::graph::runtime::RuntimeConfig;
use crate::util::fsutil;

/// Learning rate over epochs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    /// Multiply by `gamma` every `every` epochs.
    Step {
        every: usize,
        gamma: f32,
    },
    /// Cosine decay from the base rate to 0 over the run.
    Cosine,
}

impl Schedule {
    pub fn rate(&self, base: f32, epoch: usize, epochs: usize) -> f32 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step { every, gamma } => base * gamma.powi((epoch / every.max(1)) as i32),
            Schedule::Cosine => {
                let t = epoch as f32 / epochs.max(1) as f32;
                base * 0.5 * (1.0 + (std::f32::consts::PI * t).cos())
            }
        }
    }
}

/// Everything a run was started with; saved as `config.json` in the run directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub classes: Vec<String>,
    pub preprocess: Preprocess,
    pub images: PathBuf,
    pub weights: Option<PathBuf>,
    pub strict_weights: bool,
    /// Train without images that fail to decode (listed as a warning) instead of refusing.
    #[serde(default)]
    pub skip_bad_images: bool,
    pub epochs: usize,
    /// 0: the whole training set in one batch, as the Swift original.
    pub batch_size: usize,
    pub learning_rate: f32,
    pub momentum: f32,
    pub schedule: Schedule,
    pub weight_decay: f32,
    pub dropout: f32,
    pub seed: u64,
    pub val_every: usize,
    pub checkpoint_every: usize,
    /// TensorBoard images (conv1 filters and activations) every N epochs, and at the first and last epoch of each invocation; 0: never.
    #[serde(default = "default_image_summary_every")]
    pub image_summary_every: usize,
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub precision: Precision,
    /// Bytes the decoded data set may take in memory; above, batches are decoded from disk each step.
    #[serde(default = "default_cache_limit")]
    pub cache_limit: u64,
    /// On a cluster: each replica updates the shared variables with its own gradients as soon as
    /// it has them (`--async`), instead of one averaged update per batch.
    #[serde(default)]
    pub async_updates: bool,
    /// Augmentation of the training images (`none`: the Swift recipe).
    #[serde(default)]
    pub augment: Augment,
    /// Drop each epoch's last partial batch instead of training on it.
    #[serde(default)]
    pub drop_remainder: bool,
    /// Decode every image before training (instead of the quick header and tail check).
    #[serde(default)]
    pub strict_images: bool,
    /// Stop after this many validations without a new best val accuracy (0: never).
    #[serde(default)]
    pub early_stop: usize,
    /// A folder of class folders: the fraction of each class held out for validation (the split
    /// itself is saved as the run's `split.json`); None: train/ and val/.
    #[serde(default)]
    pub val_split: Option<f64>,
}

/// 4 GiB: about 6,900 decoded 227 x 227 images.
pub const DEFAULT_CACHE_LIMIT: u64 = 4 << 30;

fn default_cache_limit() -> u64 {
    DEFAULT_CACHE_LIMIT
}

fn default_image_summary_every() -> usize {
    10
}

impl TrainConfig {
    /// The Swift original's recipe for a data set with `classes`.
    pub fn swift_recipe(images: PathBuf, weights: Option<PathBuf>, classes: Vec<String>) -> Self {
        TrainConfig {
            model: ModelConfig::new(classes.len()),
            classes,
            preprocess: Preprocess::default(),
            images,
            weights,
            strict_weights: false,
            skip_bad_images: false,
            epochs: 100,
            batch_size: 0,
            learning_rate: 0.002,
            momentum: 0.9,
            schedule: Schedule::Constant,
            weight_decay: 0.0,
            dropout: 0.5,
            seed: 0,
            val_every: 10,
            checkpoint_every: 10,
            image_summary_every: default_image_summary_every(),
            runtime: RuntimeConfig::default(),
            precision: Precision::F32,
            cache_limit: DEFAULT_CACHE_LIMIT,
            async_updates: false,
            augment: Augment::None,
            drop_remainder: false,
            strict_images: false,
            early_stop: 0,
            val_split: None,
        }
    }

    pub fn read(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join("config.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {} (is {} a run directory?)", path.display(), run_dir.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a valid run config", path.display()))
    }

    pub fn write(&self, run_dir: &Path) -> Result<()> {
        fsutil::write_atomic(&run_dir.join("config.json"), serde_json::to_string_pretty(self)?.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        assert_eq!(Schedule::Constant.rate(0.1, 50, 100), 0.1);
        let step = Schedule::Step { every: 30, gamma: 0.1 };
        assert!((step.rate(0.1, 29, 100) - 0.1).abs() < 1e-9);
        assert!((step.rate(0.1, 30, 100) - 0.01).abs() < 1e-9);
        assert!((Schedule::Cosine.rate(0.1, 0, 100) - 0.1).abs() < 1e-9);
        assert!((Schedule::Cosine.rate(0.1, 50, 100) - 0.05).abs() < 1e-6);
    }
}
