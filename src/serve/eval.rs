//! Evaluating a trained run: accuracy and the confusion matrix on an image folder.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use tensorflow::{DataType, Output, Scope, Session, SessionRunArgs, Shape, Tensor, ops};

use crate::data::decoded;
use crate::data::split;
use crate::graph::model::{self, Network};
use crate::graph::params;
use crate::graph::scoring::{accuracy, argmax};
use crate::run::config::TrainConfig;
use crate::run::trained;

/// Accuracy and confusion matrix (rows: true class, columns: predicted) of one split.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    pub split: &'static str,
    pub accuracy: f64,
    pub confusion: Vec<Vec<usize>>,
}

impl Evaluation {
    /// Each class's accuracy in percent (its diagonal cell over its row), None for a class
    /// without images in the split.
    pub fn per_class(&self) -> Vec<Option<f64>> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let n: usize = row.iter().sum();
                (n > 0).then(|| 100.0 * row[c] as f64 / n as f64)
            })
            .collect()
    }
}

/// An evaluation of a run: the checkpoint's epoch, the classes, and each split's evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub epoch: usize,
    pub classes: Vec<String>,
    pub splits: Vec<Evaluation>,
}

/// Restores the run's latest checkpoint and evaluates it on `images` (train/ and val/).
pub fn evaluate(run_dir: &Path, images: &Path) -> Result<(Vec<String>, Vec<Evaluation>)> {
    evaluate_at(run_dir, images, "latest")
}

/// The same with the checkpoint `which` names (`latest`, `best`, `epoch-N`).
pub fn evaluate_at(run_dir: &Path, images: &Path, which: &str) -> Result<(Vec<String>, Vec<Evaluation>)> {
    let r = report(run_dir, images, which)?;
    Ok((r.classes, r.splits))
}

/// The evaluation of the checkpoint `which` names on `images` (in either layout; a run trained
/// on class folders validates on the split it saved).
pub fn report(run_dir: &Path, images: &Path, which: &str) -> Result<Report> {
    let run = trained::load_trained_at(run_dir, which)?;
    let cfg = &run.config;
    // A run trained on class folders validates on its saved split.
    let (dataset, _) = split::dataset(images, cfg.val_split, cfg.seed, Some(run_dir))?;
    anyhow::ensure!(
        dataset.classes == cfg.classes,
        "{} has classes [{}], the run was trained on [{}]",
        images.display(),
        dataset.classes.join(", "),
        cfg.classes.join(", ")
    );
    let forward = Forward::build(cfg)?;
    let (session, _) = cfg.runtime.session(&forward.scope.graph())?;
    let (tensor, labels) = decoded::decode_dataset(&dataset, &cfg.preprocess)?;
    params::init_params(&session, &forward.net, &run.params)?;
    let n_train = dataset.train.len();
    let mut out = vec![];
    for (split, range) in [("train", 0..n_train), ("val", n_train..labels.len())] {
        let idx: Vec<i32> = range.clone().map(|i| i as i32).collect();
        let truth: Vec<usize> = range.map(|i| labels[i] as usize).collect();
        let logits = forward.logits(&session, &tensor, &idx, 60)?;
        let k = cfg.classes.len();
        let mut confusion = vec![vec![0; k]; k];
        for (l, &y) in logits.iter().zip(&truth) {
            confusion[y][argmax(l)] += 1;
        }
        out.push(Evaluation { split, accuracy: accuracy(&logits, &truth), confusion });
    }
    Ok(Report { epoch: run.epoch, classes: run.config.classes, splits: out })
}

/// The network's forward pass (dropout off) on fed images.
struct Forward {
    scope: Scope,
    images: Output,
    net: Network,
}

impl Forward {
    fn build(cfg: &TrainConfig) -> Result<Forward> {
        let mut scope = Scope::new_root_scope();
        let s = &mut scope;
        let side = cfg.model.input_size as i64;
        let images: Output = ops::Placeholder::new()
            .dtype(DataType::Float)
            .shape(Shape::from(Some(vec![None, Some(side), Some(side), Some(3)])))
            .build(&mut s.with_op_name("images"))?
            .into();
        let dropout = model::dropout_inputs(s)?;
        let net = model::build_with(s, &cfg.model, images.clone(), &dropout, cfg.precision)?;
        Ok(Forward { scope, images, net })
    }

    /// Logits of the rows `idx` of the decoded `all` [N, S, S, 3], `chunk` at a time.
    fn logits(&self, session: &Session, all: &Tensor<f32>, idx: &[i32], chunk: usize) -> Result<Vec<Vec<f32>>> {
        let dims = all.dims();
        let row = (dims[1] * dims[2] * dims[3]) as usize;
        let mut out = vec![];
        for part in idx.chunks(chunk.max(1)) {
            let mut values = Vec::with_capacity(part.len() * row);
            for &i in part {
                values.extend_from_slice(&all[i as usize * row..(i as usize + 1) * row]);
            }
            let batch = Tensor::<f32>::new(&[part.len() as u64, dims[1], dims[2], dims[3]]).with_values(&values)?;
            let mut args = SessionRunArgs::new();
            args.add_feed(&self.images.operation, self.images.index, &batch);
            let f = args.request_fetch(&self.net.logits.operation, self.net.logits.index);
            session.run(&mut args)?;
            let t: Tensor<f32> = args.fetch(f)?;
            out.extend(t.chunks(self.net.config.classes).map(|c| c.to_vec()));
        }
        Ok(out)
    }
}
