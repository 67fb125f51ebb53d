//! The Swift recipe's epochs as `alexnet train` runs them, beside the bare step: a few epochs of
//! the real loop (validation, train accuracy, summaries, metrics.csv and checkpoints included) in
//! a scratch run directory, timed per part, so that what an epoch costs beyond its step is seen.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Map, Value, json};

use crate::data::images as data;
use crate::run::config::TrainConfig;
use crate::train::{self, RunOptions};

/// Adds `recipe_*` figures to `ours`: seconds per epoch over `epochs` epochs of the Swift recipe
/// on `images`, by part, and against our step's median (and, with `peer`, the peer's bare step:
/// the "100 epochs against 100 peer steps" ratio).
pub fn run(images: &Path, weights: Option<&Path>, epochs: usize, ours: &mut Map<String, Value>, peer: Option<&Map<String, Value>>) -> Result<()> {
    let dataset = data::scan(images)?;
    let n_train = dataset.train.len() as f64;
    let scratch = tempfile::Builder::new().prefix("alexnet-bench-recipe-").tempdir().context("cannot create the recipe's scratch run directory")?;
    let cfg = TrainConfig { epochs, ..TrainConfig::swift_recipe(images.to_path_buf(), weights.map(Path::to_path_buf), dataset.classes) };
    eprintln!("bench: the Swift recipe for {epochs} epochs (validation, checkpoints and summaries as in a real run)");
    let summary = train::train(&cfg, scratch.path(), &RunOptions { quiet: true, ..Default::default() })?;
    let parts: Map<String, Value> = summary.seconds_per_epoch_by_part.iter().map(|(p, s)| (p.clone(), json!(s))).collect();
    ours.insert("recipe_epochs".into(), json!(epochs));
    ours.insert("recipe_epoch_secs".into(), json!(summary.seconds_per_epoch));
    ours.insert("recipe_epoch_parts_secs".into(), Value::Object(parts));
    let step = |m: &Map<String, Value>| m.get("train_images_per_sec").and_then(Value::as_f64).map(|r| n_train / r);
    if let Some(s) = step(ours) {
        ours.insert("recipe_epoch_vs_step".into(), json!(summary.seconds_per_epoch / s));
    }
    if let Some(s) = peer.and_then(step) {
        ours.insert("recipe_epoch_vs_peer_step".into(), json!(summary.seconds_per_epoch / s));
    }
    Ok(())
}
