//! The `alexnet` command line: parses arguments and calls into the library, one subcommand each.

use std::path::PathBuf;
use std::process::ExitCode;

use alexnet::bench;
use alexnet::compare::activations::{self, Engine, Setup};
use alexnet::compare::dumps::{self as compare, Layout};
use alexnet::compare::graph_spec;
use alexnet::data::caffe;
use alexnet::data::images as data;
use alexnet::distributed::cluster::{self, ClusterConfig};
use alexnet::graph::model::{LrnProfile, ModelConfig, Precision};
use alexnet::graph::network_graph;
use alexnet::graph::runtime::{self, DeviceChoice, RuntimeConfig};
use alexnet::observe::plot;
use alexnet::serve::eval;
use alexnet::serve::export;
use alexnet::serve::predict::{self, Predictor};
use alexnet::train::{RunOptions, Schedule, TrainConfig};
use anyhow::{Result, bail};
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "alexnet", version = version(), about = "AlexNet on the TensorFlow C API: train, evaluate, compare with the Swift original")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Show TensorFlow's own info and warning lines (hidden by default; errors always show).
    #[arg(long, global = true)]
    verbose: bool,
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
    /// Write a trained run as a TensorFlow SavedModel for serving (signatures serving_default and predict_tensor).
    Export {
        #[arg(long)]
        run_dir: PathBuf,
        /// The SavedModel folder to create (for TensorFlow Serving, a version folder: models/alexnet/1).
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing SavedModel in --out.
        #[arg(long)]
        force: bool,
    },
    /// Top class and probability of image files (JPEG, PNG, GIF, BMP), from a run or a SavedModel.
    #[command(group(ArgGroup::new("source").required(true).args(["run_dir", "saved_model", "weights"])))]
    Predict {
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<PathBuf>,
        /// A trained run (its latest checkpoint).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// An exported SavedModel (its serving_default signature).
        #[arg(long)]
        saved_model: Option<PathBuf>,
        /// One JSON object per line: path, class, class_id, probability, probabilities (by class id).
        #[arg(long)]
        json: bool,
        /// A folder with all eight layers' weight files (e.g. from import-caffe), used as it is.
        #[arg(long, conflicts_with_all = ["run_dir", "saved_model"])]
        weights: Option<PathBuf>,
        /// Class names, one per line, for a SavedModel or weight files that don't name their classes.
        #[arg(long, conflicts_with = "run_dir")]
        labels: Option<PathBuf>,
        /// With --weights: LRN parameters (the BVLC AlexNet uses Caffe's).
        #[arg(long, value_enum, default_value_t = LrnProfile::Swift, requires = "weights")]
        lrn: LrnProfile,
        #[command(flatten)]
        input: InputArgs,
    },
    /// Which TensorFlow library this is (CPU-only or CUDA, and if no GPU, why) and the devices it sees.
    Devices,
    /// Run this task's TensorFlow server (a ps, or a worker other than the chief) until SIGINT or SIGTERM.
    Server {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
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
    /// Write the network graph's GraphDef (input placeholder to logits) as alexnet.pb and alexnet.pbtxt.
    Graph {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 2)]
        classes: usize,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Check the built graph layer by layer against the Swift original's table (exit 1 on a difference).
    CompareGraph {
        /// Layer table as JSON (default: the built-in graphs/swift-original.json).
        #[arg(long)]
        spec: Option<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Every layer's activation for one image: <layer>.npy and <layer>.png, and min/max/mean.
    Activations(ActivationsArgs),
    /// Compare two activation folders layer by layer (exit 1 when a layer is over the tolerance).
    CompareActivations {
        /// Folder of <layer>.npy to compare against (e.g. dumped from Caffe or PyTorch).
        #[arg(long)]
        reference: PathBuf,
        /// Folder written by `alexnet activations`.
        #[arg(long)]
        ours: PathBuf,
        /// Largest allowed max |diff| / max |ref| per layer.
        #[arg(long, default_value_t = compare::DEFAULT_TOLERANCE)]
        tolerance: f64,
        #[arg(long, value_enum, default_value_t = Layout::Nhwc)]
        reference_layout: Layout,
    },
    /// Print a shell completion script: `alexnet completions bash > ~/.local/share/bash-completion/completions/alexnet`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Redraw a run's curves.png from its metrics.csv, or overlay several runs to compare them.
    Plot {
        /// Run directories (each with a metrics.csv).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// The PNG to write (default: RUN/curves.png for one run, ./curves.png for several).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ActivationsArgs {
    #[arg(long)]
    image: PathBuf,
    #[command(flatten)]
    source: ParamsSource,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// With --weights: seed of the initialisation of layers without a file.
    #[arg(long, default_value_t = 0, conflicts_with = "run_dir")]
    seed: u64,
    /// With --weights: width of fc6 and fc7.
    #[arg(long, default_value_t = 256, conflicts_with = "run_dir")]
    fc_width: usize,
    /// With --weights: LRN parameters.
    #[arg(long, value_enum, default_value_t = LrnProfile::Swift, conflicts_with = "run_dir")]
    lrn: LrnProfile,
    #[arg(long, value_enum, default_value_t = Engine::Tf)]
    engine: Engine,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct ParamsSource {
    /// Folder of Caffe-layout weight files; layers without a file are initialised from --seed.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// A training run: its latest checkpoint, model and preprocessing.
    #[arg(long)]
    run_dir: Option<PathBuf>,
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
    /// No per-epoch table.
    #[arg(long)]
    quiet: bool,
}

/// The cluster: --cluster FILE with --job and --task, or the TF_CONFIG environment variable.
#[derive(Args)]
struct ClusterArgs {
    /// JSON as in TF_CONFIG: {"cluster": {"ps": ["host:port"], "worker": ["host:port", ...]}}.
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// This task's job in the cluster: ps or worker (worker 0 is the chief that trains).
    #[arg(long, requires = "cluster")]
    job: Option<String>,
    /// This task's index in its job.
    #[arg(long, requires = "job")]
    task: Option<usize>,
}

impl ClusterArgs {
    fn config(&self) -> Result<Option<ClusterConfig>> {
        ClusterConfig::from_args_or_env(self.cluster.as_deref(), self.job.as_deref(), self.task)
    }
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

impl InputArgs {
    fn preprocess(&self) -> Result<alexnet::data::images::Preprocess> {
        if self.pixel_mean.len() != 1 && self.pixel_mean.len() != 3 {
            bail!("--pixel-mean takes one value or three (R,G,B), got {}", self.pixel_mean.len());
        }
        Ok(alexnet::data::images::Preprocess { pixel_mean: self.pixel_mean.clone(), bgr: !self.rgb, ..Default::default() })
    }
}

impl RuntimeArgs {
    fn config(&self) -> RuntimeConfig {
        RuntimeConfig { device: self.device, intra_op_threads: self.intra_op_threads, inter_op_threads: self.inter_op_threads }
    }
}

fn main() -> ExitCode {
    // Before clap: the check must run before anything else, and `--verbose` may follow a subcommand.
    runtime::quiet_tensorflow_logs(std::env::args_os().any(|a| a == "--verbose"));
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
        Command::Server { cluster } => match cluster.config()? {
            Some(c) => cluster::serve(&c),
            None => bail!("alexnet server needs the cluster: --cluster FILE --job NAME --task N, or the TF_CONFIG environment variable"),
        },
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
        Command::Graph { out, classes, model } => {
            let cfg = ModelConfig { classes, ..model.config() };
            let (pb, pbtxt) = network_graph::write_graph(&cfg, &out)?;
            println!("wrote {} and {}", pb.display(), pbtxt.display());
            Ok(())
        }
        Command::CompareGraph { spec, model } => {
            let report = graph_spec::compare(&model.config(), spec.as_deref())?;
            print!("{report}");
            report.ensure_matches()
        }
        Command::Activations(a) => run_activations(a),
        Command::CompareActivations { reference, ours, tolerance, reference_layout } => {
            let layers = activations::layer_names(&ModelConfig::swift_original());
            let report = compare::compare_dirs(&reference, &ours, &layers, reference_layout, tolerance)?;
            print!("{report}");
            report.ensure_within_tolerance()
        }
        Command::Export { run_dir, out, force } => {
            let e = export::export(&run_dir, &out, force)?;
            println!(
                "exported {} (epoch {}, classes [{}]) to {}",
                e.checkpoint.parent().unwrap_or(&e.checkpoint).display(),
                e.epoch,
                e.classes.join(", "),
                e.dir.display()
            );
            Ok(())
        }
        Command::Predict { images, run_dir, saved_model, weights, json, labels, lrn, input } => {
            let labels = labels.as_deref().map(predict::read_labels).transpose()?;
            let predictor = match (run_dir, saved_model, weights) {
                (Some(run), _, _) => Predictor::from_run(&run)?,
                (None, Some(dir), _) => Predictor::from_saved_model(&dir, labels)?,
                (None, None, Some(dir)) => Predictor::from_weights(&dir, labels, lrn, &input.preprocess()?)?,
                (None, None, None) => bail!("give --run-dir, --saved-model or --weights"),
            };
            let outcomes = predictor.predict_each(&images)?;
            let failed = outcomes.iter().filter(|o| o.is_err()).count();
            for o in outcomes {
                match (o, json) {
                    (Ok(p), true) => println!("{}", serde_json::to_string(&p)?),
                    (Ok(p), false) => println!("{}\t{}\t{:.4}", p.path.display(), p.class, p.probability),
                    (Err(b), true) => println!("{}", serde_json::json!({ "path": b.path, "error": b.reason })),
                    (Err(b), false) => eprintln!("cannot classify {}: {}", b.path.display(), b.reason),
                }
            }
            if failed > 0 {
                bail!("{failed} of {} files could not be classified", images.len());
            }
            Ok(())
        }
        Command::Bench(args) => run_bench(args),
        Command::Devices => {
            runtime::describe_devices()?.iter().for_each(|l| println!("{l}"));
            Ok(())
        }
        Command::ImportCaffe { model, out, force } => {
            let info = caffe::import(&model, &out, force)?;
            print!("{}", info.summary(&out));
            info.warnings.iter().for_each(|w| eprintln!("warning: {w}"));
            Ok(())
        }
        Command::Completions { shell } => {
            // Into a buffer first: clap_complete panics when stdout is closed early (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "alexnet", &mut script);
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            Ok(())
        }
        Command::Plot { runs, out } => {
            println!("wrote {}", plot::plot_runs(&runs, out.as_deref())?.display());
            Ok(())
        }
    }
}

impl ModelArgs {
    /// The Swift original's network with these flags.
    fn config(&self) -> ModelConfig {
        ModelConfig { fc_width: self.fc_width, lrn: self.lrn, ..ModelConfig::swift_original() }
    }
}

fn run_activations(a: ActivationsArgs) -> Result<()> {
    let setup = match (&a.source.weights, &a.source.run_dir) {
        (_, Some(run)) => Setup::from_run(run)?,
        (Some(dir), None) => {
            let cfg = ModelConfig { fc_width: a.fc_width, lrn: a.lrn, ..ModelConfig::swift_original() };
            Setup::from_weights(cfg, dir, a.seed)?
        }
        (None, None) => bail!("give --weights DIR or --run-dir RUN"),
    };
    eprintln!("{}", setup.origin);
    let t0 = std::time::Instant::now();
    let acts = setup.activations(&a.image, a.engine)?;
    eprintln!("{:?} engine: forward pass in {:.2} s", a.engine, t0.elapsed().as_secs_f64());
    let stats = activations::write(&a.out, &acts)?;
    println!("{:<6} {:<16} {:>12} {:>12} {:>12}", "layer", "shape", "min", "max", "mean");
    for s in stats {
        let shape = s.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
        println!("{:<6} {:<16} {:>12.5} {:>12.5} {:>12.5}", s.layer, shape, s.min, s.max, s.mean);
    }
    println!("wrote <layer>.npy and <layer>.png into {}", a.out.display());
    Ok(())
}

fn run_train(a: TrainArgs) -> Result<()> {
    let opts = RunOptions { resume: a.resume, force: a.force, quiet: a.quiet };
    let cluster = a.cluster.config()?;
    let cfg = if a.resume && a.run_dir.join("config.json").exists() {
        let mut cfg = TrainConfig::read(&a.run_dir)?;
        if cfg.epochs != a.epochs {
            eprintln!("resume: training to {} epochs (the run was started for {})", a.epochs, cfg.epochs);
            cfg.epochs = a.epochs;
        }
        if a.async_updates && !cfg.async_updates {
            eprintln!("resume: switching to asynchronous updates (the run was started synchronous)");
            cfg.async_updates = true;
        }
        cfg
    } else {
        let dataset = data::scan(&a.images)?;
        let mut cfg = TrainConfig::swift_recipe(a.images.clone(), a.weights.clone(), dataset.classes);
        cfg.model.fc_width = a.model.fc_width;
        cfg.model.lrn = a.model.lrn;
        cfg.preprocess = a.input.preprocess()?;
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
        cfg.image_summary_every = a.image_summary_every;
        cfg.runtime = a.runtime.config();
        cfg.precision = a.precision;
        cfg.cache_limit = a.cache_limit;
        cfg.async_updates = a.async_updates;
        cfg
    };
    if cfg.precision == Precision::Bf16 {
        runtime::bf16_warning(cfg.runtime.device).into_iter().for_each(|w| eprintln!("{w}"));
    }
    match &cluster {
        // The other workers of a between-graph cluster write no run directory.
        Some(c) if a.between_graph && !c.is_chief() => alexnet::distributed::between_graph::work(&cfg, c, opts.quiet),
        _ => alexnet::distributed::train(&cfg, &a.run_dir, &opts, cluster.as_ref(), a.between_graph).map(drop),
    }
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
    // Inputs checked before anything starts (the Python peer would fail on them with a traceback),
    // and before the bf16 warning, so that a missing folder is the one line printed.
    data::scan(&opts.images)?;
    if let Some(w) = &opts.weights {
        anyhow::ensure!(w.is_dir(), "weight folder {} does not exist (fill weights/ with scripts/fetch-data, or point --weights at a folder)", w.display());
    }
    if opts.precisions.contains(&Precision::Bf16) {
        runtime::bf16_warning(opts.runtime.device).into_iter().for_each(|w| eprintln!("{w}"));
    }
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
