//! Using a trained run: `export` and `predict` with `--checkpoint`; a folder of class folders
//! split by `--val-split` (saved, reused by `--resume` and `eval`); top-5 accuracy; `eval`'s
//! per-class accuracy, JSON and confusion-matrix PNG.

mod common;

use std::path::{Path, PathBuf};

use alexnet::run::metrics;

fn make_dataset(args: &[&str]) {
    let out = std::process::Command::new(common::repo().join("scripts/make-dataset")).args(args).output().unwrap();
    assert!(out.status.success(), "make-dataset failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

fn run_ok(cmd: &mut std::process::Command) -> (String, String) {
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "{cmd:?} failed:\n{stderr}");
    (stdout, stderr)
}

/// The probabilities `alexnet predict --json` gives for `files` with `extra` flags.
fn predictions(run: &Path, extra: &[&str], files: &[PathBuf]) -> (Vec<Vec<f64>>, String) {
    let (stdout, stderr) = run_ok(common::alexnet().args(["predict", "--json", "--run-dir"]).arg(run).args(extra).args(files));
    let probs = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["probabilities"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect())
        .collect();
    (probs, stderr)
}

/// A two-epoch run keeps both epochs' checkpoints: `export` and `predict` use the one
/// `--checkpoint` names (its epoch said, its weights used), and a name the run lacks is refused
/// with the run directory and the checkpoints it holds.
#[test]
fn export_and_predict_use_the_checkpoint_named() {
    let tmp = common::temp_dir("evaluation-checkpoint");
    let images = tmp.path().join("shapes");
    make_dataset(&["--shapes", images.to_str().unwrap(), "20", "--classes", "2", "--seed", "3"]);
    let run = tmp.path().join("run");
    run_ok(common::train_command(&images, Some(&common::weights()), &run).args([
        "--quiet",
        "--image-summary-every",
        "0",
        "--batch-size",
        "8",
        "--epochs",
        "2",
        "--val-every",
        "1",
        "--checkpoint-every",
        "1",
    ]));

    let exported = |which: &str| {
        let out = tmp.path().join(format!("model-{which}"));
        run_ok(common::alexnet().args(["export", "--checkpoint", which, "--run-dir"]).arg(&run).arg("--out").arg(&out)).0
    };
    let first = exported("epoch-0");
    assert!(first.contains("(epoch 0,"), "{first}");
    assert!(exported("latest").contains("(epoch 1,"));
    let best = std::fs::read_to_string(run.join("checkpoints/best")).unwrap();
    let best_epoch: usize = best.trim().trim_start_matches("epoch-").parse().unwrap();
    assert!(exported("best").contains(&format!("(epoch {best_epoch},")));

    let files: Vec<PathBuf> = ["train/disc/000000.png", "val/square/000009.png"].iter().map(|f| images.join(f)).collect();
    let (first, said) = predictions(&run, &["--checkpoint", "epoch-0"], &files);
    assert!(said.contains("checkpoint epoch-0 (epoch 0)"), "{said}");
    let (latest, _) = predictions(&run, &["--checkpoint", "latest"], &files);
    let (default, _) = predictions(&run, &[], &files);
    assert_eq!(latest, default, "latest is the default");
    assert_ne!(first, latest, "epoch 0's weights are not epoch 1's");

    let out = common::alexnet().args(["export", "--checkpoint", "epoch-7", "--run-dir"]).arg(&run).arg("--out").arg(tmp.path().join("m7")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("{} has no checkpoint epoch-000007", run.display())) && err.contains("epoch-000000, epoch-000001"), "{err}");
}

/// `make-dataset --shapes` (train/ and val/) moved into one folder of class folders.
fn class_folders(root: &Path, n: usize, classes: usize) -> PathBuf {
    let drawn = root.join("drawn");
    make_dataset(&["--shapes", drawn.to_str().unwrap(), &n.to_string(), "--classes", &classes.to_string(), "--seed", "1"]);
    let flat = root.join("flat");
    for split in ["train", "val"] {
        for class in std::fs::read_dir(drawn.join(split)).unwrap() {
            let class = class.unwrap();
            let dest = flat.join(class.file_name());
            std::fs::create_dir_all(&dest).unwrap();
            for f in std::fs::read_dir(class.path()).unwrap() {
                let f = f.unwrap();
                std::fs::rename(f.path(), dest.join(f.file_name())).unwrap();
            }
        }
    }
    flat
}

