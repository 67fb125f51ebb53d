//! In-graph asynchronous replicas on a cluster: one thread per live replica runs its part of
//! every batch with its own update, as fast as it can; a lost worker's replica is dropped. From
//! the pipeline, each replica takes its part of every batch of its own pipeline.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::Result;
use tensorflow::Session;

use crate::data::pipeline::Pipeline;
use crate::train::deployment::Blame;
use crate::train::epoch::{Epoch, EpochDriver, EpochPlan, EpochStats, warn};
use crate::train::graph::TrainGraph;
use crate::train::pipelined::{BadFiles, Seen};
use crate::train::progress::Progress;
use crate::train::replicas::{PartStep, ReplicaStep, split_part};

/// The workers the replicas run on, as the asynchronous epoch needs to know them.
pub trait Workers: Sync {
    /// Whether worker `i` is lost (it accepts no connection, within a few seconds).
    fn is_lost(&self, i: usize) -> bool;
    /// Worker `i`, named for the user.
    fn describe(&self, i: usize) -> String;
}

/// In-graph asynchronous replicas: the epoch driver.
pub struct AsyncReplicas<'a> {
    tg: &'a TrainGraph,
    /// The run's seed (the pipelines' shuffles).
    seed: u64,
    session: &'a Session,
    replicas: &'a [ReplicaStep],
    /// The replicas still training (all of them until a worker is lost).
    live: Vec<usize>,
    workers: &'a dyn Workers,
    blame: &'a dyn Blame,
    /// From the pipelines: the files their epochs leave out.
    bad: Option<BadFiles<'a>>,
}

impl<'a> AsyncReplicas<'a> {
    pub fn new(tg: &'a TrainGraph, seed: u64, session: &'a Session, workers: &'a dyn Workers, blame: &'a dyn Blame, bad: Option<BadFiles<'a>>) -> Self {
        let replicas = tg.replica_steps();
        AsyncReplicas { tg, seed, session, replicas, live: (0..replicas.len()).collect(), workers, blame, bad }
    }
}

impl EpochDriver for AsyncReplicas<'_> {
    fn run_epoch(&mut self, plan: &EpochPlan, epoch: &Epoch, bar: &Progress) -> Result<EpochStats> {
        // From the pipelines, the batches come from the graph: none are listed here.
        let cut = self.tg.is_cut().then_some((&self.tg.pipelines[..], self.seed));
        let batches = if cut.is_some() { vec![] } else { epoch.batches(plan.batch) };
        let (stats, seen) =
            async_epoch(self.session, self.replicas, &mut self.live, (&batches, cut), epoch, self.workers, bar).map_err(|e| self.blame.blame(e))?;
        if let Some(bad) = self.bad.as_mut().filter(|_| cut.is_some() && stats.diverged.is_none()) {
            let mut marked = Seen::new(plan.n_train);
            marked.mark(&seen);
            bad.report_missing(&marked, bar)?;
        }
        Ok(stats)
    }
}

/// Each replica's pipeline, and the run's seed that shuffles them.
type FromPipelines<'a> = (&'a [Pipeline], u64);

/// One epoch of asynchronous updates: a thread per live replica runs its part of every batch
/// (contiguous parts, as `split_part` cuts them among the live replicas), each with its own
/// step, as fast as it can; only the epoch's end waits for all. Replica r of n draws its dropout
/// masks from [seed, step * n + r]. A replica whose worker stops answering is dropped with a
/// warning: its parts of the epoch's remaining batches are skipped, and later epochs split every
/// batch among the replicas left. The chief's own replica failing, or any other failure, is an
/// error (the other threads stop at their next step). Also returns, from the pipelines, the
/// examples of every batch the chief's replica saw: each replica's pipeline holds the same
/// files in the same order, and the chief's replica is never dropped, so its batches are the
/// epoch's.
fn async_epoch(
    session: &Session,
    replicas: &[ReplicaStep],
    live: &mut Vec<usize>,
    (batches, cut): (&[&[i32]], Option<FromPipelines>),
    epoch: &Epoch,
    workers: &dyn Workers,
    bar: &Progress,
) -> Result<(EpochStats, Vec<i32>)> {
    let shared =
        Shared { session, replicas, batches, cut, epoch, workers, bar, parts: live.len(), abort: AtomicBool::new(false), left: AtomicUsize::new(live.len()) };
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let threads: Vec<_> = live
            .iter()
            .enumerate()
            .map(|(k, &r)| {
                let shared = &shared;
                scope.spawn(move || shared.replica(k, r))
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("a replica's thread panicked")).collect()
    });
    let mut stats = EpochStats::default();
    let mut correct = 0.0;
    let mut kept = vec![];
    let mut seen = vec![];
    for (&r, mut outcome) in live.iter().zip(outcomes) {
        if let Some(e) = outcome.error {
            return Err(e);
        }
        stats.loss_sum += outcome.stats.loss_sum;
        stats.examples += outcome.stats.examples;
        correct += outcome.correct;
        if r == 0 {
            seen = std::mem::take(&mut outcome.seen);
        }
        stats.diverged = stats.diverged.or(outcome.stats.diverged);
        if !outcome.lost {
            kept.push(r);
        }
    }
    *live = kept;
    if cut.is_some() {
        stats.train_accuracy = Some(100.0 * correct / stats.examples.max(1) as f64);
    }
    Ok((stats, seen))
}

