//! Comparing with the Swift original: the committed GraphDef and the graph against the Swift
//! original's layer table.

mod common;

use std::process::Output;

use alexnet::inference;
use alexnet::model::ModelConfig;

fn run(args: &[&str]) -> (Output, String) {
    let out = common::alexnet().args(args).output().expect("run alexnet");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out, text)
}

#[test]
fn committed_graph_matches_the_built_one() {
    let committed_path = common::repo().join("graphs/alexnet.pbtxt");
    let committed = std::fs::read_to_string(&committed_path).expect("graphs/alexnet.pbtxt");
    let built = inference::graph_text(&ModelConfig::swift_original()).unwrap();
    if built != committed {
        let line = built.lines().zip(committed.lines()).position(|(a, b)| a != b).unwrap_or(built.lines().count().min(committed.lines().count()));
        panic!(
            "the inference graph drifted from graphs/alexnet.pbtxt (first difference at line {}: built {:?}, committed {:?}). \
             If the change is intended, regenerate it with `cargo run --release -- graph --out graphs` and commit it.",
            line + 1,
            built.lines().nth(line),
            committed.lines().nth(line)
        );
    }
}

#[test]
fn pbtxt_parses_to_the_same_graphdef_as_the_pb_in_python() {
    let tmp = common::TempDir::new("graph");
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
