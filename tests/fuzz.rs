//! Property-based fuzzing of everything that reads user files: weight files, image headers, the
//! data set scanner, metrics.csv and config.json. Bounded runs: each property tries a few hundred
//! inputs. None may panic; each returns a value or an error. And every config a run can hold is
//! read back from its config.json as it was written.

mod common;

use alexnet::data::images as data;
use alexnet::data::weights;
use alexnet::graph::model::{LrnProfile, ModelConfig, Precision};
use alexnet::graph::runtime::{DeviceChoice, RuntimeConfig};
use alexnet::run::config::{Schedule, TrainConfig};
use alexnet::run::metrics;
use alexnet::run::recipe::{LayerRates, OptimizerKind, Recipe};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

/// Any float JSON can hold: everything but NaN and the infinities.
fn finite() -> impl Strategy<Value = f32> {
    use proptest::num::f32::*;
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO
}

fn model_config() -> impl Strategy<Value = ModelConfig> {
    (any::<usize>(), any::<usize>(), prop_oneof![Just(LrnProfile::Swift), Just(LrnProfile::Caffe)], any::<usize>())
        .prop_map(|(classes, fc_width, lrn, input_size)| ModelConfig { classes, fc_width, lrn, input_size })
}

fn preprocess() -> impl Strategy<Value = data::Preprocess> {
    (any::<usize>(), proptest::collection::vec(finite(), 0..4), any::<bool>()).prop_map(|(size, pixel_mean, bgr)| data::Preprocess { size, pixel_mean, bgr })
}

fn schedule() -> impl Strategy<Value = Schedule> {
    prop_oneof![Just(Schedule::Constant), (any::<usize>(), finite()).prop_map(|(every, gamma)| Schedule::Step { every, gamma }), Just(Schedule::Cosine)]
}

fn runtime() -> impl Strategy<Value = RuntimeConfig> {
    (prop_oneof![Just(DeviceChoice::Auto), Just(DeviceChoice::Cpu), Just(DeviceChoice::Gpu)], any::<i32>(), any::<i32>())
        .prop_map(|(device, intra_op_threads, inter_op_threads)| RuntimeConfig { device, intra_op_threads, inter_op_threads })
}

