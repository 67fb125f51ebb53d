//! Using a trained run's checkpoints: `export` and `predict` with `--checkpoint`.

mod common;

use std::path::{Path, PathBuf};

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
