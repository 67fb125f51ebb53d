//! Training end to end through the CLI: run directory contents, refusal to overwrite, exact
//! resumption, evaluation.

mod common;

use std::path::Path;

use alexnet::run::metrics;

fn train(run: &Path, extra: &[&str]) -> std::process::Output {
    common::train_command(&common::images(), Some(&common::weights()), run)
        .args(["--quiet", "--checkpoint-every", "1", "--val-every", "2", "--seed", "3"])
        .args(extra)
        .output()
        .unwrap()
}

fn ok(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "alexnet failed:\n{err}");
    err
}

#[test]
fn resumed_run_matches_uninterrupted_run() {
    let tmp = common::temp_dir("train");
    let full = tmp.path().join("full");
    ok(&train(&full, &["--epochs", "4"]));

    // The run directory: config, metrics with the Swift original's columns, checkpoints, summary.
    let rows = metrics::read(&full.join("metrics.csv")).unwrap();
    assert_eq!(rows.iter().map(|r| r.epoch).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert!(rows[0].val_accuracy.is_some() && rows[1].val_accuracy.is_none() && rows[3].val_accuracy.is_some());
    assert!(rows.iter().all(|r| r.loss.is_finite() && (0.0..=100.0).contains(&r.train_accuracy)));
    let cfg = alexnet::run::config::TrainConfig::read(&full).unwrap();
    assert_eq!(cfg.classes, ["cat", "dog"]);
    let (_, epoch) = alexnet::run::checkpoint::latest(&full).unwrap().unwrap();
    assert_eq!(epoch, 3);
    assert!(full.join("summary.json").exists());

    // Refuses to overwrite, names the fix.
    let out = train(&full, &["--epochs", "4"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));

    // Two epochs, then resume to four: the same numbers as the uninterrupted run.
    let split = tmp.path().join("split");
    ok(&train(&split, &["--epochs", "2"]));
    let err = ok(&train(&split, &["--epochs", "4", "--resume"]));
    assert!(err.contains("resumed from"), "{err}");
    let resumed = metrics::read(&split.join("metrics.csv")).unwrap();
    assert_eq!(resumed.len(), 4);
    for (a, b) in rows.iter().zip(&resumed) {
        assert_eq!(a.epoch, b.epoch);
        assert!((a.loss - b.loss).abs() <= 1e-6 * a.loss.abs().max(1e-6), "epoch {}: {} vs {}", a.epoch, a.loss, b.loss);
        // Exact: a resume restores every variable and runs the same graph, batches and threads.
        assert_eq!(a.train_accuracy, b.train_accuracy);
        // The split run also measured val at its first run's last epoch; where both measured, equal.
        if a.val_accuracy.is_some() {
            assert_eq!(a.val_accuracy, b.val_accuracy, "epoch {}", a.epoch);
        }
    }

    // Evaluation restores the last checkpoint: its train accuracy is the last row's.
    let out = common::alexnet().args(["eval", "--run-dir"]).arg(&full).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("train: accuracy {:.2}%", rows[3].train_accuracy)), "{text}");
    assert!(text.contains(&format!("val: accuracy {:.2}%", rows[3].val_accuracy.unwrap())), "{text}");
    assert!(text.contains("confusion"), "{text}");
}

#[test]
fn missing_weights_are_initialised_or_refused() {
    let tmp = common::temp_dir("train-weights");
    let out = train(&tmp.path().join("a"), &["--epochs", "1"]);
    let err = ok(&out);
    // One summary line: what was loaded and what was initialised.
    let line = err.lines().find(|l| l.starts_with("weights:")).expect("weights summary line");
    assert!(line.contains("loaded conv1.weights"), "{line}");
    assert!(line.contains("initialised conv4.weights (glorot-uniform)"), "{line}");
    assert!(line.contains("fc8.biases (zeros)"), "{line}");

    let out = train(&tmp.path().join("b"), &["--epochs", "1", "--strict-weights"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("conv4.weights is missing"), "{err}");
}

#[test]
fn wrong_sized_weight_file_is_named() {
    let tmp = common::temp_dir("train-badweights");
    let dir = tmp.path().join("weights");
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(common::weights()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let bytes = std::fs::read(dir.join("conv2.biases")).unwrap();
    std::fs::write(dir.join("conv2.biases"), &bytes[..bytes.len() - 8]).unwrap();
    let out = common::train_command(&common::images(), Some(&dir), &tmp.path().join("run")).args(["--quiet", "--epochs", "1"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("conv2.biases: expected 256 float32 elements (1024 bytes), found 254 elements"), "{err}");
}

#[test]
fn asking_for_a_missing_gpu_is_a_clear_error() {
    let tmp = common::temp_dir("train-gpu");
    let out = train(&tmp.path().join("run"), &["--epochs", "1", "--device", "gpu"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--device gpu, but TensorFlow sees no GPU"), "{err}");
    // Refused before any work: no image decoded, no weights read.
    assert!(!err.contains("decoded in") && !err.contains("weights:"), "{err}");
}
