//! Comparing with the Swift original: the committed GraphDef, the graph against the Swift
//! original's layer table, and every layer of the TensorFlow graph against the independent
//! plain-Rust forward pass on a real photo.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Instant;

use alexnet::compare::activations::{Engine, Setup};
use alexnet::compare::dumps as compare;
use alexnet::graph::model::ModelConfig;
use alexnet::graph::network_graph;
use ndarray::{ArrayD, IxDyn};

const PHOTO: &str = "val/dog/pexels-photo-1851471.jpeg";

fn run(args: &[&str]) -> (Output, String) {
    let out = common::alexnet().args(args).output().expect("run alexnet");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out, text)
}

#[test]
fn committed_graph_matches_the_built_one() {
    let committed_path = common::repo().join("graphs/alexnet.pbtxt");
    let committed = std::fs::read_to_string(&committed_path).expect("graphs/alexnet.pbtxt");
    let built = network_graph::graph_text(&ModelConfig::swift_original()).unwrap();
    if built != committed {
        let line = built.lines().zip(committed.lines()).position(|(a, b)| a != b).unwrap_or(built.lines().count().min(committed.lines().count()));
        panic!(
            "the network graph drifted from graphs/alexnet.pbtxt (first difference at line {}: built {:?}, committed {:?}). \
             If the change is intended, regenerate it with `cargo run --release -- graph --out graphs` and commit it.",
            line + 1,
            built.lines().nth(line),
            committed.lines().nth(line)
        );
    }
}

#[test]
fn pbtxt_parses_to_the_same_graphdef_as_the_pb_in_python() {
    let tmp = common::temp_dir("graph");
    let (out, text) = run(&["graph", "--out", tmp.path().to_str().unwrap()]);
    assert!(out.status.success(), "{text}");
    let venv = common::repo().join(".venv/bin/python");
    let python = if venv.exists() { venv } else { common::python() };
    let script = r#"
import sys
from google.protobuf import text_format
from tensorflow.core.framework import graph_pb2
d = sys.argv[1]
binary = graph_pb2.GraphDef()
binary.ParseFromString(open(d + "/alexnet.pb", "rb").read())
text = text_format.Parse(open(d + "/alexnet.pbtxt").read(), graph_pb2.GraphDef())
assert len(binary.node) > 50, len(binary.node)
assert text == binary, "the pbtxt parses to another GraphDef than the pb"
# Stronger: it is the very text protobuf itself prints.
assert text_format.MessageToString(binary) == open(d + "/alexnet.pbtxt").read(), "the pbtxt is not spelled as protobuf prints it"
print("nodes", len(binary.node))
"#;
    let out = std::process::Command::new(python).arg("-c").arg(script).arg(tmp.path()).env("TF_CPP_MIN_LOG_LEVEL", "3").output().unwrap();
    assert!(out.status.success(), "python check failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn compare_graph_passes_for_the_swift_configuration() {
    let (out, text) = run(&["compare-graph"]);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("every layer matches"), "{text}");
    for layer in ["input", "conv1", "norm1", "pool5", "fc6", "fc8"] {
        assert!(text.lines().any(|l| l.starts_with(layer) && l.ends_with("ok")), "no ok row for {layer}:\n{text}");
    }
}

#[test]
fn compare_graph_names_the_lrn_layers_for_caffe_lrn() {
    let (out, text) = run(&["compare-graph", "--lrn", "caffe"]);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("norm1: depth_radius: spec 5, graph 2"), "{text}");
    assert!(text.contains("error: the graph differs from graphs/swift-original.json in norm1, norm2"), "{text}");
}

#[test]
fn compare_graph_names_the_fc_layers_for_the_paper_width() {
    let (out, text) = run(&["compare-graph", "--fc-width", "4096"]);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("fc6: kernel: spec [9216, 256], graph [9216, 4096]"), "{text}");
    assert!(text.contains("in fc6, fc7, fc8"), "{text}");
}

#[test]
fn every_layer_matches_the_independent_reference_on_a_photo() {
    let photo = common::images().join(PHOTO);
    // The real weights; conv4 (no file) and fc6-fc8 (none in the Swift original) are seeded.
    let setup = Setup::from_weights(ModelConfig::swift_original(), &common::weights(), 0).unwrap();
    assert!(setup.origin.contains("loaded conv1.weights"), "{}", setup.origin);
    let t = Instant::now();
    let tf = setup.activations(&photo, Engine::Tf).unwrap();
    let tf_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let reference = setup.activations(&photo, Engine::Reference).unwrap();
    let ref_s = t.elapsed().as_secs_f64();
    eprintln!("forward pass: tensorflow {tf_s:.2} s, reference {ref_s:.2} s");

    let names: Vec<&str> = tf.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["input", "conv1", "norm1", "pool1", "conv2", "norm2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8"]);
    let mut failures = vec![];
    for ((name, ours), (rname, theirs)) in tf.iter().zip(&reference) {
        assert_eq!(name, rname);
        let d = compare::diff(name, theirs, ours).unwrap();
        eprintln!("{name:<6} {:?} max|ref| {:.4e} max|diff| {:.3e} relative {:.3e} cosine {:.9}", d.shape, d.max_ref, d.max_diff, d.relative, d.cosine);
        assert!(d.max_ref > 0.0, "{name} is all zeros: the comparison says nothing");
        if !d.within(1e-4) {
            failures.push(format!("{name}: {:.3e}", d.relative));
        }
    }
    assert!(failures.is_empty(), "layers over 1e-4 of their max magnitude: {failures:?}");
}

