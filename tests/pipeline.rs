//! The tf.data input pipeline built from raw ops, and training on it.

mod common;

use std::path::Path;

use alexnet::data::images::{self as data, Preprocess};
use alexnet::data::pipeline::{AUTOTUNE, Augment, Examples, Pipeline, PipelineSpec, is_end_of_data};
use alexnet::run::metrics;
use tensorflow::{Scope, Session, SessionOptions, SessionRunArgs, Tensor};

fn examples(list: &[data::Example]) -> Examples {
    Examples { paths: list.iter().map(|e| e.path.to_str().unwrap().to_string()).collect(), labels: list.iter().map(|e| e.label as i32).collect() }
}

/// Epoch `epoch`'s (indices, first image's first values) from a pipeline over a copy of the
/// Swift set whose files are deleted after the first epoch: later epochs read the cache.
fn epoch(augment: Augment, epoch: usize) -> (Vec<i32>, Vec<f32>) {
    let tmp = common::temp_dir("pipeline");
    let images = common::small_dataset(tmp.path(), 30);
    let ds = data::scan(&images).unwrap();
    let spec = PipelineSpec {
        train: examples(&ds.train),
        val: examples(&ds.val),
        preprocess: Preprocess::default(),
        augment,
        batch: 16,
        eval_batch: 32,
        drop_remainder: false,
        shuffle_buffer: 1000,
        cache_dir: None,
        parallel_calls: AUTOTUNE,
    };
    let mut scope = Scope::new_root_scope();
    let p = Pipeline::build(&mut scope, &spec).unwrap();
    let session = Session::new(&SessionOptions::new(), &scope.graph()).unwrap();
    p.hold(&session).unwrap();
    let mut seen = vec![];
    let mut first = vec![];
    for e in 0..=epoch {
        p.start_train(&session, 7, e).unwrap();
        seen.clear();
        loop {
            let mut args = SessionRunArgs::new();
            let img = args.request_fetch(&p.next[0].operation, 0);
            let idx = args.request_fetch(&p.next[2].operation, 2);
            match session.run(&mut args) {
                Err(e) if is_end_of_data(&e) => break,
                r => r.unwrap(),
            }
            let t: Tensor<f32> = args.fetch(img).unwrap();
            if seen.is_empty() {
                first = t[..8].to_vec();
            }
            seen.extend(args.fetch::<i32>(idx).unwrap().iter().copied());
        }
        if e == 0 {
            std::fs::remove_dir_all(images.join("train")).unwrap();
        }
    }
    (seen, first)
}

/// Each epoch is a seeded shuffle of every example, read from the decoded cache after the first
/// (the files are gone by then); crop-flip draws other pixels, reproducibly.
#[test]
fn pipeline_epochs_are_seeded_shuffles_of_every_example() {
    let (a, img_a) = epoch(Augment::None, 1);
    let (b, img_b) = epoch(Augment::None, 1);
    assert_eq!(a, b, "same seed, same epoch: same order");
    assert_eq!(img_a, img_b);
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..60).collect::<Vec<_>>());
    let (c, _) = epoch(Augment::None, 0);
    assert_ne!(a, c, "another epoch, another order");
    let (d, img_d) = epoch(Augment::CropFlip, 1);
    assert_eq!(d, a);
    assert_ne!(img_d, img_a);
}

