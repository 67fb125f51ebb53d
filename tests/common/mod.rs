//! Shared by the integration tests: where the Swift original's data is, and scratch folders.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Swift original's data: $ALEXNET_MIRROR, else ../shared/data/swift-original.
pub fn mirror() -> PathBuf {
    let dir = std::env::var_os("ALEXNET_MIRROR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/data/swift-original"));
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

/// A scratch folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!("alexnet-test-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
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
