//! The replicas of the training graph: each one's data variables, batch gather, forward pass,
//! loss and gradients ([`build_replica`], or [`import_replica`] to put a replica's backward pass on
//! its own worker), how a batch is cut among them ([`split_part`]), and an asynchronous replica's
//! own step ([`ReplicaStep`]).

use anyhow::Result;
use tensorflow::{DataType, Operation, Output, Scope, Session, SessionRunArgs, Shape, Tensor, ops};

use crate::data::pipeline::Pipeline;
use crate::graph::model::{self, ModelConfig, Network, Precision};
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
}

/// The replicas' forward and backward passes, before any update.
pub(crate) struct Passes {
    /// Replica 0's network: the one inference, evaluation and TensorBoard read.
    pub(crate) net: Network,
    /// The batch's mean loss (on a cluster, the shards' losses weighted by their shares).
    pub(crate) loss: Output,
    /// Its gradients, in the order of `net.variables()` (empty when asynchronous).
    pub(crate) grads: Vec<Output>,
    /// One per replica.
    pub(crate) shards: Vec<Shard>,
    /// Replica 0's own loss (a between-graph worker's part).
    pub(crate) local_loss: Output,
    /// Asynchronous: each replica's loss and gradients, for its own update (empty otherwise).
    pub(crate) own: Vec<(Output, Vec<Output>)>,
    /// The tf.data pipeline the replica reads its batches from (None: the data variable).
    pub(crate) pipeline: Option<Pipeline>,
}

impl Passes {
    /// One replica, on this process's devices.
    pub(crate) fn local(s: &mut Scope, spec: &TrainSpec, dropout: &model::Dropout) -> Result<Passes> {
        let pipeline = spec.pipeline.as_ref().map(|p| Pipeline::build(s, p)).transpose()?;
        let input = pipeline.as_ref().map(|p| (p.next[0].clone(), p.next[1].clone()));
        let r = build_replica(s, &spec.model, dropout, spec.precision, None, "", "", input)?;
        Ok(Passes { net: r.net, loss: r.loss.clone(), grads: r.grads, shards: vec![r.shard], local_loss: r.loss, own: vec![], pipeline })
    }

    /// The shared variables on the ps tasks of `p`, and a replica on each of its workers, each
    /// with its share of the batch fed as `shard_weight`.
    pub(crate) fn placed(s: &mut Scope, spec: &TrainSpec, p: &Placement, dropout: &model::Dropout) -> Result<Passes> {
        let (cfg, precision) = (&spec.model, spec.precision);
        let shared = model::create_vars(s, cfg, &|name| p.variable_device(name))?;
        let mut replicas = vec![];
        for (i, dev) in p.workers.iter().enumerate() {
            let rs = &mut s.new_sub_scope(&format!("replica_{i}")).with_device(dev);
            // Replica 0 is built in place (its unplaced backward ops run on the chief,
            // which is worker 0); the others are imported, to put their backward on
            // their worker too.
            let mut r = if i == 0 {
                build_replica(rs, cfg, dropout, precision, Some(&shared), &format!("replica_{i}/"), dev, None)?
            } else {
                import_replica(s, cfg, dropout, precision, &shared, i, dev)?
            };
            r.shard.weight =
                Some(ops::Placeholder::new().dtype(DataType::Float).shape(Shape::from(Some(vec![]))).build(&mut rs.with_op_name("shard_weight"))?.into());
            replicas.push(r);
        }
        Self::averaged(&mut s.new_sub_scope("average"), replicas, spec.replication.asynchronous())
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
        Ok(Passes { net: replicas.swap_remove(0).net, loss, grads, shards, local_loss, own, pipeline: None })
    }
}

/// Data variables, batch gather (or, with `input`, the pipeline's images and labels), forward
/// pass, loss and gradients, all in `s` (on `device`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn build_replica(
    s: &mut Scope,
    cfg: &ModelConfig,
    dropout: &model::Dropout,
    precision: Precision,
    shared: Option<&[model::LayerVars]>,
    name_prefix: &str,
    device: &str,
    input: Option<(Output, Output)>,
) -> Result<Replica> {
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
    let loss = softmax_loss(&mut s.new_sub_scope("loss"), net.logits.clone(), batch_labels.clone(), cfg.classes)?;
    let grads = crate::graph::gradients::gradients_named(s, &net, loss.clone(), name_prefix)?;
    let seed = dropout.seed.clone();
    Ok(Replica { shard: Shard { indices, batch_images, batch_labels, weight: None, seed, images_init, labels_init }, net, loss, grads })
}

/// A replica built in a graph of its own and imported with `dev` as the default device: ops
/// that add_gradients creates carry no device, and import is where TensorFlow's C API lets a
/// default one be given. Its variables and drop rate are mapped onto the shared ones; it keeps
/// its own dropout seed.
pub(crate) fn import_replica(
    s: &mut Scope,
    cfg: &ModelConfig,
    dropout: &model::Dropout,
    precision: Precision,
    shared: &[model::LayerVars],
    i: usize,
    dev: &str,
) -> Result<Replica> {
    let mut own = Scope::new_root_scope();
    let own_dropout = model::dropout_inputs(&mut own)?;
    let r = build_replica(&mut own, cfg, &own_dropout, precision, None, "", "", None)?;
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
