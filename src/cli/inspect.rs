//! Subcommands that look inside the network or convert its files: `graph`, `compare-graph`,
//! `activations`, `compare-activations`, `import-caffe` and `plot`.

use std::path::{Path, PathBuf};

use alexnet::compare::activations::{self, Engine, Setup};
use alexnet::compare::dumps::{self as compare, Layout};
use alexnet::compare::graph_spec;
use alexnet::data::caffe;
use alexnet::graph::model::{LrnProfile, ModelConfig};
use alexnet::graph::network_graph;
use alexnet::observe::plot as plotting;
use anyhow::{Result, bail};
use clap::Args;

use super::common::ModelArgs;

#[derive(Args)]
pub(crate) struct ActivationsArgs {
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

/// `alexnet graph`: the network's GraphDef, binary and text.
pub(crate) fn graph(out: &Path, classes: usize, model: &ModelArgs) -> Result<()> {
    let cfg = ModelConfig { classes, ..model.config() };
    let (pb, pbtxt) = network_graph::write_graph(&cfg, out)?;
    println!("wrote {} and {}", pb.display(), pbtxt.display());
    Ok(())
}

/// `alexnet compare-graph`: the layer table, an error on a difference.
pub(crate) fn compare_graph(spec: Option<&Path>, model: &ModelArgs) -> Result<()> {
    let report = graph_spec::compare(&model.config(), spec)?;
    print!("{report}");
    report.ensure_matches()
}

/// `alexnet compare-activations`: the per-layer differences, an error over the tolerance.
pub(crate) fn compare_activations(reference: &Path, ours: &Path, tolerance: f64, reference_layout: Layout) -> Result<()> {
    let layers = activations::layer_names(&ModelConfig::swift_original());
    let report = compare::compare_dirs(reference, ours, &layers, reference_layout, tolerance)?;
    print!("{report}");
    report.ensure_within_tolerance()
}

/// `alexnet import-caffe`: the weight files, a summary, and the warnings on stderr.
pub(crate) fn import_caffe(model: &Path, out: &Path, force: bool) -> Result<()> {
    let info = caffe::import(model, out, force)?;
    print!("{}", info.summary(out));
    info.warnings.iter().for_each(|w| eprintln!("warning: {w}"));
    Ok(())
}

/// `alexnet plot`: the curves of one run or several, overlaid.
pub(crate) fn plot(runs: &[PathBuf], out: Option<&Path>) -> Result<()> {
    println!("wrote {}", plotting::plot_runs(runs, out)?.display());
    Ok(())
}

/// `alexnet activations`: every layer's activation for one image, written and summarised.
pub(crate) fn run_activations(a: ActivationsArgs) -> Result<()> {
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
