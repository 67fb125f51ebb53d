//! Training: the Swift original's recipe (momentum SGD on mean softmax cross-entropy), with run
//! directories, checkpoints and exact resumption.
//!
//! The decoded images live in a TensorFlow variable and each step feeds only the indices of its
//! batch, so no image data crosses the C API per step (unless the decoded set would exceed
//! `cache_limit`: then each batch is decoded from disk and fed, and the variable stays empty).
//! Shuffles come from the host RNG keyed by (seed, epoch) and dropout masks from stateless ops
//! keyed by (seed, step): a resumed run draws exactly what the uninterrupted run would have.

//! `train()` is a short sequence of steps: load the data, place and build the graph, restore or
//! start, run the epochs (through an [`epoch::EpochDriver`] drawing from one
//! [`epoch::EpochPlan`]), finish. Where the graph runs is a [`deployment::Deployment`]: [`deployment::Local`]
//! here, the cluster ones in `crate::distributed`.

pub mod async_replicas;
pub mod averages;
pub mod between_ops;
pub mod deployment;
pub mod epoch;
pub mod feeds;
pub mod graph;
pub mod local;
pub mod pipelined;
pub mod progress;
pub mod replicas;
pub mod run_loop;
pub mod source;
pub mod spec;
pub mod summaries;
pub mod updates;

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use tensorflow::{Session, Tensor};

use crate::data::images::Dataset;
use crate::data::split;
use crate::data::weights::{self, LoadOptions};
use crate::graph::model;
use crate::graph::params::LayerParams;
use crate::observe::plot;
use crate::observe::tensorboard;
use crate::run::checkpoint;
use crate::run::config::TrainConfig;
use crate::run::metrics::{self, Row};
use crate::util::fsutil;

use self::deployment::{Deployment, Local, Run};
use self::epoch::EpochPlan;
use self::run_loop::EpochLoop;
use self::spec::TrainSpec;
use self::summaries::Summaries;

pub use self::feeds::{Batch, StepFeeds, StepOutput};
pub use self::graph::TrainGraph;
pub use self::replicas::{ReplicaStep, split_part};
pub use self::source::{Source, load_source};
use self::source::{load_pipeline, minibatch_default, wants_pipeline};
use crate::data::pipeline::PipelineSpec;

/// How a training run ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub epochs: usize,
    pub final_loss: f64,
    pub final_train_accuracy: f64,
    pub final_val_accuracy: Option<f64>,
    pub seconds: f64,
    pub seconds_per_epoch: f64,
    pub device: String,
    /// Seconds per epoch of each part of the epoch loop (steps, validation, summaries, ...).
    #[serde(default)]
    pub seconds_per_epoch_by_part: Vec<(String, f64)>,
}

/// Options of one invocation that are not part of the run's recipe.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub resume: bool,
    /// Start over in an existing run directory.
    pub force: bool,
    /// No per-epoch table (setup lines and errors are still printed).
    pub quiet: bool,
}

fn say(s: String) {
    eprintln!("{s}")
}

/// Trains `cfg` in `run_dir` (a new run, or the continuation of one with `opts.resume`), in this
/// process (see `crate::distributed::train` for clusters).
pub fn train(cfg: &TrainConfig, run_dir: &Path, opts: &RunOptions) -> Result<Summary> {
    ensure!(!cfg.async_updates, "--async needs a cluster to train on: --cluster FILE --job worker --task 0, or the TF_CONFIG environment variable");
    cfg.runtime.check_device()?;
    train_on(cfg, run_dir, opts, &mut Local)
}

