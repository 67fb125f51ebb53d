//! The run's epoch loop around an [`EpochDriver`]: after each epoch, the validation accuracy
//! (where due), the train accuracy (or, with the lookahead, left for the next epoch's step), the
//! row printed, logged to TensorBoard and written to metrics.csv, the checkpoint (where due), and
//! the stops: divergence and interruption. An [`EpochClock`] times each of those parts, so that
//! the time an epoch takes beyond its steps is seen (the run's last line, `alexnet bench`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use tensorflow::Session;

use crate::graph::scoring::{accuracy, top_k_accuracy};
use crate::observe::plot;
use crate::run::checkpoint;
use crate::run::config::TrainConfig;
use crate::run::metrics::{self, Row};
use crate::train::deployment::Blame;
use crate::train::epoch::{Epoch, EpochDriver, EpochPlan, EpochStats};
use crate::train::feeds::Batch;
use crate::train::graph::TrainGraph;
use crate::train::progress::Progress;
use crate::train::source::Source;
use crate::train::summaries::Summaries;
use crate::train::{Loaded, Placed};

/// Top-k accuracy is measured beside top-1 with this many classes or more.
const TOP_K: usize = 5;

/// The loop's state: what it reads, and the rows so far.
pub(crate) struct EpochLoop<'a> {
    cfg: &'a TrainConfig,
    run_dir: &'a Path,
    quiet: bool,
    tg: &'a TrainGraph,
    session: &'a Session,
    tb: &'a Summaries,
    source: &'a Source,
    plan: &'a EpochPlan,
    blame: &'a dyn Blame,
    pub(crate) bar: Progress,
    interrupted: Arc<AtomicBool>,
    metrics_path: PathBuf,
    pub(crate) rows: Vec<Row>,
    /// The first val image, for TensorBoard's images.
    example: Batch,
    train_labels: Vec<usize>,
    val_labels: Vec<usize>,
    /// The best val accuracy so far and its epoch, and validations since (for --early-stop).
    best: Option<(f64, usize)>,
    since_best: usize,
    /// Set when --early-stop ends the run.
    stopped_early: bool,
    pub(crate) clock: EpochClock,
}

/// Wall time per part of an epoch (the steps, validation, ...), summed over the epochs run.
#[derive(Debug, Default)]
pub struct EpochClock {
    parts: Vec<(&'static str, Duration)>,
    epochs: usize,
}

impl EpochClock {
    /// Runs `f`, adding its time to `part`.
    fn time<T>(&mut self, part: &'static str, f: impl FnOnce() -> T) -> T {
        let t0 = Instant::now();
        let out = f();
        self.add(part, t0.elapsed());
        out
    }

    fn add(&mut self, part: &'static str, spent: Duration) {
        match self.parts.iter_mut().find(|(p, _)| *p == part) {
            Some((_, d)) => *d += spent,
            None => self.parts.push((part, spent)),
        }
    }

