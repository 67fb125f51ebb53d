//! `alexnet bench`: how fast the trainer's own graphs run, and how that compares with the same
//! network in Python TensorFlow (`scripts/bench-python-peer`, the same wheel) on this machine.
//!
//! Every figure is the median (with min and max) of `steps` timed repetitions after `warmup`
//! untimed ones: a training step on the training set (forward, backward, momentum update), the
//! logits of 1 and of 60 images, decoding and resizing every image of the folder. The machine
//! may be shared, so with a peer the two are interleaved repetition by repetition (the peer runs
//! as a subprocess serving one repetition per request): both see the same load.

pub mod dataset;
pub mod recipe;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tensorflow::{Session, Tensor};

use crate::data::images::{self as data, Decoder, Preprocess};
use crate::data::weights::{self, LoadOptions};
use crate::graph::model::{self, Layer, ModelConfig, Precision};
use crate::graph::params::LayerParams;
use crate::graph::runtime::RuntimeConfig;
use crate::train::spec::TrainSpec;
use crate::train::{Batch, StepFeeds, TrainGraph};

/// The figures measured per precision (bf16 ones with the suffix `_bf16`); decode_images_per_sec
/// and peak_rss_mb are measured once. Both implementations report the same keys.
const PER_PRECISION: [&str; 5] = ["train_images_per_sec", "train_gflops", "infer_b1_images_per_sec", "infer_b60_images_per_sec", "infer_b60_gflops"];

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub images: PathBuf,
    pub weights: Option<PathBuf>,
    pub steps: usize,
    pub warmup: usize,
    pub precisions: Vec<Precision>,
    pub runtime: RuntimeConfig,
    pub preprocess: Preprocess,
}

/// Seconds of `n` timed repetitions.
#[derive(Clone, Debug, Serialize)]
pub struct Stat {
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    pub n: usize,
}

/// Runs `f` `warmup` times untimed, then `steps` times timed; with a peer, each of our
/// repetitions is followed by one of the peer's `key`.
pub fn time(warmup: usize, steps: usize, mut peer: Option<&mut Peer>, key: &str, mut f: impl FnMut() -> Result<()>) -> Result<Stat> {
    for _ in 0..warmup {
        f()?;
        if let Some(p) = peer.as_deref_mut() {
            p.once(key, false)?;
        }
    }
    let mut t = vec![];
    for _ in 0..steps.max(1) {
        let t0 = Instant::now();
        f()?;
        t.push(t0.elapsed().as_secs_f64());
        if let Some(p) = peer.as_deref_mut() {
            p.once(key, true)?;
        }
    }
    Ok(Stat::of(&t))
}

impl Stat {
    pub fn of(t: &[f64]) -> Stat {
        Stat { median_s: median(&mut t.to_vec()), min_s: t.iter().cloned().fold(f64::MAX, f64::min), max_s: t.iter().cloned().fold(0.0, f64::max), n: t.len() }
    }
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Multiply-adds of one image's forward pass (1.08 G for AlexNet at fc width 256).
pub fn forward_macs(cfg: &ModelConfig) -> u64 {
    let specs = model::param_specs(cfg);
    model::layers(cfg)
        .iter()
        .zip(model::output_shapes(cfg))
        .map(|(layer, (_, out))| match layer {
            Layer::Conv { name, .. } => {
                let spec = specs.iter().find(|s| s.layer == *name).unwrap();
                (out[0] * out[1] * spec.weight_count()) as u64
            }
            Layer::Fc { name, .. } => specs.iter().find(|s| s.layer == *name).unwrap().weight_count() as u64,
            _ => 0,
        })
        .sum()
}

/// Peak resident memory of this process so far (VmHWM), in MiB.
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()).map_or(0.0, |kb| kb / 1024.0)
}

/// Numbered fields of /proc/`pid`/stat (as proc(5) numbers them, from 1), in /proc's units.
fn proc_stat<const N: usize>(pid: &str, fields: [usize; N]) -> Option<[u64; N]> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces and parentheses) start at 3.
    let after: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let mut out = [0; N];
    for (o, f) in out.iter_mut().zip(fields) {
        *o = after.get(f.checked_sub(3)?)?.parse().ok()?;
    }
    Some(out)
}

