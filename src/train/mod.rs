//! Training: the Swift original's recipe (momentum SGD on mean softmax cross-entropy), with run
//! directories, checkpoints and exact resumption.
//!
//! The decoded images live in a TensorFlow variable and each step feeds only the indices of its
//! batch, so no image data crosses the C API per step (unless the decoded set would exceed
//! `cache_limit`: then each batch is decoded from disk and fed, and the variable stays empty).
//! Shuffles come from the host RNG keyed by (seed, epoch) and dropout masks from stateless ops
//! keyed by (seed, step): a resumed run draws exactly what the uninterrupted run would have.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use tensorflow::{DataType, Operation, Output, Scope, Session, SessionRunArgs, Shape, Tensor, ops};

use crate::distributed::between_graph;
use crate::run::checkpoint::{self, Saver};
use crate::distributed::cluster::{ClusterConfig, Placement, Server};
use crate::data::images::{self as data, Dataset, Decoder, Preprocess};
use crate::util::fsutil;
use crate::run::metrics::{self, Row};
use crate::graph::model::{self, ModelConfig, Network, Precision};
use crate::graph::runtime::RuntimeConfig;
use crate::observe::plot;
use crate::observe::tensorboard;
use crate::data::weights::{self, LayerParams, LoadOptions};

/// Learning rate over epochs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    /// Multiply by `gamma` every `every` epochs.
    Step { every: usize, gamma: f32 },
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

/// A trained run, ready for inference: its recipe and the parameters of its newest checkpoint.
pub struct TrainedRun {
    pub config: TrainConfig,
    pub params: Vec<LayerParams>,
    /// The checkpoint prefix the parameters came from, and its epoch.
    pub checkpoint: PathBuf,
    pub epoch: usize,
}

