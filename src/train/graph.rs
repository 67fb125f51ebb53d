//! The training graph: data variables, the replicas' forward passes, loss, momentum updates
//! and saver, and how a step is fed and run.

use anyhow::{Context, Result, ensure};
use tensorflow::{DataType, Operation, Output, Scope, Session, SessionRunArgs, Shape, Tensor, ops};

use crate::data::pipeline::cut::Part;
use crate::data::pipeline::{Pipeline, is_end_of_data};
use crate::graph::model::{self, Network};
use crate::graph::params::LayerParams;
use crate::graph::params::{init_params, read_params};
use crate::run::checkpoint::Saver;
use crate::train::averages::Averages;
use crate::train::between_ops::Protocol;
use crate::train::feeds::{Batch, StepFeeds, StepOutput};
use crate::train::replicas::{Passes, ReplicaStep, Shard, split_part};
use crate::train::spec::{Replication, TrainSpec};
use crate::train::updates::Updates;

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
    /// With `--ema`: the weights' moving averages.
    averages: Option<Averages>,
    pub saver: Saver,
    /// Between-graph replication: the ops of the protocol between the workers.
    pub(crate) between: Option<Protocol>,
    /// The tf.data pipelines the steps read (none: the data variable): alone, the one; on a
    /// cluster, every replica's (in-graph: one per worker; between-graph: this worker's).
    pub pipelines: Vec<Pipeline>,
    /// From pipelines on a cluster: the batch's accuracy (dropout off, before the update); a
    /// between-graph worker's term of it.
    accuracy: Option<Output>,
}

/// What an in-graph cluster's synchronous step on a pipeline batch returns.
pub struct CutStep {
    pub loss: f32,
    /// The batch's accuracy, a fraction.
    pub accuracy: f32,
    /// The whole batch's example indices.
    pub indices: Vec<i32>,
}

/// What a step on a pipeline batch returns: its mean loss, and its examples' logits (dropout
/// off, before the update), labels and indices.
pub struct PipelineStep {
    pub loss: f32,
    pub logits: Vec<Vec<f32>>,
    pub labels: Vec<usize>,
    pub indices: Vec<i32>,
}

impl TrainGraph {
    /// The graph `spec` describes: the replicas' passes, the inference head, the momentum
    /// updates, the between-graph protocol's ops (if any), and the saver.
    pub fn build(spec: &TrainSpec) -> Result<TrainGraph> {
        if let Replication::BetweenGraph { placement, .. } = &spec.replication {
            ensure!(placement.workers.len() == 1, "a between-graph worker builds only its own replica");
        }
        let mut scope = Scope::new_root_scope();
        let s = &mut scope;
        let dropout = model::dropout_inputs(s)?;
        let passes = match spec.replication.placement() {
            None => Passes::local(s, spec, &dropout)?,
            Some(p) => Passes::placed(s, spec, p, &dropout)?,
        };
        // The inference head (dropout off) shares the convolutions of the first replica.
        let head_device = spec.replication.placement().map(|p| p.workers[0].clone()).unwrap_or_default();
        let eval_logits = model::inference_head(&mut s.new_sub_scope("eval").with_device(&head_device), &passes.net)?;
        let learning_rate: Output =
            ops::Placeholder::new().dtype(DataType::Float).shape(Shape::from(Some(vec![]))).build(&mut s.with_op_name("learning_rate"))?.into();
        // The averages' shadows at the root: their checkpoint keys are the weights' own plus a suffix.
        let averages = match spec.ema {
            0.0 => None,
            decay => {
                let device = |v: &tensorflow::Variable| spec.replication.placement().map(|p| p.variable_device(v.name())).unwrap_or_default();
                Some(Averages::build(s, decay, &passes.net.variables(), &device)?)
            }
        };
        let updates = Updates::build(&mut s.new_sub_scope("train"), spec, &passes, &eval_logits, &learning_rate, averages.as_ref())?;
        let between = match spec.replication.between_workers() {
            Some(n) => Some(Protocol::build(&mut s.new_sub_scope("between_graph"), n, &updates.train_op, updates.sync)?),
            None => None,
        };
        let replica_steps = replica_steps(&passes, updates.replica_train_ops, &learning_rate, &dropout.rate);
        let accuracy = passes.accuracy.clone();
        let pipelines = passes.pipelines.clone();
        let variables = passes.net.variables();
        let shadows = averages.iter().flat_map(|a| &a.shadows);
        let saved: Vec<(String, Output, DataType)> =
            variables.iter().chain(&updates.slots).chain(shadows).map(|v| (v.name().to_string(), v.output().clone(), v.data_type())).collect();
        let saver = Saver::build(s, &saved)?;
        Ok(TrainGraph {
            scope,
            net: passes.net,
            eval_logits,
            learning_rate,
            dropout_rate: dropout.rate,
            loss: passes.loss,
            train_op: updates.train_op,
            shards: passes.shards,
            replica_steps,
            slots_init: updates.slots_init,
            averages,
            saver,
            between,
            pipelines,
            accuracy,
        })
    }

