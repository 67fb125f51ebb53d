//! `alexnet bench --dataset DIR`: the trainer on an image folder through its tf.data pipeline, as
//! `alexnet train --batch-size B` runs it, and against `scripts/bench-python-peer --dataset DIR`
//! (the same in Python's `tf.data` and a `tf.function`).
//!
//! Figures: `first_step_secs` (process start to the end of the first step: scan, up-front header
//! check, graph, first batch through the pipeline, one step; measured first, before the peer
//! starts); `pipeline_images_per_sec` (the pipeline alone, from JPEG: `IteratorGetNext` without a
//! step: repetitions of about 4,096 images, each started with both processes idle and timed over
//! its second half, the pipeline's steady rate); `pipeline_cached_images_per_sec` (the same from the
//! decoded cache of the subset below: crop, flip and cast alone, what feeds a GPU after the first
//! epoch); `train_stream_images_per_sec` (steps in the first epoch,
//! every image decoded from its file); `train_cached_images_per_sec` (steps in the second epoch of
//! a subset of (warmup + steps) x batch images whose first epoch filled the cache);
//! `train_compute_images_per_sec` (the same step on a batch fed in place of the pipeline's);
//! `peak_rss_mb` (the pipeline figures' idle waits fill its autotuned buffers: some hundreds of
//! MB more than a training run's). Rates are medians over `--steps` repetitions, interleaved
//! with the peer's.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Map, Value, json};
use tensorflow::{Session, SessionRunArgs, Tensor};

use super::{Peer, Stat, median, peak_rss_mb, proc_stat, settings, settle};
use crate::data::images as data;
use crate::data::pipeline::{Augment, Pipeline, PipelineSpec, is_end_of_data};
use crate::data::weights::{self, LoadOptions};
use crate::graph::model;
use crate::graph::params::LayerParams;
use crate::graph::runtime::RuntimeConfig;
use crate::run::config::TrainConfig;
use crate::train::TrainGraph;
use crate::train::source::load_pipeline;
use crate::train::spec::{Replication, TrainSpec};

/// The figures both implementations report.
pub const KEYS: [&str; 7] = [
    "first_step_secs",
    "pipeline_images_per_sec",
    "pipeline_cached_images_per_sec",
    "train_stream_images_per_sec",
    "train_cached_images_per_sec",
    "train_compute_images_per_sec",
    "peak_rss_mb",
];

#[derive(Clone, Debug)]
pub struct DatasetBenchOptions {
    pub dataset: PathBuf,
    pub batch: usize,
    pub augment: Augment,
    pub steps: usize,
    pub warmup: usize,
    pub runtime: RuntimeConfig,
}

/// Batches a pipeline repetition pulls: about 4,096 images (at least one batch, at most an
/// epoch's), so that its timed second half outlasts what the pipeline prefetched while it waited
/// (about 1,000 images on the 20,000-photo folder).
fn pipeline_batches(batch: usize, n_train: usize) -> usize {
    (4096 / batch).clamp(1, n_train.div_ceil(batch).max(1))
}

/// Pulls `k` batches; the images and seconds of the second half (the first drains what the
/// pipeline prefetched while it waited).
fn steady(k: usize, pull: &mut impl FnMut() -> Result<usize>) -> Result<(usize, f64)> {
    for _ in 0..k / 2 {
        pull()?;
    }
    let t0 = Instant::now();
    let images = (0..k - k / 2).map(|_| pull()).sum::<Result<usize>>()?;
    Ok((images, t0.elapsed().as_secs_f64()))
}

/// The longest wait for both processes to idle before a pipeline repetition.
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Seconds since this process started (/proc: its start time against the uptime, 10 ms steps).
pub fn since_process_start() -> Result<f64> {
    let [ticks] = proc_stat("self", [22]).context("unexpected /proc/self/stat")?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")?.split_whitespace().next().context("unexpected /proc/uptime")?.parse()?;
    // USER_HZ, the unit of /proc's times, is 100 on Linux whatever the kernel's tick.
    Ok(uptime - ticks as f64 / 100.0)
}

