//! `alexnet bench`: its flags, the checks of its inputs, and the two reports: the timings (a
//! table or JSON, optionally next to the Python peer's) or, with `--profile`, the time per op type.

use std::path::PathBuf;

use alexnet::bench::dataset::{self, DatasetBenchOptions};
use alexnet::bench::{self, BenchOptions};
use alexnet::data::images as data;
use alexnet::data::pipeline::Augment;
use alexnet::graph::model::Precision;
use alexnet::graph::runtime;
use anyhow::Result;
use clap::{Args, ValueEnum};

use super::common::RuntimeArgs;

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Image folder with train/<class>/ and val/<class>/ (the training step uses all of train/).
    #[arg(long, default_value = "images")]
    images: PathBuf,
    /// Instead: the trainer on this image folder through its tf.data pipeline (as `alexnet train
    /// --batch-size B`): time to the first step, the pipeline alone, training from JPEG, from the
    /// decoded cache, and on a batch in memory (f32 only).
    #[arg(long, conflicts_with = "profile")]
    dataset: Option<PathBuf>,
    /// With --dataset: images per step.
    #[arg(long, default_value_t = 64, requires = "dataset")]
    batch_size: usize,
    /// With --dataset: the augmentation, as `alexnet train --augment`.
    #[arg(long, value_enum, default_value_t = Augment::None, requires = "dataset")]
    augment: Augment,
    /// Folder of weight files (layers without one are initialised); default: weights/ if it exists.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Timed repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed repetitions first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Also run the Swift recipe for this many epochs as `alexnet train` does (validation,
    /// checkpoints, summaries) and report its seconds per epoch, by part and against the step; 0: skip.
    #[arg(long, default_value_t = 11)]
    recipe_epochs: usize,
    /// Precisions to measure (both: f32 and bf16).
    #[arg(long, value_enum, default_value_t = BenchPrecision::Both)]
    precision: BenchPrecision,
    /// Also run scripts/bench-python-peer (the same network in Python TensorFlow), interleaved with
    /// ours repetition by repetition, and print ratios.
    #[arg(long)]
    compare_python: bool,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Instead: where the time goes, per op type (per node with ALEXNET_PROFILE_NODES=1), in one
    /// traced training step and inference pass (TensorFlow's RunMetadata step stats).
    #[arg(long, conflicts_with_all = ["compare_python", "json"])]
    profile: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum BenchPrecision {
    F32,
    Bf16,
    Both,
}

/// `alexnet bench`: the options, the input checks, then the profile or the timings.
pub(crate) fn run_bench(a: BenchArgs) -> Result<()> {
    if let Some(dataset) = a.dataset {
        let opts = DatasetBenchOptions { dataset, batch: a.batch_size, augment: a.augment, steps: a.steps, warmup: a.warmup, runtime: a.runtime.config() };
        data::scan(&opts.dataset)?;
        opts.runtime.check_device()?;
        return print_dataset(&opts, a.compare_python, a.json);
    }
    let weights = a.weights.or_else(|| Some(PathBuf::from("weights")).filter(|w| w.is_dir()));
    let opts = BenchOptions {
        images: a.images,
        weights,
        steps: a.steps,
        warmup: a.warmup,
        precisions: match a.precision {
            BenchPrecision::F32 => vec![Precision::F32],
            BenchPrecision::Bf16 => vec![Precision::Bf16],
            BenchPrecision::Both => vec![Precision::F32, Precision::Bf16],
        },
        runtime: a.runtime.config(),
        preprocess: data::Preprocess::default(),
    };
    check_inputs(&opts)?;
    if a.profile {
        return print_profile(&opts);
    }
    print_timings(&opts, a.compare_python, a.json, a.recipe_epochs)
}

/// Inputs checked before anything starts (the Python peer would fail on them with a traceback),
/// and before the bf16 warning, so that a missing folder is the one line printed.
fn check_inputs(opts: &BenchOptions) -> Result<()> {
    data::scan(&opts.images)?;
    if let Some(w) = &opts.weights {
        anyhow::ensure!(w.is_dir(), "weight folder {} does not exist (fill weights/ with scripts/fetch-data, or point --weights at a folder)", w.display());
    }
    opts.runtime.check_device()?;
    if opts.precisions.contains(&Precision::Bf16) {
        runtime::bf16_warning(opts.runtime.device).into_iter().for_each(|w| eprintln!("{w}"));
    }
    Ok(())
}

