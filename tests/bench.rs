//! `alexnet bench --json`: every figure is there and positive, ours and the Python peer's, with
//! ratios. No timing assertions: the numbers depend on the machine and its load.

mod common;

use serde_json::Value;

#[test]
fn bench_json_has_every_figure_for_us_and_the_python_peer() {
    let out = common::alexnet()
        .args(["bench", "--json", "--steps", "2", "--warmup", "0", "--recipe-epochs", "2", "--compare-python", "--images"])
        .arg(common::images())
        .arg("--weights")
        .arg(common::weights())
        .env("ALEXNET_PYTHON", common::python())
        .output()
        .unwrap();
    assert!(out.status.success(), "alexnet bench failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    let figures = ["train_images_per_sec", "infer_b1_images_per_sec", "infer_b60_images_per_sec", "decode_images_per_sec", "peak_rss_mb"];
    let bf16 = ["train_images_per_sec_bf16", "infer_b1_images_per_sec_bf16", "infer_b60_images_per_sec_bf16"];
    let positive = |m: &Value, k: &str| {
        let x = m.get(k).and_then(Value::as_f64).unwrap_or_else(|| panic!("{k} missing in {m}"));
        assert!(x > 0.0 && x.is_finite(), "{k} = {x}");
    };
    for k in figures.iter().chain(&bf16).chain(&["train_gflops", "train_gflops_bf16"]) {
        positive(&v, k);
        positive(&v["python"], k);
        positive(&v["ratios"], k);
    }
    positive(&v["ratios"], "train_bf16_vs_peer_f32");
    assert!(v["intra_op_threads"].as_i64().unwrap() >= 1 && v["inter_op_threads"].as_i64().unwrap() >= 1);
    assert_eq!(v["device"], "CPU");
    assert!((v["forward_gmacs_per_image"].as_f64().unwrap() - 1.079).abs() < 0.01);
    assert_eq!(v["timings"]["train_step"]["n"], 2);
    // The step with conv1-conv5 frozen (ours only).
    positive(&v, "train_frozen_convs_images_per_sec");
    positive(&v, "train_frozen_convs_vs_full");
    // The recipe's epochs, timed by part beside the step (its steps are one of its parts).
    assert_eq!(v["recipe_epochs"], 2);
    positive(&v, "recipe_epoch_secs");
    positive(&v, "recipe_epoch_vs_step");
    positive(&v, "recipe_epoch_vs_peer_step");
    let parts = v["recipe_epoch_parts_secs"].as_object().expect("the recipe's parts");
    for part in ["steps", "validation", "summaries", "metrics.csv", "checkpoints"] {
        assert!(parts.get(part).and_then(Value::as_f64).is_some_and(|s| s >= 0.0), "{part} missing in {parts:?}");
    }
    let steps = parts["steps"].as_f64().unwrap();
    assert!(steps <= v["recipe_epoch_secs"].as_f64().unwrap(), "the steps take longer than the whole epoch");
}

/// `alexnet bench --dataset` on a small generated folder with two truncated photos, with the
/// Python peer, for crop-flip and random-resized-crop: every figure there, positive and finite,
/// for both, with the ratios (no speed assertions), and both sides train on the same files (the
/// peer once listed the folder itself and died on the first truncated one).
#[test]
fn dataset_bench_json_has_every_figure_for_us_and_the_python_peer() {
    let dir = common::temp_dir("bench-dataset");
    let images = dir.path().join("images");
    let made = std::process::Command::new(common::repo().join("scripts/make-dataset"))
        .args([common::images().to_str().unwrap(), images.to_str().unwrap(), "40", "--seed", "3", "--bad", "2"])
        .output()
        .unwrap();
    assert!(made.status.success(), "make-dataset failed:\n{}", String::from_utf8_lossy(&made.stderr));
    for (augment, steps) in [("crop-flip", 2), ("random-resized-crop", 1)] {
        let out = common::alexnet()
            .args(["bench", "--json", "--steps", &steps.to_string(), "--warmup", "0", "--batch-size", "8", "--augment", augment])
            .args(["--compare-python", "--dataset"])
            .arg(&images)
            .env("ALEXNET_PYTHON", common::python())
            .output()
            .unwrap();
        assert!(out.status.success(), "alexnet bench --dataset --augment {augment} failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
        assert_every_figure(&v);
        assert_eq!(v["batch_size"], 8);
        assert_eq!(v["augment"], augment);
        assert_eq!(v["timings"]["train_stream"]["n"], steps);
        assert_eq!(v["python"]["timings"]["train_cached"]["n"], steps);
        // 40 photos, a fifth in val/: 32 train, the two truncated ones left out on both sides.
        assert_eq!(v["train_images"], 32, "our side");
        assert_eq!(v["python"]["train_images"], 32, "the peer");
    }
}

/// Each figure of `alexnet bench --dataset --compare-python`'s JSON, ours, the peer's and their
/// ratio, is there, positive and finite.
fn assert_every_figure(v: &Value) {
    let positive = |m: &Value, k: &str| {
        let x = m.get(k).and_then(Value::as_f64).unwrap_or_else(|| panic!("{k} missing in {m}"));
        assert!(x > 0.0 && x.is_finite(), "{k} = {x}");
    };
    let figures = [
        "first_step_secs",
        "pipeline_images_per_sec",
        "pipeline_cached_images_per_sec",
        "train_stream_images_per_sec",
        "train_cached_images_per_sec",
        "train_compute_images_per_sec",
        "peak_rss_mb",
    ];
    for k in figures {
        positive(v, k);
        positive(&v["python"], k);
        positive(&v["ratios"], k);
    }
    positive(&v["ratios"], "train_stream_vs_compute");
    positive(&v["ratios"], "train_cached_vs_compute");
}