/// Loads a run's config and the network parameters of its latest checkpoint (the momentum
/// slots and the epoch counter stay behind). Shared by eval, export and predict.
pub fn load_trained(run_dir: &Path) -> Result<TrainedRun> {
    let config = TrainConfig::read(run_dir)?;
    let (checkpoint, epoch) = checkpoint::latest(run_dir)?.with_context(|| {
        format!("{} has no checkpoint yet: train it first (alexnet train --run-dir {})", run_dir.display(), run_dir.display())
    })?;
    let specs = model::param_specs(&config.model);
    let keys: Vec<String> = specs.iter().flat_map(|s| s.variable_names()).collect();
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

/// The training graph: data variables, the network, loss, momentum updates, saver.
pub struct TrainGraph {
    /// Owns the graph (the crate's Graph is reached through its Scope).
    pub scope: Scope,
    pub net: Network,
    /// The batch's logits with dropout off, from the training forward pass's convolutions
    /// (replica 0's on a cluster).
    pub eval_logits: Output,
    learning_rate: Output,
    dropout_rate: Output,
    pub loss: Output,
    train_op: Operation,
    /// One per replica (one without a cluster).
    shards: Vec<Shard>,
    /// With asynchronous updates, each replica's own step (empty otherwise).
    replica_steps: Vec<ReplicaStep>,
    slots_init: Vec<Operation>,
    pub saver: Saver,
    /// Between-graph replication: the ops of the protocol between the workers.
    pub(crate) between: Option<between_graph::Protocol>,
}

impl TrainGraph {
    pub fn build(cfg: &ModelConfig, momentum: f32, weight_decay: f32) -> Result<TrainGraph> {
        Self::build_with(cfg, momentum, weight_decay, Precision::F32)
    }

    pub fn build_with(cfg: &ModelConfig, momentum: f32, weight_decay: f32, precision: Precision) -> Result<TrainGraph> {
        Self::build_placed(cfg, momentum, weight_decay, precision, None, false)
    }

    /// With a `placement`, the variables and momentum slots go on the ps tasks and each worker
    /// gets a replica (its own copy of the data set, its shard of every batch, its forward pass);
    /// the update uses the shards' gradients weighted by shard size, which is the gradient of the
    /// whole batch's mean loss. With `async_updates`, each replica gets its own update instead,
    /// with its own gradients, run by its own step (`replica_steps`).
    pub fn build_placed(
        cfg: &ModelConfig,
        momentum: f32,
        weight_decay: f32,
        precision: Precision,
        placement: Option<&Placement>,
        async_updates: bool,
    ) -> Result<TrainGraph> {
        Self::build_inner(cfg, momentum, weight_decay, precision, placement, async_updates, None)
    }

    /// Between-graph replication: one worker's graph, the same on every worker of `workers`.
    /// `placement` holds only this worker (see [`crate::distributed::cluster::ClusterConfig::own_placement`]).
    /// Synchronous: the replica's gradients, weighted by its share of the batch, go to
    /// accumulators on the ps, and the update (run by the chief) applies their sums.
    /// Asynchronous: the replica's own step applies its own gradients, as in-graph.
    pub fn build_between(
        cfg: &ModelConfig,
        momentum: f32,
        weight_decay: f32,
        precision: Precision,
        placement: &Placement,
        async_updates: bool,
        workers: usize,
    ) -> Result<TrainGraph> {
        ensure!(placement.workers.len() == 1, "a between-graph worker builds only its own replica");
        Self::build_inner(cfg, momentum, weight_decay, precision, Some(placement), async_updates, Some(workers))
    }

    fn build_inner(
        cfg: &ModelConfig,
        momentum: f32,
        weight_decay: f32,
        precision: Precision,
        placement: Option<&Placement>,
        async_updates: bool,
        between: Option<usize>,
    ) -> Result<TrainGraph> {
        ensure!(!async_updates || placement.is_some(), "asynchronous updates need a cluster");
        let mut scope = Scope::new_root_scope();
        let s = &mut scope;
        let dropout = model::dropout_inputs(s)?;
        // Each replica's loss and gradients, for its own update when asynchronous.
        let mut own: Vec<(Output, Vec<Output>)> = vec![];
        let (net, loss, grads, shards, local_loss) = match placement {
            None => {
                let r = build_replica(s, cfg, &dropout, precision, None, "", "")?;
                (r.net, r.loss.clone(), r.grads, vec![r.shard], r.loss)
            }
            Some(p) => {
                let shared = model::create_vars(s, cfg, &|name| p.variable_device(name))?;
                let mut replicas = vec![];
                for (i, dev) in p.workers.iter().enumerate() {
                    let rs = &mut s.new_sub_scope(&format!("replica_{i}")).with_device(dev);
                    // Replica 0 is built in place (its unplaced backward ops run on the chief,
                    // which is worker 0); the others are imported, to put their backward on
                    // their worker too.
                    let mut r = if i == 0 {
                        build_replica(rs, cfg, &dropout, precision, Some(&shared), &format!("replica_{i}/"), dev)?
                    } else {
                        import_replica(s, cfg, &dropout, precision, &shared, i, dev)?
                    };
                    r.shard.weight = Some(
                        ops::Placeholder::new()
                            .dtype(DataType::Float)
                            .shape(Shape::from(Some(vec![])))
                            .build(&mut rs.with_op_name("shard_weight"))?
                            .into(),
                    );
                    replicas.push(r);
                }
                // The weighted sums: the batch's mean loss and its gradients.
                let s = &mut s.new_sub_scope("average");
                let weighted = |s: &mut Scope, x: &dyn Fn(&Replica) -> Output| -> Result<Output> {
                    let mut acc: Option<Output> = None;
                    for r in &replicas {
                        let term: Output = ops::mul(r.shard.weight.clone().unwrap(), x(r), s)?.into();
                        acc = Some(match acc {
                            None => term,
                            Some(a) => ops::add(a, term, s)?.into(),
                        });
                    }
                    Ok(acc.unwrap())
                };
                let loss = weighted(s, &|r| r.loss.clone())?;
                let mut grads = vec![];
                if async_updates {
                    own = replicas.iter().map(|r| (r.loss.clone(), r.grads.clone())).collect();
                } else {
                    for j in 0..replicas[0].grads.len() {
                        grads.push(weighted(s, &|r| r.grads[j].clone())?);
                    }
                }
                let shards = replicas.iter().map(|r| r.shard.clone()).collect();
                let local_loss = replicas[0].loss.clone();
                (replicas.swap_remove(0).net, loss, grads, shards, local_loss)
            }
        };
        // The inference head (dropout off) shares the convolutions of the first replica.
        let head_device = placement.map(|p| p.workers[0].clone()).unwrap_or_default();
        let eval_logits = model::inference_head(&mut s.new_sub_scope("eval").with_device(&head_device), &net)?;
        let variables = net.variables();
        let slot_device = |v: &tensorflow::Variable| placement.map(|p| p.variable_device(v.name())).unwrap_or_default();

        let learning_rate: Output = ops::Placeholder::new()
            .dtype(DataType::Float)
            .shape(Shape::from(Some(vec![])))
            .build(&mut s.with_op_name("learning_rate"))?
            .into();
        let (train_op, replica_train_ops, slots, slots_init, sync) = {
            let s = &mut s.new_sub_scope("train");
            let momentum = ops::constant(momentum, s)?;
            let decay = ops::constant(weight_decay, s)?;
            let mut slots = vec![];
            let mut slots_init = vec![];
            for v in &variables {
                let dims: Vec<i64> = shape_dims(v.shape())?;
                let slot_scope = &mut s.new_sub_scope(&v.name().replace('/', "_"));
                let dims_t = ops::constant(&dims[..], slot_scope)?;
                let zero = ops::constant(0.0f32, slot_scope)?;
                let zeros = ops::fill(dims_t, zero, slot_scope)?;
                let slot = tensorflow::Variable::builder()
                    .initial_value(zeros)
                    .data_type(DataType::Float)
                    .shape(v.shape().clone())
                    .build(&mut s.with_op_name(&format!("{}/Momentum", v.name())).with_device(&slot_device(v)))?;
                slots_init.push(slot.initializer().clone());
                slots.push(slot);
            }
            // Between-graph, synchronous: the update applies the sums of the workers' pushed
            // gradients (each already weighted by its share of the batch).
            let accumulated = match (between, placement) {
                (Some(n), Some(p)) if own.is_empty() => Some(between_graph::accumulate(
                    &mut s.new_sub_scope("between_graph"),
                    &variables,
                    &grads,
                    loss.clone(),
                    local_loss.clone(),
                    n,
                    &|name| p.variable_device(name),
                )?),
                _ => None,
            };
            // One momentum update of every variable from `grads`, after all of `grads` (and
            // `after`) are computed.
            let mut update = |grads: &[Output], after: Vec<Operation>, name: &str| -> Result<Operation> {
                let mut grad_ops = after;
                let mut grad_outputs = vec![];
                for (v, g) in variables.iter().zip(grads) {
                    let g = g.clone();
                    // L2 weight decay on weights only, as Caffe does.
                    let g: Output = if weight_decay != 0.0 && v.name().ends_with("/weights") {
                        // Between-graph, on the variable's ps, where the summed gradient is: the
                        // chief then moves no weights or gradients to update.
                        let dev = if between.is_some() { slot_device(v) } else { String::new() };
                        let s = &mut s.with_device(&dev);
                        let scaled = ops::mul(decay.clone(), v.output().clone(), s)?;
                        ops::add(g, scaled, s)?.into()
                    } else {
                        g
                    };
                    grad_ops.push(g.operation.clone());
                    grad_outputs.push(g);
                }
                let mut step = ops::NoOp::new();
                for ((v, slot), g) in variables.iter().zip(&slots).zip(grad_outputs) {
                    // Every gradient is computed before any variable changes: ref variables are
                    // read in place, and an update racing a backward op would change its result.
                    // (Asynchronous replicas only wait for their own gradients: their updates
                    // race the others' passes, by design.)
                    let mut apply = ops::ApplyMomentum::new();
                    for op in &grad_ops {
                        apply = apply.add_control_input(op.clone());
                    }
                    let a = apply.build(v.output().clone(), slot.output().clone(), learning_rate.clone(), g, momentum.clone(), s)?;
                    step = step.add_control_input(a);
                }
                Ok(step.build(&mut s.with_op_name(name))?)
            };
            if let Some((sums, sync)) = accumulated {
                (update(&sums, vec![], "step")?, vec![], slots, slots_init, Some(sync))
            } else if own.is_empty() {
                // The inference head reads fc weights too: it must finish before they change (on
                // a cluster it isn't fetched with the step, so nothing waits for it).
                let after = if shards.len() == 1 { vec![eval_logits.operation.clone()] } else { vec![] };
                (update(&grads, after, "step")?, vec![], slots, slots_init, None)
            } else {
                let mut ops = vec![];
                for (i, (_, g)) in own.iter().enumerate() {
                    ops.push(update(g, vec![], &format!("replica_{i}_step"))?);
                }
                // The train op of a synchronous step would be meaningless: replica 0's stands in.
                (ops[0].clone(), ops, slots, slots_init, None)
            }
        };
        let between = match between {
            Some(n) => Some(between_graph::Protocol::build(&mut s.new_sub_scope("between_graph"), n, &train_op, sync)?),
            None => None,
        };
        let replica_steps = own
            .iter()
            .zip(&shards)
            .zip(replica_train_ops)
            .map(|(((loss, _), shard), train_op)| ReplicaStep {
                indices: shard.indices.clone(),
                seed: shard.seed.clone(),
                learning_rate: learning_rate.clone(),
                dropout_rate: dropout.rate.clone(),
                loss: loss.clone(),
                train_op,
            })
            .collect();

        let mut saved: Vec<(String, Output)> = variables.iter().map(|v| (v.name().to_string(), v.output().clone())).collect();
        saved.extend(slots.iter().map(|v| (v.name().to_string(), v.output().clone())));
        let saver = Saver::build(s, &saved)?;

        Ok(TrainGraph {
            scope,
            net,
            eval_logits,
            learning_rate,
            dropout_rate: dropout.rate,
            loss,
            train_op,
            shards,
            replica_steps,
            slots_init,
            saver,
            between,
        })
    }

    /// Feeds the data set and the initial parameters into the variables.
    pub fn initialise(&self, session: &Session, images: &Tensor<f32>, labels: &[i32], params: &[LayerParams]) -> Result<()> {
        self.load_data(session, images, labels)?;
        self.init_variables(session, params)
    }

    /// Puts the decoded data set into the graph (steps then feed only indices).
    pub fn load_data(&self, session: &Session, images: &Tensor<f32>, labels: &[i32]) -> Result<()> {
        let labels_t = Tensor::<i32>::new(&[labels.len() as u64]).with_values(labels)?;
        for shard in &self.shards {
            let mut args = SessionRunArgs::new();
            args.add_feed(&shard.images_init.0.operation, 0, images);
            args.add_target(&shard.images_init.1);
            args.add_feed(&shard.labels_init.0.operation, 0, &labels_t);
            args.add_target(&shard.labels_init.1);
            session.run(&mut args).context("cannot load the data set into the graph")?;
        }
        Ok(())
    }

    /// The initial parameters, and zero momentum.
    pub fn init_variables(&self, session: &Session, params: &[LayerParams]) -> Result<()> {
        init_params(session, &self.net, params)?;
        let mut args = SessionRunArgs::new();
        for op in &self.slots_init {
            args.add_target(op);
        }
        session.run(&mut args)?;
        Ok(())
    }

    /// One momentum-SGD step on the examples at `batch`; returns the batch's mean loss.
    pub fn step(&self, session: &Session, batch: &[i32], lr: f32, dropout: f32, seed: [i64; 2]) -> Result<f32> {
        Ok(self.run_step(session, &Batch::indices(batch)?, lr, dropout, seed)?.loss)
    }

    /// One momentum-SGD step; also returns the batch's inference-mode logits before the update.
    pub fn run_step(&self, session: &Session, batch: &Batch, lr: f32, dropout: f32, seed: [i64; 2]) -> Result<StepOutput> {
        ensure!(self.replica_steps.is_empty(), "an asynchronous graph has no synchronous step: run its replica_steps()");
        let feeds = StepFeeds::for_replicas(lr, dropout, seed, self.shards.len())?;
        let split;
        let batch = match batch {
            Batch::Indices(idx) if self.shards.len() > 1 => {
                split = self.split(idx)?;
                &split
            }
            b => b,
        };
        let mut args = SessionRunArgs::new();
        self.feed_step(&mut args, batch, &feeds);
        let loss = args.request_fetch(&self.loss.operation, self.loss.index);
        // Replica 0's head sees only its shard: on a cluster the step returns no logits.
        let logits = (self.shards.len() == 1).then(|| args.request_fetch(&self.eval_logits.operation, self.eval_logits.index));
        session.run(&mut args)?;
        let logits = match logits {
            Some(token) => args.fetch::<f32>(token)?.chunks(self.net.config.classes).map(|c| c.to_vec()).collect(),
            None => vec![],
        };
        Ok(StepOutput { loss: args.fetch::<f32>(loss)?[0], logits })
    }

    /// Logits of the examples at `indices`, dropout off, in chunks of `chunk`.
    pub fn logits(&self, session: &Session, indices: &[i32], chunk: usize) -> Result<Vec<Vec<f32>>> {
        let mut out = vec![];
        for part in indices.chunks(chunk.max(1)) {
            out.extend(self.batch_logits(session, &Batch::indices(part)?)?);
        }
        Ok(out)
    }

    /// Logits of one batch, dropout off.
    pub fn batch_logits(&self, session: &Session, batch: &Batch) -> Result<Vec<Vec<f32>>> {
        let mut args = SessionRunArgs::new();
        let f = self.feed_logits(&mut args, batch);
        session.run(&mut args)?;
        let t: Tensor<f32> = args.fetch(f)?;
        Ok(t.chunks(self.net.config.classes).map(|c| c.to_vec()).collect())
    }

    /// A training step's feeds and target (no fetches).
    pub fn feed_step<'a>(&'a self, args: &mut SessionRunArgs<'a>, batch: &'a Batch, feeds: &'a StepFeeds) {
        self.feed_batch(args, batch);
        args.add_feed(&self.learning_rate.operation, self.learning_rate.index, &feeds.lr);
        args.add_feed(&self.dropout_rate.operation, self.dropout_rate.index, &feeds.dropout);
        for (shard, seed) in self.shards.iter().zip(&feeds.seeds) {
            args.add_feed(&shard.seed.operation, shard.seed.index, seed);
        }
        args.add_target(&self.train_op);
    }

    /// Feeds a training step of the first replica on the rows `idx`, with its share `weight` of
    /// the batch (a between-graph worker's part); no target, no fetch.
    pub(crate) fn feed_part<'a>(&'a self, args: &mut SessionRunArgs<'a>, idx: &'a Tensor<i32>, weight: &'a Tensor<f32>, feeds: &'a StepFeeds) {
        let first = &self.shards[0];
        args.add_feed(&first.indices.operation, first.indices.index, idx);
        if let Some(w) = &first.weight {
            args.add_feed(&w.operation, w.index, weight);
        }
        args.add_feed(&self.learning_rate.operation, self.learning_rate.index, &feeds.lr);
        args.add_feed(&self.dropout_rate.operation, self.dropout_rate.index, &feeds.dropout);
        args.add_feed(&first.seed.operation, first.seed.index, &feeds.seeds[0]);
    }

    /// The learning rate's placeholder.
    pub(crate) fn learning_rate(&self) -> &Output {
        &self.learning_rate
    }

    /// The update op of a synchronous step.
    pub(crate) fn train_op(&self) -> &Operation {
        &self.train_op
    }

    /// An inference pass's feeds, and its logits fetch.
    pub fn feed_logits<'a>(&'a self, args: &mut SessionRunArgs<'a>, batch: &'a Batch) -> tensorflow::FetchToken {
        self.feed_batch(args, batch);
        args.request_fetch(&self.net.logits.operation, self.net.logits.index)
    }

    /// Feeds indices into the data variable, or the images and labels themselves (unsplit
    /// batches go to the first replica: the one whose forward pass inference reads).
    pub(crate) fn feed_batch<'a>(&self, args: &mut SessionRunArgs<'a>, batch: &'a Batch) {
        let first = &self.shards[0];
        match batch {
            Batch::Indices(idx) => args.add_feed(&first.indices.operation, first.indices.index, idx),
            Batch::Split(parts) => {
                for (shard, (idx, weight)) in self.shards.iter().zip(parts) {
                    args.add_feed(&shard.indices.operation, shard.indices.index, idx);
                    if let Some(w) = &shard.weight {
                        args.add_feed(&w.operation, w.index, weight);
                    }
                }
            }
            Batch::Fed { images, labels } => {
                // Feeding the gather ops' outputs prunes the data variable from the run.
                args.add_feed(&first.batch_images.operation, first.batch_images.index, images);
                args.add_feed(&first.batch_labels.operation, first.batch_labels.index, labels);
            }
        }
    }

    /// A batch of rows cut into one contiguous part per replica, sizes differing by at most
    /// one, each weighted by its share (the weighted sum of the parts' mean losses is the
    /// batch's).
    fn split(&self, idx: &[i32]) -> Result<Batch> {
        let n = self.shards.len();
        ensure!(idx.len() >= n, "a batch of {} examples cannot be split across {n} workers: use a larger --batch-size", idx.len());
        let mut parts = vec![];
        for i in 0..n {
            let part = split_part(idx, i, n);
            parts.push((Tensor::<i32>::new(&[part.len() as u64]).with_values(part)?, Tensor::<f32>::from(part.len() as f32 / idx.len() as f32)));
        }
        Ok(Batch::Split(parts))
    }

    /// Current values of every layer's parameters.
    pub fn params(&self, session: &Session) -> Result<Vec<LayerParams>> {
        read_params(session, &self.net)
    }

    /// With asynchronous updates, each replica's own step; empty otherwise.
    pub fn replica_steps(&self) -> &[ReplicaStep] {
        &self.replica_steps
    }
}

