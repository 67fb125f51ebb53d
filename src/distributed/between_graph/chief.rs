//! The chief's side (worker 0, the one `alexnet train` that writes the run directory): it
//! begins a generation, releases the workers, and per step pushes its own part, waits for the
//! others' gradients and applies their sums (synchronous), or trains its own parts (asynchronous);
//! as the run's [`EpochDriver`].

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tensorflow::{Session, SessionRunArgs, Tensor};

use super::protocol::{END, HOLD, WAIT, pause, push, push_part, recipe_json, set_acc_step, token};
use crate::distributed::cluster::ClusterConfig;
use crate::train::between_ops::{Protocol, SyncOps};
use crate::train::deployment::Blame;
use crate::train::epoch::{Epoch, EpochDriver, EpochPlan, EpochStats, warn};
use crate::train::pipelined::{BadFiles, Seen, start_epoch};
use crate::train::progress::Progress;
use crate::train::{StepFeeds, TrainGraph, split_part};

/// What one of the chief's steps did.
enum Stepped {
    /// Its loss, the examples the epoch's loss counts, the images the progress bar moves by.
    Trained { loss: f32, examples: usize, images: usize },
    /// Asynchronous: the chief's part of this batch is empty.
    Skipped,
    /// The epoch's batches are done.
    Done,
}

/// The chief's side.
pub struct Chief<'a> {
    protocol: &'a Protocol,
    cluster: &'a ClusterConfig,
    generation: i64,
    asynchronous: bool,
    /// Workers found lost (asynchronous: warned about once).
    lost: std::cell::RefCell<Vec<usize>>,
    /// The step the token names next (from the pipeline, an epoch may end before its last
    /// numbered step: the next one then jumps).
    next_step: std::cell::Cell<usize>,
}

