//! Subcommands that use a trained model or the TensorFlow runtime as they are: `eval`, `export`,
//! `predict`, `devices` and `server`.

use std::path::{Path, PathBuf};

use alexnet::distributed::cluster;
use alexnet::graph::model::LrnProfile;
use alexnet::graph::runtime;
use alexnet::run::config::TrainConfig;
use alexnet::serve::eval as evaluation;
use alexnet::serve::export as exporting;
use alexnet::serve::predict::{self as prediction, Predictor};
use anyhow::{Result, bail};

use super::common::{ClusterArgs, InputArgs};

/// `alexnet server`: this task's TensorFlow server, until SIGINT or SIGTERM.
pub(crate) fn server(cluster: &ClusterArgs) -> Result<()> {
    match cluster.config()? {
        Some(c) => cluster::serve(&c),
        None => bail!("alexnet server needs the cluster: --cluster FILE --job NAME --task N, or the TF_CONFIG environment variable"),
    }
}

/// `alexnet eval`: accuracy and confusion matrix per split.
pub(crate) fn eval(run_dir: &Path, images: Option<PathBuf>, checkpoint: &str) -> Result<()> {
    let images = match images {
        Some(i) => i,
        None => TrainConfig::read(run_dir)?.images,
    };
    let (classes, evals) = evaluation::evaluate_at(run_dir, &images, checkpoint)?;
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

/// `alexnet export`: the run's latest checkpoint as a SavedModel.
pub(crate) fn export(run_dir: &Path, out: &Path, force: bool) -> Result<()> {
    let e = exporting::export(run_dir, out, force)?;
    println!(
        "exported {} (epoch {}, classes [{}]) to {}",
        e.checkpoint.parent().unwrap_or(&e.checkpoint).display(),
        e.epoch,
        e.classes.join(", "),
        e.dir.display()
    );
    Ok(())
}

/// The predictor of `alexnet predict`, from whichever of a run, a SavedModel or weight files is given.
pub(crate) fn predictor(
    run_dir: Option<PathBuf>,
    saved_model: Option<PathBuf>,
    weights: Option<PathBuf>,
    labels: Option<&Path>,
    lrn: LrnProfile,
    input: &InputArgs,
) -> Result<Predictor> {
    let labels = labels.map(prediction::read_labels).transpose()?;
    Ok(match (run_dir, saved_model, weights) {
        (Some(run), _, _) => Predictor::from_run(&run)?,
        (None, Some(dir), _) => Predictor::from_saved_model(&dir, labels)?,
        (None, None, Some(dir)) => Predictor::from_weights(&dir, labels, lrn, &input.preprocess()?)?,
        (None, None, None) => bail!("give --run-dir, --saved-model or --weights"),
    })
}

/// `alexnet predict`: one line per image (or JSON object); an error when any image failed.
pub(crate) fn predict(images: &[PathBuf], predictor: Predictor, json: bool) -> Result<()> {
    let outcomes = predictor.predict_each(images)?;
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

/// `alexnet devices`: the TensorFlow library and the devices it sees.
pub(crate) fn devices() -> Result<()> {
    runtime::describe_devices()?.iter().for_each(|l| println!("{l}"));
    Ok(())
}
