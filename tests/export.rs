//! `alexnet export` and `alexnet predict` end to end. A 2-epoch run is exported as a SavedModel,
//! which must give the trainer's own predictions (within 1e-5) when loaded by the Rust crate's
//! SavedModelBundle, by Python TensorFlow 2.21 (`tf.saved_model.load`, one batch of JPEG and
//! PNG bytes) and by `alexnet predict` from either source, and must list its two signatures in
//! `saved_model_cli`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use alexnet::data::images::{self as data, Decoder};
use alexnet::data::weights::{self, LoadOptions};
use alexnet::graph::model;
use alexnet::run::config::TrainConfig;
use alexnet::train::{self, RunOptions, TrainGraph};
use tensorflow::{Graph, SavedModelBundle, Session, SessionOptions, SessionRunArgs, Tensor, ops};

const TOLERANCE: f32 = 1e-5;

/// Probabilities, class ids and class names of a batch, one row per image.
#[derive(Debug)]
struct Predictions {
    probabilities: Vec<Vec<f32>>,
    class_ids: Vec<usize>,
    classes: Vec<String>,
}

#[test]
fn exported_model_gives_the_trainers_predictions_everywhere() {
    let tmp = common::temp_dir("export");
    let run_dir = tmp.path().join("run");
    let dataset = data::scan(&common::images()).unwrap();
    let mut cfg = TrainConfig::swift_recipe(common::images(), Some(common::weights()), dataset.classes.clone());
    cfg.epochs = 2;
    let t = Instant::now();
    train::train(&cfg, &run_dir, &RunOptions { quiet: true, ..Default::default() }).unwrap();
    eprintln!("train 2 epochs: {:.1} s", t.elapsed().as_secs_f64());

    // A TensorFlow Serving layout: model name / version.
    let model = tmp.path().join("models/alexnet/1");
    let t = Instant::now();
    run_ok(common::alexnet().args(["export", "--run-dir"]).arg(&run_dir).arg("--out").arg(&model));
    eprintln!("export: {:.2} s", t.elapsed().as_secs_f64());
    assert!(model.join("saved_model.pb").is_file());
    assert!(model.join("variables/variables.index").is_file());
    assert!(model.join("variables/variables.data-00000-of-00001").is_file());

    // Every validation image, plus a PNG made from the first one (lossless: same pixels).
    let png = tmp.path().join("first-val-image.png");
    write_png_copy(&dataset.val[0].path, &png);
    let mut files: Vec<PathBuf> = dataset.val.iter().map(|e| e.path.clone()).collect();
    files.push(png);
    let n = files.len();
    assert!(n >= 3);

    let trainer = trainer_predictions(&run_dir, &files);
    assert!(max_diff(&trainer.probabilities[0], &trainer.probabilities[n - 1]) <= 1e-6, "the PNG copy is classified differently");
    let spread = trainer.probabilities.iter().map(|p| p[0]).fold(f32::NAN, f32::max) - trainer.probabilities.iter().map(|p| p[0]).fold(f32::NAN, f32::min);
    assert!(spread > 1e-4, "every image gets the same probabilities: the comparison would say nothing");

    let t = Instant::now();
    let rust = bundle_predictions(&model, &files);
    eprintln!("Rust SavedModelBundle, load + {n} images: {:.2} s", t.elapsed().as_secs_f64());
    compare("Rust SavedModelBundle vs trainer", &rust, &trainer, TOLERANCE);

    let t = Instant::now();
    let python = python_predictions(&model, &files);
    eprintln!("Python tf.saved_model.load + {n} images (one batch): {:.2} s", t.elapsed().as_secs_f64());
    compare("Python TensorFlow vs Rust SavedModelBundle", &python, &rust, TOLERANCE);
    compare("Python TensorFlow vs trainer", &python, &trainer, TOLERANCE);

    // `alexnet predict` from either source.
    let t = Instant::now();
    let from_model = cli_predictions(common::alexnet().args(["predict", "--json", "--saved-model"]).arg(&model), &files);
    eprintln!("alexnet predict --saved-model, {n} images: {:.2} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let from_run = cli_predictions(common::alexnet().args(["predict", "--json", "--run-dir"]).arg(&run_dir), &files);
    eprintln!("alexnet predict --run-dir, {n} images: {:.2} s", t.elapsed().as_secs_f64());
    compare("alexnet predict --saved-model vs --run-dir", &from_model, &from_run, 1e-6);
    compare("alexnet predict vs trainer", &from_model, &trainer, TOLERANCE);

    check_saved_model_cli(&model, cfg.classes.len());

    // An existing --out is refused without --force and left as it was; --force replaces it.
    let before = std::fs::read(model.join("saved_model.pb")).unwrap();
    // The same three files in one batch before and after --force: the same graph, batch and
    // threads, so the replaced model must agree bit for bit. (Against the first three rows of the
    // batch of all files above it need not: oneDNN picks its kernel blocking by batch size and
    // the CPU's vector width, and an AVX2-only AMD EPYC differs there in the last bit.)
    let first_three = bundle_predictions(&model, &files[..3]).probabilities;
    let out = common::alexnet().args(["export", "--run-dir"]).arg(&run_dir).arg("--out").arg(&model).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("already exists") && stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read(model.join("saved_model.pb")).unwrap(), before);
    run_ok(common::alexnet().args(["export", "--force", "--run-dir"]).arg(&run_dir).arg("--out").arg(&model));
    assert_eq!(listing(model.parent().unwrap()), ["1"], "leftovers next to the model");
    assert_eq!(bundle_predictions(&model, &files[..3]).probabilities, first_three);
}

