//! The training graph: data variables, the replicas' forward passes, loss, momentum updates
//! and saver, and how a step is fed and run.

use anyhow::{Context, Result, ensure};
use tensorflow::{DataType, Operation, Output, Scope, Session, SessionRunArgs, Shape, Tensor, ops};

use crate::data::weights::LayerParams;
use crate::distributed::between_graph;
use crate::distributed::cluster::Placement;
use crate::graph::model::{self, ModelConfig, Network, Precision};
use crate::graph::params::{init_params, read_params};
use crate::run::checkpoint::Saver;
use crate::train::feeds::{Batch, StepFeeds, StepOutput};
use crate::train::replicas::{Replica, ReplicaStep, Shard, build_replica, import_replica, split_part};

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

fn shape_dims(shape: &Shape) -> Result<Vec<i64>> {
    let n = shape.dims().context("variable of unknown rank")?;
    (0..n).map(|i| shape[i].context("variable of unknown size")).collect()
}
