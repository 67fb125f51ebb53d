//! The fine-tuning recipe end to end through the CLI: its first lines, exact resumption with
//! AdamW, warmup, cosine, label smoothing, class weights and moving averages; eval and export
//! reading the averages; frozen layers; checkpoints on a full disk.

mod common;

use std::path::Path;
use std::process::Output;

use alexnet::run::checkpoint;
use alexnet::run::metrics;

fn ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "alexnet failed:\n{err}");
    err
}

/// `--recipe finetune` on a few Swift photos, small batches, every extra of the recipe on.
fn finetune(images: &Path, run: &Path, extra: &[&str]) -> Output {
    common::train_command(images, Some(&common::weights()), run)
        .args(["--recipe", "finetune", "--batch-size", "8", "--seed", "5", "--ema", "0.8", "--class-weights", "balanced", "--clip-grad-norm", "5"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn finetune_resumes_exactly_and_evaluates_its_averages() {
    let tmp = common::temp_dir("finetune");
    let images = common::small_dataset(tmp.path(), 8);
    let full = tmp.path().join("full");
    let err = ok(&finetune(&images, &full, &["--epochs", "3"]));
    // The run's first lines name the recipe and what it does.
    assert!(
        err.contains("recipe finetune: AdamW (beta1 0.9, beta2 0.999, epsilon 0.0000001, weight decay 0.05), lr 0.0001 (warmup 0.3 epochs, then cosine to 0)"),
        "{err}"
    );
    assert!(
        err.contains("label smoothing 0.1") && err.contains("conv4 x10") && err.contains("fc8 x10") && err.contains("class weights cat 1.000, dog 1.000"),
        "{err}"
    );
    assert!(err.contains("weights averaged (decay 0.8)"), "{err}");
    let rows = metrics::read(&full.join("metrics.csv")).unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.val_accuracy.is_some()), "finetune validates every epoch: {rows:?}");
    // Per-step rates: 16 images, batch 8, 2 steps an epoch; warmup round(0.3 x 2) = 1 step.
    let lrs: Vec<f64> = rows.iter().map(|r| r.lr.unwrap()).collect();
    assert!(lrs[0] > 0.0 && lrs[0] < 1e-4 && lrs.windows(2).all(|w| w[1] < w[0]), "cosine after warmup: {lrs:?}");

    // Interrupted after 1 epoch, resumed to 3: the same numbers.
    let split = tmp.path().join("split");
    ok(&finetune(&images, &split, &["--epochs", "1"]));
    let err = ok(&common::train_command(&images, Some(&common::weights()), &split).args(["--resume", "--epochs", "3"]).output().unwrap());
    assert!(err.contains("resumed from"), "{err}");
    let resumed = metrics::read(&split.join("metrics.csv")).unwrap();
    assert_eq!(resumed.len(), 3);
    for (a, b) in rows.iter().zip(&resumed) {
        assert_eq!((a.loss, a.train_accuracy, a.val_accuracy, a.lr), (b.loss, b.train_accuracy, b.val_accuracy, b.lr), "epoch {}", a.epoch);
    }

    // The checkpoint holds Adam's slots, its step count and the averages; eval and export use
    // the averages, which differ from the weights.
    let (prefix, _) = checkpoint::latest(&full).unwrap().unwrap();
    let keys = ["fc8/weights", "fc8/weights/ExponentialMovingAverage", "train/fc8/weights/Adam", "train/fc8/weights/Adam_1"].map(String::from);
    let t = checkpoint::read_f32(&prefix, &keys).unwrap();
    assert_ne!(t[0].to_vec(), t[1].to_vec(), "the average is not the weight");
    assert!(t[2].iter().any(|v| *v != 0.0) && t[3].iter().any(|v| *v > 0.0), "Adam's moments are kept");
    let step_count = checkpoint::read_i64(&prefix, "train/iterations").unwrap();
    assert_eq!(step_count, 6, "Adam's step count: 3 epochs of 2 steps");
    let trained = alexnet::run::trained::load_trained(&full).unwrap();
    let fc8 = trained.params.iter().find(|p| p.layer == "fc8").unwrap();
    assert_eq!(fc8.weights.iter().copied().collect::<Vec<f32>>(), t[1].to_vec(), "eval, export and predict read the averages");
}

#[test]
fn frozen_layers_keep_their_weights() {
    let tmp = common::temp_dir("frozen");
    let images = common::small_dataset(tmp.path(), 4);
    let run = tmp.path().join("run");
    let err = ok(&common::train_command(&images, Some(&common::weights()), &run)
        .args(["--epochs", "2", "--batch-size", "4", "--optimizer", "nesterov", "--lr", "0.01", "--freeze", "conv1-conv5", "--lr-mult", "fc8=10", "--quiet"])
        .output()
        .unwrap());
    assert!(err.contains("layers conv1 frozen, conv2 frozen, conv3 frozen, conv4 frozen, conv5 frozen, fc8 x10"), "{err}");
    // The run's initial parameters (the files, conv4 and the fc layers from the run's seed).
    let cfg = alexnet::run::config::TrainConfig::read(&run).unwrap();
    let specs = alexnet::graph::model::param_specs(&cfg.model);
    let (initial, _) =
        alexnet::data::weights::load(Some(&common::weights()), &specs, &alexnet::data::weights::LoadOptions { strict: false, seed: cfg.seed }).unwrap();
    let trained = alexnet::run::trained::load_trained(&run).unwrap();
    for (after, before) in trained.params.iter().zip(&initial) {
        let frozen = after.layer.starts_with("conv");
        assert_eq!(after.weights == before.weights && after.biases == before.biases, frozen, "{}: frozen {frozen}, but unchanged is the opposite", after.layer);
    }
    // No slot for a frozen layer.
    let (prefix, _) = checkpoint::latest(&run).unwrap().unwrap();
    assert!(checkpoint::read_f32(&prefix, &["train/conv1/weights/Momentum".to_string()]).is_err(), "a frozen layer has no momentum slot");
    assert!(checkpoint::read_f32(&prefix, &["train/fc8/weights/Momentum".to_string()]).unwrap()[0].iter().any(|v| *v != 0.0));
}

/// A tmpfs of `mb` megabytes at a new folder under `root`, unmounted on drop; None (with a
/// message) where this process may not mount one.
struct Mounted(std::path::PathBuf);

impl Mounted {
    fn tmpfs(root: &Path, mb: usize) -> Option<Mounted> {
        let dir = root.join(format!("tmpfs-{mb}"));
        std::fs::create_dir_all(&dir).unwrap();
        match std::process::Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"]).arg(&dir).output() {
            Ok(o) if o.status.success() => Some(Mounted(dir)),
            Ok(o) => {
                eprintln!("skipped: cannot mount a {mb} MB tmpfs ({})", String::from_utf8_lossy(&o.stderr).trim());
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount ({e})");
                None
            }
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_named_and_resume_continues_from_the_last_complete_checkpoint() {
    let tmp = common::temp_dir("full-disk");
    let images = common::small_dataset(tmp.path(), 4);
    // Too small for one checkpoint (about 49 MB with the momentum slots): refused before training.
    if let Some(tiny) = Mounted::tmpfs(tmp.path(), 30) {
        let out = common::train_command(&images, Some(&common::weights()), &tiny.0.join("run")).args(["--epochs", "1", "--quiet"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("disk full") && err.contains("MB free") && err.contains("needs about"), "{err}");
    }
    // Room for two checkpoints, not three: the third is named as a full disk, and the two
    // before it stay.
    let Some(small) = Mounted::tmpfs(tmp.path(), 125) else { return };
    let run = small.0.join("run");
    let train = |extra: &[&str]| {
        common::train_command(&images, Some(&common::weights()), &run).args(["--checkpoint-every", "1", "--quiet"]).args(extra).output().unwrap()
    };
    let out = train(&["--epochs", "4"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let kept: Vec<String> = std::fs::read_dir(run.join("checkpoints")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!out.status.success() && err.contains("disk full: cannot write checkpoint") && err.contains("free on that filesystem"), "{err}");
    assert!(!err.contains("SaveV2"), "TensorFlow's own message instead of ours: {err}");
    assert!(kept.iter().all(|k| !k.starts_with('.')), "a half-written checkpoint was left: {kept:?}");
    assert_eq!(checkpoint::latest(&run).unwrap().unwrap().1, 1);

    // `latest` lost too (as when its own write fails): once the user has freed some space,
    // resume finds epoch 1 all the same.
    std::fs::remove_file(run.join("checkpoints/latest")).unwrap();
    std::fs::remove_dir_all(run.join("checkpoints/epoch-000000")).unwrap();
    let err = ok(&train(&["--epochs", "3", "--resume"]));
    assert!(err.contains("continuing from the newest complete checkpoint") && err.contains("(epoch 1)"), "{err}");
    assert_eq!(metrics::read(&run.join("metrics.csv")).unwrap().len(), 3);
}
