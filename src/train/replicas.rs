//! The replicas of the training graph: each one's data variables, batch gather (or, from the
//! tf.data pipeline on a cluster, its worker's own pipeline and its part of each batch, with the
//! part's accuracy), forward pass, loss and gradients ([`build_replica`], or [`import_replica`] to put a replica's backward pass on
//! its own worker), how a batch is cut among them ([`split_part`]), and an asynchronous replica's
//! own step ([`ReplicaStep`]).

use anyhow::{Context, Result};
use tensorflow::{DataType, Operation, Output, Scope, Session, SessionRunArgs, Shape, Tensor, ops};

use crate::data::pipeline::cut::Part;
use crate::data::pipeline::{Cut, Pipeline, PipelineSpec, is_end_of_data};
use crate::graph::model::{self, Network};
use crate::graph::scoring::softmax_loss;
use crate::train::feeds::StepFeeds;
use crate::train::spec::{Placement, TrainSpec};

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
    pub(crate) indices: Output,
    pub(crate) seed: Output,
    pub(crate) learning_rate: Output,
    pub(crate) dropout_rate: Output,
    pub(crate) loss: Output,
    pub(crate) train_op: Operation,
    /// From the pipeline: the replica's cut of each batch, its part's indices and its part's
    /// accuracy (dropout off, before the update).
    pub(crate) cut: Option<(Cut, Output, Output)>,
}

/// What a replica's step on its part of a pipeline batch returns.
pub struct PartStep {
    pub loss: f32,
    pub examples: usize,
    /// The part's accuracy, a fraction.
    pub accuracy: f32,
    /// The whole batch's example indices (every part's: those missing from an epoch name the
    /// files that failed to decode).
    pub batch: Vec<i32>,
}

impl ReplicaStep {
    /// Updates the shared variables with this replica's gradients on part `part` of `parts` of
    /// its pipeline's next batch; None when the epoch's batches are done.
    pub fn run_part(&self, session: &Session, (part, parts): (usize, usize), lr: f32, dropout: f32, seed: [i64; 2]) -> Result<Option<PartStep>> {
        let (cut, indices, accuracy) = self.cut.as_ref().context("the replica reads no pipeline")?;
        let feeds = StepFeeds::new(lr, dropout, seed)?;
        let part = Part::new(part, parts);
        let mut args = SessionRunArgs::new();
        cut.feed(&mut args, &part);
        feeds.feed(&mut args, (&self.learning_rate, &self.dropout_rate), [&self.seed]);
        args.add_target(&self.train_op);
        let loss = args.request_fetch(&self.loss.operation, self.loss.index);
        let idx = args.request_fetch(&indices.operation, indices.index);
        let acc = args.request_fetch(&accuracy.operation, accuracy.index);
        let batch = args.request_fetch(&cut.batch_indices.operation, cut.batch_indices.index);
        match session.run(&mut args) {
            Err(e) if is_end_of_data(&e) => return Ok(None),
            r => r?,
        }
        Ok(Some(PartStep {
            loss: args.fetch::<f32>(loss)?[0],
            examples: args.fetch::<i32>(idx)?.len(),
            accuracy: args.fetch::<f32>(acc)?[0],
            batch: args.fetch::<i32>(batch)?.to_vec(),
        }))
    }

    /// Updates the shared variables with this replica's gradients on the examples at `idx`;
    /// returns their mean loss.
    pub fn run(&self, session: &Session, idx: &[i32], lr: f32, dropout: f32, seed: [i64; 2]) -> Result<f32> {
        let idx = Tensor::<i32>::new(&[idx.len() as u64]).with_values(idx)?;
        let feeds = StepFeeds::new(lr, dropout, seed)?;
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.indices.operation, self.indices.index, &idx);
        feeds.feed(&mut args, (&self.learning_rate, &self.dropout_rate), [&self.seed]);
        args.add_target(&self.train_op);
        let loss = args.request_fetch(&self.loss.operation, self.loss.index);
        session.run(&mut args)?;
        Ok(args.fetch::<f32>(loss)?[0])
    }
}

