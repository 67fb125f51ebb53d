//! The trainer against an independent reference: the same 10 full-batch momentum-SGD steps from
//! the same initial weights, dropout off, in Python TensorFlow 2.21 (scripts/tf_reference_steps.py,
//! built from tf.nn ops with Python's own gradients). Losses must agree within 1e-4 relative.

mod common;

use alexnet::data::weights::{self, LoadOptions};
use alexnet::graph::model::{self, ModelConfig};
use alexnet::train::TrainGraph;
use ndarray::{ArrayView4, ArrayViewD};
use ndarray_npy::{read_npy, write_npy};
use std::process::Command;

#[test]
fn ten_steps_match_python_tensorflow() {
    let tmp = common::temp_dir("equivalence");
    let dir = tmp.path();
    let dataset = alexnet::data::images::scan(&common::images()).unwrap();
    let cfg = ModelConfig::new(dataset.classes.len());
    let (images, labels) = alexnet::data::decoded::decode_dataset(&dataset, &Default::default()).unwrap();
    let specs = model::param_specs(&cfg);
    let (params, _) = weights::load(Some(&common::weights()), &specs, &LoadOptions { strict: false, seed: 0 }).unwrap();

    // Inputs for the reference: the decoded training images, labels, initial weights.
    let n = dataset.train.len();
    let per = 227 * 227 * 3;
    let train_images = ArrayView4::from_shape((n, 227, 227, 3), &images[..n * per]).unwrap();
    write_npy(dir.join("input.npy"), &train_images).unwrap();
    write_npy(dir.join("labels.npy"), &ndarray::Array1::from(labels[..n].to_vec())).unwrap();
    for p in &params {
        write_npy(dir.join(format!("{}.weights.npy", p.layer)), &p.weights).unwrap();
        write_npy(dir.join(format!("{}.biases.npy", p.layer)), &p.biases).unwrap();
    }
    let steps = 10;
    std::fs::write(
        dir.join("config.json"),
        format!(r#"{{"steps": {steps}, "learning_rate": 0.002, "momentum": 0.9, "lrn": {{"depth_radius": 5, "bias": 1.0, "alpha": 1e-4, "beta": 0.75}}}}"#),
    )
    .unwrap();

    // Ours.
    let tg = TrainGraph::build(&alexnet::train::spec::TrainSpec::local(cfg.clone(), 0.9, 0.0)).unwrap();
    let session = tensorflow::Session::new(&tensorflow::SessionOptions::new(), &tg.scope.graph()).unwrap();
    tg.initialise(&session, &images, &labels, &params).unwrap();
    let batch: Vec<i32> = (0..n as i32).collect();
    let ours: Vec<f64> = (0..steps).map(|s| tg.step(&session, &batch, 0.002, 0.0, [0, s]).unwrap() as f64).collect();
    let final_params = tg.params(&session).unwrap();

    // The reference.
    let out =
        Command::new(common::python()).arg(common::repo().join("scripts/tf_reference_steps.py")).arg(dir).env("TF_CPP_MIN_LOG_LEVEL", "3").output().unwrap();
    assert!(out.status.success(), "reference failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let theirs: Vec<f64> = reference["losses"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();

    eprintln!("step  ours          reference     relative difference");
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        eprintln!("{i:>4}  {a:.8}  {b:.8}  {:.2e}", (a - b).abs() / b.abs());
    }
    assert_eq!(ours.len(), theirs.len());
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert!((a - b).abs() <= 1e-4 * b.abs(), "step {i}: loss {a} vs reference {b}");
    }
    // The losses must move, or the comparison says nothing about the updates.
    assert!((ours[0] - ours[steps as usize - 1]).abs() > 1e-3, "loss did not change over {steps} steps: {ours:?}");

    // And the weights after the last update.
    for p in &final_params {
        let theirs: ndarray::ArrayD<f32> = read_npy(dir.join(format!("final/{}.weights.npy", p.layer))).unwrap();
        let ours: ArrayViewD<f32> = p.weights.view();
        let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = ours.iter().zip(theirs.iter()).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!("{:<6} weights: max |diff| {diff:.3e}, max |w| {scale:.3e}", p.layer);
        assert!(diff <= 1e-3 * scale, "{}: final weights differ by {diff} (max |w| {scale})", p.layer);
    }
}
