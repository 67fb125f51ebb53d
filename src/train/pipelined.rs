//! The pipeline loop: each epoch re-makes the iterator for its shuffle and crops, then steps
//! until the pipeline's batches run out. The epoch's train accuracy comes from the steps' own
//! outputs (each batch's logits with dropout off, before its update), and the examples the epoch
//! never saw are the files that failed to decode: named on the terminal and in bad-images.txt.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Result;
use tensorflow::Session;

use crate::data::pipeline::Pipeline;
use crate::graph::scoring::argmax;
use crate::train::epoch::{Epoch, EpochDriver, EpochPlan, EpochStats, warn};
use crate::train::graph::TrainGraph;
use crate::train::progress::Progress;
use crate::train::source::append_bad;

/// Runs an epoch's batches from the pipeline in the graph.
pub struct PipelineLoop<'a> {
    tg: &'a TrainGraph,
    session: &'a Session,
    pipeline: &'a Pipeline,
    seed: u64,
    /// Train then val, in the run's numbering.
    paths: &'a [PathBuf],
    bad_log: &'a Path,
    /// Whether an epoch's last partial batch is dropped: then missing examples are not failures.
    drop_remainder: bool,
    /// Files already named (a failed file stays out of the cache, so out of every epoch).
    reported: BTreeSet<i32>,
}

impl<'a> PipelineLoop<'a> {
    pub fn new(
        tg: &'a TrainGraph,
        session: &'a Session,
        pipeline: &'a Pipeline,
        seed: u64,
        paths: &'a [PathBuf],
        bad_log: &'a Path,
        drop_remainder: bool,
    ) -> Self {
        PipelineLoop { tg, session, pipeline, seed, paths, bad_log, drop_remainder, reported: BTreeSet::new() }
    }

    /// Names the training examples that `seen` lacks, once each.
    fn report_missing(&mut self, seen: &[bool], bar: &Progress) -> Result<()> {
        let missing: Vec<i32> = (0..seen.len() as i32).filter(|&i| !seen[i as usize] && !self.reported.contains(&i)).collect();
        if missing.is_empty() || self.drop_remainder {
            return Ok(());
        }
        let lines: Vec<String> = missing.iter().map(|&i| format!("{}: failed to decode during training (skipped)", self.paths[i as usize].display())).collect();
        for l in &lines {
            warn(bar, format!("warning: {l}"));
        }
        append_bad(self.bad_log, &lines)?;
        self.reported.extend(missing);
        Ok(())
    }
}

impl EpochDriver for PipelineLoop<'_> {
    fn run_epoch(&mut self, plan: &EpochPlan, epoch: &Epoch, bar: &Progress) -> Result<EpochStats> {
        self.pipeline.start_train(self.session, self.seed, epoch.index)?;
        if self.drop_remainder {
            bar.set_images(plan.n_train / plan.batch * plan.batch);
        }
        let mut stats = EpochStats::default();
        let mut seen = vec![false; plan.n_train];
        let mut correct = 0usize;
        for b in 0.. {
            let seed = epoch.dropout_seed(epoch.first_step + b, 0, 1);
            let Some(out) = self.tg.pipeline_step(self.session, self.pipeline, epoch.learning_rate, epoch.dropout, seed)? else { break };
            if !out.loss.is_finite() {
                stats.diverged = Some((out.loss, b));
                return Ok(stats);
            }
            stats.add(out.loss, out.indices.len());
            correct += out.logits.iter().zip(&out.labels).filter(|(l, y)| argmax(l) == **y).count();
            for &i in &out.indices {
                seen[i as usize] = true;
            }
            bar.step(out.indices.len());
        }
        stats.train_accuracy = Some(100.0 * correct as f64 / stats.examples.max(1) as f64);
        self.report_missing(&seen, bar)?;
        Ok(stats)
    }
}