/// CPU time (user + system, in /proc's 10 ms ticks) a process has used, its threads included.
fn cpu_ticks(pid: &str) -> Option<u64> {
    proc_stat(pid, [14, 15]).map(|[user, system]| user + system)
}

/// Waits (at most `limit`) until this process and `peer` have stopped working in the background:
/// a tf.data pipeline left alone fills its prefetch buffers, and one side's filling must not run
/// inside the other's timed repetition.
pub fn settle(peer: Option<u32>, limit: std::time::Duration) {
    let t0 = Instant::now();
    let pids: Vec<String> = std::iter::once("self".to_string()).chain(peer.map(|p| p.to_string())).collect();
    let total = || pids.iter().filter_map(|p| cpu_ticks(p)).sum::<u64>();
    let mut before = total();
    while t0.elapsed() < limit {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = total();
        // At most one tick in 100 ms: under a tenth of a core between both processes.
        if now.saturating_sub(before) <= 1 {
            return;
        }
        before = now;
    }
}

/// The CPU's model name (lscpu's "Model name").
pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// Measures our figures (and the peer's, interleaved); one JSON object (see [`figure_keys`]) plus the
/// settings and raw timings.
pub fn run(opts: &BenchOptions, mut peer: Option<&mut Peer>) -> Result<Map<String, Value>> {
    ensure!(opts.steps >= 1, "--steps must be at least 1");
    let dataset = data::scan(&opts.images)?;
    let n_train = dataset.train.len();
    let n_val = dataset.val.len();
    let paths: Vec<&Path> = dataset.train.iter().chain(&dataset.val).map(|e| e.path.as_path()).collect();
    let labels: Vec<i32> = dataset.train.iter().chain(&dataset.val).map(|e| e.label as i32).collect();
    let cfg = ModelConfig::new(dataset.classes.len());
    let mut figures = Figures { macs: forward_macs(&cfg) as f64, timings: BTreeMap::new(), out: Map::new() };
    let images = figures.decode(opts, peer.as_deref_mut(), &paths)?;

    let specs = model::param_specs(&cfg);
    let (params, report) = weights::load(opts.weights.as_deref(), &specs, &LoadOptions { strict: false, seed: 0 })?;
    eprintln!("bench: {n_train} train + {n_val} val images; {report}");

    let train_idx: Vec<i32> = (0..n_train as i32).collect();
    let val_idx: Vec<i32> = (n_train as i32..(n_train + n_val) as i32).take(60).collect();
    let mut device = String::new();
    for &precision in &opts.precisions {
        let suffix = if precision == Precision::F32 { "" } else { "_bf16" };
        let tg = TrainGraph::build(&TrainSpec { precision, ..TrainSpec::local(cfg.clone(), 0.9, 0.0) })?;
        let (session, used) = opts.runtime.session(&tg.scope.graph())?;
        device = used;
        tg.load_data(&session, &images, &labels)?;
        tg.init_variables(&session, &params)?;
        let on = Measured { opts, tg: &tg, session: &session, suffix };
        figures.train_step(&on, peer.as_deref_mut(), &train_idx)?;
        figures.inference(&on, peer.as_deref_mut(), &val_idx)?;
    }
    figures.frozen_step(opts, &cfg, (&images, &labels), &params, &train_idx)?;
    figures.finish(opts, device, n_train)
}

/// The figures and timings [`run`] collects, and the multiply-adds of one image's forward pass.
struct Figures {
    macs: f64,
    timings: BTreeMap<String, Stat>,
    out: Map<String, Value>,
}

/// What one precision's measurements run on: its graph and session, and the suffix of its keys.
struct Measured<'a> {
    opts: &'a BenchOptions,
    tg: &'a TrainGraph,
    session: &'a Session,
    suffix: &'static str,
}

