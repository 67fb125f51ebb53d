//! The local loop: one process's steps, each the whole batch through the training graph's
//! synchronous step (alone, or in-graph replicas on a cluster splitting every batch).

use anyhow::Result;
use tensorflow::Session;

use crate::train::deployment::Blame;
use crate::train::epoch::{Epoch, EpochDriver, EpochPlan, EpochStats};
use crate::train::graph::TrainGraph;
use crate::train::progress::Progress;
use crate::train::source::Source;

/// Runs an epoch's batches one synchronous step after another.
pub struct LocalLoop<'a> {
    pub tg: &'a TrainGraph,
    pub session: &'a Session,
    pub source: &'a Source,
    /// Whether the steps return their batch's logits (not on a cluster, where replica 0's head
    /// sees only its shard).
    pub logits: bool,
    /// What a failed session run means.
    pub blame: &'a dyn Blame,
}

impl EpochDriver for LocalLoop<'_> {
    fn run_epoch(&mut self, plan: &EpochPlan, epoch: &Epoch, bar: &Progress) -> Result<EpochStats> {
        let mut stats = EpochStats::default();
        for (b, part) in epoch.batches(plan.batch).into_iter().enumerate() {
            let step = epoch.first_step + b;
            let seed = epoch.dropout_seed(step, 0, 1);
            let out = self.tg.run_step(self.session, &self.source.batch(part)?, epoch.rate(step), epoch.dropout, seed).map_err(|e| self.blame.blame(e))?;
            if b == 0 && self.lookahead(plan) {
                stats.lookahead_logits = Some(out.logits);
            }
            if !out.loss.is_finite() {
                stats.diverged = Some((out.loss, b));
                return Ok(stats);
            }
            stats.add(out.loss, part.len());
            bar.step(part.len());
        }
        Ok(stats)
    }

    /// Train accuracy is the Swift original's: inference mode, after the epoch's step. With one
    /// full-set step per epoch, the next step computes exactly that on the way (the convolutions
    /// are shared, and its dropout-off fc head gives the pre-update logits).
    fn lookahead(&self, plan: &EpochPlan) -> bool {
        self.logits && plan.steps_per_epoch == 1
    }
}
