//! Observability: the TensorBoard event files TensorFlow's summary ops write (read back with
//! CRCs checked, against metrics.csv), and curves.png / `alexnet plot`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use alexnet::observe::events::{self, Event, SessionLog};
use alexnet::run::metrics::{self, Row};

fn train(images: &Path, run: &Path, extra: &[&str]) {
    let out = common::train_command(images, Some(&common::weights()), run)
        .args(["--quiet", "--val-every", "2", "--image-summary-every", "5"])
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "alexnet failed:\n{err}");
    assert!(err.contains("tensorboard: "), "{err}");
}

/// A PNG and how many distinct colours it has.
fn colours(png: &Path) -> (image::RgbImage, usize) {
    let img = image::open(png).unwrap().to_rgb8();
    let mut seen: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    seen.sort();
    seen.dedup();
    (img, seen.len())
}

fn has(img: &image::RgbImage, rgb: [u8; 3]) -> bool {
    img.pixels().any(|p| p.0 == rgb)
}

#[test]
fn event_files_match_metrics_and_hold_the_graph_and_images() {
    let tmp = common::temp_dir("tensorboard");
    let images = common::small_dataset(tmp.path(), 3);
    let run = tmp.path().join("run");
    train(&images, &run, &["--epochs", "2"]);
    train(&images, &run, &["--epochs", "3", "--resume"]);

    // One event file per invocation; every record's CRCs verify (read_events checks them).
    let files = events::event_files(&run.join("tensorboard")).unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    let per_file: Vec<Vec<Event>> = files.iter().map(|f| events::read_events(f).unwrap()).collect();
    for evs in &per_file {
        assert_eq!(evs[0].file_version(), Some("brain.Event:2"));
        // The graph, as TensorBoard's Graphs tab reads it: a serialized GraphDef with our ops.
        let graphs: Vec<&Vec<u8>> = evs.iter().filter_map(|e| e.graph_def()).collect();
        assert_eq!(graphs.len(), 1);
        for name in [&b"conv1/Conv2D"[..], b"train/step", b"tensorboard/writer"] {
            assert!(graphs[0].windows(name.len()).any(|w| w == name), "graph lacks {}", String::from_utf8_lossy(name));
        }
    }
    // Each invocation marks its start: TensorBoard purges the steps a restart goes back over.
    for (evs, step) in per_file.iter().zip([0, 2]) {
        let start = evs.iter().find_map(|e| e.session_log().map(|l| (e.step, l.status)));
        assert_eq!(start, Some((step, SessionLog::START)));
    }

    // Scalars: exactly metrics.csv (to float32), learning rate each epoch, val where measured.
    let mut scalars: BTreeMap<(String, i64), f64> = BTreeMap::new();
    let mut images_at: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for e in per_file.iter().flatten() {
        for v in e.summary().iter().flat_map(|s| &s.value) {
            if let Some(img) = v.image() {
                let png = image::load_from_memory(&img.encoded_image_string).unwrap();
                assert_eq!((png.width() as i32, png.height() as i32), (img.width, img.height), "{}", v.tag);
                let bytes = png.as_bytes();
                assert!(bytes.iter().any(|&b| b != bytes[0]), "{} is uniform", v.tag);
                let channels = if v.tag.starts_with("conv1/activations") { 1 } else { 3 };
                assert_eq!(img.colorspace, channels, "{}", v.tag);
                if v.tag.starts_with("conv1/filters") {
                    // 96 filters of 11x11 in 8 rows of 12, 1-pixel lines, 4x enlarged.
                    assert_eq!((img.width, img.height), ((12 * 12 + 1) * 4, (8 * 12 + 1) * 4));
                }
                images_at.entry(v.tag.clone()).or_default().push(e.step);
            } else {
                let value = v.scalar().unwrap_or_else(|| panic!("{} has no scalar value", v.tag));
                assert!(scalars.insert((v.tag.clone(), e.step), value).is_none(), "{} twice at step {}", v.tag, e.step);
            }
        }
    }
    let rows = metrics::read(&run.join("metrics.csv")).unwrap();
    assert_eq!(rows.len(), 3);
    let close = |a: f64, b: f64, tol: f64| (a - b).abs() <= tol * b.abs().max(1.0);
    for r in &rows {
        let get = |tag: &str| scalars.get(&(tag.to_string(), r.epoch as i64)).copied();
        let step = r.epoch;
        assert!(close(get("loss").unwrap(), r.loss, 1e-6), "loss at {step}: {:?} vs {}", get("loss"), r.loss);
        assert!(close(get("accuracy/train").unwrap(), r.train_accuracy, 1e-5), "train accuracy at {step}");
        assert!(close(get("learning_rate").unwrap(), 0.002, 1e-6));
        match (get("accuracy/val"), r.val_accuracy) {
            (Some(a), Some(b)) => assert!(close(a, b, 1e-5), "val accuracy at {step}: {a} vs {b}"),
            (None, None) => {}
            other => panic!("val accuracy at {step}: {other:?}"),
        }
    }
    // Per epoch loss, train and val accuracy (val at epochs 0, 1: the last of the first
    // invocation, and 2), the rate; and the rate of each step (one step an epoch here).
    for step in 0..3 {
        assert!(scalars.get(&("learning_rate/step".to_string(), step)).is_some_and(|&r| close(r, 0.002, 1e-6)), "the rate of step {step}: {scalars:?}");
    }
    assert_eq!(scalars.len(), 3 * 5, "{scalars:?}");

    // Images every 5 epochs and at the first and last epoch of each invocation.
    for tag in ["conv1/filters/image", "conv1/activations/image", "input/val_image/image"] {
        assert_eq!(images_at.get(tag), Some(&vec![0, 1, 2]), "{tag}: {images_at:?}");
    }

    // curves.png, redrawn at the end of each invocation.
    let (img, n) = colours(&run.join("curves.png"));
    assert_eq!(img.dimensions(), (1000, 800));
    assert!(n > 20, "curves.png has only {n} colours");
    assert!(has(&img, [31, 119, 180]) && has(&img, [255, 127, 14]), "train and val series colours missing");
}