/// Part `i` of `n` contiguous parts of `idx`, sizes differing by at most one.
pub fn split_part(idx: &[i32], i: usize, n: usize) -> &[i32] {
    let start = i * (idx.len() / n) + i.min(idx.len() % n);
    let len = idx.len() / n + usize::from(i < idx.len() % n);
    &idx[start..start + len]
}

/// One replica's asynchronous step: its handles into the graph, apart from the TrainGraph (whose
/// Scope is not Sync) so that each replica's thread can run it on the shared session.
#[derive(Clone)]
pub struct ReplicaStep {
    indices: Output,
    seed: Output,
    learning_rate: Output,
    dropout_rate: Output,
    loss: Output,
    train_op: Operation,
}

impl ReplicaStep {
    /// Updates the shared variables with this replica's gradients on the examples at `idx`;
    /// returns their mean loss.
    pub fn run(&self, session: &Session, idx: &[i32], lr: f32, dropout: f32, seed: [i64; 2]) -> Result<f32> {
        let idx = Tensor::<i32>::new(&[idx.len() as u64]).with_values(idx)?;
        let feeds = StepFeeds::new(lr, dropout, seed)?;
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.indices.operation, self.indices.index, &idx);
        args.add_feed(&self.learning_rate.operation, self.learning_rate.index, &feeds.lr);
        args.add_feed(&self.dropout_rate.operation, self.dropout_rate.index, &feeds.dropout);
        args.add_feed(&self.seed.operation, self.seed.index, &feeds.seeds[0]);
        args.add_target(&self.train_op);
        let loss = args.request_fetch(&self.loss.operation, self.loss.index);
        session.run(&mut args)?;
        Ok(args.fetch::<f32>(loss)?[0])
    }
}