/// One implementation's figures, settings and timings (a JSON object).
pub type Figures = Map<String, Value>;

/// Our figures, and the peer's when `compare_python`.
pub fn run(opts: &DatasetBenchOptions, compare_python: bool) -> Result<(Figures, Option<Figures>)> {
    ensure!(opts.steps >= 1, "--steps must be at least 1");
    ensure!(opts.batch >= 1, "--batch-size must be at least 1");
    // The run folder of the benchmark's pipelines (bad-images.txt, cache files), removed on drop.
    let scratch = tempfile::Builder::new().prefix("alexnet-bench-").tempdir().context("cannot create the benchmark's scratch folder")?;
    let (full, cfg, params) = Graph::first_step(opts, scratch.path())?;
    let first_step = since_process_start()?;
    eprintln!("bench: first step {first_step:.2} s after the process started");
    let mut peer = if compare_python { Some(start_peer(opts, &full.spec, &cfg.classes, scratch.path())?) } else { None };
    let mut out = Map::new();
    out.insert("first_step_secs".into(), json!(first_step));
    let mut timings = Map::new();
    let n_train = full.spec.train.paths.len();
    let reps = Reps { warmup: opts.warmup, steps: opts.steps };
    // The first step's epoch goes on: a new iterator would refill the shuffle buffer first.
    let mut stream = Stream { started: true, step: 1, ..Stream::new(&full, true, 0) };
    let (rate, t) = reps.rates(peer.as_mut(), "train_stream", || stream.train())?;
    record(&mut out, &mut timings, "train_stream", rate, t);
    let k = pipeline_batches(opts.batch, n_train);
    let (rate, t) = reps.pipeline_rates(peer.as_mut(), "pipeline", k, || stream.batch())?;
    record(&mut out, &mut timings, "pipeline", rate, t);
    let subset = subset_of(&full.spec, (opts.warmup + opts.steps) * opts.batch);
    // The whole folder's graph goes first: its prefetched batches and partial cache with it.
    drop(full);

    let subset = Graph::build(&cfg, subset, &params)?;
    let mut cached = subset.fill()?;
    let (rate, t) = reps.rates(peer.as_mut(), "train_cached", || cached.train())?;
    record(&mut out, &mut timings, "train_cached", rate, t);
    let (rate, t) = reps.pipeline_rates(peer.as_mut(), "pipeline_cached", k, || cached.batch())?;
    record(&mut out, &mut timings, "pipeline_cached", rate, t);
    let (images, labels) = cached.fetch_batch()?;
    let n = labels.len();
    let mut step = 0i64;
    let (rate, t) = reps.rates(peer.as_mut(), "train_compute", || {
        step += 1;
        let loss = subset.tg.fed_pipeline_step(&subset.session, subset.pipeline(), &images, &labels, [0, step])?;
        ensure!(loss.is_finite(), "the benchmark's training step diverged (loss {loss})");
        Ok(n)
    })?;
    record(&mut out, &mut timings, "train_compute", rate, t);
    let peer = peer.map(Peer::finish).transpose()?;
    finish(&mut out, opts, n_train, &subset.device, timings);
    Ok((out, peer))
}

