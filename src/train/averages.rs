//! Exponential moving averages of the weights (`--ema DECAY`): a shadow variable per weight and
//! bias (checkpoint key `conv1/weights/ExponentialMovingAverage`, TensorFlow 1's), moved after
//! each update as TensorFlow's `ExponentialMovingAverage` does (shadow -= (1 - decay) * (shadow -
//! weight)), and swapped into the weights while the run validates, so that validation and
//! `checkpoints/best` judge the averages that eval, export and predict will use.

use anyhow::Result;
use tensorflow::{DataType, Operation, Scope, Session, SessionRunArgs, Variable, ops};

use crate::run::trained::EMA_SUFFIX;

/// The shadows, and the ops that start, move and swap them.
pub(crate) struct Averages {
    decay: f32,
    weights: Vec<Variable>,
    /// Checkpointed beside the weights (the backups that hold the weights while the averages
    /// stand in for them are not).
    pub(crate) shadows: Vec<Variable>,
    /// Each shadow set to its weight (a new run's start; a resumed run restores them).
    init: Vec<Operation>,
    swap_in: Operation,
    swap_out: Operation,
}

impl Averages {
    /// Shadows of `weights`, each on `device(weight)`.
    pub(crate) fn build(s: &mut Scope, decay: f32, weights: &[Variable], device: &dyn Fn(&Variable) -> String) -> Result<Averages> {
        let (mut shadows, mut backups, mut init) = (vec![], vec![], vec![]);
        for w in weights {
            let s = &mut s.with_device(&device(w));
            let like = || Variable::builder().initial_value(w.output().clone()).data_type(DataType::Float).shape(w.shape().clone());
            let shadow = like().build(&mut s.with_op_name(&format!("{}{EMA_SUFFIX}", w.name())))?;
            let backup = like().build(&mut s.with_op_name(&format!("{}/backup", w.name())))?;
            init.push(shadow.initializer().clone());
            shadows.push(shadow);
            backups.push(backup);
        }
        let mut kept = ops::NoOp::new();
        for (w, b) in weights.iter().zip(&backups) {
            kept = kept.add_control_input(ops::assign(b.output().clone(), w.output().clone(), s)?);
        }
        let kept = kept.build(&mut s.with_op_name("ema_keep_weights"))?;
        let mut swap_in = ops::NoOp::new();
        for (w, sh) in weights.iter().zip(&shadows) {
            swap_in = swap_in.add_control_input(ops::Assign::new().add_control_input(kept.clone()).build(w.output().clone(), sh.output().clone(), s)?);
        }
        let mut swap_out = ops::NoOp::new();
        for (w, b) in weights.iter().zip(&backups) {
            swap_out = swap_out.add_control_input(ops::assign(w.output().clone(), b.output().clone(), s)?);
        }
        Ok(Averages {
            decay,
            weights: weights.to_vec(),
            shadows,
            init,
            swap_in: swap_in.build(&mut s.with_op_name("ema_swap_in"))?,
            swap_out: swap_out.build(&mut s.with_op_name("ema_swap_out"))?,
        })
    }

    /// The ops that move every shadow toward its weight, after `after` (the step's updates).
    pub(crate) fn update(&self, s: &mut Scope, after: &[Operation]) -> Result<Vec<Operation>> {
        let rate = ops::constant(1.0 - self.decay, s)?;
        let mut moved = vec![];
        for (w, sh) in self.weights.iter().zip(&self.shadows) {
            let gap = ops::sub(sh.output().clone(), w.output().clone(), s)?;
            let step = ops::mul(gap, rate.clone(), s)?;
            let mut assign = ops::AssignSub::new();
            for op in after {
                assign = assign.add_control_input(op.clone());
            }
            moved.push(assign.build(sh.output().clone(), step, s)?);
        }
        Ok(moved)
    }

    /// Sets every shadow to its weight's current value.
    pub(crate) fn start(&self, session: &Session) -> Result<()> {
        let mut args = SessionRunArgs::new();
        self.init.iter().for_each(|op| args.add_target(op));
        session.run(&mut args)?;
        Ok(())
    }

    /// Runs `f` with the averages in the weights' place, then puts the weights back (also when
    /// `f` fails).
    pub(crate) fn with_averages<T>(&self, session: &Session, f: impl FnOnce() -> Result<T>) -> Result<T> {
        run(session, &self.swap_in)?;
        let out = f();
        run(session, &self.swap_out)?;
        out
    }
}

fn run(session: &Session, op: &Operation) -> Result<()> {
    let mut args = SessionRunArgs::new();
    args.add_target(op);
    Ok(session.run(&mut args)?)
}
