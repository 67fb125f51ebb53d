//! The updates of a training graph: the optimizer's zero-initialised slots per trained variable
//! (on the variable's device; Adam's step count beside them), weight decay, per-layer rate
//! multipliers, gradient clipping, and one update op per step: of the batch's gradients, of the
//! sums a between-graph chief takes from the accumulators, or (with asynchronous replicas) one per
//! replica of its own gradients. Frozen layers have no gradient and no slot: they are not here.
//!
//! The rules are TensorFlow's own training ops on the reference variables: ApplyMomentum (the
//! Swift recipe's, and with `use_nesterov` Keras's Nesterov SGD), ApplyAdam (Adam, AdamW).

use anyhow::{Context, Result};
use tensorflow::{DataType, Operation, Output, Scope, Shape, Variable, ops};

use crate::run::recipe::{Optimizer, OptimizerKind};
use crate::train::averages::Averages;
use crate::train::between_ops::{self, SyncOps};
use crate::train::replicas::Passes;
use crate::train::spec::{TrainSpec, device};

/// What [`Updates::build`] adds.
pub(crate) struct Updates {
    /// The synchronous step's update (asynchronous: replica 0's stands in).
    pub(crate) train_op: Operation,
    /// Asynchronous: each replica's own update (empty otherwise).
    pub(crate) replica_train_ops: Vec<Operation>,
    /// Every slot variable (and Adam's step count): checkpointed beside the weights.
    pub(crate) slots: Vec<Variable>,
    pub(crate) slots_init: Vec<Operation>,
    /// Between-graph, synchronous: the accumulators.
    pub(crate) sync: Option<SyncOps>,
}

/// The slots of one trained variable (one for momentum, two for Adam).
struct Slots {
    first: Variable,
    second: Option<Variable>,
}

/// What every update of the graph shares.
struct Rule<'a> {
    optimizer: Optimizer,
    variables: &'a [Variable],
    slots: &'a [Slots],
    /// Each variable's rate multiplier.
    mults: Vec<f32>,
    learning_rate: &'a Output,
    clip_norm: f32,
    /// Adam's step count (the updates so far).
    iterations: Option<&'a Variable>,
    /// Where each variable's decay term is computed ("" for the default device).
    decay_device: &'a dyn Fn(&Variable) -> String,
    averages: Option<&'a Averages>,
}

impl Updates {
    /// The slots and updates, in `s` (the "train" scope).
    /// With `averages`, every update also moves the weights' moving averages.
    pub(crate) fn build(
        s: &mut Scope,
        spec: &TrainSpec,
        passes: &Passes,
        eval_logits: &Output,
        learning_rate: &Output,
        averages: Option<&Averages>,
    ) -> Result<Updates> {
        let placement = spec.replication.placement();
        let between = spec.replication.between_workers();
        let variables = passes.trained.clone();
        let slot_device = |v: &Variable| placement.map(|p| p.variable_device(v.name())).unwrap_or_default();
        let (slots, mut slots_init) = optimizer_slots(s, &spec.optimizer, &variables, &slot_device)?;
        let iterations = match spec.optimizer.kind {
            OptimizerKind::Adam | OptimizerKind::Adamw => {
                let dev = placement.map(|_| device("ps", 0)).unwrap_or_default();
                let (v, init) = zeros(&mut s.with_device(&dev), "iterations", DataType::Int64, &Shape::from(Some(vec![])))?;
                slots_init.push(init);
                Some(v)
            }
            _ => None,
        };
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
        let mults = variables.iter().map(|v| spec.lr_mults.of(layer_of(v))).collect();
        let rule = Rule {
            optimizer: spec.optimizer,
            variables: &variables,
            slots: &slots,
            mults,
            learning_rate,
            clip_norm: spec.clip_grad_norm,
            iterations: iterations.as_ref(),
            decay_device: &decay_device,
            averages,
        };
        let (train_op, replica_train_ops, sync) = if let Some((sums, sync)) = accumulated {
            (rule.update(s, &sums, vec![], "step")?, vec![], Some(sync))
        } else if passes.own.is_empty() {
            // The inference head reads fc weights too: it must finish before they change (on
            // a cluster it isn't fetched with the step, so nothing waits for it).
            let after = if passes.shards.len() == 1 { vec![eval_logits.operation.clone()] } else { vec![] };
            (rule.update(s, &passes.grads, after, "step")?, vec![], None)
        } else {
            let mut ops = vec![];
            for (i, (_, g)) in passes.own.iter().enumerate() {
                ops.push(rule.update(s, g, vec![], &format!("replica_{i}_step"))?);
            }
            // The train op of a synchronous step would be meaningless: replica 0's stands in.
            (ops[0].clone(), ops, None)
        };
        let mut all: Vec<Variable> = slots.into_iter().flat_map(|s| std::iter::once(s.first).chain(s.second)).collect();
        all.extend(iterations);
        Ok(Updates { train_op, replica_train_ops, slots: all, slots_init, sync })
    }
}

