//! The pipeline loop: each epoch re-makes the iterator for its shuffle and crops (on a cluster,
//! every worker's), then steps until the pipeline's batches run out. The epoch's train accuracy
//! comes from the steps' own outputs (each batch's logits with dropout off, before its update),
//! and the examples the epoch never saw are the files that failed to decode: named on the
//! terminal and in bad-images.txt ([`BadFiles`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Result;
use tensorflow::Session;

use crate::data::pipeline::Pipeline;
use crate::graph::scoring::argmax;
use crate::train::deployment::Blame;
use crate::train::epoch::{Epoch, EpochDriver, EpochPlan, EpochStats, warn};
use crate::train::graph::TrainGraph;
use crate::train::progress::Progress;
use crate::train::source::{Source, append_bad};

/// The files an epoch's batches left out: named once each.
pub struct BadFiles<'a> {
    /// Train then val, in the run's numbering.
    paths: &'a [PathBuf],
    bad_log: &'a Path,
    /// Whether an epoch's last partial batch is dropped: then missing examples are not failures.
    drop_remainder: bool,
    /// Files already named (a failed file stays out of the cache, so out of every epoch).
    reported: BTreeSet<i32>,
    /// Who names them, on a terminal shared with others (a cluster worker's "worker 1").
    speaker: Option<&'a str>,
}

impl<'a> BadFiles<'a> {
    pub fn new(paths: &'a [PathBuf], bad_log: &'a Path, drop_remainder: bool) -> Self {
        BadFiles { paths, bad_log, drop_remainder, reported: BTreeSet::new(), speaker: None }
    }

    /// For a run from the pipeline (None otherwise: its files were all decoded up front).
    pub fn of(source: &'a Source, drop_remainder: bool) -> Option<Self> {
        match source {
            Source::Pipeline { paths, bad_log, .. } => Some(BadFiles::new(paths, bad_log, drop_remainder)),
            _ => None,
        }
    }

    /// Names the files with `speaker: ` before each warning.
    pub fn spoken_by(self, speaker: &'a str) -> Self {
        BadFiles { speaker: Some(speaker), ..self }
    }

    /// Names the training examples that `seen` lacks, once each.
    pub fn report_missing(&mut self, seen: &Seen, bar: &Progress) -> Result<()> {
        let missing: Vec<i32> = (0..seen.0.len() as i32).filter(|&i| !seen.0[i as usize] && !self.reported.contains(&i)).collect();
        if missing.is_empty() || self.drop_remainder {
            return Ok(());
        }
        let lines: Vec<String> = missing.iter().map(|&i| format!("{}: failed to decode during training (skipped)", self.paths[i as usize].display())).collect();
        let speaker = self.speaker.map(|s| format!("{s}: ")).unwrap_or_default();
        for l in &lines {
            warn(bar, format!("{speaker}warning: {l}"));
        }
        append_bad(self.bad_log, &lines)?;
        self.reported.extend(missing);
        Ok(())
    }
}

/// The training examples an epoch's batches held, by their index in the run's numbering.
pub struct Seen(Vec<bool>);

impl Seen {
    pub fn new(n_train: usize) -> Self {
        Seen(vec![false; n_train])
    }

    pub fn mark(&mut self, indices: &[i32]) {
        for &i in indices {
            self.0[i as usize] = true;
        }
    }
}

/// Points every pipeline of `tg` (a cluster's: one per replica) at epoch `epoch`.
pub fn start_epoch(tg: &TrainGraph, session: &Session, seed: u64, epoch: usize) -> Result<()> {
    tg.pipelines.iter().try_for_each(|p| p.start_train(session, seed, epoch))
}

/// Runs an epoch's batches from the pipeline in the graph (on an in-graph cluster, each
/// replica's part of every batch from its own pipeline).
pub struct PipelineLoop<'a> {
    tg: &'a TrainGraph,
    session: &'a Session,
    pipeline: &'a Pipeline,
    seed: u64,
    bad: BadFiles<'a>,
    /// What a failed session run means.
    blame: &'a dyn Blame,
}

/// One step's outcome: its batch's mean loss, how many of it were right, its examples' indices.
struct Stepped {
    loss: f32,
    correct: f64,
    indices: Vec<i32>,
}

impl<'a> PipelineLoop<'a> {
    pub fn new(tg: &'a TrainGraph, session: &'a Session, pipeline: &'a Pipeline, seed: u64, bad: BadFiles<'a>, blame: &'a dyn Blame) -> Self {
        PipelineLoop { tg, session, pipeline, seed, bad, blame }
    }

    /// The next batch's step; None when the epoch's batches are done.
    fn step(&self, epoch: &Epoch, step: usize) -> Result<Option<Stepped>> {
        if self.tg.is_cut() {
            let seed = epoch.dropout_seed(step, 0, 1);
            let Some(out) = self.tg.cut_step(self.session, epoch.rate(step), epoch.dropout, seed)? else { return Ok(None) };
            let correct = out.accuracy as f64 * out.indices.len() as f64;
            return Ok(Some(Stepped { loss: out.loss, correct, indices: out.indices }));
        }
        let seed = epoch.dropout_seed(step, 0, 1);
        let Some(out) = self.tg.pipeline_step(self.session, self.pipeline, epoch.rate(step), epoch.dropout, seed)? else { return Ok(None) };
        let correct = out.logits.iter().zip(&out.labels).filter(|(l, y)| argmax(l) == **y).count() as f64;
        Ok(Some(Stepped { loss: out.loss, correct, indices: out.indices }))
    }
}

impl EpochDriver for PipelineLoop<'_> {
    fn run_epoch(&mut self, plan: &EpochPlan, epoch: &Epoch, bar: &Progress) -> Result<EpochStats> {
        start_epoch(self.tg, self.session, self.seed, epoch.index).map_err(|e| self.blame.blame(e))?;
        if self.bad.drop_remainder {
            bar.set_images(plan.n_train / plan.batch * plan.batch);
        }
        let mut stats = EpochStats::default();
        let mut seen = Seen::new(plan.n_train);
        let mut correct = 0.0;
        for b in 0.. {
            let Some(out) = self.step(epoch, epoch.first_step + b).map_err(|e| self.blame.blame(e))? else { break };
            if !out.loss.is_finite() {
                stats.diverged = Some((out.loss, b));
                return Ok(stats);
            }
            stats.add(out.loss, out.indices.len());
            correct += out.correct;
            seen.mark(&out.indices);
            bar.step(out.indices.len());
        }
        stats.train_accuracy = Some(100.0 * correct / stats.examples.max(1) as f64);
        self.bad.report_missing(&seen, bar)?;
        Ok(stats)
    }
}
