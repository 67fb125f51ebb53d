//! `alexnet train`: its flags, and the training configuration they make (a new run's, or the
//! saved one of a resumed run) before the run starts locally or on a cluster.

use std::path::PathBuf;

use alexnet::data::pipeline::Augment;
use alexnet::data::split::{self, Layout};
use alexnet::graph::model::{ModelConfig, Precision};
use alexnet::graph::runtime;
use alexnet::run::config::{Schedule, TrainConfig};
use alexnet::run::recipe::{OptimizerKind, Recipe};
use alexnet::train::RunOptions;
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use super::common::{ClusterArgs, InputArgs, ModelArgs, RuntimeArgs, parse_size};
use super::records::RecordArgs;

#[derive(Args)]
pub(crate) struct TrainArgs {
    /// Image folder with train/<class>/ and val/<class>/, or with <class>/ folders and --val-split; or TFRecord shards, or a TFDS version folder.
    #[arg(long, default_value = "images")]
    images: PathBuf,
    #[command(flatten)]
    records: Box<RecordArgs>,
    /// For a folder of class folders (no train/ and val/): the fraction of each class held out for validation, chosen by --seed and saved in the run (split.json).
    #[arg(long)]
    val_split: Option<f64>,
    /// Folder of Caffe-layout weight files (conv1.weights, ...); layers without a file are initialised.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// A missing weight file is an error instead of an initialised layer.
    #[arg(long)]
    strict_weights: bool,
    /// Train without images that fail to decode (listed as a warning) instead of refusing to start.
    #[arg(long)]
    skip_bad_images: bool,
    /// Where the run keeps its config, metrics and checkpoints.
    #[arg(long, default_value = "runs/latest")]
    run_dir: PathBuf,
    /// Continue the run in --run-dir from its last checkpoint (its saved config is used; --epochs may raise the total).
    #[arg(long)]
    resume: bool,
    /// Start over in an existing --run-dir, deleting its checkpoints and metrics.
    #[arg(long, conflicts_with = "resume")]
    force: bool,
    /// The starting point of the flags below: swift (the Swift original's momentum SGD, one
    /// full-set step per epoch, 100 epochs) or finetune (AdamW, warmup, cosine, label smoothing,
    /// crop-flip, batch 64, new layers at 10x); any flag given overrides it. Default: swift.
    #[arg(long, value_enum)]
    recipe: Option<Recipe>,
    /// Epochs (swift: 100, finetune: 30).
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per step; 0 = the whole training set (swift: 0, finetune: 64).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Learning rate (swift: 0.002, finetune: 0.0001).
    #[arg(long = "lr")]
    learning_rate: Option<f32>,
    /// The update rule (swift: sgd, finetune: adamw).
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerKind>,
    /// Momentum of sgd and nesterov.
    #[arg(long, default_value_t = 0.9)]
    momentum: f32,
    /// Adam's and AdamW's first-moment decay.
    #[arg(long, default_value_t = 0.9)]
    beta1: f32,
    /// Adam's and AdamW's second-moment decay.
    #[arg(long, default_value_t = 0.999)]
    beta2: f32,
    /// Adam's and AdamW's epsilon (Keras's default).
    #[arg(long, default_value_t = 1e-7)]
    epsilon: f32,
    /// The rate over the run, step by step (swift: constant, finetune: cosine).
    #[arg(long, value_enum)]
    lr_schedule: Option<ScheduleKind>,
    /// Epochs (fractions allowed) of linear warmup from 0 before the schedule (swift: 0, finetune: 0.3).
    #[arg(long)]
    lr_warmup_epochs: Option<f32>,
    /// With --lr-schedule cosine: the rate it decays to.
    #[arg(long, default_value_t = 0.0)]
    lr_min: f32,
    /// Keras's label smoothing S: targets (1 - S) * onehot + S / classes (swift: 0, finetune: 0.1).
    #[arg(long)]
    label_smoothing: Option<f32>,
    /// A layer's learning-rate multiplier, Caffe's lr_mult: LAYER[-LAYER]=M, repeatable
    /// (--lr-mult fc8=10 --lr-mult conv1-conv3=0); 0 freezes. finetune: 10 for the layers
    /// without a weight file.
    #[arg(long = "lr-mult", value_name = "LAYER[-LAYER]=M")]
    lr_mult: Vec<String>,
    /// Layers whose weights stay as loaded (no gradient computed): LAYER[-LAYER], repeatable
    /// (--freeze conv1-conv5).
    #[arg(long, value_name = "LAYER[-LAYER]")]
    freeze: Vec<String>,
    /// Keras's class_weight in the loss: balanced (n / (classes * count of the class)) or a FILE
    /// of one `class weight` line per class.
    #[arg(long, value_name = "balanced|FILE")]
    class_weights: Option<String>,
    /// Clip the gradients to this global norm (0: off).
    #[arg(long, default_value_t = 0.0)]
    clip_grad_norm: f32,
    /// Keep an exponential moving average of the weights with this decay (e.g. 0.999); validation,
    /// checkpoints/best, eval, export and predict then use the averages. 0: none.
    #[arg(long, default_value_t = 0.0)]
    ema: f32,
    /// With --lr-schedule step: epochs between decays.
    #[arg(long, default_value_t = 30)]
    lr_step_every: usize,
    /// With --lr-schedule step: the factor of each decay.
    #[arg(long, default_value_t = 0.1)]
    lr_gamma: f32,
    /// Weight decay on the weights (not the biases): L2 on the gradient, or AdamW's decoupled decay (swift: 0, finetune: 0.05).
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Drop rate of fc6 and fc7 while training.
    #[arg(long, default_value_t = 0.5)]
    dropout: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Measure validation accuracy every N epochs (and after the last) (swift: 10, finetune: 1).
    #[arg(long)]
    val_every: Option<usize>,
    /// Write a checkpoint every N epochs (and after the last) (swift: 10, finetune: 1).
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Write conv1 filter and activation images to TensorBoard every N epochs (and at the first and last); 0: never.
    #[arg(long, default_value_t = 10)]
    image_summary_every: usize,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    input: InputArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// On a cluster: each worker updates the weights with its own gradients as soon as it has
    /// them, without waiting for the others (a lost worker is dropped instead of stopping the run).
    #[arg(long = "async")]
    async_updates: bool,
    /// On a cluster: every worker runs `alexnet train --between-graph` (its own client, its part of
    /// every batch); worker 0, the chief, initialises, evaluates and writes the run directory.
    #[arg(long)]
    between_graph: bool,
    /// Arithmetic of the convolutions and matmuls (bf16: for CPUs with AMX or AVX512_BF16, and GPUs).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
    /// Memory the decoded images may take (e.g. 4G, 512M); a larger data set is decoded from disk every step.
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    cache_limit: u64,
    /// Augmentation of the training images (swift: none, finetune: crop-flip): none, crop-flip (short side 256, random 227 crop and left-right flip; evaluation takes the centre crop), random-resized-crop (Inception's: a random window of 8-100% of the area, aspect 3/4 to 4/3, resized to 227, left-right flip; only a JPEG's window is decoded, so the training cache holds the files' encoded bytes and decodes every epoch; evaluation as crop-flip).
    #[arg(long, value_enum)]
    augment: Option<Augment>,
    /// Drop each epoch's last partial batch (by default it is trained on).
    #[arg(long)]
    drop_remainder: bool,
    /// Decode every image before training starts (by default minibatch training checks each file's header and end, and skips a file that fails to decode later, naming it).
    #[arg(long)]
    strict_images: bool,
    /// Stop after N validations without a new best val accuracy (checkpoints/best keeps the best); 0: never.
    #[arg(long, default_value_t = 0)]
    early_stop: usize,
    /// No per-epoch table.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScheduleKind {
    Constant,
    Step,
    Cosine,
}

