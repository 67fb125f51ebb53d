//! The ops of between-graph replication in a worker's training graph (see
//! `crate::distributed::between_graph` for the protocol that runs them): per variable a
//! ConditionalAccumulator on its ps summing the workers' weighted gradients, one more for the
//! loss, and the scalars on ps 0 through which the chief and the workers agree (generation,
//! recipe, token).

use anyhow::Result;
use tensorflow::{DataType, Operation, Output, Scope, Session, SessionRunArgs, Shape, Tensor, TensorType, Variable, ops};

use crate::train::spec::device;

/// The synchronous part: accumulators and what the steps run of them.
pub(crate) struct SyncOps {
    /// The token a worker pushes its gradients with.
    pub(crate) local_step: Output,
    /// Every weighted gradient and the weighted loss into the accumulators.
    pub(crate) push: Operation,
    /// The worker's own (unweighted) mean loss of its part.
    pub(crate) local_loss: Output,
    /// The sum of the pushed losses: the global batch's mean loss (taken with the update).
    pub(crate) loss_sum: Output,
    /// From pipelines: the sum of the pushed accuracies, the global batch's (taken with the
    /// update).
    pub(crate) accuracy_sum: Option<Output>,
    /// How many workers have pushed the current step (the loss accumulator is pushed last).
    pub(crate) arrived: Output,
    /// Every accumulator's count, and a take of one gradient from each: the chief's clean-up.
    pub(crate) counts: Vec<Output>,
    pub(crate) drains: Vec<Operation>,
    /// Sets every accumulator's step (gradients tagged with an earlier one are dropped).
    pub(crate) acc_step: Output,
    pub(crate) set_acc_step: Operation,
}

/// Adds the accumulators (one per variable on its ps device, one for the loss on ps 0, and with
/// `accuracy` one for it too) and the push; returns the sums the update applies, in the order of
/// `variables`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn accumulate(
    s: &mut Scope,
    variables: &[Variable],
    grads: &[Output],
    loss: Output,
    local_loss: Output,
    accuracy: Option<Output>,
    workers: usize,
    device_of: &dyn Fn(&str) -> String,
) -> Result<(Vec<Output>, SyncOps)> {
    let local_step: Output = placeholder(s, "local_step", DataType::Int64)?;
    let acc_step: Output = placeholder(s, "acc_step", DataType::Int64)?;
    let mut set_acc_step = ops::NoOp::new();
    let (mut sums, mut pushes, mut counts, mut drains): (Vec<Output>, Vec<Operation>, Vec<Output>, Vec<Operation>) = (vec![], vec![], vec![], vec![]);
    let mut entries: Vec<(String, Shape, Output, String)> =
        variables.iter().zip(grads).map(|(v, g)| (v.name().to_string(), v.shape().clone(), g.clone(), device_of(v.name()))).collect();
    let accuracy_entry = entries.len();
    if let Some(a) = accuracy {
        entries.push(("accuracy".into(), Shape::from(Some(vec![])), a, device("ps", 0)));
    }
    let mut accuracy_sum = None;
    entries.push(("loss".into(), Shape::from(Some(vec![])), loss, device("ps", 0)));
    let n_required = ops::constant(workers as i32, s)?;
    let one = ops::constant(1i32, s)?;
    for (i, (name, shape, grad, dev)) in entries.into_iter().enumerate() {
        let s = &mut s.new_sub_scope(&name.replace('/', "_")).with_device(&dev);
        let acc: Output = ops::ConditionalAccumulator::new()
            .dtype(DataType::Float)
            .shape(shape)
            .shared_name(format!("between_graph/{name}"))
            .reduction_type("SUM")
            .build(&mut s.with_op_name("accumulator"))?
            .into();
        let mut apply = ops::AccumulatorApplyGradient::new().dtype(DataType::Float);
        if name == "loss" {
            // Last: once the loss of n workers is in, so are all their gradients.
            for p in &pushes {
                apply = apply.add_control_input(Operation::clone(p));
            }
        }
        pushes.push(apply.build(acc.clone(), local_step.clone(), grad, s)?);
        let take: Output = ops::AccumulatorTakeGradient::new().dtype(DataType::Float).build(acc.clone(), n_required.clone(), s)?.into();
        counts.push(ops::accumulator_num_accumulated(acc.clone(), s)?.into());
        drains.push(ops::AccumulatorTakeGradient::new().dtype(DataType::Float).build(acc.clone(), one.clone(), &mut s.with_op_name("drain"))?);
        set_acc_step = set_acc_step.add_control_input(ops::accumulator_set_global_step(acc, acc_step.clone(), s)?);
        if i < variables.len() {
            sums.push(take);
        } else if name == "accuracy" && i == accuracy_entry {
            accuracy_sum = Some(take);
        } else {
            let sync = SyncOps {
                local_step,
                push: pushes.pop().unwrap(),
                local_loss,
                loss_sum: take,
                accuracy_sum,
                arrived: counts.last().unwrap().clone(),
                counts,
                drains,
                acc_step,
                set_acc_step: set_acc_step.build(&mut s.with_op_name("set_acc_step"))?,
            };
            return Ok((sums, sync));
        }
    }
    unreachable!("the loss accumulator is the last entry")
}