    /// Seconds per epoch of each part, in the order they first ran.
    pub fn per_epoch(&self) -> Vec<(&'static str, f64)> {
        self.parts.iter().map(|(p, d)| (*p, d.as_secs_f64() / self.epochs.max(1) as f64)).collect()
    }
}

impl<'a> EpochLoop<'a> {
    /// Sets up the interruption flag and the progress bar, and prints the table's header.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cfg: &'a TrainConfig,
        run_dir: &'a Path,
        quiet: bool,
        placed: &'a Placed,
        loaded: &'a Loaded,
        plan: &'a EpochPlan,
        blame: &'a dyn Blame,
        rows: Vec<Row>,
    ) -> Result<EpochLoop<'a>> {
        let interrupted = interrupt_flag();
        let bar = Progress::new(quiet);
        let dataset = &loaded.dataset;
        let (best, since_best) = best_so_far(&rows);
        let this = EpochLoop {
            best,
            since_best,
            stopped_early: false,
            clock: EpochClock::default(),
            cfg,
            run_dir,
            quiet,
            tg: &placed.tg,
            session: &placed.session,
            tb: &placed.tb,
            source: &loaded.source,
            plan,
            blame,
            bar,
            interrupted,
            metrics_path: run_dir.join("metrics.csv"),
            rows,
            example: loaded.source.batch(&[plan.n_train as i32])?,
            train_labels: dataset.train.iter().map(|e| e.label).collect(),
            val_labels: dataset.val.iter().map(|e| e.label).collect(),
        };
        this.print_row(metrics::display_header(cfg.classes.len() >= TOP_K));
        Ok(this)
    }

    fn print_row(&self, s: String) {
        match (self.quiet, self.bar.is_hidden()) {
            (true, _) => {}
            (false, true) => eprintln!("{s}"),
            (false, false) => self.bar.println(s),
        }
    }

    /// The epochs from `start_epoch` to the run's last.
    ///
    /// Train accuracy is the Swift original's: inference mode, after the epoch's step. With the
    /// driver's lookahead (one full-set local step per epoch), the next step computes exactly
    /// that on the way, so the row waits one step instead of running another forward pass.
    /// Epochs that end in a checkpoint (and the last, and an interrupted one) still run the
    /// pass: every row on disk is final, and a resumed run computes every row the way the
    /// uninterrupted run did.
    pub(crate) fn run(&mut self, driver: &mut dyn EpochDriver, start_epoch: usize) -> Result<()> {
        driver.start(self.plan, start_epoch * self.plan.steps_per_epoch)?;
        let lookahead = driver.lookahead(self.plan);
        let mut pending: Option<Row> = None;
        for index in start_epoch..self.cfg.epochs {
            let epoch = self.plan.epoch(index);
            self.bar.start_epoch(index, self.cfg.epochs, self.plan.n_train);
            let mut stats = self.clock.time("steps", || driver.run_epoch(self.plan, &epoch, &self.bar))?;
            self.clock.epochs += 1;
            let (tb, session) = (self.tb, self.session);
            self.clock.time("summaries", || tb.step_rates(session, epoch.first_step, &epoch.rates))?;
            if let Some(row) = pending.take() {
                self.finish_lookahead(row, &epoch, &mut stats)?;
            }
            if let Some((loss, b)) = stats.diverged {
                return Err(self.diverged(loss, index, b)?);
            }
            pending = self.end_epoch(index, &stats, lookahead)?;
            if self.stopped_early {
                break;
            }
        }
        Ok(())
    }

    /// After a validation of `index` at `val`: whether it is the new best (then its checkpoint is
    /// written and named `best`), and whether --early-stop ends the run here.
    fn track_best(&mut self, index: usize, val: f64) -> Result<bool> {
        if self.best.is_none_or(|(b, _)| val > b) {
            self.best = Some((val, index));
            self.since_best = 0;
            let (tg, session, run_dir) = (self.tg, self.session, self.run_dir);
            self.clock.time("checkpoints", || tg.saver.save_as(session, run_dir, index, false))?;
            checkpoint::mark_best(self.run_dir, index)?;
            return Ok(false);
        }
        self.since_best += 1;
        let stop = self.cfg.early_stop > 0 && self.since_best >= self.cfg.early_stop;
        if stop {
            let (b, e) = self.best.unwrap();
            // Said even with --quiet: it is why the run ends early.
            crate::train::epoch::warn(
                &self.bar,
                format!("early stop: no better val accuracy in {} validations (best {b:.2}% at epoch {e}, kept as checkpoints/best)", self.since_best),
            );
        }
        Ok(stop)
    }

    /// Completes the previous epoch's row with the train accuracy from this epoch's first step.
    fn finish_lookahead(&mut self, mut row: Row, epoch: &Epoch, stats: &mut EpochStats) -> Result<()> {
        let logits = stats.lookahead_logits.take().unwrap_or_default();
        let part = epoch.batches(self.plan.batch)[0];
        let labels: Vec<usize> = part.iter().map(|&i| self.train_labels[i as usize]).collect();
        row.train_accuracy = accuracy(&logits, &labels);
        self.finish_row(row)
    }

    /// After epoch `index`'s steps: its row (or the row left pending, returned), its checkpoint,
    /// and the stop on interruption.
    fn end_epoch(&mut self, index: usize, stats: &EpochStats, lookahead: bool) -> Result<Option<Row>> {
        let cfg = self.cfg;
        let last = index + 1 == cfg.epochs;
        let stop = self.interrupted.load(Ordering::SeqCst);
        let checkpoint_now = last || stop || (cfg.checkpoint_every > 0 && (index + 1).is_multiple_of(cfg.checkpoint_every));
        let n_train = self.plan.n_train;
        let eval_chunk = self.plan.batch.max(60);
        let due = index.is_multiple_of(cfg.val_every.max(1)) || last;
        let (val_accuracy, val_top5) = if due { self.clock_validate(eval_chunk)? } else { (None, None) };
        let early = match val_accuracy {
            Some(v) => self.track_best(index, v)?,
            None => false,
        };
        self.stopped_early = early;
        let checkpoint_now = checkpoint_now || early;
        if self.tb.images_due(index, last) {
            let (tb, session, tg, example) = (self.tb, self.session, self.tg, &self.example);
            self.clock.time("summaries", || tb.images(session, tg, example, index))?;
        }
        let lr = Some(self.plan.epoch_rate(index) as f64);
        let mut row = Row { epoch: index, loss: stats.loss_sum / stats.examples.max(1) as f64, train_accuracy: f64::NAN, val_accuracy, val_top5, lr };
        let mut pending = None;
        if let Some(train_accuracy) = stats.train_accuracy {
            row.train_accuracy = train_accuracy;
            self.finish_row(row)?;
        } else if lookahead && !checkpoint_now {
            pending = Some(row);
        } else {
            let train_idx: Vec<i32> = (0..n_train as i32).collect();
            let (source, tg, session) = (self.source, self.tg, self.session);
            let logits = self.clock.time("train accuracy", || source.logits(tg, session, &train_idx, eval_chunk)).map_err(|e| self.blame.blame(e))?;
            row.train_accuracy = accuracy(&logits, &self.train_labels);
            self.finish_row(row)?;
        }
        if checkpoint_now {
            let (tg, session, run_dir) = (self.tg, self.session, self.run_dir);
            self.clock.time("checkpoints", || tg.saver.save(session, run_dir, index))?;
        }
        if stop {
            self.bar.finish_and_clear();
            plot::write_run_curves(self.run_dir, &self.rows)?;
            bail!("interrupted after epoch {index}; checkpoint written. Continue with: alexnet train --run-dir {} --resume", self.run_dir.display());
        }
        Ok(pending)
    }

    /// [`Self::validate`], timed.
    fn clock_validate(&mut self, eval_chunk: usize) -> Result<(Option<f64>, Option<f64>)> {
        let t0 = Instant::now();
        let out = self.validate(eval_chunk);
        self.clock.add("validation", t0.elapsed());
        out
    }

    /// Top-1 and (with TOP_K or more classes) top-5 accuracy on the val images, from the same
    /// logits.
    fn validate(&self, eval_chunk: usize) -> Result<(Option<f64>, Option<f64>)> {
        let n_train = self.plan.n_train;
        let val_idx: Vec<i32> = (n_train as i32..(n_train + self.val_labels.len()) as i32).collect();
        let (source, tg, session) = (self.source, self.tg, self.session);
        let scores = tg.with_averages(session, || source.val_scores(tg, session, &val_idx, &self.val_labels, eval_chunk));
        let (logits, labels) = scores.map_err(|e| self.blame.blame(e))?;
        let top5 = (self.cfg.classes.len() >= TOP_K).then(|| top_k_accuracy(&logits, &labels, TOP_K));
        Ok((Some(accuracy(&logits, &labels)), top5))
    }

    /// Prints the row, logs it to TensorBoard and writes metrics.csv.
    fn finish_row(&mut self, row: Row) -> Result<()> {
        self.print_row(row.display());
        let rate = self.plan.epoch_rate(row.epoch);
        let (tb, session) = (self.tb, self.session);
        self.clock.time("summaries", || tb.epoch(session, &row, rate))?;
        self.rows.push(row);
        let (path, rows) = (&self.metrics_path, &self.rows);
        self.clock.time("metrics.csv", || metrics::write(path, rows))
    }

    /// The error of a divergence in `epoch` (at its step `b`).
    fn diverged(&self, loss: f32, epoch: usize, b: usize) -> Result<anyhow::Error> {
        self.bar.finish_and_clear();
        let kept = checkpoint::latest(self.run_dir)?.map(|(p, e)| format!("the last good checkpoint ({}, epoch {e}) is kept", p.parent().unwrap().display()));
        Ok(anyhow::anyhow!(
            "loss became {loss} in epoch {epoch} (step {b}): training diverged; {} (try a lower --lr)",
            kept.unwrap_or_else(|| "no checkpoint was written yet".into())
        ))
    }
}

/// Set by SIGINT/SIGTERM: the loop finishes its step, checkpoints and stops. A second signal
/// while the first is pending ends the process at once (the last checkpoint stays loadable).
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone());
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    flag
}

/// The best val accuracy in `rows` and its epoch, and the validations after it.
fn best_so_far(rows: &[Row]) -> (Option<(f64, usize)>, usize) {
    let mut best: Option<(f64, usize)> = None;
    let mut since = 0;
    for r in rows {
        if let Some(v) = r.val_accuracy {
            if best.is_none_or(|(b, _)| v > b) {
                best = Some((v, r.epoch));
                since = 0;
            } else {
                since += 1;
            }
        }
    }
    (best, since)
}
