//! Evaluating a trained run: accuracy and the confusion matrix on an image folder.

use std::path::Path;

use anyhow::Result;

use crate::data::images as data;
use crate::train::{self, TrainGraph, argmax};

/// Accuracy and confusion matrix (rows: true class, columns: predicted) of one split.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub split: &'static str,
    pub accuracy: f64,
    pub confusion: Vec<Vec<usize>>,
}

/// Restores the run's latest checkpoint and evaluates it on `images` (train/ and val/).
pub fn evaluate(run_dir: &Path, images: &Path) -> Result<(Vec<String>, Vec<Evaluation>)> {
    let run = train::load_trained(run_dir)?;
    let cfg = &run.config;
    let dataset = data::scan(images)?;
    anyhow::ensure!(
        dataset.classes == cfg.classes,
        "{} has classes [{}], the run was trained on [{}]",
        images.display(),
        dataset.classes.join(", "),
        cfg.classes.join(", ")
    );
    let tg = TrainGraph::build_with(&cfg.model, cfg.momentum, cfg.weight_decay, cfg.precision)?;
    let (session, _) = cfg.runtime.session(&tg.scope.graph())?;
    let (tensor, labels) = train::decode_dataset(&dataset, &cfg.preprocess)?;
    tg.initialise(&session, &tensor, &labels, &run.params)?;
    let n_train = dataset.train.len();
    let mut out = vec![];
    for (split, range) in [("train", 0..n_train), ("val", n_train..labels.len())] {
        let idx: Vec<i32> = range.clone().map(|i| i as i32).collect();
        let truth: Vec<usize> = range.map(|i| labels[i] as usize).collect();
        let logits = tg.logits(&session, &idx, 60)?;
        let k = cfg.classes.len();
        let mut confusion = vec![vec![0; k]; k];
        for (l, &y) in logits.iter().zip(&truth) {
            confusion[y][argmax(l)] += 1;
        }
        out.push(Evaluation { split, accuracy: train::accuracy(&logits, &truth), confusion });
    }
    Ok((run.config.classes, out))
}
