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
use crate::run::recipe::{LayerRates, Optimizer, OptimizerKind, Rates, Recipe};
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
    /// Cosine decay, step by step, from the base rate to `--lr-min` over the run (after any
    /// warmup).
    Cosine,
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
    /// The recipe the run's flags started from (runs before recipes: the Swift recipe).
    #[serde(default)]
    pub recipe: Recipe,
    /// The update rule (`momentum` and `weight_decay` above are its constants too).
    #[serde(default)]
    pub optimizer: OptimizerKind,
    #[serde(default = "default_beta1")]
    pub beta1: f32,
    #[serde(default = "default_beta2")]
    pub beta2: f32,
    #[serde(default = "default_epsilon")]
    pub epsilon: f32,
    /// Epochs (fractions allowed) of linear warmup from 0, before the schedule.
    #[serde(default)]
    pub warmup_epochs: f32,
    /// Where cosine decay ends.
    #[serde(default)]
    pub lr_min: f32,
    /// Keras's label smoothing: targets (1 - S) * onehot + S / classes.
    #[serde(default)]
    pub label_smoothing: f32,
    /// Per-layer multipliers of the learning rate; 0 freezes a layer.
    #[serde(default)]
    pub lr_mults: LayerRates,
    /// Keras's `class_weight`: each example's loss times its class's weight (None: all 1).
    #[serde(default)]
    pub class_weights: Option<Vec<f32>>,
    /// Clip the gradients to this global norm (0: off).
    #[serde(default)]
    pub clip_grad_norm: f32,
    /// Decay of the exponential moving average of the weights kept beside them (0: none); when
    /// kept, validation, `checkpoints/best`, eval, export and predict use the averages.
    #[serde(default)]
    pub ema: f32,
}

/// The finetune recipe's rate multiplier of the layers a run initialises (no weight file).
pub const FINETUNE_NEW_LAYER_MULT: f32 = 10.0;

/// 4 GiB: about 6,900 decoded 227 x 227 images.
pub const DEFAULT_CACHE_LIMIT: u64 = 4 << 30;

fn default_cache_limit() -> u64 {
    DEFAULT_CACHE_LIMIT
}

fn default_image_summary_every() -> usize {
    10
}

fn default_beta1() -> f32 {
    0.9
}

fn default_beta2() -> f32 {
    0.999
}

/// Keras's default.
fn default_epsilon() -> f32 {
    1e-7
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
            recipe: Recipe::Swift,
            optimizer: OptimizerKind::Sgd,
            beta1: default_beta1(),
            beta2: default_beta2(),
            epsilon: default_epsilon(),
            warmup_epochs: 0.0,
            lr_min: 0.0,
            label_smoothing: 0.0,
            lr_mults: LayerRates::default(),
            class_weights: None,
            clip_grad_norm: 0.0,
            ema: 0.0,
        }
    }

    /// The optimizer and its constants.
    pub fn optimizer(&self) -> Optimizer {
        Optimizer {
            kind: self.optimizer,
            momentum: self.momentum,
            beta1: self.beta1,
            beta2: self.beta2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
        }
    }

    /// The learning rate of every step, for `steps_per_epoch` steps an epoch.
    pub fn rates(&self, steps_per_epoch: usize) -> Rates {
        Rates {
            base: self.learning_rate,
            min: self.lr_min,
            schedule: self.schedule.clone(),
            warmup_steps: (self.warmup_epochs as f64 * steps_per_epoch as f64).round() as usize,
            steps_per_epoch,
            total_steps: self.epochs * steps_per_epoch,
        }
    }

    /// The recipe `recipe` for a data set with `classes`, whose `new_layers` have no weight file.
    pub fn for_recipe(recipe: Recipe, images: PathBuf, weights: Option<PathBuf>, classes: Vec<String>, new_layers: &[&str]) -> Self {
        let swift = Self::swift_recipe(images, weights, classes);
        match recipe {
            Recipe::Swift => swift,
            Recipe::Finetune => {
                let mut lr_mults = LayerRates::default();
                for layer in new_layers {
                    lr_mults.0.insert(layer.to_string(), FINETUNE_NEW_LAYER_MULT);
                }
                TrainConfig {
                    recipe,
                    epochs: 30,
                    batch_size: 64,
                    optimizer: OptimizerKind::Adamw,
                    learning_rate: 1e-4,
                    weight_decay: 0.05,
                    schedule: Schedule::Cosine,
                    warmup_epochs: 0.3,
                    label_smoothing: 0.1,
                    augment: Augment::CropFlip,
                    lr_mults,
                    val_every: 1,
                    checkpoint_every: 1,
                    ..swift
                }
            }
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