/// What the replicas' threads of one epoch share.
struct Shared<'a> {
    session: &'a Session,
    replicas: &'a [ReplicaStep],
    batches: &'a [&'a [i32]],
    /// The batches come from each replica's pipeline (`batches` is empty), shuffled by the
    /// run's seed.
    cut: Option<FromPipelines<'a>>,
    epoch: &'a Epoch,
    workers: &'a dyn Workers,
    bar: &'a Progress,
    /// Live replicas at the epoch's start: every batch is cut in as many parts.
    parts: usize,
    abort: AtomicBool,
    /// Live replicas now.
    left: AtomicUsize,
}

/// One live replica's epoch.
struct Outcome {
    stats: EpochStats,
    /// From the pipeline: the examples its steps got right (dropout off, before each update).
    correct: f64,
    /// From the pipeline, on the chief's replica: the examples of the batches its steps took
    /// parts of.
    seen: Vec<i32>,
    lost: bool,
    error: Option<anyhow::Error>,
}

impl Shared<'_> {
    /// Replica `r`'s part `k` of every batch, until the end, a divergence, an abort, or its
    /// worker lost.
    fn replica(&self, k: usize, r: usize) -> Outcome {
        let mut out = Outcome { stats: EpochStats::default(), correct: 0.0, seen: vec![], lost: false, error: None };
        for b in 0.. {
            if self.abort.load(Ordering::SeqCst) {
                break;
            }
            let Some(result) = self.part_step(k, r, b) else { break };
            match result {
                Ok(None) => continue,
                Ok(Some(p)) if !p.loss.is_finite() => {
                    self.abort.store(true, Ordering::SeqCst);
                    out.stats.diverged = Some((p.loss, b));
                    return out;
                }
                Ok(Some(p)) => {
                    out.stats.add(p.loss, p.examples);
                    out.correct += p.accuracy as f64 * p.examples as f64;
                    if r == 0 {
                        out.seen.extend(&p.batch);
                        self.bar.step(p.examples * self.parts);
                    }
                }
                // The chief's replica is needed for evaluation and checkpoints.
                Err(_) if r != 0 && self.workers.is_lost(r) => {
                    let remaining = self.left.fetch_sub(1, Ordering::SeqCst) - 1;
                    let msg = format!(
                        "warning: lost {}: its step failed and it accepts no connection; continuing asynchronously with {remaining} worker{}",
                        self.workers.describe(r),
                        if remaining == 1 { "" } else { "s" }
                    );
                    warn(self.bar, msg);
                    out.lost = true;
                    return out;
                }
                Err(e) => {
                    self.abort.store(true, Ordering::SeqCst);
                    out.error = Some(e.context(format!("replica {r}'s step {b} failed")));
                    return out;
                }
            }
        }
        out
    }

    /// Replica `r`'s step on its part `k` of batch `b`: None past the epoch's last batch;
    /// Ok(None) for an empty part.
    fn part_step(&self, k: usize, r: usize, b: usize) -> Option<Result<Option<PartStep>>> {
        let n = self.replicas.len();
        let seed = self.epoch.dropout_seed(self.epoch.first_step + b, r, n);
        let (lr, dropout) = (self.epoch.rate(self.epoch.first_step + b), self.epoch.dropout);
        if let Some((pipelines, run_seed)) = self.cut {
            // Started here, so that a lost worker's failing start drops its replica as a step would.
            if b == 0
                && let Err(e) = pipelines[r].start_train(self.session, run_seed, self.epoch.index)
            {
                return Some(Err(e));
            }
            return self.replicas[r].run_part(self.session, (k, self.parts), lr, dropout, seed).map(|p| p.map(Some)).transpose();
        }
        let part = split_part(self.batches.get(b)?, k, self.parts);
        if part.is_empty() {
            return Some(Ok(None));
        }
        Some(
            self.replicas[r].run(self.session, part, lr, dropout, seed).map(|loss| Some(PartStep { loss, examples: part.len(), accuracy: 0.0, batch: vec![] })),
        )
    }
}
