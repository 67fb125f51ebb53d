//! How a run learns, beside what it learns: the optimizer ([`Optimizer`]), the learning rate of
//! every step ([`Rates`]: warmup, then the schedule), per-layer rate multipliers and frozen layers
//! ([`LayerRates`], Caffe's `lr_mult` convention), and the named starting points ([`Recipe`]).
//! All of it is plain data saved in `config.json`; the training graph turns it into ops.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::graph::model::{Layer, ModelConfig, layers};
use crate::run::config::Schedule;

/// A named starting point for a run's flags; any flag given overrides it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Recipe {
    /// The Swift original's: momentum SGD at lr 0.002, one full-set step per epoch, 100 epochs.
    #[default]
    Swift,
    /// Fine-tuning pretrained layers on a folder of a few thousand photos: AdamW, warmup,
    /// cosine decay, label smoothing, crop-flip, the new fc8 at 10x the rate (docs/training.md
    /// has the measurements that chose it).
    Finetune,
}

impl Recipe {
    pub fn name(self) -> &'static str {
        match self {
            Recipe::Swift => "swift",
            Recipe::Finetune => "finetune",
        }
    }
}

/// The update rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Momentum SGD as TensorFlow 1 and Caffe: accum = m * accum + grad; w -= lr * accum
    /// (the Swift recipe's; `--weight-decay` is L2 added to the gradient).
    #[default]
    Sgd,
    /// Keras's `SGD(nesterov=True)`: the momentum buffer holds lr-scaled steps, so a rate that
    /// changes every step (warmup, cosine) moves it as Keras does.
    Nesterov,
    /// Keras's `Adam` (TensorFlow's ApplyAdam; `--weight-decay` is L2 added to the gradient).
    Adam,
    /// Keras's `AdamW`: Adam, and before each update w -= lr * weight_decay * w on the weights
    /// (not the biases).
    Adamw,
}

/// The optimizer and its constants.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Optimizer {
    pub kind: OptimizerKind,
    /// SGD and Nesterov.
    pub momentum: f32,
    /// Adam and AdamW.
    pub beta1: f32,
    pub beta2: f32,
    pub epsilon: f32,
    /// L2 on the gradient (sgd, nesterov, adam) or decoupled (adamw); weights only.
    pub weight_decay: f32,
}

impl Optimizer {
    /// The Swift recipe's: momentum 0.9, no weight decay.
    pub fn sgd(momentum: f32, weight_decay: f32) -> Optimizer {
        Optimizer { kind: OptimizerKind::Sgd, momentum, beta1: 0.9, beta2: 0.999, epsilon: 1e-7, weight_decay }
    }

    /// The names of the slot variables it keeps per trained variable, as TensorFlow 1 named them
    /// (checkpoint keys `conv1/weights/Momentum`, `conv1/weights/Adam`, `conv1/weights/Adam_1`).
    pub fn slot_names(&self) -> &'static [&'static str] {
        match self.kind {
            OptimizerKind::Sgd | OptimizerKind::Nesterov => &["Momentum"],
            OptimizerKind::Adam | OptimizerKind::Adamw => &["Adam", "Adam_1"],
        }
    }

    pub fn describe(&self) -> String {
        let wd = if self.weight_decay > 0.0 { format!(", weight decay {}", self.weight_decay) } else { String::new() };
        match self.kind {
            OptimizerKind::Sgd => format!("momentum SGD (momentum {}{wd})", self.momentum),
            OptimizerKind::Nesterov => format!("Nesterov SGD (momentum {}{wd})", self.momentum),
            OptimizerKind::Adam | OptimizerKind::Adamw => {
                let name = if self.kind == OptimizerKind::Adam { "Adam" } else { "AdamW" };
                format!("{name} (beta1 {}, beta2 {}, epsilon {}{wd})", self.beta1, self.beta2, self.epsilon)
            }
        }
    }
}

/// The learning rate of every step of a run: a linear warmup from 0 over `warmup_steps`, then
/// the schedule over the remaining steps, as Keras's `CosineDecay(initial_learning_rate=0,
/// warmup_target=base, warmup_steps, decay_steps, alpha=min/base)` does for cosine.
#[derive(Clone, Debug, PartialEq)]
pub struct Rates {
    pub base: f32,
    pub min: f32,
    pub schedule: Schedule,
    pub warmup_steps: usize,
    pub steps_per_epoch: usize,
    pub total_steps: usize,
}

impl Rates {
    /// The rate of the run's step `step` (from 0).
    pub fn at(&self, step: usize) -> f32 {
        if step < self.warmup_steps {
            return self.base * (step as f32 / self.warmup_steps as f32);
        }
        match self.schedule {
            Schedule::Constant => self.base,
            Schedule::Step { every, gamma } => self.base * gamma.powi((step / self.steps_per_epoch.max(1) / every.max(1)) as i32),
            Schedule::Cosine => {
                let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
                let t = (step - self.warmup_steps).min(decay_steps) as f32 / decay_steps as f32;
                let alpha = if self.base > 0.0 { self.min / self.base } else { 0.0 };
                let cosine = 0.5 * (1.0 + (std::f32::consts::PI * t).cos());
                ((1.0 - alpha) * cosine + alpha) * self.base
            }
        }
    }
}