/// The per-replica part of the graph: where the batch comes from, and what it feeds.
#[derive(Clone)]
struct Shard {
    indices: Output,
    /// The gathered batch: fed directly when the data set is streamed from disk.
    batch_images: Output,
    batch_labels: Output,
    /// The shard's share of the batch (None without a cluster).
    weight: Option<Output>,
    /// The replica's dropout seed: replicas draw different masks.
    seed: Output,
    images_init: (Output, Operation),
    labels_init: (Output, Operation),
}

struct Replica {
    shard: Shard,
    net: Network,
    loss: Output,
    grads: Vec<Output>,
}

/// Data variables, batch gather, forward pass, loss and gradients, all in `s` (on `device`).
fn build_replica(s: &mut Scope, cfg: &ModelConfig, dropout: &model::Dropout, precision: Precision, shared: Option<&[model::LayerVars]>, name_prefix: &str, device: &str) -> Result<Replica> {
    let side = cfg.input_size as i64;
    // The decoded data set, train and val together, fed once.
    let (images, images_init) = fed_variable(&mut s.new_sub_scope("data"), "images", DataType::Float, &[None, Some(side), Some(side), Some(3)], device)?;
    let (labels, labels_init) = fed_variable(&mut s.new_sub_scope("data"), "labels", DataType::Int32, &[None], device)?;
    let indices: Output = ops::Placeholder::new()
        .dtype(DataType::Int32)
        .shape(Shape::from(Some(vec![None])))
        .build(&mut s.with_op_name("indices"))?
        .into();
    let axis = ops::constant(0i32, s)?;
    let batch_images: Output = ops::gather_v2(images, indices.clone(), axis.clone(), &mut s.with_op_name("batch_images"))?.into();
    let batch_labels: Output = ops::gather_v2(labels, indices.clone(), axis, &mut s.with_op_name("batch_labels"))?.into();
    let net = match shared {
        None => model::build_with(s, cfg, batch_images.clone(), dropout, precision)?,
        Some(vars) => model::build_shared(s, cfg, batch_images.clone(), dropout, precision, vars)?,
    };
    let loss = softmax_loss(&mut s.new_sub_scope("loss"), net.logits.clone(), batch_labels.clone(), cfg.classes)?;
    let grads = crate::graph::gradients::gradients_named(s, &net, loss.clone(), name_prefix)?;
    let seed = dropout.seed.clone();
    Ok(Replica { shard: Shard { indices, batch_images, batch_labels, weight: None, seed, images_init, labels_init }, net, loss, grads })
}

/// A replica built in a graph of its own and imported with `dev` as the default device: ops
/// that add_gradients creates carry no device, and import is where TensorFlow's C API lets a
/// default one be given. Its variables and drop rate are mapped onto the shared ones; it keeps
/// its own dropout seed.
fn import_replica(s: &mut Scope, cfg: &ModelConfig, dropout: &model::Dropout, precision: Precision, shared: &[model::LayerVars], i: usize, dev: &str) -> Result<Replica> {
    let mut own = Scope::new_root_scope();
    let own_dropout = model::dropout_inputs(&mut own)?;
    let r = build_replica(&mut own, cfg, &own_dropout, precision, None, "", "")?;
    let def = own.graph().graph_def()?;
    let mut opts = tensorflow::ImportGraphDefOptions::new();
    opts.set_prefix(&format!("replica_{i}"))?;
    opts.set_default_device(dev)?;
    for v in shared {
        for var in [&v.weights, &v.biases] {
            opts.add_input_mapping(var.name(), 0, var.output())?;
        }
    }
    let rate = &own_dropout.rate;
    opts.add_input_mapping(&rate.operation.name()?, rate.index as usize, &dropout.rate)?;
    let mut wanted: Vec<Output> = vec![
        r.shard.indices.clone(),
        r.loss.clone(),
        r.shard.images_init.0.clone(),
        r.shard.images_init.1.output(0),
        r.shard.labels_init.0.clone(),
        r.shard.labels_init.1.output(0),
        r.shard.batch_images.clone(),
        r.shard.batch_labels.clone(),
        own_dropout.seed.clone(),
    ];
    let first_grad = wanted.len();
    wanted.extend(r.grads.iter().cloned());
    for o in &wanted {
        opts.add_return_output(&o.operation.name()?, o.index as usize)?;
    }
    let outs = s.graph_mut().import_graph_def_with_return_outputs(&def, &opts)?;
    let shard = Shard {
        indices: outs[0].clone(),
        weight: None,
        images_init: (outs[2].clone(), outs[3].operation.clone()),
        labels_init: (outs[4].clone(), outs[5].operation.clone()),
        batch_images: outs[6].clone(),
        batch_labels: outs[7].clone(),
        seed: outs[8].clone(),
    };
    // The network handle stays replica 0's: only its forward pass is read (eval, TensorBoard).
    Ok(Replica { shard, net: r.net, loss: outs[1].clone(), grads: outs[first_grad..].to_vec() })
}

/// A step's examples.
pub enum Batch {
    /// Rows of the data variable.
    Indices(Tensor<i32>),
    /// On a cluster: each replica's rows, with its share of the batch.
    Split(Vec<(Tensor<i32>, Tensor<f32>)>),
    /// Decoded images [N, S, S, 3] and their labels, when the data set is streamed from disk.
    Fed { images: Tensor<f32>, labels: Tensor<i32> },
}

impl Batch {
    pub fn indices(idx: &[i32]) -> Result<Batch> {
        Ok(Batch::Indices(Tensor::<i32>::new(&[idx.len() as u64]).with_values(idx)?))
    }
    pub fn fed(images: Tensor<f32>, labels: &[i32]) -> Result<Batch> {
        Ok(Batch::Fed { images, labels: Tensor::<i32>::new(&[labels.len() as u64]).with_values(labels)? })
    }
}

/// A step's learning rate, drop rate and dropout seeds, as tensors.
pub struct StepFeeds {
    lr: Tensor<f32>,
    dropout: Tensor<f32>,
    /// One per replica.
    seeds: Vec<Tensor<i64>>,
}

impl StepFeeds {
    pub fn new(lr: f32, dropout: f32, seed: [i64; 2]) -> Result<Self> {
        Self::for_replicas(lr, dropout, seed, 1)
    }

    /// Replica i of n draws its masks from [seed, step * n + i]: distinct across replicas and
    /// steps, and [seed, step] itself with one replica.
    pub fn for_replicas(lr: f32, dropout: f32, [seed, step]: [i64; 2], n: usize) -> Result<Self> {
        let seeds = (0..n as i64).map(|i| Tensor::<i64>::new(&[2]).with_values(&[seed, step * n as i64 + i])).collect::<Result<_, _>>()?;
        Ok(StepFeeds { lr: Tensor::from(lr), dropout: Tensor::from(dropout), seeds })
    }
}

/// What a training step returns.
pub struct StepOutput {
    /// The batch's mean loss.
    pub loss: f32,
    /// The batch's logits with dropout off, before the update: with one full-set step per epoch,
    /// those of the previous epoch's final weights.
    pub logits: Vec<Vec<f32>>,
}