fn write_nchw_copy(from: &Path, to: &Path, perturb: Option<&str>) {
    std::fs::create_dir_all(to).unwrap();
    for layer in alexnet::compare::activations::layer_names(&ModelConfig::swift_original()) {
        let a = compare::read_npy(&from.join(format!("{layer}.npy"))).unwrap();
        let mut a = if a.ndim() == 4 { a.permuted_axes(IxDyn(&[0, 3, 1, 2])).as_standard_layout().into_owned() } else { a };
        if perturb == Some(layer) {
            let max = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            a.iter_mut().take(1).for_each(|v| *v += 0.01 * max);
        }
        let a: ArrayD<f32> = a;
        ndarray_npy::write_npy(to.join(format!("{layer}.npy")), &a).unwrap();
    }
}

#[test]
fn activations_cli_writes_dumps_that_compare_activations_checks() {
    let tmp = common::temp_dir("activations");
    let ours = tmp.path().join("ours");
    let photo = common::images().join(PHOTO);
    let (out, text) = run(&[
        "activations",
        "--image",
        photo.to_str().unwrap(),
        "--weights",
        common::weights().to_str().unwrap(),
        "--out",
        ours.to_str().unwrap(),
        "--engine",
        "reference",
    ]);
    assert!(out.status.success(), "{text}");
    for layer in ["input", "conv1", "pool5", "fc8"] {
        assert!(ours.join(format!("{layer}.npy")).exists() && ours.join(format!("{layer}.png")).exists(), "{layer}: {text}");
        assert!(text.lines().any(|l| l.starts_with(layer)), "no stats line for {layer}:\n{text}");
    }
    let conv1 = compare::read_npy(&ours.join("conv1.npy")).unwrap();
    assert_eq!(conv1.shape(), &[1, 55, 55, 96]);
    assert_eq!(compare::read_npy(&ours.join("fc7.npy")).unwrap().shape(), &[1, 256]);
    let png = image::open(ours.join("conv1.png")).unwrap();
    assert_eq!((png.width(), png.height()), (10 * 56, 10 * 56));

    // The same dump in Caffe's NCHW order compares clean once transposed...
    let nchw = tmp.path().join("nchw");
    write_nchw_copy(&ours, &nchw, None);
    let args = |reference: &Path| {
        vec![
            "compare-activations".to_string(),
            "--reference".into(),
            reference.display().to_string(),
            "--ours".into(),
            ours.display().to_string(),
            "--reference-layout".into(),
            "nchw".into(),
        ]
    };
    let (out, text) = run(&args(&nchw).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{text}");
    assert!(text.contains("every layer within"), "{text}");
    // ...and a layer off by 1% of its range is named.
    let off = tmp.path().join("off");
    write_nchw_copy(&ours, &off, Some("conv3"));
    let (out, text) = run(&args(&off).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("error: 1 over the tolerance 1e-4 (or not comparable): conv3"), "{text}");
    // Read as NHWC, the transposed dump does not even have the right shapes.
    let mut nhwc_args = args(&nchw);
    nhwc_args.truncate(5);
    let (out, text) = run(&nhwc_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("not compared"), "{text}");
}

#[test]
fn run_dir_parameters_come_from_the_latest_checkpoint() {
    use alexnet::data::weights::{self, LoadOptions};
    use alexnet::run::config::TrainConfig;
    use alexnet::train::TrainGraph;
    let tmp = common::temp_dir("run");
    let run = tmp.path();
    let mut cfg = TrainConfig::swift_recipe(common::images(), None, vec!["cat".into(), "dog".into()]);
    cfg.model.lrn = alexnet::graph::model::LrnProfile::Caffe;
    cfg.preprocess.pixel_mean = vec![1.0, 2.0, 3.0];
    cfg.write(run).unwrap();
    // A checkpoint of seeded parameters, written by the trainer's own graph and saver.
    let (params, _) = weights::load(None, &alexnet::graph::model::param_specs(&cfg.model), &LoadOptions { strict: false, seed: 9 }).unwrap();
    let tg = TrainGraph::build(&alexnet::train::spec::TrainSpec::local(cfg.model.clone(), 0.9, 0.0)).unwrap();
    let session = tensorflow::Session::new(&tensorflow::SessionOptions::new(), &tg.scope.graph()).unwrap();
    let images = tensorflow::Tensor::<f32>::new(&[1, 227, 227, 3]);
    tg.initialise(&session, &images, &[0], &params).unwrap();
    tg.saver.save(&session, run, 4).unwrap();

    let setup = Setup::from_run(run).unwrap();
    assert!(setup.origin.contains("epoch 4"), "{}", setup.origin);
    assert_eq!(setup.model, cfg.model);
    assert_eq!(setup.preprocess, cfg.preprocess);
    assert_eq!(setup.params, params);
}