/// Each layer's multiplier of the learning rate (Caffe's `lr_mult`); 0 freezes the layer: its
/// gradient is not computed and its weights do not change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LayerRates(pub BTreeMap<String, f32>);

impl LayerRates {
    /// The multiplier of `layer` (1 unless set).
    pub fn of(&self, layer: &str) -> f32 {
        self.0.get(layer).copied().unwrap_or(1.0)
    }

    pub fn frozen(&self, layer: &str) -> bool {
        self.of(layer) == 0.0
    }

    /// Sets `LAYER[-LAYER]=M` (a range in the network's order: `conv1-conv3=0`).
    pub fn set(&mut self, model: &ModelConfig, spec: &str) -> Result<()> {
        let (range, mult) = spec.split_once('=').with_context(|| format!("--lr-mult {spec}: expected LAYER[-LAYER]=M, e.g. fc8=10 or conv1-conv3=0"))?;
        let mult: f32 = mult.trim().parse().with_context(|| format!("--lr-mult {spec}: {mult} is not a number"))?;
        ensure!(mult >= 0.0 && mult.is_finite(), "--lr-mult {spec}: the multiplier must be 0 or more");
        for layer in layer_range(model, range.trim())? {
            self.0.insert(layer.to_string(), mult);
        }
        Ok(())
    }

    /// Freezes `LAYER[-LAYER]` (multiplier 0).
    pub fn freeze(&mut self, model: &ModelConfig, range: &str) -> Result<()> {
        self.set(model, &format!("{range}=0"))
    }

    /// "fc8 x10, conv1-conv5 frozen", or None when every layer trains at the base rate.
    pub fn describe(&self) -> Option<String> {
        let parts: Vec<String> =
            self.0.iter().filter(|(_, m)| **m != 1.0).map(|(l, m)| if *m == 0.0 { format!("{l} frozen") } else { format!("{l} x{m}") }).collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// The layers with parameters from `first` to `last` (`conv1-conv5`), or the one layer.
fn layer_range(model: &ModelConfig, range: &str) -> Result<Vec<&'static str>> {
    let names: Vec<&'static str> = layers(model).iter().filter(|l| matches!(l, Layer::Conv { .. } | Layer::Fc { .. })).map(Layer::name).collect();
    let (first, last) = range.split_once('-').unwrap_or((range, range));
    let find = |n: &str| names.iter().position(|x| *x == n.trim()).with_context(|| format!("no layer {n} (the layers with weights: {})", names.join(", ")));
    let (a, b) = (find(first)?, find(last)?);
    if a > b {
        bail!("{range}: {first} comes after {last} in the network");
    }
    Ok(names[a..=b].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(schedule: Schedule, warmup_steps: usize) -> Rates {
        Rates { base: 0.1, min: 0.0, schedule, warmup_steps, steps_per_epoch: 10, total_steps: 100 }
    }

    #[test]
    fn warmup_climbs_from_zero_then_the_schedule_takes_over() {
        let r = rates(Schedule::Cosine, 20);
        assert_eq!(r.at(0), 0.0);
        assert!((r.at(10) - 0.05).abs() < 1e-7);
        assert!((r.at(20) - 0.1).abs() < 1e-7, "the schedule starts at the base rate");
        assert!((r.at(60) - 0.05).abs() < 1e-6, "half way through the decay");
        assert!(r.at(99) < 0.001 && r.at(99) > 0.0);
        let min = Rates { min: 0.01, ..r };
        assert!((min.at(100) - 0.01).abs() < 1e-7, "cosine ends at --lr-min");
    }

    #[test]
    fn constant_and_step_schedules_keep_their_epoch_meaning() {
        assert_eq!(rates(Schedule::Constant, 0).at(57), 0.1);
        let step = rates(Schedule::Step { every: 3, gamma: 0.1 }, 0);
        assert!((step.at(29) - 0.1).abs() < 1e-9);
        assert!((step.at(30) - 0.01).abs() < 1e-9, "epoch 3's first step");
    }

    #[test]
    fn layer_ranges_follow_the_network_order() {
        let model = ModelConfig::new(2);
        let mut r = LayerRates::default();
        r.set(&model, "fc8=10").unwrap();
        r.freeze(&model, "conv1-conv3").unwrap();
        assert_eq!(r.of("fc8"), 10.0);
        assert!(r.frozen("conv2") && !r.frozen("conv4"));
        assert_eq!(r.describe().unwrap(), "conv1 frozen, conv2 frozen, conv3 frozen, fc8 x10");
        assert!(r.set(&model, "conv5-conv1=0").unwrap_err().to_string().contains("comes after"));
        assert!(r.set(&model, "norm1=0").unwrap_err().to_string().contains("no layer norm1"));
        assert!(r.set(&model, "fc8").is_err());
    }
}
