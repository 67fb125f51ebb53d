//! In-graph asynchronous replicas on a cluster: one thread per live replica runs its part of
//! every batch with its own update, as fast as it can; a lost worker's replica is dropped.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::Result;
use tensorflow::Session;

use crate::train::deployment::Blame;
use crate::train::epoch::{Epoch, EpochDriver, EpochPlan, EpochStats, warn};
use crate::train::graph::TrainGraph;
use crate::train::progress::Progress;
use crate::train::replicas::{ReplicaStep, split_part};

/// The workers the replicas run on, as the asynchronous epoch needs to know them.
pub trait Workers: Sync {
    /// Whether worker `i` is lost (it accepts no connection, within a few seconds).
    fn is_lost(&self, i: usize) -> bool;
    /// Worker `i`, named for the user.
    fn describe(&self, i: usize) -> String;
}

/// In-graph asynchronous replicas: the epoch driver.
pub struct AsyncReplicas<'a> {
    session: &'a Session,
    replicas: &'a [ReplicaStep],
    /// The replicas still training (all of them until a worker is lost).
    live: Vec<usize>,
    workers: &'a dyn Workers,
    blame: &'a dyn Blame,
}

impl<'a> AsyncReplicas<'a> {
    pub fn new(tg: &'a TrainGraph, session: &'a Session, workers: &'a dyn Workers, blame: &'a dyn Blame) -> Self {
        let replicas = tg.replica_steps();
        AsyncReplicas { session, replicas, live: (0..replicas.len()).collect(), workers, blame }
    }
}

impl EpochDriver for AsyncReplicas<'_> {
    fn run_epoch(&mut self, plan: &EpochPlan, epoch: &Epoch, bar: &Progress) -> Result<EpochStats> {
        let batches = epoch.batches(plan.batch);
        async_epoch(self.session, self.replicas, &mut self.live, &batches, epoch, self.workers, bar).map_err(|e| self.blame.blame(e))
    }
}

/// One epoch of asynchronous updates: a thread per live replica runs its part of every batch
/// (contiguous parts, as `split_part` cuts them among the live replicas), each with its own
/// step, as fast as it can; only the epoch's end waits for all. Replica r of n draws its dropout
/// masks from [seed, step * n + r]. A replica whose worker stops answering is dropped with a
/// warning: its parts of the epoch's remaining batches are skipped, and later epochs split every
/// batch among the replicas left. The chief's own replica failing, or any other failure, is an
/// error (the other threads stop at their next step).
fn async_epoch(
    session: &Session,
    replicas: &[ReplicaStep],
    live: &mut Vec<usize>,
    batches: &[&[i32]],
    epoch: &Epoch,
    workers: &dyn Workers,
    bar: &Progress,
) -> Result<EpochStats> {
    let shared =
        Shared { session, replicas, batches, epoch, workers, bar, parts: live.len(), abort: AtomicBool::new(false), left: AtomicUsize::new(live.len()) };
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
    let mut kept = vec![];
    for (&r, outcome) in live.iter().zip(outcomes) {
        if let Some(e) = outcome.error {
            return Err(e);
        }
        stats.loss_sum += outcome.stats.loss_sum;
        stats.examples += outcome.stats.examples;
        stats.diverged = stats.diverged.or(outcome.stats.diverged);
        if !outcome.lost {
            kept.push(r);
        }
    }
    *live = kept;
    Ok(stats)
}

/// What the replicas' threads of one epoch share.
struct Shared<'a> {
    session: &'a Session,
    replicas: &'a [ReplicaStep],
    batches: &'a [&'a [i32]],
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
    lost: bool,
    error: Option<anyhow::Error>,
}

impl Shared<'_> {
    /// Replica `r`'s part `k` of every batch, until the end, a divergence, an abort, or its
    /// worker lost.
    fn replica(&self, k: usize, r: usize) -> Outcome {
        let n = self.replicas.len();
        let mut out = Outcome { stats: EpochStats::default(), lost: false, error: None };
        for (b, batch) in self.batches.iter().enumerate() {
            let part = split_part(batch, k, self.parts);
            if self.abort.load(Ordering::SeqCst) {
                break;
            }
            if part.is_empty() {
                continue;
            }
            let step = self.epoch.first_step + b;
            let seed = self.epoch.dropout_seed(step, r, n);
            match self.replicas[r].run(self.session, part, self.epoch.learning_rate, self.epoch.dropout, seed) {
                Ok(loss) if !loss.is_finite() => {
                    self.abort.store(true, Ordering::SeqCst);
                    out.stats.diverged = Some((loss, b));
                    return out;
                }
                Ok(loss) => out.stats.add(loss, part.len()),
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
            if r == 0 {
                self.bar.step(batch.len());
            }
        }
        out
    }
}
