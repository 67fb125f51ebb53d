//! The fine-tuning recipes against Keras: 10 full-batch steps of each optimizer (Nesterov SGD,
//! Adam, AdamW), with warmup and cosine decay, label smoothing 0.1, class weights, fc8 at 10x the
//! rate and conv1 frozen, equal those of Keras's own optimizers, schedule and loss
//! (scripts/tf_keras_reference.py) within 1e-5 relative in the loss and every weight; conv1 stays
//! bit-identical. A small input (99 x 99) keeps each run to seconds.

mod common;

use alexnet::data::weights::{self, LoadOptions};
use alexnet::graph::model::{self, ModelConfig};
use alexnet::graph::scoring::Targets;
use alexnet::run::config::Schedule;
use alexnet::run::recipe::{LayerRates, Optimizer, OptimizerKind, Rates};
use alexnet::train::TrainGraph;
use alexnet::train::spec::TrainSpec;
use alexnet::util::rng::Rng;
use ndarray::{Array1, Array4};
use ndarray_npy::{read_npy, write_npy};
use std::path::Path;
use std::process::Command;

const STEPS: usize = 10;
const SIDE: usize = 99;
const N: usize = 12;
const CLASSES: usize = 3;

#[test]
fn nesterov_matches_keras() {
    matches_keras(OptimizerKind::Nesterov, 0.0, 0.01);
}

#[test]
fn adam_matches_keras() {
    matches_keras(OptimizerKind::Adam, 0.0, 1e-4);
}

#[test]
fn adamw_matches_keras() {
    matches_keras(OptimizerKind::Adamw, 0.05, 1e-4);
}

