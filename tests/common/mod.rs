//! Shared by the integration tests: where the Swift original's data is, scratch folders, the
//! trainer's command line and polling.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Swift original's data: $ALEXNET_MIRROR, else ../shared/data/swift-original.
pub fn mirror() -> PathBuf {
    let dir = std::env::var_os("ALEXNET_MIRROR").map(PathBuf::from).unwrap_or_else(|| repo().join("../shared/data/swift-original"));
    assert!(dir.join("images/train").is_dir(), "test data not found at {} (set ALEXNET_MIRROR)", dir.display());
    dir
}

pub fn images() -> PathBuf {
    mirror().join("images")
}

pub fn weights() -> PathBuf {
    mirror().join("weights")
}

/// A small copy of the data set: `n` images per class and split.
pub fn small_dataset(root: &Path, n: usize) -> PathBuf {
    let copy = root.join("images");
    for split in ["train", "val"] {
        for class in ["cat", "dog"] {
            let dst = copy.join(split).join(class);
            std::fs::create_dir_all(&dst).unwrap();
            let mut files: Vec<_> = std::fs::read_dir(images().join(split).join(class)).unwrap().map(|e| e.unwrap().path()).collect();
            files.sort();
            for f in files.iter().take(n) {
                std::fs::copy(f, dst.join(f.file_name().unwrap())).unwrap();
            }
        }
    }
    copy
}

/// Writes at `path` a file that passes the up-front check (a JPEG's start and end markers) but
/// fails in DecodeJpeg: it is skipped mid-epoch.
pub fn write_corrupt_jpeg(path: &Path) {
    let mut corrupt = vec![0xFF, 0xD8, 0xFF, 0xE0];
    corrupt.extend((0..2000u32).map(|i| (i * 7919 % 251) as u8));
    corrupt.extend([0xFF, 0xD9]);
    std::fs::write(path, &corrupt).unwrap();
}

/// A scratch folder, removed on drop: `alexnet-test-<tag>-<random>` in the system's temp dir.
pub fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("alexnet-test-{tag}-")).tempdir().unwrap()
}

/// Calls `done` every `every` until it returns true (then true), or `timeout` has passed (then
/// false); `done` may panic to give up sooner. Callers assert on the result with their message.
#[must_use]
pub fn poll_until(timeout: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// The Python with TensorFlow 2.21 that scripts/python-env provisions.
pub fn python() -> PathBuf {
    let out = Command::new("bash").arg(repo().join("scripts/python-env")).output().expect("run scripts/python-env");
    assert!(out.status.success(), "scripts/python-env failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(stdout.lines().last().expect("python path").trim())
}

/// The `alexnet` binary built for these tests.
pub fn alexnet() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_alexnet"));
    c.env("TF_CPP_MIN_LOG_LEVEL", "3");
    c
}

/// `alexnet train --images <images> [--weights <weights>] --run-dir <run>`: the flags every
/// trainer test gives; callers add their own (`--quiet`, the recipe).
pub fn train_command(images: &Path, weights: Option<&Path>, run: &Path) -> Command {
    let mut c = alexnet();
    c.arg("train").arg("--images").arg(images);
    if let Some(w) = weights {
        c.arg("--weights").arg(w);
    }
    c.arg("--run-dir").arg(run);
    c
}

/// Two accuracies (percent of `examples`) from different computations of the same model: another
/// graph, batch split or data path runs other oneDNN kernels or summation orders, whose last bits
/// differ by CPU (AVX2 vs AVX-512) and thread count. That can flip one near-tied argmax, so they
/// may differ by one example, and no more. Reruns and resumes of the same graph compare exactly.
pub fn assert_accuracy_close(a: f64, b: f64, examples: usize, what: &str) {
    let one = 100.0 / examples as f64;
    assert!((a - b).abs() <= one + 1e-9, "{what}: accuracy {a} vs {b} differs by more than one of {examples} examples");
}

/// The same for optional (validation) accuracies: both measured or neither.
pub fn assert_val_accuracy_close(a: Option<f64>, b: Option<f64>, examples: usize, what: &str) {
    match (a, b) {
        (Some(a), Some(b)) => assert_accuracy_close(a, b, examples, what),
        (a, b) => assert_eq!(a.is_some(), b.is_some(), "{what}: val measured in one run only ({a:?} vs {b:?})"),
    }
}
