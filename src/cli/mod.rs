//! The command line of the `alexnet` binary: the `Cli` parser, its `Command` enum (one variant per
//! subcommand, with the help texts `alexnet --help` shows) and `run`, which hands each subcommand
//! to its function in one of the submodules.

mod bench;
mod common;
pub(crate) mod early;
mod inspect;
mod records;
mod serve;
mod train;

use std::path::PathBuf;

use alexnet::compare::dumps::{self as compare, Layout};
use alexnet::graph::model::LrnProfile;
use anyhow::Result;
use clap::{ArgGroup, Parser, Subcommand};

use self::bench::BenchArgs;
use self::common::{ClusterArgs, InputArgs, ModelArgs};
use self::inspect::ActivationsArgs;
use self::serve::ServeArgs;
use self::train::TrainArgs;

#[derive(Parser)]
#[command(name = "alexnet", version = version(), about = "AlexNet on the TensorFlow C API: train, evaluate, compare with the Swift original")]
pub struct Cli {
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
    /// Train on an image folder (train/<class>/* and val/<class>/*, or <class>/* with --val-split), the Swift original's recipe by default.
    Train(Box<TrainArgs>),
    /// Accuracy, per-class accuracy and confusion matrix of a trained run on an image folder; the val confusion matrix as a PNG too.
    Eval {
        #[arg(long)]
        run_dir: PathBuf,
        /// Image folder with train/ and val/, or the class folders of a --val-split run (default: the one the run was trained on).
        #[arg(long)]
        images: Option<PathBuf>,
        /// Which checkpoint: latest, best (highest val accuracy) or epoch-N.
        #[arg(long, default_value = "latest")]
        checkpoint: String,
        /// Where to draw the val split's confusion matrix (default: RUN_DIR/confusion.png).
        #[arg(long, value_name = "PNG")]
        confusion: Option<PathBuf>,
        /// One JSON object instead of the tables: epoch, classes, and per split accuracy, per_class and confusion.
        #[arg(long)]
        json: bool,
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
        /// Which checkpoint: latest, best (highest val accuracy) or epoch-N.
        #[arg(long, default_value = "latest")]
        checkpoint: String,
    },
    /// Top class and probability of image files (JPEG, PNG, GIF, BMP), from a run or a SavedModel.
    #[command(group(ArgGroup::new("source").required(true).args(["run_dir", "saved_model", "weights"])))]
    Predict {
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<PathBuf>,
        /// A trained run (its latest checkpoint, or the one --checkpoint names).
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// With --run-dir: which checkpoint, latest, best (highest val accuracy) or epoch-N.
        #[arg(long, requires = "run_dir")]
        checkpoint: Option<String>,
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
    /// Serve exported versions over TensorFlow Serving's REST (/v1/models/NAME:predict) and gRPC APIs, with Prometheus metrics and a web page at /.
    Serve(ServeArgs),
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
    /// Convert an image folder to TFRecord shards (the ImageNet layout, or a TFDS folder) for train --images.
    MakeRecords(records::MakeRecordsArgs),
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

/// Runs the parsed subcommand.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => train::run_train(*args),
        Command::Server { cluster } => serve::server(&cluster),
        Command::Eval { run_dir, images, checkpoint, confusion, json } => serve::eval(&run_dir, images, &checkpoint, confusion, json),
        Command::Graph { out, classes, model } => inspect::graph(&out, classes, &model),
        Command::CompareGraph { spec, model } => inspect::compare_graph(spec.as_deref(), &model),
        Command::Activations(a) => inspect::run_activations(a),
        Command::CompareActivations { reference, ours, tolerance, reference_layout } => {
            inspect::compare_activations(&reference, &ours, tolerance, reference_layout)
        }
        Command::Export { run_dir, out, force, checkpoint } => serve::export(&run_dir, &checkpoint, &out, force),
        Command::Predict { images, run_dir, checkpoint, saved_model, weights, json, labels, lrn, input } => {
            let run = run_dir.map(|r| (r, checkpoint));
            serve::predict(&images, serve::predictor(run, saved_model, weights, labels.as_deref(), lrn, &input)?, json)
        }
        Command::Bench(args) => bench::run_bench(args),
        Command::Serve(args) => serve::serve_http(args),
        Command::Devices => serve::devices(),
        Command::ImportCaffe { model, out, force } => inspect::import_caffe(&model, &out, force),
        Command::Completions { shell } => completions(shell),
        Command::MakeRecords(args) => records::run_make_records(args),
        Command::Plot { runs, out } => inspect::plot(&runs, out.as_deref()),
    }
}

/// Prints the completion script of this command line for `shell`.
fn completions(shell: clap_complete::Shell) -> Result<()> {
    // Into a buffer first: clap_complete panics when stdout is closed early (`| head`).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "alexnet", &mut script);
    let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
    Ok(())
}