/// `--profile`: milliseconds per op type (0.5 ms and over) for each precision.
fn print_profile(opts: &BenchOptions) -> Result<()> {
    for &p in &opts.precisions {
        println!("precision {}: op type, milliseconds (summed over ops; inter-op overlap counts twice), ops", p.name());
        for (what, op, ms, n) in bench::profile(opts, p)? {
            if ms >= 0.5 {
                println!("  {what:<10} {op:<44} {ms:>9.1} ms  x{n}");
            }
        }
    }
    Ok(())
}

/// The timings, ours and optionally the Python peer's, as a table or one JSON object.
fn print_timings(opts: &BenchOptions, compare_python: bool, json: bool, recipe_epochs: usize) -> Result<()> {
    let keys = bench::figure_keys(&opts.precisions);
    let mut peer = if compare_python { Some(bench::Peer::start(opts)?) } else { None };
    let mut ours = bench::run(opts, peer.as_mut())?;
    let peer = peer.map(bench::Peer::finish).transpose()?;
    if recipe_epochs > 0 {
        bench::recipe::run(&opts.images, opts.weights.as_deref(), recipe_epochs, &mut ours, peer.as_ref())?;
    }
    if json {
        let mut out = ours.clone();
        if let Some(p) = &peer {
            out.insert("ratios".into(), serde_json::Value::Object(bench::ratios(&ours, p, &keys)));
            out.insert("python".into(), serde_json::Value::Object(p.clone()));
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", bench::table(&ours, peer.as_ref(), &keys));
        print_recipe(&ours);
    }
    Ok(())
}

/// The frozen step, and the recipe's seconds per epoch, by part, and against the steps.
fn print_recipe(ours: &serde_json::Map<String, serde_json::Value>) {
    if let (Some(rate), Some(r)) =
        (ours.get("train_frozen_convs_images_per_sec").and_then(|v| v.as_f64()), ours.get("train_frozen_convs_vs_full").and_then(|v| v.as_f64()))
    {
        println!("training step with conv1-conv5 frozen: {rate:.2} img/s ({r:.2}x the full step)");
    }
    let Some(secs) = ours.get("recipe_epoch_secs").and_then(|v| v.as_f64()) else { return };
    let parts: Vec<String> =
        ours["recipe_epoch_parts_secs"].as_object().into_iter().flatten().map(|(p, s)| format!("{p} {:.3}", s.as_f64().unwrap_or(0.0))).collect();
    println!("Swift recipe, {} epochs: {secs:.3} s per epoch ({})", ours["recipe_epochs"], parts.join(", "));
    for (key, what) in [("recipe_epoch_vs_step", "our step"), ("recipe_epoch_vs_peer_step", "the Python peer's step")] {
        if let Some(r) = ours.get(key).and_then(|v| v.as_f64()) {
            println!("  an epoch is {r:.3}x {what}");
        }
    }
}

/// `--dataset`: our figures, the peer's and the ratios, as a table or one JSON object.
fn print_dataset(opts: &DatasetBenchOptions, compare_python: bool, json: bool) -> Result<()> {
    let (ours, peer) = dataset::run(opts, compare_python)?;
    let ratios = dataset::ratios(&ours, peer.as_ref());
    if json {
        let mut out = ours;
        if let Some(p) = peer {
            out.insert("python".into(), serde_json::Value::Object(p));
        }
        out.insert("ratios".into(), serde_json::Value::Object(ratios));
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let keys: Vec<String> = dataset::KEYS.iter().map(|k| k.to_string()).collect();
        print!("{}", bench::table(&ours, peer.as_ref(), &keys));
        for (k, v) in ratios.iter().filter(|(k, _)| k.ends_with("_vs_compute")) {
            println!("{k:<32} {:>8} {:>9.2}x", "", v.as_f64().unwrap_or(f64::NAN));
        }
    }
    Ok(())
}