/// The per-replica part of the graph: where the batch comes from, and what it feeds.
#[derive(Clone)]
pub(crate) struct Shard {
    pub(crate) indices: Output,
    /// The gathered batch: fed directly when the data set is streamed from disk.
    pub(crate) batch_images: Output,
    pub(crate) batch_labels: Output,
    /// The shard's share of the batch (None without a cluster).
    pub(crate) weight: Option<Output>,
    /// The replica's dropout seed: replicas draw different masks.
    pub(crate) seed: Output,
    pub(crate) images_init: (Output, Operation),
    pub(crate) labels_init: (Output, Operation),
}

pub(crate) struct Replica {
    pub(crate) shard: Shard,
    pub(crate) net: Network,
    pub(crate) loss: Output,
    pub(crate) grads: Vec<Output>,
    /// From a pipeline on a cluster: the part's accuracy (dropout off, before the update).
    pub(crate) accuracy: Option<Output>,
}

/// The replicas' forward and backward passes, before any update.
pub(crate) struct Passes {
    /// Replica 0's network: the one inference, evaluation and TensorBoard read.
    pub(crate) net: Network,
    /// The variables the updates change (not those of frozen layers), in the order of `grads`.
    pub(crate) trained: Vec<tensorflow::Variable>,
    /// The batch's mean loss (on a cluster, the shards' losses weighted by their shares).
    pub(crate) loss: Output,
    /// Its gradients, in the order of `trained` (empty when asynchronous).
    pub(crate) grads: Vec<Output>,
    /// One per replica.
    pub(crate) shards: Vec<Shard>,
    /// Replica 0's own loss (a between-graph worker's part).
    pub(crate) local_loss: Output,
    /// Asynchronous: each replica's loss and gradients, for its own update (empty otherwise).
    pub(crate) own: Vec<(Output, Vec<Output>)>,
    /// The tf.data pipelines the replicas read their batches from, one each (none: the data
    /// variable).
    pub(crate) pipelines: Vec<Pipeline>,
    /// From pipelines on a cluster: each replica's part's accuracy, and their sum weighted by
    /// the parts' shares (the batch's accuracy; between-graph, this worker's term of it).
    pub(crate) accuracies: Vec<Output>,
    pub(crate) accuracy: Option<Output>,
}

impl Passes {
    /// One replica, on this process's devices.
    pub(crate) fn local(s: &mut Scope, spec: &TrainSpec, dropout: &model::Dropout) -> Result<Passes> {
        let pipeline = spec.pipeline.as_ref().map(|p| Pipeline::build(s, p)).transpose()?;
        let input = pipeline.as_ref().map(|p| (p.next[0].clone(), p.next[1].clone()));
        let r = build_replica(s, spec, dropout, None, "", "", input)?;
        Ok(Passes {
            trained: r.net.trained_variables(&spec.frozen_layers()),
            net: r.net,
            loss: r.loss.clone(),
            grads: r.grads,
            shards: vec![r.shard],
            local_loss: r.loss,
            own: vec![],
            pipelines: pipeline.into_iter().collect(),
            accuracies: vec![],
            accuracy: None,
        })
    }

    /// The shared variables on the ps tasks of `p`, and a replica on each of its workers, each
    /// with its share of the batch fed as `shard_weight`.
    pub(crate) fn placed(s: &mut Scope, spec: &TrainSpec, p: &Placement, dropout: &model::Dropout) -> Result<Passes> {
        let shared = model::create_vars(s, &spec.model, &|name| p.variable_device(name))?;
        let mut replicas = vec![];
        let mut pipelines = vec![];
        for (i, dev) in p.workers.iter().enumerate() {
            // Each worker's own pipeline, on its CPU: every one yields the same batches.
            let pipeline =
                spec.pipeline.as_ref().map(|ps| Pipeline::build(&mut s.new_sub_scope(&format!("worker_{i}")), &on_worker(ps, dev, i))).transpose()?;
            let input = pipeline.as_ref().map(|p| (p.next[0].clone(), p.next[1].clone()));
            let rs = &mut s.new_sub_scope(&format!("replica_{i}")).with_device(dev);
            // Replica 0 is built in place (its unplaced backward ops run on the chief,
            // which is worker 0); the others are imported, to put their backward on
            // their worker too.
            let mut r = if i == 0 {
                let mut r = build_replica(rs, spec, dropout, Some(&shared), &format!("replica_{i}/"), dev, input.clone())?;
                if input.is_some() {
                    r.accuracy = Some(part_accuracy(rs, &r)?);
                }
                r
            } else {
                import_replica(s, spec, dropout, &shared, (i, dev), input)?
            };
            r.shard.weight = match &pipeline {
                // The share of a batch only known when it comes: cut in the graph.
                Some(pl) => Some(pl.cut.as_ref().context("a cluster's pipeline is cut")?.weight.clone()),
                None => {
                    Some(ops::Placeholder::new().dtype(DataType::Float).shape(Shape::from(Some(vec![]))).build(&mut rs.with_op_name("shard_weight"))?.into())
                }
            };
            pipelines.extend(pipeline);
            replicas.push(r);
        }
        let mut passes = Self::averaged(&mut s.new_sub_scope("average"), replicas, spec.replication.asynchronous())?;
        passes.pipelines = pipelines;
        passes.trained = passes.net.trained_variables(&spec.frozen_layers());
        Ok(passes)
    }