#[test]
fn plot_overlays_runs_and_names_missing_metrics() {
    let tmp = common::temp_dir("plot");
    let rows = |scale: f64| -> Vec<Row> {
        (0..30)
            .map(|e| Row {
                epoch: e,
                loss: 0.7 * scale / (1.0 + e as f64),
                train_accuracy: (50.0 + 2.0 * e as f64 * scale).min(100.0),
                val_accuracy: (e % 10 == 0 || e == 29).then_some(50.0 + e as f64 * scale),
                val_top5: None,
                lr: None,
            })
            .collect()
    };
    let (a, b) = (tmp.path().join("lr-0.002"), tmp.path().join("lr-0.01"));
    for (dir, scale) in [(&a, 1.0), (&b, 0.5)] {
        std::fs::create_dir_all(dir).unwrap();
        metrics::write(&dir.join("metrics.csv"), &rows(scale)).unwrap();
    }
    let out_png = tmp.path().join("compare.png");
    let out = common::alexnet().arg("plot").arg(&a).arg(&b).arg("--out").arg(&out_png).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("compare.png"));
    let (img, n) = colours(&out_png);
    assert_eq!(img.dimensions(), (1000, 800));
    assert!(n > 20, "only {n} colours");
    // One colour per run.
    assert!(has(&img, [31, 119, 180]) && has(&img, [255, 127, 14]));
    // Only what it wrote is left: no temporary file.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 3);

    // One run: its own curves.png.
    let out = common::alexnet().arg("plot").arg(&a).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(a.join("curves.png").exists());

    let out = common::alexnet().arg("plot").arg(tmp.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no metrics.csv") && err.contains("alexnet train --run-dir"), "{err}");
}

/// Scalars by (tag, step), and the steps each image tag was written at.
type Summaries = (BTreeMap<(String, i64), f64>, BTreeMap<String, Vec<i64>>);

/// The scalars and image steps of a run's event files.
fn read_summaries(run: &Path) -> Summaries {
    let mut scalars = BTreeMap::new();
    let mut images_at: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for f in events::event_files(&run.join("tensorboard")).unwrap() {
        for e in events::read_events(&f).unwrap() {
            for v in e.summary().iter().flat_map(|s| &s.value) {
                match v.image() {
                    Some(_) => images_at.entry(v.tag.clone()).or_default().push(e.step),
                    None => {
                        scalars.insert((v.tag.clone(), e.step), v.scalar().unwrap());
                    }
                }
            }
        }
    }
    (scalars, images_at)
}

#[test]
fn bf16_run_writes_images_and_delayed_rows_reach_tensorboard() {
    // bf16 activations are cast for the image summaries; epoch 1 (no images due) takes its
    // train accuracy from the next step, and its row still reaches TensorBoard.
    let tmp = common::temp_dir("tensorboard-bf16");
    let images = common::small_dataset(tmp.path(), 3);
    let run = tmp.path().join("run");
    train(&images, &run, &["--epochs", "3", "--precision", "bf16", "--batch-size", "0"]);
    let (scalars, images_at) = read_summaries(&run);
    let rows = metrics::read(&run.join("metrics.csv")).unwrap();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        let train = scalars.get(&("accuracy/train".to_string(), r.epoch as i64)).copied();
        assert!(r.train_accuracy.is_finite(), "epoch {}: {}", r.epoch, r.train_accuracy);
        assert_eq!(train.map(|t| (t - r.train_accuracy).abs() < 1e-4), Some(true), "epoch {}: {train:?} vs {}", r.epoch, r.train_accuracy);
    }
    assert_eq!(images_at.get("conv1/activations/image"), Some(&vec![0, 2]), "{images_at:?}");
}