pub(crate) fn placeholder(s: &mut Scope, name: &str, dtype: DataType) -> Result<Output> {
    Ok(ops::Placeholder::new().dtype(dtype).shape(Shape::from(Some(vec![]))).build(&mut s.with_op_name(name))?.into())
}

/// A scalar VariableV2 on ps 0 (int64: the generation and the token; string: the recipe), its
/// IsVariableInitialized, and an Assign from a placeholder.
pub(crate) struct PsScalar<T: TensorType> {
    pub(crate) var: Output,
    pub(crate) ready: Output,
    pub(crate) value: Output,
    pub(crate) assign: Operation,
    pub(crate) dtype: std::marker::PhantomData<T>,
}

impl<T: TensorType + Clone> PsScalar<T> {
    pub(crate) fn build(s: &mut Scope, name: &str) -> Result<Self> {
        let s = &mut s.with_device(&device("ps", 0));
        let var: Output = ops::VariableV2::new().dtype(T::data_type()).shape(Shape::from(Some(vec![]))).build(&mut s.with_op_name(name))?.into();
        let ready = ops::is_variable_initialized(var.clone(), &mut s.with_op_name(&format!("{name}_ready")))?.into();
        let value = placeholder(s, &format!("{name}_value"), T::data_type())?;
        let assign = ops::assign(var.clone(), value.clone(), &mut s.with_op_name(&format!("{name}_assign")))?;
        Ok(PsScalar { var, ready, value, assign, dtype: std::marker::PhantomData })
    }

    /// Its value, or None while uninitialised (`ready`: it was seen initialised, which saves a
    /// round trip per poll).
    pub(crate) fn read(&self, session: &Session, ready: bool) -> Result<Option<T>> {
        if !ready {
            let mut args = SessionRunArgs::new();
            let ready = args.request_fetch(&self.ready.operation, self.ready.index);
            session.run(&mut args)?;
            if !args.fetch::<bool>(ready)?[0] {
                return Ok(None);
            }
        }
        let mut args = SessionRunArgs::new();
        let v = args.request_fetch(&self.var.operation, self.var.index);
        session.run(&mut args)?;
        Ok(Some(args.fetch::<T>(v)?[0].clone()))
    }

    pub(crate) fn write(&self, session: &Session, value: T) -> Result<()> {
        let t = Tensor::<T>::from(value);
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.value.operation, self.value.index, &t);
        args.add_target(&self.assign);
        Ok(session.run(&mut args)?)
    }
}

/// The protocol's ops in every worker's graph.
pub(crate) struct Protocol {
    pub(crate) workers: usize,
    /// Bumped by every start of the chief.
    pub(crate) generation: PsScalar<i64>,
    /// The chief's recipe, as JSON: a worker checks its own against it before its first step.
    pub(crate) recipe: PsScalar<String>,
    /// What the workers may compute now.
    pub(crate) token: PsScalar<i64>,
    /// Writes the token after the update (synchronous only; fed through `token.value`).
    pub(crate) token_after_update: Operation,
    pub(crate) sync: Option<SyncOps>,
}

impl Protocol {
    pub(crate) fn build(s: &mut Scope, workers: usize, update: &Operation, sync: Option<SyncOps>) -> Result<Protocol> {
        let generation = PsScalar::build(s, "generation")?;
        let token = PsScalar::build(s, "token")?;
        let recipe = PsScalar::build(s, "recipe")?;
        // The workers may read the variables only once the update has changed them all.
        let token_after_update = ops::Assign::new().add_control_input(update.clone()).build(
            token.var.clone(),
            token.value.clone(),
            &mut s.with_device(&device("ps", 0)).with_op_name("token_next"),
        )?;
        Ok(Protocol { workers, generation, recipe, token, token_after_update, sync })
    }
}