/// Trains `cfg` in `run_dir` where `deployment` runs it.
pub fn train_on(cfg: &TrainConfig, run_dir: &Path, opts: &RunOptions, deployment: &mut dyn Deployment) -> Result<Summary> {
    prepare_run_dir(run_dir, opts)?;
    ensure!(cfg.epochs >= 1, "--epochs must be at least 1");
    model::check_dropout_rate(cfg.dropout)?;
    let (cfg, mut loaded) = load_data(cfg, run_dir)?;
    let cfg = &cfg;
    let params = initial_params(cfg)?;
    let placed = place_and_build(cfg, deployment, &loaded.source)?;
    let Placed { tg, tb, session, device } = &placed;
    let run = Run { cfg, tg, session, source: &loaded.source, dataset: &loaded.dataset };
    let mut driver = deployment.driver(run)?;
    let (intra, inter) = cfg.runtime.threads();
    say(format!("device: {device}; threads: intra-op {intra}, inter-op {inter}; precision {}", cfg.precision.name()));
    say(recipe_line(cfg));
    check_room(run_dir, &tg.saver)?;
    initialise(tg, session, loaded.images.take(), &params).map_err(|e| deployment.blame(e))?;
    let (start_epoch, rows) = restore_or_start(run_dir, opts, tg, session)?;
    let tb_dir = tb.open(session, &tg.scope.graph(), run_dir, start_epoch)?;
    if start_epoch >= cfg.epochs {
        say(format!("the run already has {} epochs; nothing to train (raise --epochs to continue)", cfg.epochs));
    }
    let plan = EpochPlan::new(cfg, loaded.dataset.train.len());
    let mut epochs = EpochLoop::new(cfg, run_dir, opts.quiet, &placed, &loaded, &plan, deployment, rows)?;
    let started = Instant::now();
    epochs.run(driver.as_mut(), start_epoch)?;
    epochs.bar.finish_and_clear();
    driver.finish()?;
    tb.close(session)?;
    let parts = epochs.clock.per_epoch();
    finish(cfg, run_dir, &epochs.rows, started, start_epoch, &tb_dir, tb, device, &parts)
}

/// The run's first line about how it learns: its recipe, optimizer, rates and loss.
pub fn recipe_line(cfg: &TrainConfig) -> String {
    let mut schedule = match &cfg.schedule {
        crate::run::config::Schedule::Constant => "constant".to_string(),
        crate::run::config::Schedule::Step { every, gamma } => format!("x{gamma} every {every} epochs"),
        crate::run::config::Schedule::Cosine => format!("cosine to {}", cfg.lr_min),
    };
    if cfg.warmup_epochs > 0.0 {
        schedule = format!("warmup {} epochs, then {schedule}", cfg.warmup_epochs);
    }
    let mut parts = vec![format!("recipe {}: {}, lr {} ({schedule})", cfg.recipe.name(), cfg.optimizer().describe(), cfg.learning_rate)];
    if cfg.label_smoothing > 0.0 {
        parts.push(format!("label smoothing {}", cfg.label_smoothing));
    }
    if let Some(layers) = cfg.lr_mults.describe() {
        parts.push(format!("layers {layers}"));
    }
    if let Some(w) = &cfg.class_weights {
        let list: Vec<String> = cfg.classes.iter().zip(w).map(|(c, w)| format!("{c} {w:.3}")).collect();
        parts.push(format!("class weights {}", list.join(", ")));
    }
    if cfg.clip_grad_norm > 0.0 {
        parts.push(format!("gradients clipped to norm {}", cfg.clip_grad_norm));
    }
    if cfg.ema > 0.0 {
        parts.push(format!("weights averaged (decay {}): validation and best use the averages", cfg.ema));
    }
    parts.join("; ")
}

/// Refuses to start where the run directory's filesystem has no room for one checkpoint.
fn check_room(run_dir: &Path, saver: &checkpoint::Saver) -> Result<()> {
    let need = saver.expected_size();
    if let Some(free) = fsutil::free_space(run_dir)
        && free < need
    {
        bail!(
            "disk full: {} has {} free, and one checkpoint of this run needs about {}: free some space or choose another --run-dir",
            run_dir.display(),
            fsutil::human_bytes(free),
            fsutil::human_bytes(need)
        );
    }
    Ok(())
}

/// The data set as loaded, and where the steps take their images from.
pub(crate) struct Loaded {
    pub(crate) dataset: Dataset,
    /// The decoded images and labels, to load into the graph (None when streamed).
    pub(crate) images: Option<(Tensor<f32>, Vec<i32>)>,
    pub(crate) source: Source,
}