/// `alexnet train`: the configuration, the bf16 warning, then the run (or this worker's part of it).
pub(crate) fn run_train(a: TrainArgs) -> Result<()> {
    let opts = RunOptions { resume: a.resume, force: a.force, quiet: a.quiet };
    a.records.apply();
    let cluster = a.cluster.config()?;
    let cfg = if a.resume && a.run_dir.join("config.json").exists() { resumed_config(&a)? } else { new_config(&a)? };
    if cfg.precision == Precision::Bf16 {
        runtime::bf16_warning(cfg.runtime.device).into_iter().for_each(|w| eprintln!("{w}"));
    }
    match &cluster {
        // The other workers of a between-graph cluster write no run directory.
        Some(c) if a.between_graph && !c.is_chief() => alexnet::distributed::between_graph::work(&cfg, c, opts.quiet),
        _ => alexnet::distributed::train(&cfg, &a.run_dir, &opts, cluster.as_ref(), a.between_graph).map(drop),
    }
}

/// The saved configuration of the run being resumed, with the flags a resume may change.
fn resumed_config(a: &TrainArgs) -> Result<TrainConfig> {
    let mut cfg = TrainConfig::read(&a.run_dir)?;
    if let Some(epochs) = a.epochs.filter(|&e| e != cfg.epochs) {
        eprintln!("resume: training to {epochs} epochs (the run was started for {})", cfg.epochs);
        cfg.epochs = epochs;
    }
    if a.async_updates && !cfg.async_updates {
        eprintln!("resume: switching to asynchronous updates (the run was started synchronous)");
        cfg.async_updates = true;
    }
    Ok(cfg)
}