#[test]
fn a_failed_export_leaves_no_folder() {
    let tmp = common::temp_dir("export-fail");
    let dataset = data::scan(&common::images()).unwrap();
    let run_dir = tmp.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    TrainConfig::swift_recipe(common::images(), None, dataset.classes).write(&run_dir).unwrap();
    let out = tmp.path().join("model");
    let export = || common::alexnet().args(["export", "--run-dir"]).arg(&run_dir).arg("--out").arg(&out).output().unwrap();

    let o = export();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("no checkpoint yet"), "{stderr}");

    // A checkpoint whose files are garbage.
    let ckpt = run_dir.join("checkpoints/epoch-000000");
    std::fs::create_dir_all(&ckpt).unwrap();
    std::fs::write(ckpt.join("ckpt.index"), b"not a checkpoint").unwrap();
    std::fs::write(ckpt.join("ckpt.data-00000-of-00001"), b"").unwrap();
    std::fs::write(run_dir.join("checkpoints/latest"), b"epoch-000000\n").unwrap();
    let o = export();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("checkpoint"), "{stderr}");
    assert_eq!(listing(tmp.path()), ["run"], "export left something behind");
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Re-encodes a JPEG as PNG with TensorFlow's own ops (the `image` crate here reads no JPEG).
fn write_png_copy(jpeg: &Path, png: &Path) {
    let mut scope = tensorflow::Scope::new_root_scope();
    let s = &mut scope;
    let src = ops::constant(Tensor::<String>::from(jpeg.to_str().unwrap().to_string()), s).unwrap();
    let dst = ops::constant(Tensor::<String>::from(png.to_str().unwrap().to_string()), s).unwrap();
    let bytes = ops::read_file(src, s).unwrap();
    let pixels = ops::DecodeJpeg::new().channels(3).build(bytes, s).unwrap();
    let encoded = ops::encode_png(pixels, s).unwrap();
    let write = ops::write_file(dst, encoded, s).unwrap();
    let session = Session::new(&SessionOptions::new(), &scope.graph()).unwrap();
    let mut args = SessionRunArgs::new();
    args.add_target(&write);
    session.run(&mut args).unwrap();
    assert!(std::fs::read(png).unwrap().starts_with(b"\x89PNG"));
}