/// Mean softmax cross-entropy of `logits` against int32 class `labels`.
pub fn softmax_loss(s: &mut Scope, logits: Output, labels: Output, classes: usize) -> Result<Output> {
    let depth = ops::constant(classes as i32, s)?;
    let on = ops::constant(1.0f32, s)?;
    let off = ops::constant(0.0f32, s)?;
    let one_hot = ops::one_hot(labels, depth, on, off, s)?;
    // The dense op: SparseSoftmaxCrossEntropyWithLogits has no C++ gradient.
    let xent = ops::softmax_cross_entropy_with_logits(logits, one_hot, s)?;
    let batch_axis = ops::constant(&[0i32][..], s)?;
    Ok(ops::mean(Output { operation: xent, index: 0 }, batch_axis, &mut s.with_op_name("mean"))?.into())
}

/// A variable of unknown leading size, initialised by feeding its placeholder.
fn fed_variable(scope: &mut Scope, name: &str, dtype: DataType, dims: &[Option<i64>], device: &str) -> Result<(Output, (Output, Operation))> {
    let init: Output = ops::Placeholder::new()
        .dtype(dtype)
        .shape(Shape::from(Some(dims.to_vec())))
        .build(&mut scope.with_op_name(&format!("{name}_init")))?
        .into();
    let var = {
        let op_name = scope.get_unique_name_for_op(name);
        let mut g = scope.graph_mut();
        let mut nd = g.new_operation("VariableV2", &op_name)?;
        nd.set_attr_type("dtype", dtype)?;
        // An unknown shape: VariableV2 refuses partially known ones.
        nd.set_attr_shape("shape", &Shape::from(None))?;
        nd.set_device(device)?;
        nd.finish()?
    };
    // validate_shape=false: the variable takes the shape of whatever data set is fed.
    let assign = ops::Assign::new().validate_shape(false).build(var.clone(), init.clone(), scope)?;
    Ok((var.into(), (init, assign)))
}

fn shape_dims(shape: &Shape) -> Result<Vec<i64>> {
    let n = shape.dims().context("variable of unknown rank")?;
    (0..n).map(|i| shape[i].context("variable of unknown size")).collect()
}

/// Runs every layer's initialiser with the given values.
pub fn init_params(session: &Session, net: &Network, params: &[LayerParams]) -> Result<()> {
    let mut tensors = vec![];
    for (vars, p) in net.vars.iter().zip(params) {
        ensure!(vars.layer == p.layer, "parameters for {} given for layer {}", p.layer, vars.layer);
        let w_dims: Vec<u64> = p.weights.shape().iter().map(|&d| d as u64).collect();
        let w = Tensor::<f32>::new(&w_dims).with_values(p.weights.as_standard_layout().as_slice().unwrap())?;
        let b = Tensor::<f32>::new(&[p.biases.len() as u64]).with_values(p.biases.as_slice().unwrap())?;
        tensors.push((w, b));
    }
    let mut args = SessionRunArgs::new();
    for (vars, (w, b)) in net.vars.iter().zip(&tensors) {
        args.add_feed(&vars.weights_init, 0, w);
        args.add_feed(&vars.biases_init, 0, b);
        args.add_target(vars.weights.initializer());
        args.add_target(vars.biases.initializer());
    }
    session.run(&mut args).context("cannot initialise the model's variables")?;
    Ok(())
}

/// Reads every layer's parameters back to the host.
pub fn read_params(session: &Session, net: &Network) -> Result<Vec<LayerParams>> {
    let mut args = SessionRunArgs::new();
    let fetches: Vec<_> = net
        .vars
        .iter()
        .map(|v| {
            let w = args.request_fetch(&v.weights.output().operation, 0);
            let b = args.request_fetch(&v.biases.output().operation, 0);
            (w, b)
        })
        .collect();
    session.run(&mut args)?;
    let mut out = vec![];
    for (v, (w, b)) in net.vars.iter().zip(fetches) {
        let w: Tensor<f32> = args.fetch(w)?;
        let b: Tensor<f32> = args.fetch(b)?;
        let dims: Vec<usize> = w.dims().iter().map(|&d| d as usize).collect();
        out.push(LayerParams {
            layer: v.layer,
            weights: ndarray::ArrayD::from_shape_vec(dims, w.to_vec())?,
            biases: ndarray::Array1::from(b.to_vec()),
        });
    }
    Ok(out)
}

/// Percent of rows of `logits` whose arg-max is the label.
pub fn accuracy(logits: &[Vec<f32>], labels: &[usize]) -> f64 {
    let correct = logits.iter().zip(labels).filter(|&(l, &y)| argmax(l) == y).count();
    100.0 * correct as f64 / labels.len().max(1) as f64
}

pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

/// How a training run ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub epochs: usize,
    pub final_loss: f64,
    pub final_train_accuracy: f64,
    pub final_val_accuracy: Option<f64>,
    pub seconds: f64,
    pub seconds_per_epoch: f64,
    pub device: String,
}

/// Options of one invocation that are not part of the run's recipe.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub resume: bool,
    /// Start over in an existing run directory.
    pub force: bool,
    /// No per-epoch table (setup lines and errors are still printed).
    pub quiet: bool,
    /// Train on a cluster (this process must be its chief, worker 0).
    pub cluster: Option<ClusterConfig>,
    /// Between-graph replication: every worker runs `alexnet train --between-graph`, and this
    /// one (the chief) drives the steps through the ps (see [`crate::distributed::between_graph`]).
    pub between_graph: bool,
}

/// Set by SIGINT/SIGTERM: the loop finishes its step, checkpoints and stops. A second signal
/// while the first is pending ends the process at once (the last checkpoint stays loadable).
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone());
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    flag
}