/// The train files our header check kept, for the peer (`--files`): listing the folder itself,
/// it would read the files we left out, and its first undecodable one would end its run.
fn write_peer_files(spec: &PipelineSpec, classes: &[String], scratch: &Path) -> Result<PathBuf> {
    let path = scratch.join("peer-files.json");
    let list = json!({ "classes": classes, "paths": spec.train.paths, "labels": spec.train.labels });
    std::fs::write(&path, serde_json::to_vec(&list)?).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Our figure `{what}_images_per_sec` and its timings.
fn record(out: &mut Map<String, Value>, timings: &mut Map<String, Value>, what: &str, rate: f64, t: Stat) {
    out.insert(format!("{what}_images_per_sec"), json!(rate));
    timings.insert(what.to_string(), serde_json::to_value(t).unwrap_or_default());
}

/// The first `n` training images, cached in memory.
fn subset_of(spec: &PipelineSpec, n: usize) -> PipelineSpec {
    let mut spec = spec.clone();
    let n = n.min(spec.train.paths.len());
    spec.train.paths.truncate(n);
    spec.train.labels.truncate(n);
    spec.batch = spec.batch.min(n);
    spec.cache_dir = None;
    spec
}

/// The settings, the machine, memory and the raw timings.
fn finish(out: &mut Map<String, Value>, opts: &DatasetBenchOptions, n_train: usize, device: &str, timings: Map<String, Value>) {
    settings(out, "rust (TensorFlow C API, tf.data from raw ops)", device, &opts.runtime, opts.steps, opts.warmup);
    out.insert("batch_size".into(), json!(opts.batch));
    out.insert("augment".into(), json!(opts.augment));
    out.insert("train_images".into(), json!(n_train));
    out.insert("peak_rss_mb".into(), json!(peak_rss_mb()));
    out.insert("timings".into(), Value::Object(timings));
}

/// Our figures against our compute-only rate (the targets' ratios), beside ours / the peer's.
pub fn ratios(ours: &Map<String, Value>, peer: Option<&Map<String, Value>>) -> Map<String, Value> {
    let keys: Vec<String> = KEYS.iter().map(|k| k.to_string()).collect();
    let mut r = peer.map(|p| super::ratios(ours, p, &keys)).unwrap_or_default();
    let get = |k: &str| ours.get(k).and_then(Value::as_f64);
    if let (Some(stream), Some(cached), Some(compute)) =
        (get("train_stream_images_per_sec"), get("train_cached_images_per_sec"), get("train_compute_images_per_sec"))
    {
        r.insert("train_stream_vs_compute".into(), json!(stream / compute));
        r.insert("train_cached_vs_compute".into(), json!(cached / compute));
    }
    r
}

/// Timed repetitions, interleaved with the peer's of the same figure.
#[derive(Clone, Copy)]
struct Reps {
    warmup: usize,
    steps: usize,
}

impl Reps {
    /// The median images per second over the timed repetitions of `f` (which returns its
    /// images), each followed by the peer's: both see the same load. For steps, whose pipeline
    /// prefetches a batch or two beside seconds of compute; the pipeline alone is timed by
    /// [`Self::pipeline_rates`].
    fn rates(&self, mut peer: Option<&mut Peer>, key: &str, mut f: impl FnMut() -> Result<usize>) -> Result<(f64, Stat)> {
        for _ in 0..self.warmup {
            f()?;
            if let Some(p) = peer.as_deref_mut() {
                p.once(key, false)?;
            }
        }
        let (mut t, mut rates) = (vec![], vec![]);
        for _ in 0..self.steps {
            let t0 = Instant::now();
            let images = f()?;
            let secs = t0.elapsed().as_secs_f64();
            t.push(secs);
            rates.push(images as f64 / secs);
            if let Some(p) = peer.as_deref_mut() {
                p.once(key, true)?;
            }
        }
        Ok((median(&mut rates), Stat::of(&t)))
    }

    /// The pipeline alone: its steady rate, the median over repetitions of `k` pulled batches,
    /// each timed over its second half ([`steady`]), started once both processes idle, so that
    /// neither side's pipeline works during the other's repetition. (Interleaved as
    /// [`Self::rates`] interleaves steps, each side's pipeline filled its buffers during the
    /// other's repetition, the longer that was the more, so the faster side ran away: 0.10x to
    /// 1.12x from run to run.)
    fn pipeline_rates(&self, mut peer: Option<&mut Peer>, key: &str, k: usize, mut pull: impl FnMut() -> Result<usize>) -> Result<(f64, Stat)> {
        let pid = peer.as_deref().map(Peer::pid);
        let (mut t, mut rates) = (vec![], vec![]);
        for i in 0..self.warmup + self.steps {
            let timed = i >= self.warmup;
            settle(pid, SETTLE_LIMIT);
            let (images, secs) = steady(k, &mut pull)?;
            if timed {
                t.push(secs);
                rates.push(images as f64 / secs);
            }
            if let Some(p) = peer.as_deref_mut() {
                settle(pid, SETTLE_LIMIT);
                p.once(key, timed)?;
            }
        }
        Ok((median(&mut rates), Stat::of(&t)))
    }
}

/// A training graph with its pipeline, its session and the pipeline's spec.
struct Graph {
    tg: TrainGraph,
    session: Session,
    spec: PipelineSpec,
    device: String,
}

impl Graph {
    /// What `alexnet train --batch-size B` does up to the end of its first step, on the whole
    /// folder; also the initial parameters (for the subset's graph).
    fn first_step(opts: &DatasetBenchOptions, scratch: &Path) -> Result<(Graph, TrainConfig, Vec<LayerParams>)> {
        let loaded = since_process_start()?;
        let t0 = Instant::now();
        let dataset = data::scan(&opts.dataset)?;
        let mut cfg = TrainConfig::swift_recipe(opts.dataset.clone(), None, dataset.classes.clone());
        cfg.batch_size = opts.batch;
        cfg.augment = opts.augment;
        cfg.skip_bad_images = true;
        cfg.runtime = opts.runtime.clone();
        let (kept, source) = load_pipeline(&dataset, &cfg, scratch)?;
        let checked = t0.elapsed().as_secs_f64();
        let skipped = dataset.train.len() + dataset.val.len() - kept.train.len() - kept.val.len();
        if skipped > 0 {
            eprintln!("bench: {skipped} files failed the header check and are left out");
        }
        let spec = source.pipeline_spec().context("no pipeline")?.clone();
        let (params, _) = weights::load(None, &model::param_specs(&cfg.model), &LoadOptions { strict: false, seed: 0 })?;
        let t1 = Instant::now();
        let graph = Graph::build(&cfg, spec, &params)?;
        let built = t1.elapsed().as_secs_f64();
        let t2 = Instant::now();
        let mut stream = Stream::new(&graph, true, 0);
        stream.train()?;
        eprintln!(
            "bench: {} train images, batch {}, augmentation {}, cache {}; to the first step: {loaded:.2} s to main, {checked:.2} s scan and header check, {built:.2} s graph and session, {:.2} s first batch and step",
            kept.train.len(),
            opts.batch,
            opts.augment.name(),
            graph.spec.cache_dir.as_ref().map_or("in memory".into(), |d| format!("in {}", d.display())),
            t2.elapsed().as_secs_f64(),
        );
        Ok((graph, cfg, params))
    }

    fn build(cfg: &TrainConfig, spec: PipelineSpec, params: &[LayerParams]) -> Result<Graph> {
        let tg = TrainGraph::build(&TrainSpec { pipeline: Some(spec.clone()), ..TrainSpec::of_run(cfg, Replication::Local) })?;
        let (session, device) = cfg.runtime.session(&tg.scope.graph())?;
        tg.pipeline().context("no pipeline")?.hold(&session)?;
        tg.init_variables(&session, params)?;
        Ok(Graph { tg, session, spec, device })
    }

    fn pipeline(&self) -> &Pipeline {
        self.tg.pipeline().expect("built with a pipeline")
    }

    /// One pass over the subset without training (it fills the cache); then its next epoch.
    fn fill(&self) -> Result<Stream<'_>> {
        let t0 = Instant::now();
        let mut pass = Stream::new(self, false, 0);
        let mut images = 0;
        while let Some(n) = pass.next_indices()? {
            images += n;
        }
        eprintln!("bench: {images} images decoded into the cache in {:.1} s", t0.elapsed().as_secs_f64());
        Ok(Stream::new(self, false, 1))
    }
}