/// What every benchmark's JSON says of itself: the implementation, TensorFlow's version, the
/// device and CPU, the threads and the repetitions.
pub fn settings(out: &mut Map<String, Value>, implementation: &str, device: &str, runtime: &RuntimeConfig, steps: usize, warmup: usize) {
    let (intra, inter) = runtime.threads();
    out.insert("implementation".into(), json!(implementation));
    out.insert("tensorflow".into(), json!(tensorflow::version().unwrap_or_default()));
    out.insert("device".into(), json!(device));
    out.insert("cpu".into(), json!(cpu_model()));
    out.insert("intra_op_threads".into(), json!(intra));
    out.insert("inter_op_threads".into(), json!(inter));
    out.insert("steps".into(), json!(steps));
    out.insert("warmup".into(), json!(warmup));
}

impl Figures {
    /// Decoding: every image, train and val, as `alexnet train` does it.
    fn decode(&mut self, opts: &BenchOptions, peer: Option<&mut Peer>, paths: &[&Path]) -> Result<Tensor<f32>> {
        let decoder = Decoder::new(&opts.preprocess)?;
        let mut images = None;
        let t = time(1, opts.steps, peer, "decode", || {
            let (tensor, bad) = decoder.decode_checked(paths);
            if let Some(b) = bad.first() {
                bail!("cannot use image {b}");
            }
            images = Some(tensor);
            Ok(())
        })?;
        drop(decoder);
        let images = images.unwrap();
        self.out.insert("decode_images_per_sec".into(), json!(paths.len() as f64 / t.median_s));
        self.out.insert("decode_threads".into(), json!(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)));
        self.timings.insert("decode".to_string(), t);
        Ok(images)
    }

    /// A training step on the whole training set.
    fn train_step(&mut self, on: &Measured, peer: Option<&mut Peer>, train_idx: &[i32]) -> Result<()> {
        let (opts, tg, session, suffix) = (on.opts, on.tg, on.session, on.suffix);
        let n_train = train_idx.len();
        let batch = Batch::indices(train_idx)?;
        let mut step = 0i64;
        let t = time(opts.warmup, opts.steps, peer, &format!("train_step{suffix}"), || {
            step += 1;
            let out = tg.run_step(session, &batch, 0.002, 0.5, [0, step])?;
            ensure!(out.loss.is_finite(), "the benchmark's training step diverged (loss {})", out.loss);
            Ok(())
        })?;
        self.out.insert(format!("train_images_per_sec{suffix}"), json!(n_train as f64 / t.median_s));
        self.out.insert(format!("train_gflops{suffix}"), json!(3.0 * 2.0 * self.macs * n_train as f64 / t.median_s / 1e9));
        self.timings.insert(format!("train_step{suffix}"), t);
        Ok(())
    }

    /// A training step with conv1-conv5 frozen (fine-tuning the fc layers only: the backward
    /// pass stops at fc6), ours only, float32; and its speed against the full step's.
    fn frozen_step(
        &mut self,
        opts: &BenchOptions,
        cfg: &ModelConfig,
        (images, labels): (&Tensor<f32>, &[i32]),
        params: &[LayerParams],
        train_idx: &[i32],
    ) -> Result<()> {
        let mut lr_mults = crate::run::recipe::LayerRates::default();
        lr_mults.freeze(cfg, "conv1-conv5")?;
        let tg = TrainGraph::build(&TrainSpec { lr_mults, ..TrainSpec::local(cfg.clone(), 0.9, 0.0) })?;
        let (session, _) = opts.runtime.session(&tg.scope.graph())?;
        tg.load_data(&session, images, labels)?;
        tg.init_variables(&session, params)?;
        let batch = Batch::indices(train_idx)?;
        let mut step = 0i64;
        let t = time(opts.warmup, opts.steps, None, "train_frozen_convs", || {
            step += 1;
            tg.run_step(&session, &batch, 0.002, 0.5, [0, step]).map(drop)
        })?;
        let rate = train_idx.len() as f64 / t.median_s;
        self.out.insert("train_frozen_convs_images_per_sec".into(), json!(rate));
        if let Some(full) = self.out.get("train_images_per_sec").and_then(Value::as_f64) {
            self.out.insert("train_frozen_convs_vs_full".into(), json!(rate / full));
        }
        self.timings.insert("train_frozen_convs".to_string(), t);
        Ok(())
    }

    /// The logits of one validation image, then of up to 60.
    fn inference(&mut self, on: &Measured, mut peer: Option<&mut Peer>, val_idx: &[i32]) -> Result<()> {
        let (opts, tg, session, suffix) = (on.opts, on.tg, on.session, on.suffix);
        let one = Batch::indices(&val_idx[..1])?;
        let t = time(opts.warmup, opts.steps, peer.as_deref_mut(), &format!("infer_b1{suffix}"), || tg.batch_logits(session, &one).map(drop))?;
        self.out.insert(format!("infer_b1_images_per_sec{suffix}"), json!(1.0 / t.median_s));
        self.timings.insert(format!("infer_b1{suffix}"), t);

        let many = Batch::indices(val_idx)?;
        let t = time(opts.warmup, opts.steps, peer, &format!("infer_b60{suffix}"), || tg.batch_logits(session, &many).map(drop))?;
        self.out.insert(format!("infer_b60_images_per_sec{suffix}"), json!(val_idx.len() as f64 / t.median_s));
        self.out.insert(format!("infer_b60_gflops{suffix}"), json!(2.0 * self.macs * val_idx.len() as f64 / t.median_s / 1e9));
        self.timings.insert(format!("infer_b60{suffix}"), t);
        Ok(())
    }

    /// The figures with the settings, the machine and the raw timings.
    fn finish(mut self, opts: &BenchOptions, device: String, n_train: usize) -> Result<Map<String, Value>> {
        let out = &mut self.out;
        settings(out, "rust (TensorFlow C API)", &device, &opts.runtime, opts.steps, opts.warmup);
        out.insert("train_batch".into(), json!(n_train));
        out.insert("forward_gmacs_per_image".into(), json!(self.macs / 1e9));
        out.insert("peak_rss_mb".into(), json!(peak_rss_mb()));
        out.insert("timings".into(), serde_json::to_value(&self.timings)?);
        Ok(self.out)
    }
}