/// "conv1" of "conv1/weights".
fn layer_of(v: &Variable) -> &str {
    v.name().split('/').next().unwrap_or_default()
}

/// The optimizer's zero-initialised slots for each of `variables`, on `device(variable)`.
fn optimizer_slots(s: &mut Scope, optimizer: &Optimizer, variables: &[Variable], device: &dyn Fn(&Variable) -> String) -> Result<(Vec<Slots>, Vec<Operation>)> {
    let mut slots = vec![];
    let mut inits = vec![];
    for v in variables {
        let mut made = vec![];
        // `Adam_1` before `Adam`: the other way round, the scope's unique names make it `Adam_1_1`.
        for name in optimizer.slot_names().iter().rev() {
            let (slot, init) = zeros(&mut s.with_device(&device(v)), &format!("{}/{name}", v.name()), DataType::Float, v.shape())?;
            inits.push(init);
            made.push(slot);
        }
        let first = made.pop().context("an optimizer without slots")?;
        slots.push(Slots { first, second: made.pop() });
    }
    Ok((slots, inits))
}

/// A variable named `name` (absolute: slots keep TensorFlow 1's checkpoint keys) that starts at 0.
fn zeros(s: &mut Scope, name: &str, dtype: DataType, shape: &Shape) -> Result<(Variable, Operation)> {
    let dims = shape_dims(shape)?;
    let scope = &mut s.new_sub_scope(&name.replace('/', "_"));
    let dims_t = ops::constant(&dims[..], scope)?;
    let zero: Output = match dtype {
        DataType::Int64 => ops::constant(0i64, scope)?.into(),
        _ => ops::constant(0.0f32, scope)?.into(),
    };
    let zeros = ops::fill(dims_t, zero, scope)?;
    let var = Variable::builder().initial_value(zeros).data_type(dtype).shape(shape.clone()).build(&mut s.with_op_name(name))?;
    let init = var.initializer().clone();
    Ok((var, init))
}