/// A new run's configuration: the recipe for the image folder's classes, with the flags.
fn new_config(a: &TrainArgs) -> Result<TrainConfig> {
    if a.val_split.is_some() && split::layout(&a.images)? == Layout::TrainVal {
        bail!("--val-split is for a folder of class folders, and {} has train/ and val/ already: drop --val-split", a.images.display());
    }
    let (dataset, _) = split::dataset(&a.images, a.val_split, a.seed, None)?;
    let recipe = a.recipe.unwrap_or_default();
    let model = ModelConfig { fc_width: a.model.fc_width, lrn: a.model.lrn, ..ModelConfig::new(dataset.classes.len()) };
    let new_layers = new_layers(&model, a.weights.as_deref())?;
    let base = TrainConfig::for_recipe(recipe, a.images.clone(), a.weights.clone(), dataset.classes.clone(), &new_layers);
    let schedule = match a.lr_schedule {
        None => base.schedule.clone(),
        Some(ScheduleKind::Constant) => Schedule::Constant,
        Some(ScheduleKind::Step) => Schedule::Step { every: a.lr_step_every, gamma: a.lr_gamma },
        Some(ScheduleKind::Cosine) => Schedule::Cosine,
    };
    let mut lr_mults = base.lr_mults.clone();
    for spec in &a.lr_mult {
        lr_mults.set(&model, spec)?;
    }
    for range in &a.freeze {
        lr_mults.freeze(&model, range)?;
    }
    let class_weights = match &a.class_weights {
        None => None,
        Some(spec) => Some(class_weights(spec, &dataset)?),
    };
    Ok(TrainConfig {
        model,
        preprocess: a.input.preprocess()?,
        strict_weights: a.strict_weights,
        skip_bad_images: a.skip_bad_images,
        epochs: a.epochs.unwrap_or(base.epochs),
        batch_size: a.batch_size.unwrap_or(base.batch_size),
        learning_rate: a.learning_rate.unwrap_or(base.learning_rate),
        momentum: a.momentum,
        schedule,
        weight_decay: a.weight_decay.unwrap_or(base.weight_decay),
        dropout: a.dropout,
        seed: a.seed,
        val_every: a.val_every.unwrap_or(base.val_every),
        checkpoint_every: a.checkpoint_every.unwrap_or(base.checkpoint_every),
        image_summary_every: a.image_summary_every,
        runtime: a.runtime.config(),
        precision: a.precision,
        cache_limit: a.cache_limit,
        async_updates: a.async_updates,
        augment: a.augment.unwrap_or(base.augment),
        drop_remainder: a.drop_remainder,
        strict_images: a.strict_images,
        early_stop: a.early_stop,
        val_split: a.val_split,
        optimizer: a.optimizer.unwrap_or(base.optimizer),
        beta1: a.beta1,
        beta2: a.beta2,
        epsilon: a.epsilon,
        warmup_epochs: a.lr_warmup_epochs.unwrap_or(base.warmup_epochs),
        lr_min: a.lr_min,
        label_smoothing: a.label_smoothing.unwrap_or(base.label_smoothing),
        lr_mults,
        class_weights,
        clip_grad_norm: a.clip_grad_norm,
        ema: a.ema,
        ..base
    })
}

/// The layers with no weight file in `weights` (all of them without a folder): those this run
/// initialises.
fn new_layers(model: &ModelConfig, weights: Option<&std::path::Path>) -> Result<Vec<&'static str>> {
    let specs = alexnet::graph::model::param_specs(model);
    Ok(specs.iter().filter(|s| !weights.is_some_and(|d| d.join(format!("{}.weights", s.layer)).is_file())).map(|s| s.layer).collect())
}

/// `balanced` (Keras's and scikit-learn's: n / (classes * count of the class), from the training
/// split) or a file of `class weight` lines, one per class.
fn class_weights(spec: &str, dataset: &alexnet::data::images::Dataset) -> Result<Vec<f32>> {
    let k = dataset.classes.len();
    if spec == "balanced" {
        let mut counts = vec![0usize; k];
        dataset.train.iter().for_each(|e| counts[e.label] += 1);
        let n = dataset.train.len() as f32;
        return Ok(counts.iter().map(|&c| if c == 0 { 0.0 } else { n / (k as f32 * c as f32) }).collect());
    }
    let text = std::fs::read_to_string(spec).with_context(|| format!("--class-weights {spec}: not 'balanced' and not a readable file"))?;
    let mut weights = vec![None; k];
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#')) {
        let (name, w) = line.trim().rsplit_once(char::is_whitespace).with_context(|| format!("{spec}:{}: expected 'class weight'", i + 1))?;
        let w: f32 =
            w.parse().ok().filter(|w: &f32| *w >= 0.0 && w.is_finite()).with_context(|| format!("{spec}:{}: {w} is not a weight (a number >= 0)", i + 1))?;
        let c = dataset
            .classes
            .iter()
            .position(|c| c == name.trim())
            .with_context(|| format!("{spec}:{}: no class {name} (classes: {})", i + 1, dataset.classes.join(", ")))?;
        weights[c] = Some(w);
    }
    weights.iter().zip(&dataset.classes).map(|(w, c)| w.with_context(|| format!("{spec}: no weight for class {c}"))).collect()
}