fn make_dataset(args: &[&str]) {
    let out = std::process::Command::new(common::repo().join("scripts/make-dataset")).args(args).output().unwrap();
    assert!(out.status.success(), "make-dataset failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

fn train(images: &Path, run: &Path, extra: &[&str]) -> String {
    let out = common::train_command(images, Some(&common::weights()), run)
        .args(["--quiet", "--image-summary-every", "0", "--val-every", "1", "--seed", "5"])
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "alexnet failed:\n{err}");
    err
}

/// Minibatches with crop-flip from the pipeline on generated photos: a truncated file is refused
/// up front (or skipped), a file that passes the check but fails to decode is skipped mid-epoch
/// and named; both land in bad-images.txt; a resumed run equals the uninterrupted one.
#[test]
fn minibatch_pipeline_training_skips_bad_files_and_resumes_exactly() {
    let tmp = common::temp_dir("pipeline-train");
    let images = tmp.path().join("photos");
    make_dataset(&[common::images().to_str().unwrap(), images.to_str().unwrap(), "40", "--bad", "1", "--seed", "2"]);
    // Passes the header and end check, fails in DecodeJpeg.
    let mut corrupt = vec![0xFF, 0xD8, 0xFF, 0xE0];
    corrupt.extend((0..2000u32).map(|i| (i * 7919 % 251) as u8));
    corrupt.extend([0xFF, 0xD9]);
    std::fs::write(images.join("train/dog/corrupt.jpg"), &corrupt).unwrap();

    let refused = common::train_command(&images, None, &tmp.path().join("refused")).args(["--quiet", "--batch-size", "8"]).output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("bad-0000.jpg: truncated JPEG"), "{err}");

    let recipe = ["--batch-size", "8", "--augment", "crop-flip", "--skip-bad-images", "--checkpoint-every", "1"];
    let full = tmp.path().join("full");
    let err = train(&images, &full, &[&recipe[..], &["--epochs", "2"]].concat());
    assert!(err.contains("corrupt.jpg: failed to decode during training (skipped)"), "{err}");
    let bad = std::fs::read_to_string(full.join("bad-images.txt")).unwrap();
    assert!(bad.contains("bad-0000.jpg: truncated JPEG") && bad.contains("corrupt.jpg: failed to decode"), "{bad}");
    assert_eq!(bad.lines().count(), 2, "each file named once: {bad}");
    let rows = metrics::read(&full.join("metrics.csv")).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.loss.is_finite() && r.val_accuracy.is_some()));

    let split = tmp.path().join("split");
    train(&images, &split, &[&recipe[..], &["--epochs", "1"]].concat());
    train(&images, &split, &[&recipe[..], &["--epochs", "2", "--resume"]].concat());
    let resumed = metrics::read(&split.join("metrics.csv")).unwrap();
    assert_eq!(resumed, rows, "resume mid-run == uninterrupted (same shuffles, crops and dropout)");
}

/// The drawn shapes set is learnt in a few epochs from the pipeline; the best validation is
/// kept as checkpoints/best and `eval --checkpoint best` reads it; --early-stop ends a run that
/// stops improving (here a learning rate of 0), saying so.
#[test]
fn shapes_are_learnt_best_checkpoint_is_kept_and_early_stop_stops() {
    let tmp = common::temp_dir("pipeline-shapes");
    let images = tmp.path().join("shapes");
    make_dataset(&["--shapes", images.to_str().unwrap(), "100", "--classes", "4", "--seed", "1"]);
    let run = tmp.path().join("run");
    train(&images, &run, &["--batch-size", "16", "--lr", "0.005", "--epochs", "4", "--checkpoint-every", "0"]);
    let rows = metrics::read(&run.join("metrics.csv")).unwrap();
    let last = rows.last().unwrap().val_accuracy.unwrap();
    assert!(last >= 75.0, "val accuracy after 4 epochs: {last}% ({rows:?})");
    let best = rows.iter().filter_map(|r| r.val_accuracy.map(|v| (v, r.epoch))).fold((-1.0, 0), |a, b| if b.0 > a.0 { b } else { a });
    let named = std::fs::read_to_string(run.join("checkpoints/best")).unwrap();
    assert_eq!(named.trim(), format!("epoch-{:06}", best.1));
    let out = common::alexnet().args(["eval", "--checkpoint", "best", "--run-dir"]).arg(&run).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("val: accuracy"), "{text}");

    let stopped = tmp.path().join("stopped");
    let err = train(&images, &stopped, &["--batch-size", "16", "--lr", "0", "--dropout", "0", "--epochs", "5", "--early-stop", "1"]);
    assert!(err.contains("early stop: no better val accuracy in 1 validations"), "{err}");
    assert_eq!(metrics::read(&stopped.join("metrics.csv")).unwrap().len(), 2, "stopped after epoch 1");
}