impl<'a> Chief<'a> {
    /// A new generation, before the variables are initialised: workers hold, and whatever an
    /// earlier chief left in the accumulators is dropped. `recipe` (see [`recipe`]) is published
    /// first, so that a worker that sees this generation's token finds it.
    pub fn begin(tg: &'a TrainGraph, session: &Session, cluster: &'a ClusterConfig, asynchronous: bool, recipe: &[(&str, String)]) -> Result<Chief<'a>> {
        let protocol = tg.between.as_ref().context("the graph was not built for between-graph replication")?;
        let generation = protocol.generation.read(session, false)?.unwrap_or(0) + 1;
        protocol.recipe.write(session, recipe_json(recipe, generation))?;
        protocol.generation.write(session, generation)?;
        protocol.token.write(session, token(generation, asynchronous, HOLD))?;
        if let Some(sync) = &protocol.sync {
            // From here on, gradients tagged by an earlier generation are dropped; then the
            // accumulators are emptied of any taken before (a take of one empties one).
            set_acc_step(session, sync, token(generation, false, 0))?;
            let mut args = SessionRunArgs::new();
            let counts: Vec<_> = sync.counts.iter().map(|c| args.request_fetch(&c.operation, c.index)).collect();
            session.run(&mut args)?;
            let mut args2 = SessionRunArgs::new();
            let mut any = false;
            for (c, drain) in counts.into_iter().zip(&sync.drains) {
                if args.fetch::<i32>(c)?[0] > 0 {
                    args2.add_target(drain);
                    any = true;
                }
            }
            if any {
                session.run(&mut args2)?;
            }
        }
        Ok(Chief { protocol, cluster, generation, asynchronous, lost: Default::default(), next_step: Default::default() })
    }

    /// The variables hold their initial or restored values: the workers start at `step` (or stop,
    /// when `step` is `total`, the run's number of steps).
    pub fn release(&self, session: &Session, step: usize, total: usize) -> Result<()> {
        self.next_step.set(step);
        if let Some(sync) = &self.protocol.sync {
            set_acc_step(session, sync, token(self.generation, false, step as i64))?;
        }
        self.protocol.token.write(session, self.token_for(step, total))
    }

    fn token_for(&self, step: usize, total: usize) -> i64 {
        token(self.generation, self.asynchronous, if step < total { step as i64 } else { END })
    }

    /// The end of the run: the workers that are still waiting stop.
    pub fn finish(&self, session: &Session) -> Result<()> {
        self.protocol.token.write(session, token(self.generation, self.asynchronous, END))
    }

    /// One epoch of `plan`: its batches, the global batches' losses (synchronous) or those of
    /// the chief's parts (asynchronous). Session run failures go through `blame`.
    pub fn epoch(
        &self,
        session: &Session,
        tg: &TrainGraph,
        (plan, epoch): (&EpochPlan, &Epoch),
        bar: &Progress,
        blame: &dyn Fn(anyhow::Error) -> anyhow::Error,
    ) -> Result<EpochStats> {
        let n = self.protocol.workers;
        let total = plan.total_steps();
        let dropout = epoch.dropout;
        let batches = epoch.batches(plan.batch);
        self.steps(epoch, bar, |b, step, seed| {
            let lr = epoch.rate(step);
            let Some(batch) = batches.get(b) else { return Ok(Stepped::Done) };
            let part = split_part(batch, 0, n);
            Ok(match &self.protocol.sync {
                Some(sync) => {
                    ensure!(batch.len() >= n, "a batch of {} examples cannot be split across {n} workers: use a larger --batch-size", batch.len());
                    let feeds = StepFeeds::new(lr, dropout, seed)?;
                    push(session, tg, sync, part, batch.len(), &feeds, token(self.generation, false, step as i64)).map_err(blame)?;
                    self.wait_for_gradients(session, sync, step, blame)?;
                    let loss = self.update(session, tg, sync, lr, self.token_for(step + 1, total)).map_err(blame)?;
                    Stepped::Trained { loss, examples: batch.len(), images: batch.len() }
                }
                None if part.is_empty() => Stepped::Skipped,
                None => {
                    let loss = tg.replica_steps()[0].run(session, part, lr, dropout, seed).map_err(blame)?;
                    Stepped::Trained { loss, examples: part.len(), images: batch.len() }
                }
            })
        })
    }

    /// One epoch of `plan` from the pipeline (its iterator already at the epoch): the chief's
    /// part of each batch, until its batches are done; synchronous: the global batches' losses
    /// and accuracy; asynchronous: those of the chief's parts; `seen` marks the examples of the
    /// batches.
    pub fn pipeline_epoch(
        &self,
        session: &Session,
        tg: &TrainGraph,
        (plan, epoch): (&EpochPlan, &Epoch),
        (bar, seen): (&Progress, &mut Seen),
        blame: &dyn Fn(anyhow::Error) -> anyhow::Error,
    ) -> Result<EpochStats> {
        let n = self.protocol.workers;
        let total = plan.total_steps();
        let dropout = epoch.dropout;
        let mut correct = 0.0;
        let mut e = self.steps(epoch, bar, |_, step, seed| match &self.protocol.sync {
            Some(sync) => {
                let lr = epoch.rate(step);
                if self.next_step.get() != step {
                    // The last epoch ended early: the workers wait on a step that never came.
                    set_acc_step(session, sync, token(self.generation, false, step as i64)).map_err(blame)?;
                    self.protocol.token.write(session, self.token_for(step, total)).map_err(blame)?;
                }
                let feeds = StepFeeds::new(lr, dropout, seed)?;
                let tag = token(self.generation, false, step as i64);
                let Some((_, indices)) = push_part(session, tg, sync, (0, n), &feeds, tag).map_err(blame)? else { return Ok(Stepped::Done) };
                self.wait_for_gradients(session, sync, step, blame)?;
                let (loss, accuracy) = self.update_with_accuracy(session, tg, sync, lr, self.token_for(step + 1, total)).map_err(blame)?;
                self.next_step.set(step + 1);
                seen.mark(&indices);
                correct += accuracy as f64 * indices.len() as f64;
                Ok(Stepped::Trained { loss, examples: indices.len(), images: indices.len() })
            }
            None => {
                let Some(p) = tg.replica_steps()[0].run_part(session, (0, n), epoch.rate(step), dropout, seed).map_err(blame)? else {
                    return Ok(Stepped::Done);
                };
                correct += p.accuracy as f64 * p.examples as f64;
                seen.mark(&p.batch);
                Ok(Stepped::Trained { loss: p.loss, examples: p.examples, images: p.examples })
            }
        })?;
        e.train_accuracy = Some(100.0 * correct / e.examples.max(1) as f64);
        Ok(e)
    }

    /// Runs an epoch's steps, `one(b, step, dropout seed)` running its b-th (the run's `step`),
    /// until it says the batches are done or a loss is not finite: the epoch's losses, its
    /// progress, and (asynchronous) a warning for each worker lost.
    fn steps(&self, epoch: &Epoch, bar: &Progress, mut one: impl FnMut(usize, usize, [i64; 2]) -> Result<Stepped>) -> Result<EpochStats> {
        let mut e = EpochStats::default();
        for b in 0.. {
            let step = epoch.first_step + b;
            let (loss, examples, images) = match one(b, step, epoch.dropout_seed(step, 0, self.protocol.workers))? {
                Stepped::Done => break,
                Stepped::Skipped => continue,
                Stepped::Trained { loss, examples, images } => (loss, examples, images),
            };
            if !loss.is_finite() {
                e.diverged = Some((loss, b));
                return Ok(e);
            }
            e.add(loss, examples);
            bar.step(images);
        }
        if self.asynchronous {
            self.warn_lost(bar);
        }
        Ok(e)
    }

    /// Polls until all n workers' gradients of `step` are in; names a worker that stops
    /// accepting connections meanwhile.
    fn wait_for_gradients(&self, session: &Session, sync: &SyncOps, step: usize, blame: &dyn Fn(anyhow::Error) -> anyhow::Error) -> Result<()> {
        let n = self.protocol.workers;
        let start = Instant::now();
        let mut checked = start;
        loop {
            let mut args = SessionRunArgs::new();
            let count = args.request_fetch(&sync.arrived.operation, sync.arrived.index);
            session.run(&mut args).map_err(|e| blame(e.into()))?;
            let count = args.fetch::<i32>(count).map_err(|e| blame(e.into()))?[0] as usize;
            if count >= n {
                return Ok(());
            }
            if checked.elapsed() >= Duration::from_millis(500) {
                checked = Instant::now();
                if let Some(k) = (1..n).find(|&k| !self.cluster.is_reachable("worker", k)) {
                    // A moment for a worker being restarted by hand to be seen as what it is.
                    std::thread::sleep(Duration::from_millis(200));
                    if !self.cluster.is_reachable("worker", k) {
                        bail!(
                            "lost {}: its gradients for step {step} did not arrive ({count} of {n} did) and it accepts no connection; synchronous training cannot go on without it: restart it (alexnet train --between-graph ... --task {k}), then continue with: alexnet train --between-graph --resume (same run directory and cluster)",
                            self.cluster.describe("worker", k)
                        );
                    }
                }
            }
            if start.elapsed() > WAIT {
                bail!(
                    "only {count} of {n} workers pushed their gradients for step {step} within {} s: is every worker running `alexnet train --between-graph` with the same recipe (--batch-size, --epochs, --seed, images)?",
                    WAIT.as_secs()
                );
            }
            std::thread::sleep(pause(start.elapsed()));
        }
    }

    /// Takes the sums, updates the variables and names the next step for the workers; returns
    /// the global batch's mean loss.
    fn update(&self, session: &Session, tg: &TrainGraph, sync: &SyncOps, lr: f32, next: i64) -> Result<f32> {
        Ok(self.update_with_accuracy(session, tg, sync, lr, next)?.0)
    }

    /// [`Self::update`], also taking the global batch's accuracy (0 without the pipeline's).
    fn update_with_accuracy(&self, session: &Session, tg: &TrainGraph, sync: &SyncOps, lr: f32, next: i64) -> Result<(f32, f32)> {
        let next = Tensor::from(next);
        let lr = Tensor::from(lr);
        let mut args = SessionRunArgs::new();
        let rate = tg.learning_rate();
        args.add_feed(&rate.operation, rate.index, &lr);
        let v = &self.protocol.token.value;
        args.add_feed(&v.operation, v.index, &next);
        args.add_target(tg.train_op());
        args.add_target(&self.protocol.token_after_update);
        let loss = args.request_fetch(&sync.loss_sum.operation, sync.loss_sum.index);
        let accuracy = sync.accuracy_sum.as_ref().map(|a| args.request_fetch(&a.operation, a.index));
        session.run(&mut args)?;
        let accuracy = match accuracy {
            Some(a) => args.fetch::<f32>(a)?[0],
            None => 0.0,
        };
        Ok((args.fetch::<f32>(loss)?[0], accuracy))
    }

    /// Asynchronous: a warning for each worker newly found not accepting connections (the
    /// others carry on).
    fn warn_lost(&self, bar: &indicatif::ProgressBar) {
        let mut lost = self.lost.borrow_mut();
        for k in 1..self.protocol.workers {
            if !lost.contains(&k) && !self.cluster.is_reachable("worker", k) {
                lost.push(k);
                warn(bar, format!("warning: lost {}: it accepts no connection; the other workers carry on asynchronously", self.cluster.describe("worker", k)));
            }
        }
    }
}