impl Rule<'_> {
    /// One update of every variable from `grads`, after all of `grads` (and `after`) are
    /// computed.
    fn update(&self, s: &mut Scope, grads: &[Output], after: Vec<Operation>, name: &str) -> Result<Operation> {
        let grads = self.clipped(s, grads)?;
        let mut grad_ops = after;
        let mut grad_outputs = vec![];
        for (v, g) in self.variables.iter().zip(grads) {
            let g = self.with_l2(s, v, g)?;
            grad_ops.push(g.operation.clone());
            grad_outputs.push(g);
        }
        // Adam's bias corrections at this update's step count, read before it is counted.
        let powers = match self.iterations {
            Some(it) => Some(self.beta_powers(s, it)?),
            None => None,
        };
        if let Some((p1, p2)) = &powers {
            grad_ops.extend([p1.operation.clone(), p2.operation.clone()]);
        }
        let mut step = ops::NoOp::new();
        let mut applied = vec![];
        for (((v, slots), g), mult) in self.variables.iter().zip(self.slots).zip(grad_outputs).zip(&self.mults) {
            let lr = self.scaled_rate(s, *mult)?;
            // Every gradient is computed before any variable changes: ref variables are
            // read in place, and an update racing a backward op would change its result.
            // (Asynchronous replicas only wait for their own gradients: their updates
            // race the others' passes, by design.)
            let a = self.apply(s, v, slots, g, lr, powers.as_ref(), &grad_ops)?;
            applied.push(a.clone());
            step = step.add_control_input(a);
        }
        if let Some(averages) = self.averages {
            for moved in averages.update(s, &applied)? {
                step = step.add_control_input(moved);
            }
        }
        if let Some(it) = self.iterations {
            let mut count = ops::AssignAdd::new();
            for a in &applied {
                count = count.add_control_input(a.clone());
            }
            let one = ops::constant(1i64, s)?;
            step = step.add_control_input(count.build(it.output().clone(), one, s)?);
        }
        Ok(step.build(&mut s.with_op_name(name))?)
    }

    /// One variable's update op.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        s: &mut Scope,
        v: &Variable,
        slots: &Slots,
        g: Output,
        lr: Output,
        powers: Option<&(Output, Output)>,
        grad_ops: &[Operation],
    ) -> Result<Operation> {
        let o = &self.optimizer;
        let var = v.output().clone();
        let first = slots.first.output().clone();
        let op = match o.kind {
            OptimizerKind::Sgd => {
                let momentum = ops::constant(o.momentum, s)?;
                ops::ApplyMomentum::new().with_control_inputs(grad_ops).build(var, first, lr, g, momentum, s)?
            }
            OptimizerKind::Nesterov => {
                // Keras's form (m = momentum * m - lr * g) as TensorFlow's op: the buffer holds
                // -m, the rate goes into the gradient, and the op's own rate is 1.
                let momentum = ops::constant(o.momentum, s)?;
                let scaled = ops::mul(g, lr, s)?;
                let one = ops::constant(1.0f32, s)?;
                ops::ApplyMomentum::new().use_nesterov(true).with_control_inputs(grad_ops).build(var, first, one, scaled, momentum, s)?
            }
            OptimizerKind::Adam | OptimizerKind::Adamw => {
                let (p1, p2) = powers.context("Adam's step count")?;
                let second = slots.second.as_ref().context("Adam's second moment")?.output().clone();
                let mut after: Vec<Operation> = grad_ops.to_vec();
                if o.kind == OptimizerKind::Adamw && o.weight_decay != 0.0 && is_weight(v) {
                    after.push(self.decoupled_decay(s, v, lr.clone(), grad_ops)?);
                }
                let (b1, b2, eps) = (ops::constant(o.beta1, s)?, ops::constant(o.beta2, s)?, ops::constant(o.epsilon, s)?);
                ops::ApplyAdam::new().with_control_inputs(&after).build(var, first, second, p1.clone(), p2.clone(), lr, b1, b2, eps, g, s)?
            }
        };
        Ok(op)
    }

    /// AdamW's decay before the Adam update, as Keras's: w <- w - w * weight_decay * lr.
    fn decoupled_decay(&self, s: &mut Scope, v: &Variable, lr: Output, grad_ops: &[Operation]) -> Result<Operation> {
        let dev = (self.decay_device)(v);
        let s = &mut s.with_device(&dev);
        let wd = ops::constant(self.optimizer.weight_decay, s)?;
        let term = ops::mul(ops::mul(v.output().clone(), wd, s)?, lr, s)?;
        Ok(ops::AssignSub::new().with_control_inputs(grad_ops).build(v.output().clone(), term, s)?)
    }

    /// L2 weight decay added to the gradient of a weight (not a bias), as Caffe does; AdamW
    /// decays the weights themselves instead.
    fn with_l2(&self, s: &mut Scope, v: &Variable, g: Output) -> Result<Output> {
        let o = &self.optimizer;
        if o.weight_decay == 0.0 || o.kind == OptimizerKind::Adamw || !is_weight(v) {
            return Ok(g);
        }
        let dev = (self.decay_device)(v);
        let s = &mut s.with_device(&dev);
        let decay = ops::constant(o.weight_decay, s)?;
        let scaled = ops::mul(decay, v.output().clone(), s)?;
        Ok(ops::add(g, scaled, s)?.into())
    }

    /// The rate times a layer's multiplier (the rate itself at 1, so that the Swift recipe's
    /// graph is what it was).
    fn scaled_rate(&self, s: &mut Scope, mult: f32) -> Result<Output> {
        if mult == 1.0 {
            return Ok(self.learning_rate.clone());
        }
        let m = ops::constant(mult, s)?;
        Ok(ops::mul(self.learning_rate.clone(), m, s)?.into())
    }

    /// beta1^t and beta2^t for t = the updates so far + 1, as Keras computes them.
    fn beta_powers(&self, s: &mut Scope, iterations: &Variable) -> Result<(Output, Output)> {
        let s = &mut s.new_sub_scope("adam");
        let one = ops::constant(1i64, s)?;
        let t = ops::Cast::new().DstT(DataType::Float).build(ops::add(iterations.output().clone(), one, s)?, s)?;
        let b1 = ops::constant(self.optimizer.beta1, s)?;
        let b2 = ops::constant(self.optimizer.beta2, s)?;
        Ok((ops::pow(b1, t.clone(), s)?.into(), ops::pow(b2, t, s)?.into()))
    }

    /// TensorFlow's `clip_by_global_norm`: every gradient times clip / max(global norm, clip).
    fn clipped(&self, s: &mut Scope, grads: &[Output]) -> Result<Vec<Output>> {
        if self.clip_norm <= 0.0 {
            return Ok(grads.to_vec());
        }
        let s = &mut s.new_sub_scope("clip");
        let mut half_squares: Option<Output> = None;
        for g in grads {
            let term: Output = ops::l2_loss(g.clone(), s)?.into();
            half_squares = Some(match half_squares {
                None => term,
                Some(sum) => ops::add(sum, term, s)?.into(),
            });
        }
        let two = ops::constant(2.0f32, s)?;
        let norm = ops::sqrt(ops::mul(half_squares.context("no gradients to clip")?, two, s)?, s)?;
        let clip = ops::constant(self.clip_norm, s)?;
        let inv_norm = ops::real_div(ops::constant(1.0f32, s)?, norm, s)?;
        let inv_clip = ops::constant(1.0 / self.clip_norm, s)?;
        let scale = ops::mul(clip, ops::minimum(inv_norm, inv_clip, s)?, s)?;
        grads.iter().map(|g| Ok(ops::mul(g.clone(), scale.clone(), s)?.into())).collect()
    }
}

/// Weight decay is for weights, not biases.
fn is_weight(v: &Variable) -> bool {
    v.name().ends_with("/weights")
}

/// Control inputs on an op builder, for every op of a list.
trait WithControlInputs: Sized {
    fn add_control_input(self, op: Operation) -> Self;
    fn with_control_inputs(mut self, ops: &[Operation]) -> Self {
        for op in ops {
            self = self.add_control_input(op.clone());
        }
        self
    }
}

macro_rules! with_control_inputs {
    ($($t:ty),*) => {$(
        impl WithControlInputs for $t {
            fn add_control_input(self, op: Operation) -> Self {
                <$t>::add_control_input(self, op)
            }
        }
    )*};
}
with_control_inputs!(ops::ApplyMomentum, ops::ApplyAdam, ops::AssignSub);

fn shape_dims(shape: &Shape) -> Result<Vec<i64>> {
    let n = shape.dims().context("variable of unknown rank")?;
    (0..n).map(|i| shape[i].context("variable of unknown size")).collect()
}