    /// The weighted sums of the replicas' losses and (synchronous) gradients: the batch's mean
    /// loss and its gradients.
    fn averaged(s: &mut Scope, mut replicas: Vec<Replica>, asynchronous: bool) -> Result<Passes> {
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
        let accuracies: Vec<Output> = replicas.iter().filter_map(|r| r.accuracy.clone()).collect();
        let accuracy = if accuracies.is_empty() { None } else { Some(weighted(s, &|r| r.accuracy.clone().unwrap())?) };
        let mut grads = vec![];
        let mut own = vec![];
        if asynchronous {
            own = replicas.iter().map(|r| (r.loss.clone(), r.grads.clone())).collect();
        } else {
            for j in 0..replicas[0].grads.len() {
                grads.push(weighted(s, &|r| r.grads[j].clone())?);
            }
        }
        let shards = replicas.iter().map(|r| r.shard.clone()).collect();
        let local_loss = replicas[0].loss.clone();
        Ok(Passes { net: replicas.swap_remove(0).net, trained: vec![], loss, grads, shards, local_loss, own, pipelines: vec![], accuracies, accuracy })
    }
}

/// Data variables, batch gather (or, with `input`, the pipeline's images and labels), forward
/// pass, loss and gradients, all in `s` (on `device`).
pub(crate) fn build_replica(
    s: &mut Scope,
    spec: &TrainSpec,
    dropout: &model::Dropout,
    shared: Option<&[model::LayerVars]>,
    name_prefix: &str,
    device: &str,
    input: Option<(Output, Output)>,
) -> Result<Replica> {
    let (cfg, precision) = (&spec.model, spec.precision);
    let side = cfg.input_size as i64;
    // The decoded data set, train and val together, fed once.
    let (images, images_init) = fed_variable(&mut s.new_sub_scope("data"), "images", DataType::Float, &[None, Some(side), Some(side), Some(3)], device)?;
    let (labels, labels_init) = fed_variable(&mut s.new_sub_scope("data"), "labels", DataType::Int32, &[None], device)?;
    let indices: Output = ops::Placeholder::new().dtype(DataType::Int32).shape(Shape::from(Some(vec![None]))).build(&mut s.with_op_name("indices"))?.into();
    let axis = ops::constant(0i32, s)?;
    let (batch_images, batch_labels): (Output, Output) = match input {
        // Identities, so that feeding them (TensorBoard's example image) leaves the iterator be.
        Some((images, labels)) => {
            (ops::identity(images, &mut s.with_op_name("batch_images"))?.into(), ops::identity(labels, &mut s.with_op_name("batch_labels"))?.into())
        }
        None => (
            ops::gather_v2(images, indices.clone(), axis.clone(), &mut s.with_op_name("batch_images"))?.into(),
            ops::gather_v2(labels, indices.clone(), axis, &mut s.with_op_name("batch_labels"))?.into(),
        ),
    };
    let net = match shared {
        None => model::build_with(s, cfg, batch_images.clone(), dropout, precision)?,
        Some(vars) => model::build_shared(s, cfg, batch_images.clone(), dropout, precision, vars)?,
    };
    let loss = softmax_loss(&mut s.new_sub_scope("loss"), net.logits.clone(), batch_labels.clone(), cfg.classes, &spec.targets)?;
    let grads = crate::graph::gradients::gradients_named(s, &net, loss.clone(), name_prefix, &spec.frozen_layers())?;
    let seed = dropout.seed.clone();
    Ok(Replica { shard: Shard { indices, batch_images, batch_labels, weight: None, seed, images_init, labels_init }, net, loss, grads, accuracy: None })
}

