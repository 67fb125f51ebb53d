//! `alexnet train`: its flags, and the training configuration they make (a new run's, or the
//! saved one of a resumed run) before the run starts locally or on a cluster.

use std::path::PathBuf;

use alexnet::data::pipeline::Augment;
use alexnet::data::split::{self, Layout};
use alexnet::graph::model::{ModelConfig, Precision};
use alexnet::graph::runtime;
use alexnet::run::config::{Schedule, TrainConfig};
use alexnet::train::RunOptions;
use anyhow::{Result, bail};
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
    #[arg(long, default_value_t = 100)]
    epochs: usize,
    /// Images per step; 0 = the whole training set (the Swift original).
    #[arg(long, default_value_t = 0)]
    batch_size: usize,
    #[arg(long = "lr", default_value_t = 0.002)]
    learning_rate: f32,
    #[arg(long, default_value_t = 0.9)]
    momentum: f32,
    #[arg(long, value_enum, default_value_t = ScheduleKind::Constant)]
    lr_schedule: ScheduleKind,
    /// With --lr-schedule step: epochs between decays.
    #[arg(long, default_value_t = 30)]
    lr_step_every: usize,
    /// With --lr-schedule step: the factor of each decay.
    #[arg(long, default_value_t = 0.1)]
    lr_gamma: f32,
    /// L2 weight decay on the weights (not the biases).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// Drop rate of fc6 and fc7 while training.
    #[arg(long, default_value_t = 0.5)]
    dropout: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Measure validation accuracy every N epochs (and after the last).
    #[arg(long, default_value_t = 10)]
    val_every: usize,
    /// Write a checkpoint every N epochs (and after the last).
    #[arg(long, default_value_t = 10)]
    checkpoint_every: usize,
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
    /// Augmentation of the training images: none (the Swift recipe), crop-flip (short side 256, random 227 crop and left-right flip; evaluation takes the centre crop), random-resized-crop (Inception's: a random window of 8-100% of the area, aspect 3/4 to 4/3, resized to 227, left-right flip; only a JPEG's window is decoded, so the training cache holds the files' encoded bytes and decodes every epoch; evaluation as crop-flip).
    #[arg(long, value_enum, default_value_t = Augment::None)]
    augment: Augment,
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
    if cfg.epochs != a.epochs {
        eprintln!("resume: training to {} epochs (the run was started for {})", a.epochs, cfg.epochs);
        cfg.epochs = a.epochs;
    }
    if a.async_updates && !cfg.async_updates {
        eprintln!("resume: switching to asynchronous updates (the run was started synchronous)");
        cfg.async_updates = true;
    }
    Ok(cfg)
}

/// A new run's configuration: the Swift recipe for the image folder's classes, with the flags.
fn new_config(a: &TrainArgs) -> Result<TrainConfig> {
    if a.val_split.is_some() && split::layout(&a.images)? == Layout::TrainVal {
        bail!("--val-split is for a folder of class folders, and {} has train/ and val/ already: drop --val-split", a.images.display());
    }
    let (dataset, _) = split::dataset(&a.images, a.val_split, a.seed, None)?;
    let base = TrainConfig::swift_recipe(a.images.clone(), a.weights.clone(), dataset.classes);
    let schedule = match a.lr_schedule {
        ScheduleKind::Constant => Schedule::Constant,
        ScheduleKind::Step => Schedule::Step { every: a.lr_step_every, gamma: a.lr_gamma },
        ScheduleKind::Cosine => Schedule::Cosine,
    };
    Ok(TrainConfig {
        model: ModelConfig { fc_width: a.model.fc_width, lrn: a.model.lrn, ..base.model },
        preprocess: a.input.preprocess()?,
        strict_weights: a.strict_weights,
        skip_bad_images: a.skip_bad_images,
        epochs: a.epochs,
        batch_size: a.batch_size,
        learning_rate: a.learning_rate,
        momentum: a.momentum,
        schedule,
        weight_decay: a.weight_decay,
        dropout: a.dropout,
        seed: a.seed,
        val_every: a.val_every,
        checkpoint_every: a.checkpoint_every,
        image_summary_every: a.image_summary_every,
        runtime: a.runtime.config(),
        precision: a.precision,
        cache_limit: a.cache_limit,
        async_updates: a.async_updates,
        augment: a.augment,
        drop_remainder: a.drop_remainder,
        strict_images: a.strict_images,
        early_stop: a.early_stop,
        val_split: a.val_split,
        ..base
    })
}