fn val_files(run: &Path) -> Vec<String> {
    let split: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("split.json")).unwrap()).unwrap();
    split["val"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// Six shape classes in class folders: refused without --val-split (and when mixed with
/// train/); with it, a stratified split saved as split.json that a resume keeps even when the
/// folder gains an image; top-5 val accuracy in the table, TensorBoard and metrics.csv; `eval`
/// validates on the saved split, prints each class's accuracy and draws the confusion matrix.
#[test]
fn class_folders_are_split_saved_and_reused_with_top5_and_an_eval_report() {
    let tmp = common::temp_dir("evaluation-split");
    let images = class_folders(tmp.path(), 60, 6);
    let run = tmp.path().join("run");
    let train = |extra: &[&str]| {
        common::train_command(&images, Some(&common::weights()), &run)
            .args(["--image-summary-every", "0", "--batch-size", "16", "--lr", "0.005", "--val-every", "1", "--seed", "4"])
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = train(&["--epochs", "1"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("add --val-split FRACTION"), "{err}");
    let mixed = tmp.path().join("mixed");
    std::fs::create_dir_all(mixed.join("train/disc")).unwrap();
    std::fs::create_dir_all(mixed.join("disc")).unwrap();
    std::fs::copy(images.join("disc/000000.png"), mixed.join("disc/000000.png")).unwrap();
    let out = common::train_command(&mixed, None, &tmp.path().join("mixed-run")).args(["--val-split", "0.2"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("mixes two layouts"), "{err}");

    let out = train(&["--val-split", "0.2", "--epochs", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("48 train + 12 val images"), "{err}");
    let header = err.lines().find(|l| l.trim_start().starts_with("epoch")).unwrap();
    assert!(header.ends_with("top5"), "{header}");
    let val = val_files(&run);
    assert_eq!(val.len(), 12);
    for class in ["disc", "square", "triangle", "cross", "ring", "hbar"] {
        assert_eq!(val.iter().filter(|v| v.starts_with(&format!("{class}/"))).count(), 2, "stratified: {val:?}");
    }
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(csv.starts_with("epoch,loss,train_accuracy,val_accuracy,val_top5,lr\n"), "{csv}");
    let rows = metrics::read(&run.join("metrics.csv")).unwrap();
    assert!(rows.iter().all(|r| r.val_top5.is_some_and(|t| t >= r.val_accuracy.unwrap())), "{rows:?}");
    let events: Vec<u8> = std::fs::read_dir(run.join("tensorboard")).unwrap().flat_map(|f| std::fs::read(f.unwrap().path()).unwrap()).collect();
    assert!(events.windows(17).any(|w| w == b"accuracy/val_top5"), "no val_top5 scalar in the event files");

    // A new image after the split: the resume keeps the saved val files (the new one trains).
    std::fs::copy(images.join("disc/000000.png"), images.join("disc/new.png")).unwrap();
    let out = train(&["--val-split", "0.2", "--epochs", "3", "--resume"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("49 train + 12 val images"), "{err}");
    assert_eq!(val_files(&run), val);
    assert_eq!(metrics::read(&run.join("metrics.csv")).unwrap().len(), 3);

    let png = tmp.path().join("confusion.png");
    let (json, _) = run_ok(common::alexnet().args(["eval", "--json", "--run-dir"]).arg(&run).arg("--confusion").arg(&png));
    let report: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let total = |split: usize| -> u64 {
        report["splits"][split]["confusion"].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap()).map(|n| n.as_u64().unwrap()).sum()
    };
    assert_eq!((report["splits"][1]["split"].as_str(), total(1), total(0)), (Some("val"), 12, 49));
    assert_eq!(image::open(&png).unwrap().to_rgb8().dimensions(), (800, 800));

    let (text, _) = run_ok(common::alexnet().args(["eval", "--run-dir"]).arg(&run));
    let val_part = &text[text.find("val: accuracy").unwrap()..];
    let per_class: Vec<&str> = val_part.lines().skip(2).take_while(|l| l.contains(" of ")).collect();
    assert_eq!(per_class.len(), 6, "{text}");
    assert!(per_class.iter().all(|l| l.ends_with(" of 2)")), "{text}");
    assert!(run.join("confusion.png").is_file(), "the default PNG is in the run directory");
}
