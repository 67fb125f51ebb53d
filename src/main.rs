//! The `alexnet` command line: parses arguments and calls into the library, one subcommand each.

use std::path::PathBuf;
use std::process::ExitCode;

use alexnet::model::{LrnProfile, Precision};
use alexnet::runtime::{self, DeviceChoice, RuntimeConfig};
use alexnet::train::{self, RunOptions, Schedule, TrainConfig};
use alexnet::{bench, caffe, data, eval};
use anyhow::{Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "alexnet", version = version(), about = "AlexNet on the TensorFlow C API: train, evaluate, compare with the Swift original")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn version() -> &'static str {
    let tf = tensorflow::version().unwrap_or_else(|_| "unknown".into());
    Box::leak(format!("{} (TensorFlow {tf})", env!("CARGO_PKG_VERSION")).into_boxed_str())
}

#[derive(Subcommand)]
enum Command {
    /// Train on an image folder (train/<class>/*, val/<class>/*), the Swift original's recipe by default.
    Train(TrainArgs),
    /// Accuracy and confusion matrix of a trained run on an image folder.
    Eval {
        #[arg(long)]
        run_dir: PathBuf,
        /// Image folder with train/ and val/ (default: the one the run was trained on).
        #[arg(long)]
        images: Option<PathBuf>,
    },
    /// The devices TensorFlow sees, with their memory.
    Devices,
    /// Speed and memory: training step, inference, decoding; optionally against Python TensorFlow.
    Bench(BenchArgs),
    /// Convert a Caffe .caffemodel (e.g. the BVLC AlexNet) into weight files for --weights.
    ImportCaffe {
        /// The binary .caffemodel, in Caffe's current `layer` or legacy V1 `layers` format.
        model: PathBuf,
        /// Folder for conv1..fc8 .weights/.biases and model.json (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Replace the weight files already in --out (and remove those of layers the model lacks).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args)]
struct TrainArgs {
    /// Image folder with train/<class>/ and val/<class>/.
    #[arg(long, default_value = "images")]
    images: PathBuf,
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
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    input: InputArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Arithmetic of the convolutions and matmuls (bf16: for CPUs with AMX or AVX512_BF16, and GPUs).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
    /// Memory the decoded images may take (e.g. 4G, 512M); a larger data set is decoded from disk every step.
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    cache_limit: u64,
    /// No per-epoch table.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// Image folder with train/<class>/ and val/<class>/ (the training step uses all of train/).
    #[arg(long, default_value = "images")]
    images: PathBuf,
    /// Folder of weight files (layers without one are initialised); default: weights/ if it exists.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Timed repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed repetitions first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
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

/// A size in bytes: a number with an optional K, M, G or T suffix (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().trim_end_matches(['B', 'b']);
    let (num, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("'{s}' is not a size (e.g. 4G, 512M, 1000000)"))?;
    if !(n >= 0.0) {
        return Err(format!("'{s}' is not a size"));
    }
    Ok((n * (1u64 << shift) as f64) as u64)
}

#[derive(Clone, Copy, ValueEnum)]
enum ScheduleKind {
    Constant,
    Step,
    Cosine,
}

#[derive(Args)]
struct ModelArgs {
    /// Width of fc6 and fc7 (256 in the Swift original, 4096 in the paper).
    #[arg(long, default_value_t = 256)]
    fc_width: usize,
    /// LRN parameters: the Swift original's (depth_radius 5, alpha 1e-4) or Caffe's (2, 2e-5).
    #[arg(long, value_enum, default_value_t = LrnProfile::Swift)]
    lrn: LrnProfile,
}

#[derive(Args)]
struct InputArgs {
    /// Subtracted from every pixel after resizing: one value, or three (R,G,B).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pixel_mean: Vec<f32>,
    /// Keep RGB channel order (the Caffe-trained weights expect BGR).
    #[arg(long)]
    rgb: bool,
}

#[derive(Args)]
struct RuntimeArgs {
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Threads inside one op (0: one per core).
    #[arg(long, default_value_t = 0)]
    intra_op_threads: i32,
    /// Ops run at once (0: one per core).
    #[arg(long, default_value_t = 0)]
    inter_op_threads: i32,
}

impl RuntimeArgs {
    fn config(&self) -> RuntimeConfig {
        RuntimeConfig { device: self.device, intra_op_threads: self.intra_op_threads, inter_op_threads: self.inter_op_threads }
    }
}

fn main() -> ExitCode {
    runtime::quiet_tensorflow_logs();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => run_train(args),
        Command::Eval { run_dir, images } => {
            let images = match images {
                Some(i) => i,
                None => TrainConfig::read(&run_dir)?.images,
            };
            let (classes, evals) = eval::evaluate(&run_dir, &images)?;
            for e in evals {
                println!("{}: accuracy {:.2}%", e.split, e.accuracy);
                println!("  confusion (rows: true class, columns: predicted)");
                println!("  {:>12} {}", "", classes.iter().map(|c| format!("{c:>8}")).collect::<String>());
                for (c, row) in classes.iter().zip(&e.confusion) {
                    println!("  {c:>12} {}", row.iter().map(|n| format!("{n:>8}")).collect::<String>());
                }
            }
            Ok(())
        }
        Command::Bench(args) => run_bench(args),
        Command::Devices => {
            for d in runtime::list_devices()? {
                let mem = if d.memory_bytes > 0 { format!("{:.1} GiB", d.memory_bytes as f64 / (1u64 << 30) as f64) } else { "-".into() };
                println!("{:<5} {:<40} memory {mem}", d.device_type, d.name);
            }
            Ok(())
        }
        Command::ImportCaffe { model, out, force } => {
            let info = caffe::import(&model, &out, force)?;
            print!("{}", info.summary(&out));
            info.warnings.iter().for_each(|w| eprintln!("warning: {w}"));
            Ok(())
        }
    }
}

fn run_train(a: TrainArgs) -> Result<()> {
    let opts = RunOptions { resume: a.resume, force: a.force, quiet: a.quiet };
    let cfg = if a.resume && a.run_dir.join("config.json").exists() {
        let mut cfg = TrainConfig::read(&a.run_dir)?;
        if cfg.epochs != a.epochs {
            eprintln!("resume: training to {} epochs (the run was started for {})", a.epochs, cfg.epochs);
            cfg.epochs = a.epochs;
        }
        cfg
    } else {
        let dataset = data::scan(&a.images)?;
        let mut cfg = TrainConfig::swift_recipe(a.images.clone(), a.weights.clone(), dataset.classes);
        cfg.model.fc_width = a.model.fc_width;
        cfg.model.lrn = a.model.lrn;
        if a.input.pixel_mean.len() != 1 && a.input.pixel_mean.len() != 3 {
            bail!("--pixel-mean takes one value or three (R,G,B), got {}", a.input.pixel_mean.len());
        }
        cfg.preprocess.pixel_mean = a.input.pixel_mean.clone();
        cfg.preprocess.bgr = !a.input.rgb;
        cfg.strict_weights = a.strict_weights;
        cfg.skip_bad_images = a.skip_bad_images;
        cfg.epochs = a.epochs;
        cfg.batch_size = a.batch_size;
        cfg.learning_rate = a.learning_rate;
        cfg.momentum = a.momentum;
        cfg.schedule = match a.lr_schedule {
            ScheduleKind::Constant => Schedule::Constant,
            ScheduleKind::Step => Schedule::Step { every: a.lr_step_every, gamma: a.lr_gamma },
            ScheduleKind::Cosine => Schedule::Cosine,
        };
        cfg.weight_decay = a.weight_decay;
        cfg.dropout = a.dropout;
        cfg.seed = a.seed;
        cfg.val_every = a.val_every;
        cfg.checkpoint_every = a.checkpoint_every;
        cfg.runtime = a.runtime.config();
        cfg.precision = a.precision;
        cfg.cache_limit = a.cache_limit;
        cfg
    };
    train::train(&cfg, &a.run_dir, &opts)?;
    Ok(())
}

fn run_bench(a: BenchArgs) -> Result<()> {
    let weights = a.weights.or_else(|| Some(PathBuf::from("weights")).filter(|w| w.is_dir()));
    let opts = bench::BenchOptions {
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
    if a.profile {
        for &p in &opts.precisions {
            println!("precision {}: op type, milliseconds (summed over ops; inter-op overlap counts twice), ops", p.name());
            for (what, op, ms, n) in bench::profile(&opts, p)? {
                if ms >= 0.5 {
                    println!("  {what:<10} {op:<44} {ms:>9.1} ms  x{n}");
                }
            }
        }
        return Ok(());
    }
    let keys = bench::figure_keys(&opts.precisions);
    let mut peer = if a.compare_python { Some(bench::Peer::start(&opts)?) } else { None };
    let ours = bench::run(&opts, peer.as_mut())?;
    let peer = peer.map(bench::Peer::finish).transpose()?;
    if a.json {
        let mut out = ours.clone();
        if let Some(p) = &peer {
            out.insert("ratios".into(), serde_json::Value::Object(bench::ratios(&ours, p, &keys)));
            out.insert("python".into(), serde_json::Value::Object(p.clone()));
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", bench::table(&ours, peer.as_ref(), &keys));
    }
    Ok(())
}