/// Where the peer script is: in the current directory's checkout, else in this build's.
fn repo_dir() -> PathBuf {
    let here = PathBuf::from(".");
    if here.join("scripts/bench-python-peer").exists() { here } else { PathBuf::from(env!("CARGO_MANIFEST_DIR")) }
}

/// The Python with TensorFlow 2.21: $ALEXNET_PYTHON, else the repo's .venv, else what
/// scripts/python-env provisions (its last stdout line).
fn python(repo: &Path) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ALEXNET_PYTHON") {
        return Ok(p.into());
    }
    let venv = repo.join(".venv/bin/python");
    if venv.exists() {
        return Ok(venv);
    }
    let out = Command::new("bash").arg(repo.join("scripts/python-env")).output().context("cannot run scripts/python-env")?;
    ensure!(out.status.success(), "scripts/python-env failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(stdout.lines().last().context("scripts/python-env printed no python path")?.trim().into())
}

/// `scripts/bench-python-peer --serve` running beside us: one timed repetition per request.
pub struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    /// Starts the peer with the same data and settings and waits until it has decoded the images.
    pub fn start(opts: &BenchOptions) -> Result<Peer> {
        let mut args: Vec<OsString> = vec!["--images".into(), opts.images.clone().into()];
        args.extend(["--steps".into(), opts.steps.to_string().into(), "--warmup".into(), opts.warmup.to_string().into()]);
        args.push("--weights".into());
        args.push(opts.weights.clone().map_or(OsString::new(), OsString::from));
        Peer::spawn(&args)
    }

    /// Starts `scripts/bench-python-peer --serve ARGS` and waits until it says it is ready.
    pub fn spawn(args: &[OsString]) -> Result<Peer> {
        let repo = repo_dir();
        let py = python(&repo)?;
        let mut cmd = Command::new(&py);
        cmd.arg(repo.join("scripts/bench-python-peer")).arg("--serve").args(args);
        cmd.env("TF_CPP_MIN_LOG_LEVEL", std::env::var("TF_CPP_MIN_LOG_LEVEL").unwrap_or("2".into()));
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().with_context(|| format!("cannot run {}", py.display()))?;
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut peer = Peer { child, stdin, stdout };
        let line = peer.read_line()?;
        ensure!(line.trim() == "ready", "scripts/bench-python-peer did not start: {line}");
        Ok(peer)
    }

    /// The peer's process id (for [`settle`]).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.is_empty() {
            let status = self.child.wait()?;
            bail!("scripts/bench-python-peer stopped ({status}; its error is above)");
        }
        Ok(line)
    }

    /// One repetition of `key` (decode, train_step, infer_b1, infer_b60, with _bf16); seconds.
    pub fn once(&mut self, key: &str, timed: bool) -> Result<f64> {
        writeln!(self.stdin, "{} {key}", if timed { "time" } else { "warmup" })?;
        self.stdin.flush()?;
        let line = self.read_line()?;
        line.trim().parse().with_context(|| format!("scripts/bench-python-peer answered {line:?}"))
    }

    /// The peer's figures over its timed repetitions, in our JSON keys.
    pub fn finish(mut self) -> Result<Map<String, Value>> {
        writeln!(self.stdin, "done")?;
        self.stdin.flush()?;
        let line = self.read_line()?;
        self.child.wait()?;
        match serde_json::from_str(&line).context("scripts/bench-python-peer printed no JSON object")? {
            Value::Object(m) => Ok(m),
            _ => bail!("scripts/bench-python-peer printed JSON that is not an object"),
        }
    }
}