fn matches_keras(kind: OptimizerKind, weight_decay: f32, lr: f32) {
    let tmp = common::temp_dir("recipes");
    let dir = tmp.path();
    let cfg = ModelConfig { input_size: SIDE, ..ModelConfig::new(CLASSES) };
    let (params, _) = weights::load(Some(&common::weights()), &model::param_specs(&cfg), &LoadOptions { strict: false, seed: 3 }).unwrap();
    let (images, labels) = inputs();
    write_inputs(dir, &images, &labels, &params);
    let optimizer = Optimizer { kind, weight_decay, ..Optimizer::sgd(0.9, 0.0) };
    let mut lr_mults = LayerRates::default();
    lr_mults.set(&cfg, "fc8=10").unwrap();
    lr_mults.freeze(&cfg, "conv1").unwrap();
    let targets = Targets { label_smoothing: 0.1, class_weights: Some(vec![1.0, 2.0, 0.5]) };
    let rates = Rates { base: lr, min: lr * 0.1, schedule: Schedule::Cosine, warmup_steps: 2, steps_per_epoch: 1, total_steps: STEPS };
    std::fs::write(
        dir.join("config.json"),
        serde_json::json!({
            "steps": STEPS, "optimizer": format!("{kind:?}").to_lowercase(), "learning_rate": lr,
            "momentum": optimizer.momentum, "beta1": optimizer.beta1, "beta2": optimizer.beta2, "epsilon": optimizer.epsilon,
            "weight_decay": weight_decay, "warmup_steps": 2, "decay_steps": STEPS - 2, "lr_min": lr * 0.1,
            "label_smoothing": 0.1, "lr_mults": {"fc8": 10.0, "conv1": 0.0}, "class_weights": [1.0, 2.0, 0.5],
            "lrn": {"depth_radius": 5, "bias": 1.0, "alpha": 1e-4, "beta": 0.75},
        })
        .to_string(),
    )
    .unwrap();

    // Ours.
    let spec = TrainSpec { optimizer, lr_mults, targets, ..TrainSpec::local(cfg.clone(), 0.9, 0.0) };
    let tg = TrainGraph::build(&spec).unwrap();
    let session = tensorflow::Session::new(&tensorflow::SessionOptions::new(), &tg.scope.graph()).unwrap();
    let flat = tensorflow::Tensor::<f32>::new(&[N as u64, SIDE as u64, SIDE as u64, 3]).with_values(images.as_slice().unwrap()).unwrap();
    tg.initialise(&session, &flat, labels.as_slice().unwrap(), &params).unwrap();
    let batch: Vec<i32> = (0..N as i32).collect();
    let ours: Vec<f64> = (0..STEPS).map(|s| tg.step(&session, &batch, rates.at(s), 0.0, [0, s as i64]).unwrap() as f64).collect();
    let trained = tg.params(&session).unwrap();

    // Keras.
    let out =
        Command::new(common::python()).arg(common::repo().join("scripts/tf_keras_reference.py")).arg(dir).env("TF_CPP_MIN_LOG_LEVEL", "3").output().unwrap();
    assert!(out.status.success(), "reference failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let theirs: Vec<f64> = reference["losses"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();

    eprintln!("{kind:?}: step  ours          keras         relative difference");
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        eprintln!("{i:>4}  {a:.8}  {b:.8}  {:.2e}", (a - b).abs() / b.abs());
        assert!((a - b).abs() <= 1e-5 * b.abs(), "{kind:?} step {i}: loss {a} vs Keras {b}");
    }
    assert!((ours[0] - ours[STEPS - 1]).abs() > 1e-3, "the loss did not move over {STEPS} steps: {ours:?}");

    for (p, before) in trained.iter().zip(&params) {
        if p.layer == "conv1" {
            assert_eq!(p.weights, before.weights, "frozen conv1 changed");
            assert_eq!(p.biases, before.biases, "frozen conv1's biases changed");
            continue;
        }
        for (kind_name, ours, theirs) in [
            (
                "weights",
                p.weights.view().into_dyn().to_owned(),
                read_npy::<_, ndarray::ArrayD<f32>>(dir.join(format!("final/{}.weights.npy", p.layer))).unwrap(),
            ),
            ("biases", p.biases.view().into_dyn().to_owned(), read_npy::<_, ndarray::ArrayD<f32>>(dir.join(format!("final/{}.biases.npy", p.layer))).unwrap()),
        ] {
            let moved = ours.iter().zip(before_of(before, kind_name)).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            let diff = ours.iter().zip(theirs.iter()).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            eprintln!("{:<6} {kind_name:<7}: moved {moved:.3e}, max |ours - keras| {diff:.3e}", p.layer);
            // Relative to how far the step moved the layer: a wrong update rule fails here even
            // where the weights are large.
            assert!(
                diff <= 1e-5 * theirs.iter().fold(0f32, |m, v| m.max(v.abs())) + 1e-3 * moved,
                "{kind:?} {} {kind_name}: differs from Keras by {diff}",
                p.layer
            );
        }
    }
}

fn before_of<'a>(p: &'a alexnet::graph::params::LayerParams, kind: &str) -> Box<dyn Iterator<Item = &'a f32> + 'a> {
    if kind == "weights" { Box::new(p.weights.iter()) } else { Box::new(p.biases.iter()) }
}

/// N random images (pixel range 0-255) and labels, the same on every run.
fn inputs() -> (Array4<f32>, Array1<i32>) {
    let mut rng = Rng::new(7, 1);
    let images = Array4::from_shape_fn((N, SIDE, SIDE, 3), |_| 255.0 * rng.uniform() as f32);
    let labels = Array1::from_shape_fn(N, |i| (i % CLASSES) as i32);
    (images, labels)
}

fn write_inputs(dir: &Path, images: &Array4<f32>, labels: &Array1<i32>, params: &[alexnet::graph::params::LayerParams]) {
    write_npy(dir.join("input.npy"), images).unwrap();
    write_npy(dir.join("labels.npy"), labels).unwrap();
    for p in params {
        write_npy(dir.join(format!("{}.weights.npy", p.layer)), &p.weights).unwrap();
        write_npy(dir.join(format!("{}.biases.npy", p.layer)), &p.biases).unwrap();
    }
}
