//! One description of a run's steps and one interface to run them: the [`EpochPlan`] (the batch
//! size, the shuffled order of every epoch, the learning rate of every step, the dropout seed streams) that the
//! local loop, the in-graph asynchronous replicas, the between-graph chief and every between-graph
//! worker all draw from, so that they agree exactly; the [`EpochDriver`] each of them implements;
//! and the [`EpochStats`] an epoch returns.

use anyhow::Result;

use crate::run::config::TrainConfig;
use crate::run::recipe::Rates;
use crate::train::progress::Progress;
use crate::util::rng::Rng;

/// The steps of a run, as every process computes them.
#[derive(Clone, Debug)]
pub struct EpochPlan {
    /// Training examples (rows 0..n_train of the data variable; val follows).
    pub n_train: usize,
    /// The batch as trained: 0 and anything above the set both mean the whole set.
    pub batch: usize,
    pub steps_per_epoch: usize,
    pub epochs: usize,
    seed: u64,
    dropout: f32,
    rates: Rates,
}

/// One epoch of a plan: its shuffled order and its feeds.
#[derive(Clone, Debug)]
pub struct Epoch {
    pub index: usize,
    /// The run's step number of the epoch's first batch.
    pub first_step: usize,
    /// The training rows, shuffled by (seed, epoch).
    pub order: Vec<i32>,
    /// The learning rate of each of the epoch's steps.
    pub rates: Vec<f32>,
    pub dropout: f32,
    /// The run's seed: the first word of every dropout seed.
    pub seed: i64,
}

impl EpochPlan {
    pub fn new(cfg: &TrainConfig, n_train: usize) -> EpochPlan {
        let batch = if cfg.batch_size == 0 { n_train } else { cfg.batch_size.min(n_train) };
        let steps_per_epoch = n_train.div_ceil(batch);
        EpochPlan { n_train, batch, steps_per_epoch, epochs: cfg.epochs, seed: cfg.seed, dropout: cfg.dropout, rates: cfg.rates(steps_per_epoch) }
    }

    /// Steps of the whole run.
    pub fn total_steps(&self) -> usize {
        self.epochs * self.steps_per_epoch
    }

    /// The epoch and batch of a run's step.
    pub fn step_position(&self, step: usize) -> (usize, usize) {
        (step / self.steps_per_epoch, step % self.steps_per_epoch)
    }

    /// The learning rate of the run's step `step`.
    pub fn learning_rate(&self, step: usize) -> f32 {
        self.rates.at(step)
    }

    /// The learning rate of `epoch`'s last step (metrics.csv's `lr`).
    pub fn epoch_rate(&self, epoch: usize) -> f32 {
        self.rates.at((epoch + 1) * self.steps_per_epoch - 1)
    }

    /// Epoch `index`: the training rows shuffled by the host RNG keyed by (seed, epoch).
    pub fn epoch(&self, index: usize) -> Epoch {
        let mut order: Vec<i32> = (0..self.n_train as i32).collect();
        Rng::new(self.seed, 1_000_000 + index as u64).shuffle(&mut order);
        Epoch {
            index,
            first_step: index * self.steps_per_epoch,
            order,
            rates: (0..self.steps_per_epoch).map(|b| self.learning_rate(index * self.steps_per_epoch + b)).collect(),
            dropout: self.dropout,
            seed: self.seed as i64,
        }
    }
}

impl Epoch {
    /// The learning rate of the run's step `step` (one of this epoch's).
    pub fn rate(&self, step: usize) -> f32 {
        let b = step.saturating_sub(self.first_step).min(self.rates.len().saturating_sub(1));
        self.rates.get(b).copied().unwrap_or(0.0)
    }

    /// The epoch's batches, in step order (the last may be shorter).
    pub fn batches(&self, batch: usize) -> Vec<&[i32]> {
        self.order.chunks(batch).collect()
    }

    /// The dropout seed of replica `i` of `n` at the run's `step`: [seed, step * n + i] (with
    /// one replica, [seed, step]), distinct across replicas and steps.
    pub fn dropout_seed(&self, step: usize, i: usize, n: usize) -> [i64; 2] {
        dropout_seed(self.seed, step, i, n)
    }
}

/// Replica `i` of `n` at `step` draws its dropout masks from [seed, step * n + i].
pub fn dropout_seed(seed: i64, step: usize, i: usize, n: usize) -> [i64; 2] {
    [seed, (step * n + i) as i64]
}

/// What an epoch did.
#[derive(Clone, Debug, Default)]
pub struct EpochStats {
    /// Sum over steps of mean loss x examples (the global batches', or, asynchronous, those of
    /// the parts this process ran).
    pub loss_sum: f64,
    pub examples: usize,
    /// A non-finite loss and its batch: the epoch stopped there.
    pub diverged: Option<(f32, usize)>,
    /// With one full-set local step per epoch: that step's inference-mode logits of its batch,
    /// taken before the update (those of the previous epoch's final weights).
    pub lookahead_logits: Option<Vec<Vec<f32>>>,
    /// The epoch's train accuracy from its steps' own outputs (the pipeline's), percent; None:
    /// measured after the epoch (the Swift original's).
    pub train_accuracy: Option<f64>,
}

impl EpochStats {
    /// Adds a step's mean `loss` over `examples` examples.
    pub fn add(&mut self, loss: f32, examples: usize) {
        self.loss_sum += loss as f64 * examples as f64;
        self.examples += examples;
    }
}

/// What runs a run's epochs: the local loop (one process, or in-graph synchronous replicas), the
/// in-graph asynchronous replicas, or the between-graph chief.
pub trait EpochDriver {
    /// Before the first epoch, once the variables hold their initial or restored values: the
    /// run continues at `first_step` of `plan`.
    fn start(&mut self, _plan: &EpochPlan, _first_step: usize) -> Result<()> {
        Ok(())
    }

    /// Runs every step of `epoch`; a non-finite loss stops it (see [`EpochStats::diverged`]).
    fn run_epoch(&mut self, plan: &EpochPlan, epoch: &Epoch, bar: &Progress) -> Result<EpochStats>;

    /// After the last epoch.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }

    /// Whether [`EpochStats::lookahead_logits`] will be given (with one step per epoch).
    fn lookahead(&self, _plan: &EpochPlan) -> bool {
        false
    }
}

/// A line for the user while the progress bar may be drawn.
pub fn warn(bar: &indicatif::ProgressBar, msg: String) {
    if bar.is_hidden() { eprintln!("{msg}") } else { bar.println(msg) }
}