/// Every figure key measured for these precisions.
pub fn figure_keys(precisions: &[Precision]) -> Vec<String> {
    let mut keys: Vec<String> = ["decode_images_per_sec", "peak_rss_mb"].iter().map(|s| s.to_string()).collect();
    for p in precisions {
        let suffix = if *p == Precision::F32 { "" } else { "_bf16" };
        keys.extend(PER_PRECISION.iter().map(|k| format!("{k}{suffix}")));
    }
    keys
}

/// Ours divided by the peer's, for every figure both have; plus our bf16 training against the
/// peer's float32 (the mixed-precision target).
pub fn ratios(ours: &Map<String, Value>, peer: &Map<String, Value>, keys: &[String]) -> Map<String, Value> {
    let mut r = Map::new();
    let get = |m: &Map<String, Value>, k: &str| m.get(k).and_then(Value::as_f64);
    for k in keys {
        if let (Some(a), Some(b)) = (get(ours, k), get(peer, k)) {
            r.insert(k.clone(), json!(a / b));
        }
    }
    if let (Some(a), Some(b)) = (get(ours, "train_images_per_sec_bf16"), get(peer, "train_images_per_sec")) {
        r.insert("train_bf16_vs_peer_f32".into(), json!(a / b));
    }
    r
}

/// The figures as a table: ours, and with a peer, the peer's and the ratio.
pub fn table(ours: &Map<String, Value>, peer: Option<&Map<String, Value>>, keys: &[String]) -> String {
    let mut s = format!(
        "CPU {}; TensorFlow {}; device {}; threads intra-op {}, inter-op {}; median of {} steps after {} warm-up\n",
        ours["cpu"].as_str().unwrap_or("?"),
        ours["tensorflow"].as_str().unwrap_or("?"),
        ours["device"].as_str().unwrap_or("?"),
        ours["intra_op_threads"],
        ours["inter_op_threads"],
        ours["steps"],
        ours["warmup"],
    );
    let unit = |k: &str| match k {
        k if k.contains("per_sec") => "img/s",
        k if k.contains("gflops") => "GFLOP/s",
        k if k.ends_with("_secs") => "s",
        _ => "MiB",
    };
    s += &format!("{:<32} {:>8} {:>10}", "figure", "unit", "ours");
    if peer.is_some() {
        s += &format!(" {:>10} {:>8}", "python", "ratio");
    }
    s += "\n";
    for k in keys {
        let Some(a) = ours.get(k).and_then(Value::as_f64) else { continue };
        s += &format!("{:<32} {:>8} {:>10.2}", k, unit(k), a);
        if let Some(b) = peer.and_then(|p| p.get(k)).and_then(Value::as_f64) {
            s += &format!(" {:>10.2} {:>7.2}x", b, a / b);
        }
        s += "\n";
    }
    if let Some(p) = peer
        && let Some(r) = ratios(ours, p, keys).get("train_bf16_vs_peer_f32").and_then(Value::as_f64)
    {
        s += &format!("{:<32} {:>8} {:>10} {:>10} {:>7.2}x\n", "train bf16 (ours) / f32 (python)", "", "", "", r);
    }
    s
}