/// Any config a run directory can hold: every field over its type's range (floats finite, paths
/// and class names any Unicode).
fn train_config() -> impl Strategy<Value = TrainConfig> {
    let data = (
        model_config(),
        proptest::collection::vec(any::<String>(), 0..4),
        preprocess(),
        any::<String>(),
        proptest::option::of(any::<String>()),
        any::<bool>(),
        any::<bool>(),
    );
    let recipe = (any::<usize>(), any::<usize>(), finite(), finite(), schedule(), finite(), finite(), any::<u64>());
    let run =
        (any::<usize>(), any::<usize>(), any::<usize>(), runtime(), prop_oneof![Just(Precision::F32), Just(Precision::Bf16)], any::<u64>(), any::<bool>());
    (data, recipe, run).prop_map(|(data, recipe, run)| {
        let (model, classes, preprocess, images, weights, strict_weights, skip_bad_images) = data;
        let (epochs, batch_size, learning_rate, momentum, schedule, weight_decay, dropout, seed) = recipe;
        let (val_every, checkpoint_every, image_summary_every, runtime, precision, cache_limit, async_updates) = run;
        TrainConfig {
            model,
            classes,
            preprocess,
            images: images.into(),
            weights: weights.map(Into::into),
            strict_weights,
            skip_bad_images,
            epochs,
            batch_size,
            learning_rate,
            momentum,
            schedule,
            weight_decay,
            dropout,
            seed,
            val_every,
            checkpoint_every,
            image_summary_every,
            runtime,
            precision,
            cache_limit,
            async_updates,
            augment: if async_updates { alexnet::data::pipeline::Augment::CropFlip } else { alexnet::data::pipeline::Augment::None },
            drop_remainder: strict_weights,
            strict_images: skip_bad_images,
            early_stop: val_every % 7,
            val_split: (val_every % 3 == 1).then_some(0.25),
            recipe: if seed % 2 == 0 { Recipe::Swift } else { Recipe::Finetune },
            optimizer: [OptimizerKind::Sgd, OptimizerKind::Nesterov, OptimizerKind::Adam, OptimizerKind::Adamw][(seed % 4) as usize],
            beta1: momentum,
            beta2: dropout,
            epsilon: weight_decay,
            warmup_epochs: learning_rate,
            lr_min: weight_decay,
            label_smoothing: dropout,
            lr_mults: LayerRates([("fc8".to_string(), learning_rate), ("conv1".to_string(), 0.0)].into_iter().take(seed as usize % 3).collect()),
            class_weights: (seed % 5 == 0).then(|| vec![momentum, dropout]),
            clip_grad_norm: momentum,
            ema: dropout,
        }
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_json_round_trips(cfg in train_config()) {
        let tmp = common::temp_dir("fuzz-config");
        cfg.write(tmp.path()).unwrap();
        let back = TrainConfig::read(tmp.path()).unwrap();
        prop_assert_eq!(back, cfg);
    }

    #[test]
    fn weight_files_of_any_content(bytes in proptest::collection::vec(any::<u8>(), 0..64), expected in 0usize..20) {
        let tmp = common::temp_dir("fuzz-weights");
        let path = tmp.path().join("conv1.biases");
        std::fs::write(&path, &bytes).unwrap();
        match weights::read_f32_file(&path, expected) {
            Ok(v) => {
                prop_assert_eq!(v.len(), expected);
                prop_assert!(v.iter().all(|x| x.is_finite()));
            }
            Err(e) => {
                let msg = format!("{e:#}");
                prop_assert!(msg.contains("conv1.biases"), "{}", msg);
            }
        }
    }

    #[test]
    fn image_headers_of_any_content(prefix in prop_oneof![Just(vec![0xFFu8, 0xD8]), Just(b"\x89PNG\r\n\x1a\n".to_vec()), Just(b"GIF89a".to_vec()), Just(b"BM".to_vec()), Just(vec![])],
                                     rest in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut bytes = prefix;
        bytes.extend(rest);
        let _ = alexnet::data::encoded::image_dimensions(&bytes);
        let _ = alexnet::data::encoded::check_whole(&bytes);
    }

    #[test]
    fn metrics_csv_of_any_content(text in "(epoch,loss,train_accuracy,val_accuracy\n)?([0-9a-z.,\\-]{0,20}\n){0,5}") {
        if let Ok(rows) = metrics::parse_csv(&text, "m.csv") {
            // What parses writes back to something that parses to the same rows.
            let again = metrics::parse_csv(&metrics::to_csv(&rows), "m.csv").unwrap();
            prop_assert_eq!(rows.len(), again.len());
        }
    }

    #[test]
    fn config_json_of_any_content(text in "\\{(\"[a-z_]{1,12}\": ?(-?[0-9]{1,4}|\"[a-z]{0,5}\"|null|true|\\{\\}|\\[\\]),? ?){0,6}\\}") {
        let _ = serde_json::from_str::<TrainConfig>(&text);
    }

    #[test]
    fn data_set_trees_of_any_shape(entries in proptest::collection::vec(
        (prop_oneof![Just("train"), Just("val"), Just("other")], prop_oneof![Just("cat"), Just("dog"), Just(".hidden"), Just("x y")],
         prop_oneof![Just("a.jpg"), Just("B.JPEG"), Just(".c.jpg"), Just("d.txt"), Just("e"), Just("f.png")], any::<bool>()), 0..12)) {
        let tmp = common::temp_dir("fuzz-scan");
        for (split, class, file, as_dir) in &entries {
            let dir = tmp.path().join(split).join(class);
            // The generated tree may clash with itself (a file where a folder is): keep what works.
            let _ = std::fs::create_dir_all(&dir);
            let _ = if *as_dir { std::fs::create_dir_all(dir.join(file)) } else { std::fs::write(dir.join(file), b"") };
        }
        if let Ok(ds) = data::scan(tmp.path()) {
            prop_assert!(ds.classes.len() >= 2);
            prop_assert!(ds.train.iter().chain(&ds.val).all(|e| e.label < ds.classes.len() && data::is_image_file(&e.path)));
        }
    }
}