/// Scans the run's images (the classes must be the run's), settles the batch, writes the config,
/// and decodes or checks the images. Returns the config as written.
fn load_data(cfg: &TrainConfig, run_dir: &Path) -> Result<(TrainConfig, Loaded)> {
    let (dataset, split) = split::dataset(&cfg.images, cfg.val_split, cfg.seed, Some(run_dir))?;
    if let Some(split) = &split {
        split::write(run_dir, split)?;
    }
    let mut cfg = cfg.clone();
    if let Some((batch, line)) = minibatch_default(&cfg, dataset.train.len()) {
        say(line);
        cfg.batch_size = batch;
    }
    let cfg = cfg;
    ensure!(
        dataset.classes == cfg.classes,
        "the classes in {} ([{}]) differ from the run's ([{}])",
        cfg.images.display(),
        dataset.classes.join(", "),
        cfg.classes.join(", ")
    );
    cfg.write(run_dir)?;

    if !dataset.ignored.is_empty() {
        let names: Vec<String> = dataset.ignored.iter().take(5).map(|p| p.display().to_string()).collect();
        let more = if dataset.ignored.len() > 5 { format!(" and {} more", dataset.ignored.len() - 5) } else { String::new() };
        say(format!("note: ignoring {} files that are hidden or have no image extension: {}{more}", dataset.ignored.len(), names.join(", ")));
    }
    let t0 = Instant::now();
    let (dataset, images, source) = if wants_pipeline(&cfg, dataset.train.len()) {
        let (kept, source) = load_pipeline(&dataset, &cfg, run_dir)?;
        (kept, None, source)
    } else {
        load_source(&dataset, &cfg.preprocess, cfg.skip_bad_images, cfg.cache_limit)?
    };
    say(format!(
        "data: {} classes [{}], {} train + {} val images {} in {:.2} s",
        dataset.classes.len(),
        dataset.classes.join(", "),
        dataset.train.len(),
        dataset.val.len(),
        match &source {
            Source::InGraph => "decoded".to_string(),
            Source::Streamed { .. } => format!("checked (over the {} MiB --cache-limit: decoded from disk every step)", cfg.cache_limit >> 20),
            Source::Pipeline { spec, .. } => pipeline_line(spec.as_ref()),
        },
        t0.elapsed().as_secs_f64()
    ));
    if let Some(note) = imbalance_note(&dataset, &cfg) {
        say(note);
    }
    Ok((cfg, Loaded { dataset, images, source }))
}

/// Classes over 3:1 apart in training images, where the run does not weigh them: said, with the
/// flag that would.
fn imbalance_note(dataset: &Dataset, cfg: &TrainConfig) -> Option<String> {
    let mut counts = vec![0usize; dataset.classes.len()];
    dataset.train.iter().for_each(|e| counts[e.label] += 1);
    let (most, least) = (counts.iter().enumerate().max_by_key(|c| c.1)?, counts.iter().enumerate().min_by_key(|c| c.1)?);
    let ratio = *most.1 as f64 / (*least.1).max(1) as f64;
    (ratio > 3.0 && cfg.class_weights.is_none()).then(|| {
        format!(
            "note: the classes are imbalanced: {} has {} training images, {} has {} ({ratio:.1}:1); --class-weights balanced weighs each class's loss by n / (classes x its count)",
            dataset.classes[most.0], most.1, dataset.classes[least.0], least.1
        )
    })
}

/// How the pipeline reads the images, for the data line.
fn pipeline_line(spec: &PipelineSpec) -> String {
    let cache = match &spec.cache_dir {
        None => "in memory".to_string(),
        Some(d) => format!("in {} (over the --cache-limit)", d.display()),
    };
    let how = match (spec.augment.caches_encoded(), spec.jpeg_only) {
        (false, _) => "decodes them in the first epoch and caches them as uint8".to_string(),
        (true, jpeg) => format!(
            "caches the training files' bytes ({}) and the val images as uint8",
            if jpeg {
                "random-resized-crop decodes only each JPEG's window, every epoch"
            } else {
                "not every file is a JPEG: random-resized-crop decodes each image whole, every epoch, and cuts its window"
            }
        ),
    };
    format!("checked (header and end); the tf.data pipeline {how} {cache}; batches of {}, augmentation {}", spec.batch, spec.augment.name())
}

/// The run's initial parameters (its weights file, or the seeded initialisation).
fn initial_params(cfg: &TrainConfig) -> Result<Vec<LayerParams>> {
    let specs = model::param_specs(&cfg.model);
    let (params, report) = weights::load(cfg.weights.as_deref(), &specs, &LoadOptions { strict: cfg.strict_weights, seed: cfg.seed })?;
    say(report.to_string());
    Ok(params)
}

/// The built graph, its summaries and its session.
pub(crate) struct Placed {
    pub(crate) tg: TrainGraph,
    pub(crate) tb: Summaries,
    pub(crate) session: Session,
    pub(crate) device: String,
}

/// Where the graph goes, the graph and its summaries, and a session on it.
fn place_and_build(cfg: &TrainConfig, deployment: &mut dyn Deployment, source: &Source) -> Result<Placed> {
    let replication = deployment.replication(cfg, source)?;
    let spec = TrainSpec { pipeline: source.pipeline_spec().cloned(), ..TrainSpec::of_run(cfg, replication) };
    let tg = TrainGraph::build(&spec)?;
    let tb = Summaries::build(&tg, cfg)?;
    let (session, device) = deployment.session(cfg, &tg)?;
    Ok(Placed { tg, tb, session, device })
}