    /// In-graph on a cluster: one synchronous step, each replica on its part of its pipeline's
    /// next batch; None when the epoch's batches are done.
    pub fn cut_step(&self, session: &Session, lr: f32, dropout: f32, seed: [i64; 2]) -> Result<Option<CutStep>> {
        let n = self.shards.len();
        let feeds = StepFeeds::for_replicas(lr, dropout, seed, n)?;
        let parts: Vec<Part> = (0..n).map(|i| Part::new(i, n)).collect();
        let mut args = SessionRunArgs::new();
        feeds.feed(&mut args, self.rates(), self.shards.iter().map(|s| &s.seed));
        for (p, part) in self.pipelines.iter().zip(&parts) {
            p.cut.as_ref().context("a cluster's pipeline is cut")?.feed(&mut args, part);
        }
        args.add_target(&self.train_op);
        let loss = args.request_fetch(&self.loss.operation, self.loss.index);
        let accuracy = self.accuracy.as_ref().context("the graph reads no pipeline on a cluster")?;
        let acc = args.request_fetch(&accuracy.operation, accuracy.index);
        let batch_indices = &self.pipelines[0].cut.as_ref().context("a cluster's pipeline is cut")?.batch_indices;
        let idx = args.request_fetch(&batch_indices.operation, batch_indices.index);
        match session.run(&mut args) {
            Err(e) if is_end_of_data(&e) => return Ok(None),
            r => r?,
        }
        Ok(Some(CutStep { loss: args.fetch::<f32>(loss)?[0], accuracy: args.fetch::<f32>(acc)?[0], indices: args.fetch::<i32>(idx)?.to_vec() }))
    }

    /// Whether the steps take parts of their pipelines' batches (a cluster's).
    pub fn is_cut(&self) -> bool {
        self.pipeline().is_some_and(|p| p.cut.is_some())
    }

    /// The tf.data pipeline the steps read (None: the data variable); on a cluster, replica 0's.
    pub fn pipeline(&self) -> Option<&Pipeline> {
        self.pipelines.first()
    }

    /// The learning rate's and the drop rate's placeholders.
    fn rates(&self) -> (&Output, &Output) {
        (&self.learning_rate, &self.dropout_rate)
    }

    /// One momentum-SGD step on the pipeline's next batch; None when the epoch's batches are done.
    pub fn pipeline_step(&self, session: &Session, p: &Pipeline, lr: f32, dropout: f32, seed: [i64; 2]) -> Result<Option<PipelineStep>> {
        let feeds = StepFeeds::new(lr, dropout, seed)?;
        let mut args = SessionRunArgs::new();
        self.feed_pipeline_step(&mut args, &feeds);
        let loss = args.request_fetch(&self.loss.operation, self.loss.index);
        let logits = args.request_fetch(&self.eval_logits.operation, self.eval_logits.index);
        let labels = args.request_fetch(&p.next[1].operation, p.next[1].index);
        let indices = args.request_fetch(&p.next[2].operation, p.next[2].index);
        match session.run(&mut args) {
            Err(e) if is_end_of_data(&e) => return Ok(None),
            r => r?,
        }
        Ok(Some(PipelineStep {
            loss: args.fetch::<f32>(loss)?[0],
            logits: args.fetch::<f32>(logits)?.chunks(self.net.config.classes).map(|c| c.to_vec()).collect(),
            labels: args.fetch::<i32>(labels)?.iter().map(|&l| l as usize).collect(),
            indices: args.fetch::<i32>(indices)?.to_vec(),
        }))
    }

