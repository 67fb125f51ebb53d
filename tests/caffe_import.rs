//! `alexnet import-caffe` against an independent writer: scripts/make_caffemodel.py builds
//! .caffemodel files with the protobuf package (current and legacy formats, grouped convolutions)
//! from values any reader can recompute ([`value`]); the imported files are checked element by
//! element, and each grouped convolution against its expansion in a TensorFlow graph.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use alexnet::data::caffe::{self, ModelInfo};
use alexnet::data::weights::{self, LoadOptions};
use alexnet::graph::model::{self, LrnProfile, ModelConfig};
use tensorflow::{DataType, Scope, Session, SessionOptions, SessionRunArgs, Shape, Tensor, ops};

fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(common::python)
}

/// One blob of the manifest make_caffemodel.py writes next to the model.
#[derive(serde::Deserialize)]
struct BlobEntry {
    layer: String,
    blob: usize,
    /// conv [out, in / groups, kh, kw], fc [out, in], biases [out]; the format's own dims aside.
    shape: Vec<usize>,
    seed: u64,
    /// scale = sqrt(num / den).
    scale: [u32; 2],
}

#[derive(serde::Deserialize)]
struct Manifest {
    blobs: Vec<BlobEntry>,
}

/// Runs make_caffemodel.py; returns the model's path and its manifest.
fn make_model(dir: &Path, name: &str, args: &[&str]) -> (PathBuf, Manifest) {
    let path = dir.join(name);
    let out = std::process::Command::new(python()).arg(common::repo().join("scripts/make_caffemodel.py")).arg(&path).args(args).output().unwrap();
    assert!(out.status.success(), "make_caffemodel.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let manifest = std::fs::read_to_string(dir.join(format!("{name}.manifest.json"))).unwrap();
    (path, serde_json::from_str(&manifest).unwrap())
}

/// Element `i` of the blob with `seed`, exactly as make_caffemodel.py computes it: splitmix64 of
/// (i + seed * golden), its top 24 bits as u in [0, 1), then (2u - 1) * scale rounded to f32.
fn value(seed: u64, i: u64, scale: f64) -> f32 {
    let mut z = i.wrapping_add(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = (z >> 40) as f64 / (1u64 << 24) as f64;
    ((2.0 * u - 1.0) * scale) as f32
}

fn blob_values(b: &BlobEntry) -> Vec<f32> {
    let scale = (b.scale[0] as f64 / b.scale[1] as f64).sqrt();
    (0..b.shape.iter().product::<usize>() as u64).map(|i| value(b.seed, i, scale)).collect()
}

/// Checks every imported file against the manifest, element by element: conv filters expanded
/// from groups (zero where an output's group does not see the input), fc and biases as written.
fn check_files(dir: &Path, manifest: &Manifest, info: &ModelInfo) {
    for b in &manifest.blobs {
        let layer = info.layers.iter().find(|l| l.name == b.layer).unwrap_or_else(|| panic!("{} not in model.json", b.layer));
        let to = layer.imported_as.as_deref().unwrap();
        let expected = blob_values(b);
        let (file, n) = if b.blob == 1 { (format!("{to}.biases"), b.shape[0]) } else { (format!("{to}.weights"), 0) };
        if b.blob == 1 {
            let got = weights::read_f32_file(&dir.join(&file), n).unwrap();
            assert!(got == expected, "{file} differs from blob 1 of '{}'", b.layer);
            continue;
        }
        match b.shape[..] {
            [o, in_g, kh, kw] => {
                let groups = layer.groups.unwrap();
                let cin = in_g * groups;
                assert_eq!(layer.written_shape.as_deref(), Some(&[o, cin, kh, kw][..]));
                let got = weights::read_f32_file(&dir.join(&file), o * cin * kh * kw).unwrap();
                let mut mismatches = 0;
                for oo in 0..o {
                    let g = oo / (o / groups);
                    for i in 0..cin {
                        for y in 0..kh {
                            for x in 0..kw {
                                let want = if i / in_g == g { expected[((oo * in_g + i - g * in_g) * kh + y) * kw + x] } else { 0.0 };
                                let at = ((oo * cin + i) * kh + y) * kw + x;
                                if got[at].to_bits() != want.to_bits() {
                                    mismatches += 1;
                                }
                            }
                        }
                    }
                }
                assert_eq!(mismatches, 0, "{file}: {mismatches} elements differ from the expanded blob of '{}'", b.layer);
            }
            [o, i] => {
                let got = weights::read_f32_file(&dir.join(&file), o * i).unwrap();
                assert!(got == expected, "{file} differs from the weights of '{}'", b.layer);
            }
            _ => panic!("unexpected blob shape {:?}", b.shape),
        }
    }
}

fn import_cli(model: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    common::alexnet().arg("import-caffe").arg(model).arg("--out").arg(out).args(extra).output().unwrap()
}

#[test]
fn current_format_with_groups_imports_element_by_element() {
    let tmp = common::temp_dir("caffe-current");
    let (model, manifest) = make_model(tmp.path(), "alexnet.caffemodel", &["--fc-width", "16", "--classes", "3"]);
    let out_dir = tmp.path().join("weights");
    let out = import_cli(&model, &out_dir, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "import-caffe failed:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("group 2 expanded to 256x96x5x5"), "{stdout}");
    assert!(stdout.contains("--fc-width 16 --lrn caffe"), "{stdout}");

    let info = ModelInfo::read(&out_dir).unwrap();
    assert_eq!(info.format, caffe::Format::Layer);
    assert_eq!((info.fc_width, info.classes, info.lrn), (Some(16), Some(3), Some(LrnProfile::Caffe)));
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    let groups: Vec<_> = info.layers.iter().filter_map(|l| Some((l.imported_as.clone()?, l.groups))).collect();
    let want =
        [("conv1", Some(1)), ("conv2", Some(2)), ("conv3", Some(1)), ("conv4", Some(2)), ("conv5", Some(2)), ("fc6", None), ("fc7", None), ("fc8", None)];
    assert_eq!(groups, want.map(|(n, g)| (n.to_string(), g)));
    assert_eq!(info.layers.len(), 24, "every layer of the file is listed");
    check_files(&out_dir, &manifest, &info);

    // The trainer's loader takes all sixteen files for this fc width and class count.
    let cfg = ModelConfig { classes: 3, fc_width: 16, lrn: LrnProfile::Caffe, input_size: model::INPUT_SIZE };
    let (_, report) = weights::load(Some(&out_dir), &model::param_specs(&cfg), &LoadOptions { strict: true, seed: 0 }).unwrap();
    assert_eq!(report.loaded().len(), 16);

    // A second import into the same folder needs --force.
    let again = import_cli(&model, &out_dir, &[]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && stderr.contains("already holds weight files") && stderr.contains("--force"), "{stderr}");
    assert!(import_cli(&model, &out_dir, &["--force"]).status.success());
}

#[test]
fn legacy_format_with_other_names_imports_element_by_element() {
    let tmp = common::temp_dir("caffe-legacy");
    let (model, manifest) = make_model(tmp.path(), "legacy.caffemodel", &["--format", "v1", "--rename", "--fc-width", "16", "--classes", "3"]);
    let out_dir = tmp.path().join("weights");
    let info = caffe::import(&model, &out_dir, false).unwrap();
    assert_eq!(info.format, caffe::Format::V1);
    let mapping: Vec<_> = info.layers.iter().filter_map(|l| Some((l.name.as_str(), l.imported_as.as_deref()?))).collect();
    assert_eq!(
        mapping,
        [
            ("cv1/11x11_s4", "conv1"),
            ("cv2/5x5", "conv2"),
            ("cv3/3x3", "conv3"),
            ("cv4/3x3", "conv4"),
            ("cv5/3x3", "conv5"),
            ("ip1", "fc6"),
            ("ip2", "fc7"),
            ("ip3/classifier", "fc8")
        ]
    );
    // V1 type enums come out as today's type names.
    let kinds: Vec<_> = info.layers.iter().map(|l| l.kind.as_str()).take(5).collect();
    assert_eq!(kinds, ["Data", "Convolution", "ReLU", "LRN", "Pooling"]);
    assert_eq!((info.fc_width, info.classes), (Some(16), Some(3)));
    check_files(&out_dir, &manifest, &info);
}

#[test]
fn caffenet_layer_order_imports_with_a_warning() {
    let tmp = common::temp_dir("caffe-caffenet");
    let (model, manifest) = make_model(tmp.path(), "caffenet.caffemodel", &["--caffenet-order", "--fc-width", "16", "--classes", "3"]);
    let out_dir = tmp.path().join("weights");
    let out = import_cli(&model, &out_dir, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: the order of the file's layers (conv1 pool1 norm1 conv2 pool2 norm2"), "{stderr}");
    let info = ModelInfo::read(&out_dir).unwrap();
    assert_eq!(info.warnings.len(), 1);
    check_files(&out_dir, &manifest, &info);
}

/// Conv2D, stride 1, SAME: conv2, conv4 and conv5, the grouped ones.
fn conv2d(x: tensorflow::Output, filter: tensorflow::Output, s: &mut Scope) -> tensorflow::Output {
    ops::Conv2D::new().strides(vec![1, 1, 1, 1]).padding("SAME").build(x, filter, s).unwrap().into()
}

#[test]
fn grouped_convolutions_equal_their_expansion_in_the_graph() {
    let tmp = common::temp_dir("caffe-groups");
    let (model, manifest) = make_model(tmp.path(), "alexnet.caffemodel", &["--fc-width", "16", "--classes", "3"]);
    let out_dir = tmp.path().join("weights");
    let info = caffe::import(&model, &out_dir, false).unwrap();
    let cfg = ModelConfig { classes: 3, fc_width: 16, lrn: LrnProfile::Caffe, input_size: model::INPUT_SIZE };
    let specs = model::param_specs(&cfg);
    let (params, _) = weights::load(Some(&out_dir), &specs, &LoadOptions { strict: true, seed: 0 }).unwrap();
    let inputs = model::output_shapes(&cfg);

    // (layer, the output it reads): the input sides of conv2, conv4, conv5 at 227x227.
    for (layer, reads) in [("conv2", "pool1"), ("conv4", "conv3"), ("conv5", "conv4")] {
        let caffe_name = &info.layers.iter().find(|l| l.imported_as.as_deref() == Some(layer)).unwrap().name;
        let blob = manifest.blobs.iter().find(|b| &b.layer == caffe_name && b.blob == 0).unwrap();
        let [o, in_g, k, _] = blob.shape[..] else { panic!() };
        let groups = 2;
        let (og, cin) = (o / groups, in_g * groups);
        let side = inputs.iter().find(|(n, _)| *n == reads).unwrap().1[0] as u64;
        let grouped = blob_values(blob);

        let mut scope = Scope::new_root_scope();
        let s = &mut scope;
        let x: tensorflow::Output = ops::Placeholder::new()
            .dtype(DataType::Float)
            .shape(Shape::from(Some(vec![Some(2), Some(side as i64), Some(side as i64), Some(cin as i64)])))
            .build(&mut s.with_op_name("x"))
            .unwrap()
            .into();
        // Caffe's grouped convolution: each half of the input channels through its own filters,
        // the outputs concatenated along channels.
        let axis = ops::constant(3i32, s).unwrap();
        let halves = ops::Split::new().num_split(groups as i64).build_instance(axis.clone().into(), x.clone(), s).unwrap().output().unwrap();
        let mut outs = vec![];
        for (g, half) in halves.into_iter().enumerate() {
            // Filters g * og .. (g + 1) * og, Caffe [o][i][y][x] -> TensorFlow [y][x][i][o].
            let mut hwio = vec![0f32; k * k * in_g * og];
            for oo in 0..og {
                for i in 0..in_g {
                    for y in 0..k {
                        for xx in 0..k {
                            hwio[((y * k + xx) * in_g + i) * og + oo] = grouped[((((g * og + oo) * in_g) + i) * k + y) * k + xx];
                        }
                    }
                }
            }
            let f = Tensor::<f32>::new(&[k as u64, k as u64, in_g as u64, og as u64]).with_values(&hwio).unwrap();
            let f = ops::constant(f, s).unwrap();
            outs.push(conv2d(half, f.into(), s));
        }
        let grouped_out = ops::ConcatV2::new().build_instance(outs, axis.into(), s).unwrap().output();
        // The imported, expanded filter in one plain Conv2D, as the model's graph runs it.
        let expanded = &params.iter().find(|p| p.layer == layer).unwrap().weights;
        assert_eq!(expanded.shape(), &[k, k, cin, o]);
        let dims: Vec<u64> = expanded.shape().iter().map(|&d| d as u64).collect();
        let f = Tensor::<f32>::new(&dims).with_values(expanded.as_slice().unwrap()).unwrap();
        let f = ops::constant(f, s).unwrap();
        let expanded_out = conv2d(x.clone(), f.into(), s);

        let session = Session::new(&SessionOptions::new(), &s.graph()).unwrap();
        let n = (2 * side * side * cin as u64) as usize;
        let input: Vec<f32> = (0..n as u64).map(|i| value(99, i, 1.0).max(0.0)).collect(); // ReLU-like
        let input = Tensor::<f32>::new(&[2, side, side, cin as u64]).with_values(&input).unwrap();
        let mut args = SessionRunArgs::new();
        args.add_feed(&x.operation, 0, &input);
        let a = args.request_fetch(&grouped_out.operation, 0);
        let b = args.request_fetch(&expanded_out.operation, 0);
        session.run(&mut args).unwrap();
        let (a, b): (Tensor<f32>, Tensor<f32>) = (args.fetch(a).unwrap(), args.fetch(b).unwrap());
        assert_eq!(a.dims(), b.dims());
        assert_eq!(a.dims(), &[2, side, side, o as u64]);
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = a.iter().zip(b.iter()).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        eprintln!("{layer}: grouped vs expanded over {} outputs: max |diff| {diff:.3e}, max |out| {scale:.3e}", a.len());
        assert!(scale > 0.1, "{layer}: outputs too small to compare");
        // Only the summation order differs (the zeros add exactly nothing).
        assert!(diff <= 1e-5 * scale, "{layer}: grouped and expanded outputs differ by {diff} (max {scale})");
    }
}

#[test]
fn unrepresentable_models_are_refused_naming_the_layer() {
    let tmp = common::temp_dir("caffe-refused");
    let cases: [(&str, &[&str], &[&str]); 3] = [
        ("batchnorm", &["--batchnorm-after", "conv3"], &["'conv3/bn'", "BatchNorm", "conv1..conv5"]),
        ("four-convs", &["--drop", "conv5", "--drop", "relu5"], &["4 convolution layers", "'conv4'", "has 5"]),
        ("fc-width", &["--fc-width", "16", "--drop", "pool5"], &["'fc6'", "9216"]),
    ];
    for (name, args, needles) in cases {
        let (model, _) = make_model(tmp.path(), &format!("{name}.caffemodel"), &[args, &["--fc-width", "16", "--classes", "3"][..]].concat());
        let out_dir = tmp.path().join(name);
        let out = import_cli(&model, &out_dir, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: imported");
        for needle in needles {
            assert!(stderr.contains(needle), "{name}: {needle:?} not in the error:\n{stderr}");
        }
        assert!(!out_dir.join("model.json").exists(), "{name}: wrote model.json");
    }
    let text = tmp.path().join("deploy.prototxt");
    std::fs::write(&text, "name: \"AlexNet\"\nlayer {\n  name: \"data\"\n}\n").unwrap();
    let stderr = String::from_utf8_lossy(&import_cli(&text, &tmp.path().join("text"), &[]).stderr).into_owned();
    assert!(stderr.contains("deploy.prototxt") && stderr.contains("not a binary Caffe NetParameter"), "{stderr}");
}

#[test]
fn full_bvlc_alexnet_shapes_import_and_load_for_fc_width_4096() {
    let started = Instant::now();
    let tmp = common::temp_dir("caffe-bvlc");
    // The legacy format, as the 2014 bvlc_alexnet.caffemodel: about 240 MB.
    let (model, manifest) = make_model(tmp.path(), "bvlc_alexnet.caffemodel", &["--format", "v1"]);
    let written = started.elapsed().as_secs_f64();
    let out_dir = tmp.path().join("weights");
    let info = caffe::import(&model, &out_dir, false).unwrap();
    let imported = started.elapsed().as_secs_f64() - written;
    assert_eq!((info.fc_width, info.classes, info.lrn), (Some(4096), Some(1000), Some(LrnProfile::Caffe)));
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    check_files(&out_dir, &manifest, &info);

    // --fc-width 4096 with 1000 classes (what predict uses) loads every file as it is.
    let cfg = ModelConfig { classes: 1000, fc_width: 4096, lrn: LrnProfile::Caffe, input_size: model::INPUT_SIZE };
    let (params, report) = weights::load(Some(&out_dir), &model::param_specs(&cfg), &LoadOptions { strict: true, seed: 0 }).unwrap();
    assert_eq!(report.loaded().len(), 16);
    assert!(report.warnings.is_empty());
    assert_eq!(params[5].weights.shape(), &[9216, 4096]);
    assert_eq!(params[7].weights.shape(), &[4096, 1000]);
    // With the 2 classes of a data set, fc8 starts over and everything else loads.
    let cfg2 = ModelConfig { classes: 2, ..cfg };
    let (_, report) = weights::load(Some(&out_dir), &model::param_specs(&cfg2), &LoadOptions { strict: false, seed: 0 }).unwrap();
    assert_eq!(report.loaded().len(), 14);
    assert_eq!(report.initialised(), ["fc8.weights", "fc8.biases"]);

    // And predict classifies with the imported model as it is: 1000 classes named by --labels.
    let labels = tmp.path().join("labels.txt");
    std::fs::write(&labels, (0..1000).map(|i| format!("synset{i}\n")).collect::<String>()).unwrap();
    let image = common::images().join("val/dog/pexels-photo-1851471.jpeg");
    let out = common::alexnet()
        .args(["predict", "--json", "--lrn", "caffe", "--pixel-mean", "123,117,104", "--weights"])
        .arg(&out_dir)
        .arg("--labels")
        .arg(&labels)
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let probs: Vec<f64> = p["probabilities"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(probs.len(), 1000);
    assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-3);
    let id = p["class_id"].as_u64().unwrap() as usize;
    assert_eq!(p["class"], format!("synset{id}"));
    eprintln!("BVLC shapes: written by Python in {written:.1} s, imported in {imported:.1} s, all checks done after {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn trainer_fine_tunes_an_import_for_other_classes() {
    let tmp = common::temp_dir("caffe-train");
    let (model, _) = make_model(tmp.path(), "alexnet.caffemodel", &["--fc-width", "16", "--classes", "3"]);
    let out_dir = tmp.path().join("weights");
    assert!(import_cli(&model, &out_dir, &[]).status.success());
    let run_dir = tmp.path().join("run");
    let out =
        common::train_command(&common::images(), Some(&out_dir), &run_dir).args(["--fc-width", "16", "--lrn", "caffe", "--epochs", "1"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "train failed:\n{stderr}");
    // The data set has 2 classes, the import 3: fc8 is re-initialised, the rest loaded.
    assert!(stderr.contains("are for 3 classes but the data set has 2: fc8 is re-initialised"), "{stderr}");
    assert!(stderr.contains("loaded conv1.weights") && stderr.contains("fc7.biases; initialised fc8.weights"), "{stderr}");
    assert!(run_dir.join("summary.json").exists());
}