/// Loads the decoded data set (if any) into the graph and the initial parameters.
fn initialise(tg: &TrainGraph, session: &Session, images: Option<(Tensor<f32>, Vec<i32>)>, params: &[LayerParams]) -> Result<()> {
    if let Some((images, labels)) = images {
        // The host copy is dropped right after: the graph holds the data set from here on.
        tg.load_data(session, &images, &labels)?;
    }
    for p in &tg.pipelines {
        p.hold(session)?;
    }
    tg.init_variables(session, params)
}

/// With --resume, the latest checkpoint restored and the metrics up to it: the epoch to start at
/// and the rows so far (written back to metrics.csv).
fn restore_or_start(run_dir: &Path, opts: &RunOptions, tg: &TrainGraph, session: &Session) -> Result<(usize, Vec<Row>)> {
    let metrics_path = run_dir.join("metrics.csv");
    let mut rows = vec![];
    let mut start_epoch = 0;
    if opts.resume {
        if let Some((prefix, epoch)) = checkpoint::resume_point(run_dir)? {
            let restored = tg.saver.restore(session, &prefix)?;
            ensure!(restored == epoch, "checkpoint {} holds epoch {restored}, expected {epoch}", prefix.display());
            start_epoch = epoch + 1;
            if metrics_path.exists() {
                rows = metrics::read(&metrics_path)?;
                rows.retain(|r| r.epoch <= epoch);
            }
            say(format!("resumed from {} (epoch {epoch})", prefix.parent().unwrap().display()));
        } else {
            say("no checkpoint yet: starting from the beginning".into());
        }
    }
    metrics::write(&metrics_path, &rows)?;
    Ok((start_epoch, rows))
}

/// Writes summary.json and the curves, and says how the run went.
#[allow(clippy::too_many_arguments)]
fn finish(
    cfg: &TrainConfig,
    run_dir: &Path,
    rows: &[Row],
    started: Instant,
    start_epoch: usize,
    tb_dir: &Path,
    tb: &Summaries,
    device: &str,
    parts: &[(&'static str, f64)],
) -> Result<Summary> {
    let seconds = started.elapsed().as_secs_f64();
    let trained = cfg.epochs.saturating_sub(start_epoch);
    let last = rows.last().context("no epochs were trained")?;
    let summary = Summary {
        epochs: cfg.epochs,
        final_loss: last.loss,
        final_train_accuracy: last.train_accuracy,
        final_val_accuracy: rows.iter().rev().find_map(|r| r.val_accuracy),
        seconds,
        seconds_per_epoch: seconds / trained.max(1) as f64,
        device: device.to_string(),
        seconds_per_epoch_by_part: parts.iter().map(|(p, s)| (p.to_string(), *s)).collect(),
    };
    fsutil::write_atomic(&run_dir.join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    plot::write_run_curves(run_dir, rows)?;
    say(format!(
        "trained {trained} epochs in {:.1} s ({:.2} s per epoch); final train accuracy {:.2}%, val accuracy {}",
        seconds,
        summary.seconds_per_epoch,
        summary.final_train_accuracy,
        summary.final_val_accuracy.map(|v| format!("{v:.2}%")).unwrap_or("-".into())
    ));
    let by_part: Vec<String> = parts.iter().map(|(p, s)| format!("{p} {s:.3}")).collect();
    say(format!("seconds per epoch by part: {}", by_part.join(", ")));
    say(format!(
        "tensorboard: {} ({:.0} ms of summaries per epoch); curves: {}",
        tb_dir.display(),
        tb.seconds_per_epoch() * 1000.0,
        run_dir.join(plot::CURVES).display()
    ));
    Ok(summary)
}

/// Refuses to overwrite a run silently.
fn prepare_run_dir(run_dir: &Path, opts: &RunOptions) -> Result<()> {
    let has_run = run_dir.join("config.json").exists();
    if has_run && !opts.resume {
        if !opts.force {
            bail!(
                "{} already holds a run: add --resume to continue it, or --force to start it over (its checkpoints and metrics are deleted)",
                run_dir.display()
            );
        }
        for sub in ["checkpoints", "metrics.csv", "summary.json", "config.json", split::FILE, tensorboard::DIR, plot::CURVES] {
            let p = run_dir.join(sub);
            if p.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else if p.exists() {
                std::fs::remove_file(&p)?;
            }
        }
    }
    std::fs::create_dir_all(run_dir).with_context(|| format!("cannot create run directory {}", run_dir.display()))
}