    /// The pipeline step's own work on a batch already in memory: `images` and `labels` fed in
    /// place of `IteratorGetNext`'s outputs (which TensorFlow then prunes), so no pipeline runs.
    /// Returns the loss (the step computes the same dropout-off logits as [`Self::pipeline_step`]).
    pub fn fed_pipeline_step(&self, session: &Session, p: &Pipeline, images: &Tensor<f32>, labels: &Tensor<i32>, seed: [i64; 2]) -> Result<f32> {
        let feeds = StepFeeds::new(0.002, 0.5, seed)?;
        let mut args = SessionRunArgs::new();
        self.feed_pipeline_step(&mut args, &feeds);
        args.add_feed(&p.next[0].operation, p.next[0].index, images);
        args.add_feed(&p.next[1].operation, p.next[1].index, labels);
        let loss = args.request_fetch(&self.loss.operation, self.loss.index);
        args.request_fetch(&self.eval_logits.operation, self.eval_logits.index);
        session.run(&mut args)?;
        Ok(args.fetch::<f32>(loss)?[0])
    }

    fn feed_pipeline_step<'l>(&'l self, args: &mut SessionRunArgs<'l>, feeds: &'l StepFeeds) {
        feeds.feed(args, self.rates(), [&self.shards[0].seed]);
        args.add_target(&self.train_op);
    }

    /// Logits (dropout off) and labels of the pipeline's whole validation split, in batches.
    pub fn pipeline_logits(&self, session: &Session, p: &Pipeline) -> Result<(Vec<Vec<f32>>, Vec<usize>)> {
        p.start_val(session)?;
        let (mut logits, mut labels) = (vec![], vec![]);
        loop {
            let mut args = SessionRunArgs::new();
            let l = args.request_fetch(&self.net.logits.operation, self.net.logits.index);
            let y = args.request_fetch(&p.next[1].operation, p.next[1].index);
            match session.run(&mut args) {
                Err(e) if is_end_of_data(&e) => return Ok((logits, labels)),
                r => r?,
            }
            logits.extend(args.fetch::<f32>(l)?.chunks(self.net.config.classes).map(|c| c.to_vec()));
            labels.extend(args.fetch::<i32>(y)?.iter().map(|&l| l as usize));
        }
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

    /// The initial parameters, zero optimizer slots, and moving averages that start at the
    /// parameters.
    pub fn init_variables(&self, session: &Session, params: &[LayerParams]) -> Result<()> {
        init_params(session, &self.net, params)?;
        let mut args = SessionRunArgs::new();
        for op in &self.slots_init {
            args.add_target(op);
        }
        session.run(&mut args)?;
        if let Some(a) = &self.averages {
            a.start(session)?;
        }
        Ok(())
    }

    /// Runs `f` (an evaluation) on the weights' moving averages where the graph keeps them,
    /// else on the weights.
    pub fn with_averages<T>(&self, session: &Session, f: impl FnOnce() -> Result<T>) -> Result<T> {
        match &self.averages {
            Some(a) => a.with_averages(session, f),
            None => f(),
        }
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
        feeds.feed(args, self.rates(), self.shards.iter().map(|s| &s.seed));
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
        feeds.feed(args, self.rates(), [&first.seed]);
    }

    /// Feeds a training step of the first replica on its part `part` of `parts` of its
    /// pipeline's next batch (a between-graph worker's part); no target, no fetch.
    pub(crate) fn feed_cut_part<'a>(&'a self, args: &mut SessionRunArgs<'a>, part: &'a Part, feeds: &'a StepFeeds) -> Result<()> {
        let cut = self.pipeline().and_then(|p| p.cut.as_ref()).context("the graph reads no pipeline on a cluster")?;
        cut.feed(args, part);
        feeds.feed(args, self.rates(), [&self.shards[0].seed]);
        Ok(())
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

/// Asynchronous: each replica's own step (its loss, and the update of its own gradients).
fn replica_steps(passes: &Passes, train_ops: Vec<Operation>, learning_rate: &Output, dropout_rate: &Output) -> Vec<ReplicaStep> {
    passes
        .own
        .iter()
        .zip(&passes.shards)
        .zip(train_ops)
        .enumerate()
        .map(|(i, (((loss, _), shard), train_op))| ReplicaStep {
            indices: shard.indices.clone(),
            seed: shard.seed.clone(),
            learning_rate: learning_rate.clone(),
            dropout_rate: dropout_rate.clone(),
            loss: loss.clone(),
            train_op,
            cut: passes.pipelines.get(i).and_then(|p| Some((p.cut.clone()?, p.next[2].clone(), passes.accuracies.get(i)?.clone()))),
        })
        .collect()
}