/// The training graph's logits, restored by its own Saver, on images decoded by the trainer's
/// Decoder (DecodeJpeg for JPEG files): independent of the export's graph and loading code.
fn trainer_predictions(run_dir: &Path, files: &[PathBuf]) -> Predictions {
    let cfg = TrainConfig::read(run_dir).unwrap();
    let (prefix, _) = alexnet::run::checkpoint::latest(run_dir).unwrap().unwrap();
    let decoder = Decoder::new(&cfg.preprocess).unwrap();
    let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let images = decoder.decode_files(&paths).unwrap();
    let tg = TrainGraph::build(&alexnet::train::spec::TrainSpec::local(cfg.model.clone(), cfg.momentum, cfg.weight_decay)).unwrap();
    let session = Session::new(&SessionOptions::new(), &tg.scope.graph()).unwrap();
    let (init, _) = weights::load(None, &model::param_specs(&cfg.model), &LoadOptions { strict: false, seed: 7 }).unwrap();
    tg.initialise(&session, &images, &vec![0; files.len()], &init).unwrap();
    tg.saver.restore(&session, &prefix).unwrap();
    let idx: Vec<i32> = (0..files.len() as i32).collect();
    let probabilities: Vec<Vec<f32>> = tg.logits(&session, &idx, 64).unwrap().iter().map(|l| softmax(l)).collect();
    let class_ids: Vec<usize> = probabilities.iter().map(|p| alexnet::graph::scoring::argmax(p)).collect();
    let classes = class_ids.iter().map(|&i| cfg.classes[i].clone()).collect();
    Predictions { probabilities, class_ids, classes }
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &l| m.max(l as f64));
    let exps: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

/// `serving_default` of the SavedModel, loaded by the Rust crate, on the files' bytes.
fn bundle_predictions(model: &Path, files: &[PathBuf]) -> Predictions {
    let mut graph = Graph::new();
    let bundle = SavedModelBundle::load(&SessionOptions::new(), ["serve"], &mut graph, model).unwrap();
    let sig = bundle.meta_graph_def().get_signature("serving_default").unwrap();
    let tensor = |info: &tensorflow::TensorInfo| (graph.operation_by_name_required(&info.name().name).unwrap(), info.name().index);
    let (images_op, images_idx) = tensor(sig.get_input("images").unwrap());
    let bytes: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let batch = alexnet::serve::inference::encoded_batch(&bytes);
    let mut args = SessionRunArgs::new();
    args.add_feed(&images_op, images_idx, &batch);
    let mut fetch = |key: &str| {
        let (op, i) = tensor(sig.get_output(key).unwrap());
        args.request_fetch(&op, i)
    };
    let (p, c, n) = (fetch("probabilities"), fetch("class_ids"), fetch("classes"));
    bundle.session.run(&mut args).unwrap();
    let p: Tensor<f32> = args.fetch(p).unwrap();
    let c: Tensor<i64> = args.fetch(c).unwrap();
    let n: Tensor<String> = args.fetch(n).unwrap();
    assert_eq!(p.dims(), [files.len() as u64, 2]);
    Predictions { probabilities: p.chunks(2).map(|r| r.to_vec()).collect(), class_ids: c.iter().map(|&i| i as usize).collect(), classes: n.to_vec() }
}

/// Python TensorFlow 2.21 through scripts/saved_model_predict.py: one batch of all the files.
fn python_predictions(model: &Path, files: &[PathBuf]) -> Predictions {
    let out = run_ok(
        Command::new(common::python()).arg(common::repo().join("scripts/saved_model_predict.py")).arg(model).args(files).env("TF_CPP_MIN_LOG_LEVEL", "3"),
    );
    parse_json_lines(&out.stdout, files)
}