/// Batches of a graph's training split, epoch after epoch; `refill`: each epoch from the files
/// again (a fresh cache), else from the cache the first epoch filled.
struct Stream<'a> {
    g: &'a Graph,
    refill: bool,
    epoch: usize,
    started: bool,
    step: i64,
}

impl<'a> Stream<'a> {
    fn new(g: &'a Graph, refill: bool, epoch: usize) -> Self {
        Stream { g, refill, epoch, started: false, step: 0 }
    }

    fn start(&mut self) -> Result<()> {
        if !self.started {
            self.g.pipeline().start_train(&self.g.session, 0, self.epoch)?;
            self.started = true;
        }
        Ok(())
    }

    /// The next epoch: with `refill`, an emptied cache (a finished file cache would be read).
    fn next_epoch(&mut self) -> Result<()> {
        self.epoch += 1;
        self.started = false;
        if self.refill {
            if let Some(dir) = &self.g.spec.cache_dir {
                let _ = std::fs::remove_dir_all(dir);
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            }
            self.g.pipeline().hold(&self.g.session)?;
        }
        self.start()
    }

    /// One training step; its images.
    fn train(&mut self) -> Result<usize> {
        self.start()?;
        for _ in 0..2 {
            self.step += 1;
            if let Some(out) = self.g.tg.pipeline_step(&self.g.session, self.g.pipeline(), 0.002, 0.5, [0, self.step])? {
                ensure!(out.loss.is_finite(), "the benchmark's training step diverged (loss {})", out.loss);
                return Ok(out.indices.len());
            }
            self.next_epoch()?;
        }
        bail!("the data set has no training images left to benchmark")
    }