/// The chief as the run's epoch driver.
pub struct ChiefDriver<'a> {
    pub chief: Chief<'a>,
    pub tg: &'a TrainGraph,
    pub session: &'a Session,
    pub blame: &'a dyn Blame,
    /// The run's seed (the pipeline's shuffles).
    pub seed: u64,
    /// From the pipeline: the files its epochs leave out.
    pub bad: Option<BadFiles<'a>>,
}

impl EpochDriver for ChiefDriver<'_> {
    fn start(&mut self, plan: &EpochPlan, first_step: usize) -> Result<()> {
        self.chief.release(self.session, first_step, plan.total_steps()).map_err(|e| self.blame.blame(e))
    }

    fn run_epoch(&mut self, plan: &EpochPlan, epoch: &Epoch, bar: &Progress) -> Result<EpochStats> {
        let blame = |e| self.blame.blame(e);
        if !self.tg.is_cut() {
            return self.chief.epoch(self.session, self.tg, (plan, epoch), bar, &blame);
        }
        start_epoch(self.tg, self.session, self.seed, epoch.index).map_err(blame)?;
        let mut seen = Seen::new(plan.n_train);
        let stats = self.chief.pipeline_epoch(self.session, self.tg, (plan, epoch), (bar, &mut seen), &blame)?;
        if let Some(bad) = self.bad.as_mut().filter(|_| stats.diverged.is_none()) {
            bad.report_missing(&seen, bar)?;
        }
        Ok(stats)
    }

    fn finish(&mut self) -> Result<()> {
        self.chief.finish(self.session).map_err(|e| self.blame.blame(e))
    }
}