fn cli_predictions(cmd: &mut Command, files: &[PathBuf]) -> Predictions {
    parse_json_lines(&run_ok(cmd.args(files)).stdout, files)
}

fn parse_json_lines(stdout: &[u8], files: &[PathBuf]) -> Predictions {
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), files.len(), "one line per image expected:\n{}", String::from_utf8_lossy(stdout));
    for (r, f) in rows.iter().zip(files) {
        assert_eq!(Path::new(r["path"].as_str().unwrap()), f);
        let p = r["probabilities"].as_array().unwrap();
        assert_eq!(r["probability"].as_f64().unwrap(), p[r["class_id"].as_u64().unwrap() as usize].as_f64().unwrap());
    }
    Predictions {
        probabilities: rows.iter().map(|r| r["probabilities"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()).collect(),
        class_ids: rows.iter().map(|r| r["class_id"].as_u64().unwrap() as usize).collect(),
        classes: rows.iter().map(|r| r["class"].as_str().unwrap().to_string()).collect(),
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn compare(what: &str, a: &Predictions, b: &Predictions, tolerance: f32) {
    assert_eq!(a.probabilities.len(), b.probabilities.len(), "{what}: different image counts");
    let diff = a.probabilities.iter().zip(&b.probabilities).map(|(x, y)| max_diff(x, y)).fold(0f32, f32::max);
    eprintln!("{what}: max |probability diff| {diff:.2e} over {} images", a.probabilities.len());
    assert!(diff <= tolerance, "{what}: probabilities differ by {diff}");
    // Class ids may only differ on a near tie.
    for (i, (x, y)) in a.class_ids.iter().zip(&b.class_ids).enumerate() {
        let p = &a.probabilities[i];
        assert!(x == y || (p[*x] - p[*y]).abs() <= 2.0 * tolerance, "{what}: image {i}: class {x} vs {y} ({p:?})");
        if x == y {
            assert_eq!(a.classes[i], b.classes[i], "{what}: image {i}");
        }
    }
}

/// `saved_model_cli show --all` lists both signatures with the documented dtypes and shapes.
fn check_saved_model_cli(model: &Path, classes: usize) {
    let cli = common::python().with_file_name("saved_model_cli");
    let out = run_ok(Command::new(&cli).args(["show", "--all", "--dir"]).arg(model).env("TF_CPP_MIN_LOG_LEVEL", "3"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let k = classes.to_string();
    let expected = [
        ("serving_default", "inputs", "images", "DT_STRING", "(-1)".to_string()),
        ("serving_default", "outputs", "probabilities", "DT_FLOAT", format!("(-1, {k})")),
        ("serving_default", "outputs", "class_ids", "DT_INT64", "(-1)".to_string()),
        ("serving_default", "outputs", "classes", "DT_STRING", "(-1)".to_string()),
        ("predict_tensor", "inputs", "input", "DT_FLOAT", "(-1, 227, 227, 3)".to_string()),
        ("predict_tensor", "outputs", "probabilities", "DT_FLOAT", format!("(-1, {k})")),
        ("predict_tensor", "outputs", "logits", "DT_FLOAT", format!("(-1, {k})")),
    ];
    for (sig, side, name, dtype, shape) in expected {
        let block = text
            .split("signature_def['")
            .find(|b| b.starts_with(&format!("{sig}']")))
            .unwrap_or_else(|| panic!("no signature {sig} in saved_model_cli's output:\n{text}"));
        let tensor = block.split(&format!("{side}['{name}'] tensor_info:")).nth(1).unwrap_or_else(|| panic!("{sig} has no {side}['{name}']:\n{block}"));
        let mut lines = tensor.lines().skip(1).map(str::trim);
        assert_eq!(lines.next(), Some(format!("dtype: {dtype}").as_str()), "{sig} {name}");
        assert_eq!(lines.next(), Some(format!("shape: {shape}").as_str()), "{sig} {name}");
    }
}