    /// One batch from the pipeline, no step; its images.
    fn batch(&mut self) -> Result<usize> {
        self.start()?;
        match self.next_indices()? {
            Some(n) => Ok(n),
            None => {
                self.next_epoch()?;
                self.next_indices()?.context("the data set has no training images left to benchmark")
            }
        }
    }

    /// `IteratorGetNext` alone: the batch's size, None at the end of the epoch.
    fn next_indices(&mut self) -> Result<Option<usize>> {
        self.start()?;
        let p = self.g.pipeline();
        let mut args = SessionRunArgs::new();
        let idx = args.request_fetch(&p.next[2].operation, p.next[2].index);
        match self.g.session.run(&mut args) {
            Err(e) if is_end_of_data(&e) => return Ok(None),
            r => r?,
        }
        Ok(Some(args.fetch::<i32>(idx)?.len()))
    }

    /// The images and labels of one batch, fetched.
    fn fetch_batch(&mut self) -> Result<(Tensor<f32>, Tensor<i32>)> {
        self.next_epoch()?;
        let p = self.g.pipeline();
        let mut args = SessionRunArgs::new();
        let x = args.request_fetch(&p.next[0].operation, p.next[0].index);
        let y = args.request_fetch(&p.next[1].operation, p.next[1].index);
        self.g.session.run(&mut args)?;
        Ok((args.fetch(x)?, args.fetch(y)?))
    }
}

/// The peer on the same files and settings (and, when our cache is a file, one of its own).
fn start_peer(opts: &DatasetBenchOptions, spec: &PipelineSpec, classes: &[String], scratch: &Path) -> Result<Peer> {
    let files = write_peer_files(spec, classes, scratch)?;
    let mut args: Vec<std::ffi::OsString> = vec!["--dataset".into(), opts.dataset.clone().into(), "--files".into(), files.into()];
    let augment = match opts.augment {
        Augment::None => "none",
        Augment::CropFlip => "crop-flip",
        Augment::RandomResizedCrop => "random-resized-crop",
    };
    for (flag, value) in [
        ("--batch-size", opts.batch.to_string()),
        ("--augment", augment.to_string()),
        ("--steps", opts.steps.to_string()),
        ("--warmup", opts.warmup.to_string()),
        ("--pipeline-batches", pipeline_batches(opts.batch, spec.train.paths.len()).to_string()),
        ("--shuffle-buffer", spec.shuffle_buffer.to_string()),
    ] {
        args.push(flag.into());
        args.push(value.into());
    }
    if spec.cache_dir.is_some() {
        let dir = scratch.join("python-cache");
        std::fs::create_dir_all(&dir)?;
        args.push("--cache-dir".into());
        args.push(dir.into());
    }
    Peer::spawn(&args)
}