/// Time per op type (as TensorFlow ran it, after its graph rewrites) in one traced training step
/// and one traced batch-60 inference: (what, op type, milliseconds, count), slowest first.
/// With ALEXNET_PROFILE_NODES set, per node instead (op type and node name).
pub fn profile(opts: &BenchOptions, precision: Precision) -> Result<Vec<(String, String, f64, usize)>> {
    use crate::proto::tensorflow::{RunMetadata, RunOptions, run_options};
    use prost::Message;
    use tensorflow::SessionRunArgs;
    let dataset = data::scan(&opts.images)?;
    let paths: Vec<&Path> = dataset.train.iter().chain(&dataset.val).map(|e| e.path.as_path()).collect();
    let labels: Vec<i32> = dataset.train.iter().chain(&dataset.val).map(|e| e.label as i32).collect();
    let images = Decoder::new(&opts.preprocess)?.decode_files(&paths)?;
    let cfg = ModelConfig::new(dataset.classes.len());
    let (params, _) = weights::load(opts.weights.as_deref(), &model::param_specs(&cfg), &LoadOptions { strict: false, seed: 0 })?;
    let tg = TrainGraph::build(&TrainSpec { precision, ..TrainSpec::local(cfg.clone(), 0.9, 0.0) })?;
    let (session, _) = opts.runtime.session(&tg.scope.graph())?;
    tg.load_data(&session, &images, &labels)?;
    tg.init_variables(&session, &params)?;
    let n_train = dataset.train.len() as i32;
    let train = Batch::indices(&(0..n_train).collect::<Vec<_>>())?;
    let val = Batch::indices(&(n_train..labels.len() as i32).take(60).collect::<Vec<_>>())?;
    for s in 0..opts.warmup.max(1) {
        tg.run_step(&session, &train, 0.002, 0.5, [0, s as i64])?;
        tg.batch_logits(&session, &val)?;
    }
    let options = RunOptions { trace_level: run_options::TraceLevel::FullTrace as i32, ..Default::default() }.encode_to_vec();
    let feeds = StepFeeds::new(0.002, 0.5, [0, 1000])?;
    let mut rows = vec![];
    for (what, is_step) in [("train", true), ("infer_b60", false)] {
        let mut args = SessionRunArgs::new();
        args.set_run_options(&options);
        args.set_request_metadata(true);
        if is_step {
            tg.feed_step(&mut args, &train, &feeds);
        } else {
            tg.feed_logits(&mut args, &val);
        }
        session.run(&mut args)?;
        let meta = RunMetadata::decode(args.get_metadata().context("no run metadata")?)?;
        let mut by_type: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        for dev in meta.step_stats.unwrap_or_default().dev_stats {
            for n in dev.node_stats {
                // timeline_label: "name = OpType(inputs)".
                let mut op = n.timeline_label.split(" = ").nth(1).and_then(|r| r.split('(').next()).unwrap_or(&n.node_name).to_string();
                if std::env::var_os("ALEXNET_PROFILE_NODES").is_some() {
                    op = format!("{op} {}", n.node_name);
                }
                let e = by_type.entry(op).or_default();
                e.0 += n.all_end_rel_micros as f64 / 1e3;
                e.1 += 1;
            }
        }
        let mut v: Vec<_> = by_type.into_iter().map(|(op, (ms, n))| (what.to_string(), op, ms, n)).collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        rows.extend(v);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    #[test]
    fn proc_stat_reads_fields_by_their_proc5_numbers() {
        let [ppid] = super::proc_stat("self", [4]).unwrap();
        assert_eq!(ppid, std::os::unix::process::parent_id() as u64);
        assert!(super::proc_stat("self", [2]).is_none(), "the command name is not a number field");
        let before = super::cpu_ticks("self").unwrap();
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while t0.elapsed().as_millis() < 300 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(super::cpu_ticks("self").unwrap() > before, "300 ms of work adds CPU ticks");
    }
}