/// Worker `i`'s copy of the pipeline `spec`, on `device`'s CPU, cut (its cache files, past the
/// cache limit, apart from the other workers').
fn on_worker(spec: &PipelineSpec, device: &str, i: usize) -> PipelineSpec {
    PipelineSpec {
        device: format!("{device}/device:CPU:0"),
        cut: true,
        cache_dir: spec.cache_dir.as_ref().map(|d| d.join(format!("worker-{i}"))),
        ..spec.clone()
    }
}

/// The accuracy of a replica's batch (dropout off, before the update), a fraction.
fn part_accuracy(s: &mut Scope, r: &Replica) -> Result<Output> {
    let s = &mut s.new_sub_scope("part_accuracy");
    let logits = model::inference_head(s, &r.net)?;
    let predicted = ops::ArgMax::new().output_type(DataType::Int32).build(logits, ops::constant(1i32, s)?, s)?;
    let right = ops::Cast::new().DstT(DataType::Float).build(ops::equal(predicted, r.shard.batch_labels.clone(), s)?, s)?;
    Ok(ops::mean(right, ops::constant(0i32, s)?, s)?.into())
}

/// A replica built in a graph of its own and imported with `dev` as the default device: ops
/// that add_gradients creates carry no device, and import is where TensorFlow's C API lets a
/// default one be given. Its variables and drop rate are mapped onto the shared ones; it keeps
/// its own dropout seed.
pub(crate) fn import_replica(
    s: &mut Scope,
    spec: &TrainSpec,
    dropout: &model::Dropout,
    shared: &[model::LayerVars],
    (i, dev): (usize, &str),
    input: Option<(Output, Output)>,
) -> Result<Replica> {
    let mut own = Scope::new_root_scope();
    let own_dropout = model::dropout_inputs(&mut own)?;
    let side = spec.model.input_size as i64;
    // A pipeline's part comes in through placeholders, mapped onto it at import.
    let own_input = match &input {
        Some(_) => Some((
            ops::Placeholder::new()
                .dtype(DataType::Float)
                .shape(Shape::from(Some(vec![None, Some(side), Some(side), Some(3)])))
                .build(&mut own.with_op_name("part_images"))?
                .into(),
            ops::Placeholder::new().dtype(DataType::Int32).shape(Shape::from(Some(vec![None]))).build(&mut own.with_op_name("part_labels"))?.into(),
        )),
        None => None,
    };
    let mut r = build_replica(&mut own, spec, &own_dropout, None, "", "", own_input.clone())?;
    let accuracy = match &input {
        Some(_) => Some(part_accuracy(&mut own, &r)?),
        None => None,
    };
    r.accuracy = accuracy.clone();
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
    if let (Some((own_images, own_labels)), Some((images, labels))) = (&own_input, &input) {
        opts.add_input_mapping(&own_images.operation.name()?, 0, images)?;
        opts.add_input_mapping(&own_labels.operation.name()?, 0, labels)?;
    }
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
    wanted.extend(accuracy.iter().cloned());
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
    let accuracy = accuracy.map(|_| outs[9].clone());
    Ok(Replica { shard, net: r.net, loss: outs[1].clone(), grads: outs[first_grad..].to_vec(), accuracy })
}

/// A variable of unknown leading size, initialised by feeding its placeholder.
fn fed_variable(scope: &mut Scope, name: &str, dtype: DataType, dims: &[Option<i64>], device: &str) -> Result<(Output, (Output, Operation))> {
    let init: Output =
        ops::Placeholder::new().dtype(dtype).shape(Shape::from(Some(dims.to_vec()))).build(&mut scope.with_op_name(&format!("{name}_init")))?.into();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_parts_are_contiguous_and_even() {
        let idx: Vec<i32> = (0..11).collect();
        let parts: Vec<&[i32]> = (0..3).map(|i| split_part(&idx, i, 3)).collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [4, 4, 3]);
        assert_eq!(parts.concat(), idx);
        assert!(split_part(&idx[..1], 1, 2).is_empty());
    }
}
