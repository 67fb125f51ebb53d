//! The C library is linked, the right version, and a graph runs through the C API.

mod common;

use std::path::Path;

use tensorflow::{Scope, Session, SessionOptions, SessionRunArgs, Tensor, ops};

#[test]
fn linked_tensorflow_is_the_pinned_version() {
    assert_eq!(tensorflow::version().unwrap(), "2.21.0");
}

#[test]
fn a_small_graph_runs() {
    let mut scope = Scope::new_root_scope();
    let a = ops::constant(Tensor::<f32>::new(&[2, 2]).with_values(&[1.0, 2.0, 3.0, 4.0]).unwrap(), &mut scope).unwrap();
    let b = ops::constant(Tensor::<f32>::new(&[2, 1]).with_values(&[5.0, 6.0]).unwrap(), &mut scope).unwrap();
    let product = ops::mat_mul(a, b, &mut scope).unwrap();
    let session = Session::new(&SessionOptions::new(), &scope.graph()).unwrap();
    let mut args = SessionRunArgs::new();
    let fetch = args.request_fetch(&product, 0);
    session.run(&mut args).unwrap();
    let out: Tensor<f32> = args.fetch(fetch).unwrap();
    assert_eq!(&out[..], &[17.0, 39.0]);
}

#[test]
fn cli_reports_versions_and_devices() {
    let out = common::alexnet().arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains(env!("CARGO_PKG_VERSION")) && text.contains("TensorFlow 2.21.0"), "{text}");

    let out = common::alexnet().arg("devices").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.lines().any(|l| l.starts_with("CPU") && l.contains("device:CPU:0")), "{text}");
}

#[test]
fn install_script_is_idempotent() {
    // The suite ran it already (scripts/test); a second run only checks. Run against the CUDA
    // build, the same flavour is asked for, so the test does not switch the suite's library.
    let current = std::fs::read_link(common::repo().join("libtensorflow/current")).unwrap_or_default();
    let flavour: &[&str] = if current == Path::new("gpu") { &["--gpu"] } else { &[] };
    let out = std::process::Command::new("bash").arg(common::repo().join("scripts/install-libtensorflow")).args(flavour).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("already installed") && text.contains("nothing to do"), "{text}");
}

#[test]
fn install_script_rejects_unknown_arguments() {
    let out = std::process::Command::new("bash").arg(common::repo().join("scripts/install-libtensorflow")).arg("--cuda").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument '--cuda'"));
}
