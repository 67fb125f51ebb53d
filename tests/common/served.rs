//! A model for the `alexnet serve` tests: a small run (4 images per class and split) trained for
//! one epoch and exported as `models/alexnet/1`, some validation photos, and `alexnet predict`'s
//! probabilities for them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Model {
    pub tmp: tempfile::TempDir,
    /// The model base path (holding `1/`).
    pub base: PathBuf,
    pub images: Vec<PathBuf>,
    pub probabilities: Vec<Vec<f32>>,
}

pub fn one_version(tag: &str) -> Model {
    let tmp = crate::common::temp_dir(tag);
    let images = crate::common::small_dataset(tmp.path(), 4);
    let run = tmp.path().join("run");
    ok(crate::common::train_command(&images, Some(&crate::common::weights()), &run).args(["--quiet", "--epochs", "1"]));
    let base = tmp.path().join("models/alexnet");
    ok(crate::common::alexnet().args(["export", "--run-dir"]).arg(&run).arg("--out").arg(base.join("1")));
    let val = |class: &str| -> Vec<PathBuf> {
        let mut f: Vec<PathBuf> = std::fs::read_dir(images.join("val").join(class)).unwrap().map(|e| e.unwrap().path()).collect();
        f.sort();
        f
    };
    let files: Vec<PathBuf> = val("cat").into_iter().take(2).chain(val("dog").into_iter().take(1)).collect();
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let probabilities = crate::http::cli_probabilities(&base.join("1"), &refs);
    Model { tmp, base, images: files, probabilities }
}

pub fn ok(c: &mut Command) {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}
