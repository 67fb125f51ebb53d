//! The momentum-SGD updates of a training graph: a zero-initialised momentum slot per variable
//! (on the variable's device), L2 weight decay on weights, and one update op per step: of the
//! batch's gradients, of the sums a between-graph chief takes from the accumulators, or (with
//! asynchronous replicas) one per replica of its own gradients.

use anyhow::{Context, Result};
use tensorflow::{DataType, Operation, Output, Scope, Shape, Variable, ops};

use crate::train::between_ops::{self, SyncOps};
use crate::train::replicas::Passes;
use crate::train::spec::TrainSpec;

/// What [`Updates::build`] adds.
pub(crate) struct Updates {
    /// The synchronous step's update (asynchronous: replica 0's stands in).
    pub(crate) train_op: Operation,
    /// Asynchronous: each replica's own update (empty otherwise).
    pub(crate) replica_train_ops: Vec<Operation>,
    pub(crate) slots: Vec<Variable>,
    pub(crate) slots_init: Vec<Operation>,
    /// Between-graph, synchronous: the accumulators.
    pub(crate) sync: Option<SyncOps>,
}

/// What every momentum update of the graph shares.
struct Momentum<'a> {
    variables: &'a [Variable],
    slots: &'a [Variable],
    learning_rate: &'a Output,
    momentum: Output,
    decay: Output,
    weight_decay: f32,
    /// Where each variable's decay term is computed ("" for the default device).
    decay_device: &'a dyn Fn(&Variable) -> String,
}

impl Updates {
    /// The slots and updates, in `s` (the "train" scope).
    pub(crate) fn build(s: &mut Scope, spec: &TrainSpec, passes: &Passes, eval_logits: &Output, learning_rate: &Output) -> Result<Updates> {
        let placement = spec.replication.placement();
        let between = spec.replication.between_workers();
        let variables = passes.net.variables();
        let slot_device = |v: &Variable| placement.map(|p| p.variable_device(v.name())).unwrap_or_default();
        let momentum = ops::constant(spec.momentum, s)?.into();
        let decay = ops::constant(spec.weight_decay, s)?.into();
        let (slots, slots_init) = momentum_slots(s, &variables, &slot_device)?;
        // Between-graph, synchronous: the update applies the sums of the workers' pushed
        // gradients (each already weighted by its share of the batch).
        let accumulated = match (between, placement) {
            (Some(n), Some(p)) if passes.own.is_empty() => Some(between_ops::accumulate(
                &mut s.new_sub_scope("between_graph"),
                &variables,
                &passes.grads,
                passes.loss.clone(),
                passes.local_loss.clone(),
                passes.accuracy.clone(),
                n,
                &|name| p.variable_device(name),
            )?),
            _ => None,
        };
        // Between-graph, on the variable's ps, where the summed gradient is: the chief then
        // moves no weights or gradients to update.
        let decay_device = |v: &Variable| if between.is_some() { slot_device(v) } else { String::new() };
        let m = Momentum { variables: &variables, slots: &slots, learning_rate, momentum, decay, weight_decay: spec.weight_decay, decay_device: &decay_device };
        let (train_op, replica_train_ops, sync) = if let Some((sums, sync)) = accumulated {
            (m.update(s, &sums, vec![], "step")?, vec![], Some(sync))
        } else if passes.own.is_empty() {
            // The inference head reads fc weights too: it must finish before they change (on
            // a cluster it isn't fetched with the step, so nothing waits for it).
            let after = if passes.shards.len() == 1 { vec![eval_logits.operation.clone()] } else { vec![] };
            (m.update(s, &passes.grads, after, "step")?, vec![], None)
        } else {
            let mut ops = vec![];
            for (i, (_, g)) in passes.own.iter().enumerate() {
                ops.push(m.update(s, g, vec![], &format!("replica_{i}_step"))?);
            }
            // The train op of a synchronous step would be meaningless: replica 0's stands in.
            (ops[0].clone(), ops, None)
        };
        Ok(Updates { train_op, replica_train_ops, slots, slots_init, sync })
    }
}

/// A zero-initialised momentum slot per variable, on `device(variable)`.
fn momentum_slots(s: &mut Scope, variables: &[Variable], device: &dyn Fn(&Variable) -> String) -> Result<(Vec<Variable>, Vec<Operation>)> {
    let mut slots = vec![];
    let mut slots_init = vec![];
    for v in variables {
        let dims: Vec<i64> = shape_dims(v.shape())?;
        let slot_scope = &mut s.new_sub_scope(&v.name().replace('/', "_"));
        let dims_t = ops::constant(&dims[..], slot_scope)?;
        let zero = ops::constant(0.0f32, slot_scope)?;
        let zeros = ops::fill(dims_t, zero, slot_scope)?;
        let slot = Variable::builder()
            .initial_value(zeros)
            .data_type(DataType::Float)
            .shape(v.shape().clone())
            .build(&mut s.with_op_name(&format!("{}/Momentum", v.name())).with_device(&device(v)))?;
        slots_init.push(slot.initializer().clone());
        slots.push(slot);
    }
    Ok((slots, slots_init))
}

impl Momentum<'_> {
    /// One momentum update of every variable from `grads`, after all of `grads` (and `after`)
    /// are computed.
    fn update(&self, s: &mut Scope, grads: &[Output], after: Vec<Operation>, name: &str) -> Result<Operation> {
        let mut grad_ops = after;
        let mut grad_outputs = vec![];
        for (v, g) in self.variables.iter().zip(grads) {
            let g = g.clone();
            // L2 weight decay on weights only, as Caffe does.
            let g: Output = if self.weight_decay != 0.0 && v.name().ends_with("/weights") {
                let dev = (self.decay_device)(v);
                let s = &mut s.with_device(&dev);
                let scaled = ops::mul(self.decay.clone(), v.output().clone(), s)?;
                ops::add(g, scaled, s)?.into()
            } else {
                g
            };
            grad_ops.push(g.operation.clone());
            grad_outputs.push(g);
        }
        let mut step = ops::NoOp::new();
        for ((v, slot), g) in self.variables.iter().zip(self.slots).zip(grad_outputs) {
            // Every gradient is computed before any variable changes: ref variables are
            // read in place, and an update racing a backward op would change its result.
            // (Asynchronous replicas only wait for their own gradients: their updates
            // race the others' passes, by design.)
            let mut apply = ops::ApplyMomentum::new();
            for op in &grad_ops {
                apply = apply.add_control_input(op.clone());
            }
            let a = apply.build(v.output().clone(), slot.output().clone(), self.learning_rate.clone(), g, self.momentum.clone(), s)?;
            step = step.add_control_input(a);
        }
        Ok(step.build(&mut s.with_op_name(name))?)
    }
}

fn shape_dims(shape: &Shape) -> Result<Vec<i64>> {
    let n = shape.dims().context("variable of unknown rank")?;
    (0..n).map(|i| shape[i].context("variable of unknown size")).collect()
}
