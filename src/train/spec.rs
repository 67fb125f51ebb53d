//! The one description of a training graph to build ([`TrainSpec`]): the model, the optimizer,
//! the per-layer rates, the loss's targets, the precision, and how it is replicated ([`Replication`]: alone, in-graph on a
//! cluster, or one worker's graph of between-graph replication), with devices as plain data
//! ([`Placement`]).

use std::collections::HashMap;

use crate::data::pipeline::PipelineSpec;
use crate::graph::model::{ModelConfig, ParamSpec, Precision};
use crate::graph::scoring::Targets;
use crate::run::config::TrainConfig;
use crate::run::recipe::{LayerRates, Optimizer};

/// What [`crate::train::graph::TrainGraph::build`] builds.
#[derive(Clone, Debug)]
pub struct TrainSpec {
    pub model: ModelConfig,
    pub optimizer: Optimizer,
    /// Per-layer rate multipliers; a frozen layer (0) gets no gradient, slot or update.
    pub lr_mults: LayerRates,
    /// Global-norm gradient clipping (0: off).
    pub clip_grad_norm: f32,
    /// Label smoothing and class weights of the loss.
    pub targets: Targets,
    /// Decay of the weights' moving averages (0: none).
    pub ema: f32,
    pub precision: Precision,
    pub replication: Replication,
    /// Batches from the tf.data pipeline in the graph (on a cluster, a copy on each worker's CPU,
    /// each replica taking its part of every batch); None: the data variable.
    pub pipeline: Option<PipelineSpec>,
}

/// How the training graph is replicated.
#[derive(Clone, Debug)]
pub enum Replication {
    /// One replica, on this process's devices.
    Local,
    /// The variables and momentum slots on the ps tasks and one replica per worker of
    /// `placement` (its own copy of the data set, its shard of every batch, its forward pass); the
    /// update uses the shards' gradients weighted by shard size, which is the gradient of the
    /// whole batch's mean loss. `asynchronous`: each replica gets its own update instead, with
    /// its own gradients, run by its own step.
    InGraph { placement: Placement, asynchronous: bool },
    /// One worker's graph, the same on every one of `workers`: `placement` holds only this
    /// worker. Synchronous: the replica's gradients, weighted by its share of the batch, go to
    /// accumulators on the ps, and the update (run by the chief) applies their sums.
    /// Asynchronous: the replica's own step applies its own gradients, as in-graph.
    BetweenGraph { placement: Placement, asynchronous: bool, workers: usize },
}

impl Replication {
    pub fn placement(&self) -> Option<&Placement> {
        match self {
            Replication::Local => None,
            Replication::InGraph { placement, .. } | Replication::BetweenGraph { placement, .. } => Some(placement),
        }
    }

    pub fn asynchronous(&self) -> bool {
        match self {
            Replication::Local => false,
            Replication::InGraph { asynchronous, .. } | Replication::BetweenGraph { asynchronous, .. } => *asynchronous,
        }
    }

    /// Between-graph: the number of workers.
    pub fn between_workers(&self) -> Option<usize> {
        match self {
            Replication::BetweenGraph { workers, .. } => Some(*workers),
            _ => None,
        }
    }
}

impl TrainSpec {
    /// One replica, float32, momentum SGD, every layer trained.
    pub fn local(model: ModelConfig, momentum: f32, weight_decay: f32) -> TrainSpec {
        TrainSpec {
            model,
            optimizer: Optimizer::sgd(momentum, weight_decay),
            lr_mults: LayerRates::default(),
            clip_grad_norm: 0.0,
            targets: Targets::default(),
            ema: 0.0,
            precision: Precision::F32,
            replication: Replication::Local,
            pipeline: None,
        }
    }

    /// A run's graph, replicated as `replication`.
    pub fn of_run(cfg: &TrainConfig, replication: Replication) -> TrainSpec {
        TrainSpec {
            model: cfg.model.clone(),
            optimizer: cfg.optimizer(),
            lr_mults: cfg.lr_mults.clone(),
            clip_grad_norm: cfg.clip_grad_norm,
            targets: Targets { label_smoothing: cfg.label_smoothing, class_weights: cfg.class_weights.clone() },
            ema: cfg.ema,
            precision: cfg.precision,
            replication,
            pipeline: None,
        }
    }

    /// The layers whose weights do not change (rate multiplier 0).
    pub fn frozen_layers(&self) -> Vec<&'static str> {
        crate::graph::model::param_specs(&self.model).iter().map(|p| p.layer).filter(|l| self.lr_mults.frozen(l)).collect()
    }
}

/// "/job:NAME/replica:0/task:N"
pub fn device(job: &str, index: usize) -> String {
    format!("/job:{job}/replica:0/task:{index}")
}

/// Variables on the ps tasks, spread by size; one replica of the forward pass per worker.
#[derive(Clone, Debug)]
pub struct Placement {
    pub workers: Vec<String>,
    /// Variable name ("conv1/weights") to its ps device.
    pub variables: HashMap<String, String>,
}

impl Placement {
    /// Greedy: largest variable first, each to the least loaded ps task.
    pub fn new(n_ps: usize, n_workers: usize, specs: &[ParamSpec]) -> Placement {
        let mut vars: Vec<(String, usize)> = vec![];
        for s in specs {
            let [w, b] = s.variable_names();
            vars.push((w, s.weight_count()));
            vars.push((b, s.biases));
        }
        vars.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut load = vec![0usize; n_ps.max(1)];
        let mut variables = HashMap::new();
        for (name, size) in vars {
            let k = (0..load.len()).min_by_key(|&k| load[k]).unwrap();
            load[k] += size;
            variables.insert(name, device("ps", k));
        }
        Placement { workers: (0..n_workers).map(|i| device("worker", i)).collect(), variables }
    }

    pub fn variable_device(&self, name: &str) -> String {
        self.variables.get(name).cloned().unwrap_or_else(|| device("ps", 0))
    }
}
