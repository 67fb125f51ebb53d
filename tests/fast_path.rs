//! The fast paths give the plain paths' results: bf16's segmented backward pass (LRN in float32
//! between bfloat16 layers) follows the float32 gradients, train accuracy taken from the next
//! step's forward pass equals a separate pass's, and a data set over --cache-limit streamed from
//! disk trains like the in-graph one.

mod common;

use alexnet::data::weights::{self, LoadOptions};
use alexnet::graph::model::{self, LrnProfile, ModelConfig, Precision};
use alexnet::graph::{params, scoring};
use alexnet::util::rng::Rng;
use tensorflow::{DataType, Scope, Session, SessionOptions, SessionRunArgs, Shape, Tensor, ops};

/// Loss and every gradient of a small network on a fixed batch.
fn loss_and_gradients(precision: Precision) -> (f32, Vec<Vec<f32>>) {
    let cfg = ModelConfig { classes: 3, fc_width: 16, lrn: LrnProfile::Swift, input_size: 67 };
    let mut scope = Scope::new_root_scope();
    let s = &mut scope;
    let input = ops::Placeholder::new().dtype(DataType::Float).shape(Shape::from(None)).build(&mut s.with_op_name("input")).unwrap();
    let labels = ops::Placeholder::new().dtype(DataType::Int32).shape(Shape::from(None)).build(&mut s.with_op_name("labels")).unwrap();
    let dropout = model::dropout_inputs(s).unwrap();
    let net = model::build_with(s, &cfg, input.clone().into(), &dropout, precision).unwrap();
    let loss = scoring::softmax_loss(s, net.logits.clone(), labels.clone().into(), cfg.classes, &Default::default()).unwrap();
    let grads = alexnet::graph::gradients::gradients(s, &net, loss.clone()).unwrap();
    let session = Session::new(&SessionOptions::new(), &s.graph()).unwrap();
    let (mut params, _) = weights::load(None, &model::param_specs(&cfg), &LoadOptions { strict: false, seed: 5 }).unwrap();
    for p in params.iter_mut().filter(|p| p.layer.starts_with("fc")) {
        p.weights.mapv_inplace(|v| v * 20.0);
    }
    params::init_params(&session, &net, &params).unwrap();
    let mut rng = Rng::new(11, 0);
    let x: Vec<f32> = (0..4 * 67 * 67 * 3).map(|_| (rng.uniform() * 255.0 - 128.0) as f32).collect();
    let x = Tensor::<f32>::new(&[4, 67, 67, 3]).with_values(&x).unwrap();
    let y = Tensor::<i32>::new(&[4]).with_values(&[0, 1, 2, 1]).unwrap();
    let mut args = SessionRunArgs::new();
    args.add_feed(&input, 0, &x);
    args.add_feed(&labels, 0, &y);
    let l = args.request_fetch(&loss.operation, loss.index);
    let g: Vec<_> = grads.iter().map(|g| args.request_fetch(&g.operation, g.index)).collect();
    session.run(&mut args).unwrap();
    let loss = args.fetch::<f32>(l).unwrap()[0];
    (loss, g.into_iter().map(|t| args.fetch::<f32>(t).unwrap().to_vec()).collect())
}

#[test]
fn bf16_gradients_follow_the_float32_ones() {
    let (l32, g32) = loss_and_gradients(Precision::F32);
    let (l16, g16) = loss_and_gradients(Precision::Bf16);
    assert!((l32 - l16).abs() <= 0.05 * l32.abs().max(0.1), "loss {l32} (f32) vs {l16} (bf16)");
    let names = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"];
    for (i, (a, b)) in g32.iter().zip(&g16).enumerate() {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let cosine = dot / (norm(a) * norm(b)).max(1e-30);
        let what = format!("{} {}", names[i / 2], if i % 2 == 0 { "weights" } else { "biases" });
        eprintln!("{what:<16} cosine(f32, bf16 gradient) {cosine:.5}");
        // (0.98 and up on the Swift data's CPU; a wrong LRN gradient gives far less on conv1/conv2.)
        assert!(cosine > 0.95, "{what}: bf16 gradient points elsewhere (cosine {cosine})");
    }
}

fn train(dir: &std::path::Path, extra: &[&str]) -> (Vec<alexnet::run::metrics::Row>, String) {
    let out = common::train_command(&common::images(), Some(&common::weights()), dir)
        .args(["--quiet", "--val-every", "1", "--seed", "4"])
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    (alexnet::run::metrics::read(&dir.join("metrics.csv")).unwrap(), err)
}

#[test]
fn train_accuracy_from_the_next_step_equals_a_separate_pass() {
    let tmp = common::temp_dir("lookahead");
    // Checkpoints every epoch: a separate inference pass after every step.
    let (separate, _) = train(&tmp.path().join("separate"), &["--epochs", "4", "--checkpoint-every", "1"]);
    // No checkpoint before the last epoch: epochs 0..2 take it from the next step.
    let (lookahead, _) = train(&tmp.path().join("lookahead"), &["--epochs", "4", "--checkpoint-every", "0"]);
    assert_eq!(separate.len(), 4);
    assert_eq!(lookahead.len(), 4);
    for (a, b) in separate.iter().zip(&lookahead) {
        assert_eq!(a.epoch, b.epoch);
        assert!((a.loss - b.loss).abs() <= 1e-6 * a.loss.abs(), "epoch {}: loss {} vs {}", a.epoch, a.loss, b.loss);
        // The lookahead takes train accuracy from the next step's dropout-off head, a separate
        // pass from another graph run in chunks: other kernels, so one flipped near-tie is allowed
        // (see assert_accuracy_close). Val is the same pass in both, but after updates whose
        // fetches (and so grappler's rewrites) differ, within the loss tolerance above.
        let what = format!("epoch {}", a.epoch);
        common::assert_accuracy_close(a.train_accuracy, b.train_accuracy, 60, &what);
        common::assert_val_accuracy_close(a.val_accuracy, b.val_accuracy, 60, &what);
    }
}

#[test]
fn streamed_data_set_trains_like_the_in_graph_one() {
    let tmp = common::temp_dir("stream");
    let (in_graph, _) = train(&tmp.path().join("in-graph"), &["--epochs", "2"]);
    let (streamed, err) = train(&tmp.path().join("streamed"), &["--epochs", "2", "--cache-limit", "10M"]);
    assert!(err.contains("decoded from disk every step"), "{err}");
    assert_eq!(in_graph.len(), 2);
    for (a, b) in in_graph.iter().zip(&streamed) {
        assert!((a.loss - b.loss).abs() <= 1e-5 * a.loss.abs(), "epoch {}: loss {} vs {}", a.epoch, a.loss, b.loss);
        // Decoded per batch from disk vs gathered from the cached variable: other graphs (see
        // assert_accuracy_close), within the loss tolerance above.
        let what = format!("epoch {}", a.epoch);
        common::assert_accuracy_close(a.train_accuracy, b.train_accuracy, 60, &what);
        common::assert_val_accuracy_close(a.val_accuracy, b.val_accuracy, 60, &what);
    }
}