/// Trains `cfg` in `run_dir` (a new run, or the continuation of one with `opts.resume`).
pub fn train(cfg: &TrainConfig, run_dir: &Path, opts: &RunOptions) -> Result<Summary> {
    let say = |s: String| eprintln!("{s}");
    ensure!(
        !cfg.async_updates || opts.cluster.is_some(),
        "--async needs a cluster to train on: --cluster FILE --job worker --task 0, or the TF_CONFIG environment variable"
    );
    let between = opts.between_graph;
    ensure!(
        !between || opts.cluster.is_some(),
        "--between-graph needs a cluster to train on: --cluster FILE --job worker --task N, or the TF_CONFIG environment variable"
    );
    prepare_run_dir(run_dir, opts)?;
    ensure!(cfg.epochs >= 1, "--epochs must be at least 1");
    model::check_dropout_rate(cfg.dropout)?;

    let dataset = data::scan(&cfg.images)?;
    ensure!(
        dataset.classes == cfg.classes,
        "the classes in {} ([{}]) differ from the run's ([{}])",
        cfg.images.display(),
        dataset.classes.join(", "),
        cfg.classes.join(", ")
    );
    cfg.write(run_dir)?;

    if !dataset.ignored.is_empty() {
        let names: Vec<String> = dataset.ignored.iter().take(5).map(|p| p.display().to_string()).collect();
        let more = if dataset.ignored.len() > 5 { format!(" and {} more", dataset.ignored.len() - 5) } else { String::new() };
        say(format!("note: ignoring {} files that are hidden or have no image extension: {}{more}", dataset.ignored.len(), names.join(", ")));
    }
    let t0 = Instant::now();
    let (dataset, images, source) = load_source(&dataset, &cfg.preprocess, cfg.skip_bad_images, cfg.cache_limit)?;
    say(format!(
        "data: {} classes [{}], {} train + {} val images {} in {:.2} s",
        dataset.classes.len(),
        dataset.classes.join(", "),
        dataset.train.len(),
        dataset.val.len(),
        match source {
            Source::InGraph => "decoded".to_string(),
            Source::Streamed { .. } => format!("checked (over the {} MiB --cache-limit: decoded from disk every step)", cfg.cache_limit >> 20),
        },
        t0.elapsed().as_secs_f64()
    ));

    let specs = model::param_specs(&cfg.model);
    let (params, report) = weights::load(cfg.weights.as_deref(), &specs, &LoadOptions { strict: cfg.strict_weights, seed: cfg.seed })?;
    say(report.to_string());

    let cluster = opts.cluster.as_ref();
    let (placement, server) = match cluster {
        None => (None, None),
        Some(c) => {
            ensure!(
                c.is_chief(),
                "{} is not the chief: in this in-graph design only worker 0 runs `alexnet train`; run `alexnet server` with the same cluster for the other tasks (or give every worker's `alexnet train` --between-graph)",
                c.task_name()
            );
            ensure!(
                matches!(source, Source::InGraph),
                "the data set is over the {} MiB --cache-limit: on a cluster every worker holds it decoded; raise --cache-limit",
                cfg.cache_limit >> 20
            );
            let placement = if between { c.own_placement(&specs)? } else { c.placement(&specs)? };
            (Some(placement), Some(Server::start(c)?))
        }
    };
    let tg = match (&placement, cluster) {
        (Some(p), Some(c)) if between => TrainGraph::build_between(&cfg.model, cfg.momentum, cfg.weight_decay, cfg.precision, p, cfg.async_updates, c.workers().len())?,
        _ => TrainGraph::build_placed(&cfg.model, cfg.momentum, cfg.weight_decay, cfg.precision, placement.as_ref(), cfg.async_updates)?,
    };
    let tb = tensorboard::Summaries::build(&tg, cfg)?;
    let (session, device) = match &server {
        None => cfg.runtime.session(&tg.scope.graph())?,
        Some(server) => {
            let c = cluster.unwrap();
            if between {
                // Only the ps and itself: the other workers are clients of their own. The other
                // workers are waited for after `Chief::begin`, so that one that sees this chief's
                // port open soon finds its recipe (see `between_graph::check_recipe`).
                c.wait_for_ps(Duration::from_secs(60))?;
                let own = format!("/job:worker/task:{}", c.task.index);
                cfg.runtime.cluster_session_with(&tg.scope.graph(), &server.target(), &["/job:ps", &own])?
            } else {
                c.wait_for_tasks(Duration::from_secs(60))?;
                cfg.runtime.cluster_session(&tg.scope.graph(), &server.target())?
            }
        }
    };
    // On a cluster, a failed run is most likely a lost task: name it.
    let blame = |e: anyhow::Error| -> anyhow::Error {
        let Some(c) = cluster else { return e };
        let down = c.lost_tasks(Duration::from_secs(3));
        if down.is_empty() {
            return e.context("a session run on the cluster failed");
        }
        e.context(format!(
            "lost {}: {} training cannot go on without it; restart it, then continue with: alexnet train{} --run-dir {} --resume (and the same cluster)",
            down.join(", "),
            if cfg.async_updates { "asynchronous" } else { "synchronous" },
            if between { " --between-graph" } else { "" },
            run_dir.display()
        ))
    };
    // Between-graph: the workers hold until the variables are ready (see `chief.release`).
    let chief = match cluster {
        Some(c) if between => Some(between_graph::Chief::begin(&tg, &session, c, cfg.async_updates, &between_graph::recipe(cfg, &dataset)).map_err(blame)?),
        _ => None,
    };
    if let (Some(c), true) = (cluster, between) {
        c.wait_for_tasks(Duration::from_secs(60))?;
    }
    let (intra, inter) = cfg.runtime.threads();
    say(format!("device: {device}; threads: intra-op {intra}, inter-op {inter}; precision {}", cfg.precision.name()));
    if let Some((images, labels)) = images {
        // The host copy is dropped right after: the graph holds the data set from here on.
        tg.load_data(&session, &images, &labels).map_err(blame)?;
    }
    tg.init_variables(&session, &params).map_err(blame)?;

    let n_train = dataset.train.len();
    let train_idx: Vec<i32> = (0..n_train as i32).collect();
    let val_idx: Vec<i32> = (n_train as i32..(n_train + dataset.val.len()) as i32).collect();
    let train_labels: Vec<usize> = dataset.train.iter().map(|e| e.label).collect();
    let val_labels: Vec<usize> = dataset.val.iter().map(|e| e.label).collect();
    let batch = if cfg.batch_size == 0 { n_train } else { cfg.batch_size.min(n_train) };
    let eval_chunk = batch.max(60);

    let metrics_path = run_dir.join("metrics.csv");
    let mut rows = vec![];
    let mut start_epoch = 0;
    if opts.resume {
        if let Some((prefix, epoch)) = checkpoint::latest(run_dir)? {
            let restored = tg.saver.restore(&session, &prefix)?;
            ensure!(restored == epoch, "checkpoint {} holds epoch {restored}, expected {epoch}", prefix.display());
            start_epoch = epoch + 1;
            if metrics_path.exists() {
                rows = metrics::read(&metrics_path)?;
                rows.retain(|r| r.epoch <= epoch);
            }
            say(format!("resumed from {} (epoch {epoch})", prefix.parent().unwrap().display()));
        } else {
            say("no checkpoint yet: starting from the beginning".into());
        }
    }
    metrics::write(&metrics_path, &rows)?;
    let tb_dir = tb.open(&session, &tg.scope.graph(), run_dir, start_epoch)?;
    if start_epoch >= cfg.epochs {
        say(format!("the run already has {} epochs; nothing to train (raise --epochs to continue)", cfg.epochs));
    }

    let interrupted = interrupt_flag();
    let bar = progress_bar(((cfg.epochs - start_epoch.min(cfg.epochs)) * n_train.div_ceil(batch)) as u64, opts.quiet);
    let print_row = |s: String| match (opts.quiet, bar.is_hidden()) {
        (true, _) => {}
        (false, true) => say(s),
        (false, false) => bar.println(s),
    };
    print_row(metrics::display_header());
    let steps_per_epoch = n_train.div_ceil(batch);
    let total_steps = cfg.epochs * steps_per_epoch;
    if let Some(chief) = &chief {
        chief.release(&session, start_epoch * steps_per_epoch, total_steps).map_err(blame)?;
    }
    // Train accuracy is the Swift original's: inference mode, after the epoch's step. With one
    // full-set step per epoch, the next step computes exactly that on the way (the convolutions
    // are shared, and its dropout-off fc head gives the pre-update logits), so the row waits one
    // step instead of running another forward pass. Epochs that end in a checkpoint (and the
    // last, and an interrupted one) still run the pass: every row on disk is final, and a
    // resumed run computes every row the way the uninterrupted run did.
    let lookahead = steps_per_epoch == 1 && cluster.is_none();
    let mut pending: Option<Row> = None;
    // TensorBoard's images show the first val image.
    let example = source.batch(&[n_train as i32])?;
    let finish = |row: Row, rows: &mut Vec<Row>| -> Result<()> {
        print_row(row.display());
        let last = row.epoch + 1 == cfg.epochs;
        tb.epoch(&session, &tg, &example, &row, cfg.schedule.rate(cfg.learning_rate, row.epoch, cfg.epochs), last)?;
        rows.push(row);
        metrics::write(&metrics_path, rows)
    };
    let diverged = |loss: f32, epoch: usize, b: usize| -> Result<anyhow::Error> {
        bar.finish_and_clear();
        let kept = checkpoint::latest(run_dir)?.map(|(p, e)| format!("the last good checkpoint ({}, epoch {e}) is kept", p.parent().unwrap().display()));
        Ok(anyhow::anyhow!(
            "loss became {loss} in epoch {epoch} (step {b}): training diverged; {} (try a lower --lr)",
            kept.unwrap_or_else(|| "no checkpoint was written yet".into())
        ))
    };
    // Asynchronous: the replicas still training (all of them until a worker is lost).
    let mut live: Vec<usize> = (0..tg.replica_steps().len()).collect();
    let started = Instant::now();
    for epoch in start_epoch..cfg.epochs {
        let mut order = train_idx.clone();
        crate::util::rng::Rng::new(cfg.seed, 1_000_000 + epoch as u64).shuffle(&mut order);
        let lr = cfg.schedule.rate(cfg.learning_rate, epoch, cfg.epochs);
        let mut loss_sum = 0.0;
        let mut trained = n_train;
        if let Some(chief) = &chief {
            let batches: Vec<&[i32]> = order.chunks(batch).collect();
            let feeds = (lr, cfg.dropout, cfg.seed as i64);
            let e = chief.epoch(&session, &tg, &batches, (epoch * steps_per_epoch, total_steps), feeds, &bar, &blame)?;
            if let Some((loss, b)) = e.diverged {
                return Err(diverged(loss, epoch, b)?);
            }
            (loss_sum, trained) = (e.loss_sum, e.examples);
        } else if let Some(c) = cluster.filter(|_| cfg.async_updates) {
            let batches: Vec<&[i32]> = order.chunks(batch).collect();
            let feeds = (lr, cfg.dropout, cfg.seed as i64);
            let e = async_epoch(&session, tg.replica_steps(), &mut live, &batches, feeds, epoch * steps_per_epoch, c, &bar).map_err(blame)?;
            if let Some((loss, b)) = e.diverged {
                return Err(diverged(loss, epoch, b)?);
            }
            (loss_sum, trained) = (e.loss_sum, e.examples);
        } else {
            for (b, part) in order.chunks(batch).enumerate() {
                let step = (epoch * steps_per_epoch + b) as i64;
                let out = tg.run_step(&session, &source.batch(part)?, lr, cfg.dropout, [cfg.seed as i64, step]).map_err(blame)?;
                if let Some(mut row) = pending.take() {
                    let labels: Vec<usize> = part.iter().map(|&i| train_labels[i as usize]).collect();
                    row.train_accuracy = accuracy(&out.logits, &labels);
                    finish(row, &mut rows)?;
                }
                let loss = out.loss;
                if !loss.is_finite() {
                    return Err(diverged(loss, epoch, b)?);
                }
                loss_sum += loss as f64 * part.len() as f64;
                bar.inc(1);
            }
        }
        let last = epoch + 1 == cfg.epochs;
        let stop = interrupted.load(Ordering::SeqCst);
        let checkpoint_now = last || stop || (cfg.checkpoint_every > 0 && (epoch + 1) % cfg.checkpoint_every == 0);
        let val_accuracy = if epoch % cfg.val_every.max(1) == 0 || last {
            Some(accuracy(&source.logits(&tg, &session, &val_idx, eval_chunk).map_err(blame)?, &val_labels))
        } else {
            None
        };
        let mut row = Row { epoch, loss: loss_sum / trained.max(1) as f64, train_accuracy: f64::NAN, val_accuracy };
        if lookahead && !checkpoint_now && !tb.images_due(epoch, last) {
            pending = Some(row);
        } else {
            row.train_accuracy = accuracy(&source.logits(&tg, &session, &train_idx, eval_chunk).map_err(blame)?, &train_labels);
            finish(row, &mut rows)?;
        }
        if checkpoint_now {
            tg.saver.save(&session, run_dir, epoch)?;
        }
        if stop {
            bar.finish_and_clear();
            plot::write_run_curves(run_dir, &rows)?;
            bail!(
                "interrupted after epoch {epoch}; checkpoint written. Continue with: alexnet train --run-dir {} --resume",
                run_dir.display()
            );
        }
    }
    bar.finish_and_clear();
    if let Some(chief) = &chief {
        chief.finish(&session).map_err(blame)?;
    }
    tb.close(&session)?;
    let seconds = started.elapsed().as_secs_f64();
    let trained = cfg.epochs.saturating_sub(start_epoch);
    let last = rows.last().context("no epochs were trained")?;
    let summary = Summary {
        epochs: cfg.epochs,
        final_loss: last.loss,
        final_train_accuracy: last.train_accuracy,
        final_val_accuracy: rows.iter().rev().find_map(|r| r.val_accuracy),
        seconds,
        seconds_per_epoch: seconds / trained.max(1) as f64,
        device,
    };
    fsutil::write_atomic(&run_dir.join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    plot::write_run_curves(run_dir, &rows)?;
    say(format!(
        "trained {trained} epochs in {:.1} s ({:.2} s per epoch); final train accuracy {:.2}%, val accuracy {}",
        seconds,
        summary.seconds_per_epoch,
        summary.final_train_accuracy,
        summary.final_val_accuracy.map(|v| format!("{v:.2}%")).unwrap_or("-".into())
    ));
    say(format!(
        "tensorboard: {} ({:.0} ms of summaries per epoch); curves: {}",
        tb_dir.display(),
        tb.seconds_per_epoch() * 1000.0,
        run_dir.join(plot::CURVES).display()
    ));
    Ok(summary)
}

/// What one asynchronous epoch did.
struct AsyncEpoch {
    /// Sum over steps of mean loss x examples.
    loss_sum: f64,
    examples: usize,
    /// A non-finite loss and its batch: the replicas stopped there.
    diverged: Option<(f32, usize)>,
}

/// One epoch of asynchronous updates: a thread per live replica runs its part of every batch
/// (contiguous parts, as `split_part` cuts them among the live replicas), each with its own
/// step, as fast as it can; only the epoch's end waits for all. Replica r of n draws its dropout
/// masks from [seed, step * n + r]. A replica whose worker stops answering is dropped with a
/// warning: its parts of the epoch's remaining batches are skipped, and later epochs split every
/// batch among the replicas left. The chief's own replica failing, or any other failure, is an
/// error (the other threads stop at their next step).
#[allow(clippy::too_many_arguments)]
fn async_epoch(
    session: &Session,
    replicas: &[ReplicaStep],
    live: &mut Vec<usize>,
    batches: &[&[i32]],
    (lr, dropout, seed): (f32, f32, i64),
    first_step: usize,
    cluster: &ClusterConfig,
    bar: &indicatif::ProgressBar,
) -> Result<AsyncEpoch> {
    let n = replicas.len();
    let parts = live.len();
    let abort = AtomicBool::new(false);
    let left = std::sync::atomic::AtomicUsize::new(parts);
    // Per live replica: (loss sum, examples, divergence, lost, error).
    type Outcome = (f64, usize, Option<(f32, usize)>, bool, Option<anyhow::Error>);
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let threads: Vec<_> = live
            .iter()
            .enumerate()
            .map(|(k, &r)| {
                let (abort, left) = (&abort, &left);
                scope.spawn(move || -> Outcome {
                    let (mut sum, mut examples) = (0.0, 0);
                    for (b, batch) in batches.iter().enumerate() {
                        let part = split_part(batch, k, parts);
                        if abort.load(Ordering::SeqCst) {
                            break;
                        }
                        if part.is_empty() {
                            continue;
                        }
                        let step = (first_step + b) as i64;
                        match replicas[r].run(session, part, lr, dropout, [seed, step * n as i64 + r as i64]) {
                            Ok(loss) if !loss.is_finite() => {
                                abort.store(true, Ordering::SeqCst);
                                return (sum, examples, Some((loss, b)), false, None);
                            }
                            Ok(loss) => {
                                sum += loss as f64 * part.len() as f64;
                                examples += part.len();
                            }
                            // The chief's replica is needed for evaluation and checkpoints.
                            Err(_) if r != 0 && cluster.is_lost("worker", r, Duration::from_secs(3)) => {
                                let remaining = left.fetch_sub(1, Ordering::SeqCst) - 1;
                                let msg = format!(
                                    "warning: lost {}: its step failed and it accepts no connection; continuing asynchronously with {remaining} worker{}",
                                    cluster.describe("worker", r),
                                    if remaining == 1 { "" } else { "s" }
                                );
                                if bar.is_hidden() {
                                    eprintln!("{msg}")
                                } else {
                                    bar.println(msg)
                                }
                                return (sum, examples, None, true, None);
                            }
                            Err(e) => {
                                abort.store(true, Ordering::SeqCst);
                                return (sum, examples, None, false, Some(e.context(format!("replica {r}'s step {b} failed"))));
                            }
                        }
                        if r == 0 {
                            bar.inc(1);
                        }
                    }
                    (sum, examples, None, false, None)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("a replica's thread panicked")).collect()
    });
    let mut epoch = AsyncEpoch { loss_sum: 0.0, examples: 0, diverged: None };
    let mut kept = vec![];
    for (&r, (sum, examples, diverged, lost, error)) in live.iter().zip(outcomes) {
        if let Some(e) = error {
            return Err(e);
        }
        epoch.loss_sum += sum;
        epoch.examples += examples;
        epoch.diverged = epoch.diverged.or(diverged);
        if !lost {
            kept.push(r);
        }
    }
    *live = kept;
    Ok(epoch)
}

/// Refuses to overwrite a run silently.
fn prepare_run_dir(run_dir: &Path, opts: &RunOptions) -> Result<()> {
    let has_run = run_dir.join("config.json").exists();
    if has_run && !opts.resume {
        if !opts.force {
            bail!(
                "{} already holds a run: add --resume to continue it, or --force to start it over (its checkpoints and metrics are deleted)",
                run_dir.display()
            );
        }
        for sub in ["checkpoints", "metrics.csv", "summary.json", "config.json", tensorboard::DIR, plot::CURVES] {
            let p = run_dir.join(sub);
            if p.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else if p.exists() {
                std::fs::remove_file(&p)?;
            }
        }
    }
    std::fs::create_dir_all(run_dir).with_context(|| format!("cannot create run directory {}", run_dir.display()))
}

/// Decodes train then val into one tensor, with the matching labels; any bad image is an error.
pub fn decode_dataset(dataset: &Dataset, p: &Preprocess) -> Result<(Tensor<f32>, Vec<i32>)> {
    let (_, images, labels) = load_images(dataset, p, false)?;
    Ok((images, labels))
}

/// Decodes train then val into one tensor. Every image is decode-checked first: bad ones are an
/// error that lists them all, or, with `skip_bad`, a warning that lists them all and leaves them
/// out. Returns the data set of the images kept.
pub fn load_images(dataset: &Dataset, p: &Preprocess, skip_bad: bool) -> Result<(Dataset, Tensor<f32>, Vec<i32>)> {
    let decoder = Decoder::new(p)?;
    let all: Vec<&Path> = dataset.train.iter().chain(&dataset.val).map(|e| e.path.as_path()).collect();
    let (images, bad) = decoder.decode_checked(&all);
    let kept = keep_good(dataset, &bad, skip_bad)?;
    let labels = kept.train.iter().chain(&kept.val).map(|e| e.label as i32).collect();
    Ok((kept, images, labels))
}

/// The data set without its bad images, or the error that lists them.
fn keep_good(dataset: &Dataset, bad: &[data::BadImage], skip_bad: bool) -> Result<Dataset> {
    let total = dataset.train.len() + dataset.val.len();
    if !bad.is_empty() {
        let list: String = bad.iter().map(|b| format!("\n  {b}")).collect();
        if !skip_bad {
            bail!("{} of {total} images can't be used:{list}\nfix or remove them, or pass --skip-bad-images to train without them", bad.len());
        }
        eprintln!("warning: skipping {} of {total} images that can't be used:{list}", bad.len());
    }
    let is_bad = |e: &data::Example| bad.iter().any(|b| b.path == e.path);
    let kept = Dataset {
        classes: dataset.classes.clone(),
        train: dataset.train.iter().filter(|e| !is_bad(e)).cloned().collect(),
        val: dataset.val.iter().filter(|e| !is_bad(e)).cloned().collect(),
        ignored: dataset.ignored.clone(),
    };
    for (label, class) in kept.classes.iter().enumerate() {
        ensure!(kept.train.iter().any(|e| e.label == label), "class '{class}' has no usable training image left");
    }
    ensure!(!kept.val.is_empty(), "no usable validation image left");
    Ok(kept)
}

/// Where the steps' images come from.
pub enum Source {
    /// Decoded once into the graph's data variable; steps feed indices.
    InGraph,
    /// Decoded from disk for every batch and fed (the data set is over the cache limit).
    Streamed { decoder: Decoder, paths: Vec<PathBuf>, labels: Vec<i32> },
}

impl Source {
    /// The examples at `idx` (train then val numbering).
    pub fn batch(&self, idx: &[i32]) -> Result<Batch> {
        match self {
            Source::InGraph => Batch::indices(idx),
            Source::Streamed { decoder, paths, labels } => {
                let files: Vec<&Path> = idx.iter().map(|&i| paths[i as usize].as_path()).collect();
                let l: Vec<i32> = idx.iter().map(|&i| labels[i as usize]).collect();
                Batch::fed(decoder.decode_files(&files)?, &l)
            }
        }
    }

    /// Logits (dropout off) of the examples at `idx`, `chunk` at a time.
    pub fn logits(&self, tg: &TrainGraph, session: &Session, idx: &[i32], chunk: usize) -> Result<Vec<Vec<f32>>> {
        let mut out = vec![];
        for part in idx.chunks(chunk.max(1)) {
            out.extend(tg.batch_logits(session, &self.batch(part)?)?);
        }
        Ok(out)
    }
}

/// Bytes of one decoded image.
pub fn decoded_bytes(p: &Preprocess) -> u64 {
    (p.size * p.size * 3 * 4) as u64
}

/// The kept data set, and either its decoded images and labels (to load into the graph) or, when
/// they would take more than `cache_limit` bytes, a streaming source (every image decode-checked).
pub fn load_source(dataset: &Dataset, p: &Preprocess, skip_bad: bool, cache_limit: u64) -> Result<(Dataset, Option<(Tensor<f32>, Vec<i32>)>, Source)> {
    let total = (dataset.train.len() + dataset.val.len()) as u64;
    if total * decoded_bytes(p) <= cache_limit {
        let (kept, images, labels) = load_images(dataset, p, skip_bad)?;
        return Ok((kept, Some((images, labels)), Source::InGraph));
    }
    let decoder = Decoder::new(p)?;
    let all: Vec<&Path> = dataset.train.iter().chain(&dataset.val).map(|e| e.path.as_path()).collect();
    let bad = decoder.check(&all);
    let kept = keep_good(dataset, &bad, skip_bad)?;
    let paths = kept.train.iter().chain(&kept.val).map(|e| e.path.clone()).collect();
    let labels = kept.train.iter().chain(&kept.val).map(|e| e.label as i32).collect();
    Ok((kept, None, Source::Streamed { decoder, paths, labels }))
}

fn progress_bar(total: u64, quiet: bool) -> indicatif::ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {elapsed_precise} (eta {eta})").unwrap(),
    );
    bar
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

    #[test]
    fn split_parts_are_contiguous_and_even() {
        let idx: Vec<i32> = (0..11).collect();
        let parts: Vec<&[i32]> = (0..3).map(|i| split_part(&idx, i, 3)).collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [4, 4, 3]);
        assert_eq!(parts.concat(), idx);
        assert!(split_part(&idx[..1], 1, 2).is_empty());
    }

    #[test]
    fn accuracy_counts_argmax_hits() {
        let logits = vec![vec![0.1, 0.9], vec![2.0, 1.0], vec![0.0, 3.0]];
        assert!((accuracy(&logits, &[1, 0, 0]) - 200.0 / 3.0).abs() < 1e-9);
    }
}
