//! TFRecord shards and TFDS folders: `make-records` output as Python TensorFlow reads it, and
//! training from shards that Python TensorFlow wrote, through the pipeline's tf.data ops.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use alexnet::data::images::{self as data, Preprocess};
use alexnet::data::pipeline::records::RecordsSpec;
use alexnet::data::pipeline::{AUTOTUNE, Augment, Examples, Pipeline, PipelineSpec, is_end_of_data};
use alexnet::data::records::example::{Value, build};
use alexnet::data::records::tfrecord::{Compression, Writer};
use alexnet::data::split;
use tensorflow::{Scope, Session, SessionOptions, SessionRunArgs, Tensor};

/// Reads every shard of a folder with tf.data.TFRecordDataset + tf.io.parse_single_example and
/// prints, per record, its image's SHA-256 and its features as JSON lines.
const READ_BACK: &str = r#"
import hashlib, json, os, sys
import tensorflow as tf
folder, image_key, label_key, compression = sys.argv[1:5]
for name in sorted(os.listdir(folder)):
    if "-train" not in name and "-validation" not in name and not name.startswith(("train-", "validation-")):
        continue
    ds = tf.data.TFRecordDataset(os.path.join(folder, name), compression_type=compression)
    spec = {image_key: tf.io.FixedLenFeature([], tf.string), label_key: tf.io.FixedLenFeature([], tf.int64)}
    if image_key == "image/encoded":
        spec["image/class/text"] = tf.io.FixedLenFeature([], tf.string)
        spec["image/filename"] = tf.io.FixedLenFeature([], tf.string)
    for record in ds:
        ex = tf.io.parse_single_example(record, spec)
        out = {"shard": name, "sha": hashlib.sha256(ex[image_key].numpy()).hexdigest(), "label": int(ex[label_key].numpy())}
        if image_key == "image/encoded":
            out["text"] = ex["image/class/text"].numpy().decode()
            out["filename"] = ex["image/filename"].numpy().decode()
        print(json.dumps(out))
"#;

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

fn run_python(script: &str, args: &[&str]) -> String {
    let out = Command::new(common::python()).arg("-c").arg(script).args(args).env("TF_CPP_MIN_LOG_LEVEL", "3").output().unwrap();
    assert!(out.status.success(), "python failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// (split, sha) -> class index of every image of a train/ + val/ folder.
fn source_images(images: &Path) -> BTreeMap<(String, String), usize> {
    let ds = data::scan(images).unwrap();
    let mut out = BTreeMap::new();
    for (split, list) in [("train", &ds.train), ("validation", &ds.val)] {
        for e in list {
            out.insert((split.to_string(), sha256(&e.path)), e.label);
        }
    }
    out
}

#[test]
fn make_records_shards_read_back_in_python_with_the_same_bytes_and_labels() {
    let tmp = common::temp_dir("records-make");
    let images = common::small_dataset(tmp.path(), 5);
    let expected = source_images(&images);
    let cases = [("imagenet", "gzip", "image/encoded", "image/class/label", "GZIP", 1), ("tfds", "none", "image", "label", "", 0)];
    for (layout, compression, image_key, label_key, tf_compression, offset) in cases {
        let out = tmp.path().join(format!("shards-{layout}"));
        let made = common::alexnet()
            .args(["make-records", "--shards", "3", "--layout", layout, "--compression", compression])
            .arg(&images)
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&made.stderr);
        assert!(made.status.success(), "make-records failed:\n{stderr}");
        assert!(stderr.contains("20 images (2 classes) into 4 shards"), "{stderr}");
        let leftovers: Vec<_> = std::fs::read_dir(&out).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().contains(".tmp")).collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
        let lines = run_python(READ_BACK, &[out.to_str().unwrap(), image_key, label_key, tf_compression]);
        let mut seen = BTreeMap::new();
        for line in lines.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let split = if v["shard"].as_str().unwrap().contains("train") { "train" } else { "validation" };
            let label = v["label"].as_i64().unwrap() - offset;
            if layout == "imagenet" {
                assert_eq!(v["text"].as_str().unwrap(), ["cat", "dog"][label as usize], "{line}");
                let folder = if split == "train" { "train" } else { "val" };
                let file = images.join(folder).join(v["text"].as_str().unwrap()).join(v["filename"].as_str().unwrap());
                assert_eq!(sha256(&file), v["sha"].as_str().unwrap(), "image/filename names the file: {line}");
            }
            seen.insert((split.to_string(), v["sha"].as_str().unwrap().to_string()), label as usize);
        }
        assert_eq!(seen, expected, "{layout}: every image once, with its class (labels from {offset})");
    }
    let tfds = tmp.path().join("shards-tfds");
    assert_eq!(std::fs::read_to_string(tfds.join("label.labels.txt")).unwrap(), "cat\ndog\n");
    // tensorflow_datasets itself loads the folder: its metadata, and images it decodes.
    let loaded = run_python(
        "import sys, tensorflow_datasets as tfds\nb = tfds.builder_from_directory(sys.argv[1])\nn = lambda s: sum(int(e['image'].shape[-1] == 3) for e in b.as_dataset(split=s))\nprint(b.info.features['label'].names, n('train'), n('validation'))",
        &[tfds.to_str().unwrap()],
    );
    assert_eq!(loaded.trim(), "['cat', 'dog'] 10 10");
    let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tfds.join("dataset_info.json")).unwrap()).unwrap();
    let lengths: u64 = info["splits"][0]["shardLengths"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(lengths, 10);
}

/// Writes the ImageNet layout with Python's tf.io.TFRecordWriter: two GZIP training shards and
/// one plain validation shard, labels from 1 (0 unused), class texts and file names.
const WRITE_IMAGENET: &str = r#"
import os, sys
import tensorflow as tf
src, out = sys.argv[1:3]
os.makedirs(out)
classes = sorted(os.listdir(os.path.join(src, "train")))
def feature(v):
    if isinstance(v, int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
for split, folder, shards, compression in [("train", "train", 2, "GZIP"), ("validation", "val", 1, None)]:
    files = sorted((c, f) for c in classes for f in os.listdir(os.path.join(src, folder, c)))
    for s in range(shards):
        options = tf.io.TFRecordOptions(compression_type=compression) if compression else None
        with tf.io.TFRecordWriter(os.path.join(out, f"{split}-{s:05d}-of-{shards:05d}"), options) as w:
            for c, f in files[s::shards]:
                data = open(os.path.join(src, folder, c, f), "rb").read()
                ex = tf.train.Example(features=tf.train.Features(feature={
                    "image/encoded": feature(data),
                    "image/class/label": feature(classes.index(c) + 1),
                    "image/class/text": feature(c.encode()),
                    "image/filename": feature(f.encode()),
                }))
                w.write(ex.SerializeToString())
"#;

fn examples(list: &[data::Example]) -> Examples {
    Examples { paths: list.iter().map(|e| e.path.to_str().unwrap().to_string()).collect(), labels: list.iter().map(|e| e.label as i32).collect() }
}

fn spec_of(ds: &data::Dataset, records: Option<RecordsSpec>) -> PipelineSpec {
    PipelineSpec {
        train: examples(&ds.train),
        val: examples(&ds.val),
        preprocess: Preprocess::default(),
        augment: Augment::None,
        batch: 4,
        eval_batch: 5,
        drop_remainder: false,
        shuffle_buffer: 100,
        cache_dir: None,
        parallel_calls: AUTOTUNE,
        jpeg_only: false,
        device: String::new(),
        cut: false,
        records,
    }
}

/// The val split through the pipeline: (index, label, first 16 values of the image) per example.
fn val_pass(spec: &PipelineSpec) -> Vec<(i32, i32, Vec<f32>)> {
    let mut scope = Scope::new_root_scope();
    let p = Pipeline::build(&mut scope, spec).unwrap();
    let session = Session::new(&SessionOptions::new(), &scope.graph()).unwrap();
    p.hold(&session).unwrap();
    p.start_val(&session).unwrap();
    let mut out = vec![];
    loop {
        let mut args = SessionRunArgs::new();
        let img = args.request_fetch(&p.next[0].operation, 0);
        let lab = args.request_fetch(&p.next[1].operation, 1);
        let idx = args.request_fetch(&p.next[2].operation, 2);
        match session.run(&mut args) {
            Err(e) if is_end_of_data(&e) => break,
            r => r.unwrap(),
        }
        let (t, l, i): (Tensor<f32>, Tensor<i32>, Tensor<i32>) = (args.fetch(img).unwrap(), args.fetch(lab).unwrap(), args.fetch(idx).unwrap());
        let per = t.len() / l.len();
        out.extend((0..l.len()).map(|k| (i[k], l[k], t[k * per..k * per + 16].to_vec())));
    }
    out
}

/// Shards written by Python TensorFlow (labels from 1, the training shards GZIP): the classes
/// come from image/class/text, every record comes out of the graph's ParseExampleV2 with the
/// label of its source folder (an off-by-one offset gives dog for cat, or a label out of range),
/// and each val image's pixels equal those of its file through the file pipeline.
#[test]
fn python_written_imagenet_shards_read_with_the_right_labels_and_pixels() {
    let tmp = common::temp_dir("records-python");
    let images = common::small_dataset(tmp.path(), 5);
    let shards = tmp.path().join("shards");
    run_python(WRITE_IMAGENET, &[images.to_str().unwrap(), shards.to_str().unwrap()]);
    let (ds, _) = split::dataset(&shards, None, 0, None).unwrap();
    assert_eq!(ds.classes, vec!["cat", "dog"]);
    assert_eq!((ds.train.len(), ds.val.len()), (10, 10));
    let set = ds.records.clone().unwrap();
    assert!(set.describe().contains("2 train shards (10 records) + 1 val shards (10 records), 2 compressed"), "{}", set.describe());
    let records = RecordsSpec {
        train: set.train.clone(),
        val: set.val.clone(),
        image_key: set.image_key.clone(),
        label_key: set.label_key.clone(),
        label_offset: set.label_offset,
        seed: 0,
        num_shards: 1,
        shard_index: 0,
    };
    let ours = val_pass(&spec_of(&ds, Some(records)));
    let folder = data::scan(&images).unwrap();
    let theirs = val_pass(&spec_of(&folder, None));
    assert_eq!(ours.len(), 10);
    // Python wrote the val shard in (class, file name) order, the folder's own order.
    for (k, ((i, label, pixels), (j, folder_label, folder_pixels))) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!((*i, *j), (k as i32, k as i32));
        assert_eq!(*label, ds.val[k].label as i32, "record {k}: the graph's label against the scan's");
        assert_eq!(label, folder_label, "record {k}: the label of its source folder");
        assert_eq!(pixels, folder_pixels, "record {k}: the same image");
    }
    assert_eq!(ours.iter().filter(|o| o.1 == 0).count(), 5);
}

/// The byte offset of record `n`'s data in an uncompressed shard.
fn record_data_offset(bytes: &[u8], n: usize) -> usize {
    let mut at = 0;
    for _ in 0..n {
        let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        at += 12 + len + 4;
    }
    at + 12
}

/// make-records output trains; a shard with a flipped byte and one cut short are named by shard
/// and record and skipped (refused with --strict-images), and so is a record whose image does not
/// decode; all of them land in bad-images.txt.
#[test]
fn corrupt_records_and_undecodable_images_are_named_by_shard_and_record() {
    let tmp = common::temp_dir("records-corrupt");
    let images = common::small_dataset(tmp.path(), 6);
    let shards = tmp.path().join("shards");
    let made = common::alexnet().args(["make-records", "--shards", "3"]).arg(&images).arg(&shards).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    // Shard 2 rewritten: a cat, an image that passes no decoder, a dog.
    let jpeg = |class: &str| std::fs::read(std::fs::read_dir(images.join("train").join(class)).unwrap().next().unwrap().unwrap().path()).unwrap();
    let corrupt_jpeg = tmp.path().join("corrupt.jpg");
    common::write_corrupt_jpeg(&corrupt_jpeg);
    let mut w = Writer::create(&shards.join("train-00002-of-00003"), Compression::None).unwrap();
    for (image, label) in [(jpeg("cat"), 1), (std::fs::read(&corrupt_jpeg).unwrap(), 1), (jpeg("dog"), 2)] {
        w.write(&build(vec![("image/encoded", Value::Bytes(image)), ("image/class/label", Value::Int(label))])).unwrap();
    }
    w.finish().unwrap();
    let first = shards.join("train-00000-of-00003");
    let mut bytes = std::fs::read(&first).unwrap();
    let at = record_data_offset(&bytes, 2) + 40;
    bytes[at] ^= 0x55;
    std::fs::write(&first, &bytes).unwrap();
    let second = shards.join("train-00001-of-00003");
    let bytes = std::fs::read(&second).unwrap();
    std::fs::write(&second, &bytes[..bytes.len() - 100]).unwrap();

    let train = |run: &str, extra: &[&str]| {
        let run = tmp.path().join(run);
        let out = common::train_command(&shards, None, &run).args(["--batch-size", "4", "--epochs", "2", "--quiet"]).args(extra).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned(), run)
    };
    let (ok, stderr, _) = train("strict", &["--strict-images"]);
    assert!(!ok, "--strict-images refuses corrupt shards:\n{stderr}");
    assert!(stderr.contains("train-00000-of-00003 record 2: corrupt record (its data's CRC does not match)"), "{stderr}");

    let (ok, stderr, run) = train("run", &[]);
    assert!(ok, "training goes on:\n{stderr}");
    let flipped = "train-00000-of-00003 record 2: corrupt record (its data's CRC does not match); it and the shard's records after it are skipped";
    let cut = "train-00001-of-00003 record 3: truncated record";
    let undecodable = "train-00002-of-00003 record 1: failed to decode during training (skipped)";
    for line in [flipped, cut, undecodable] {
        assert!(stderr.contains(line), "{line}:\n{stderr}");
    }
    let bad = std::fs::read_to_string(run.join("bad-images.txt")).unwrap();
    for line in [flipped, cut, undecodable] {
        assert_eq!(bad.matches(line).count(), 1, "{line} once:\n{bad}");
    }
    assert!(stderr.contains("records: TFRecord (ImageNet layout) records in"), "{stderr}");
    assert!(stderr.contains("3 train shards (8 records)"), "2 + 3 + 3 readable records:\n{stderr}");
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "{metrics}");
}

/// `alexnet train` on shards Python wrote, then `alexnet eval` of the run: eval reads the same
/// records (its val split the run's), and its val accuracy is the run's last validation.
#[test]
fn python_written_shards_train_and_evaluate() {
    let tmp = common::temp_dir("records-eval");
    let images = common::small_dataset(tmp.path(), 5);
    let shards = tmp.path().join("shards");
    run_python(WRITE_IMAGENET, &[images.to_str().unwrap(), shards.to_str().unwrap()]);
    let run = tmp.path().join("run");
    let out = common::train_command(&shards, Some(&common::weights()), &run).args(["--batch-size", "5", "--epochs", "2", "--val-every", "1"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("data: 2 classes [cat, dog], 10 train + 10 val images"), "{stderr}");
    let rows = alexnet::run::metrics::read(&run.join("metrics.csv")).unwrap();
    let last_val = rows.last().unwrap().val_accuracy.unwrap();
    let out = common::alexnet().args(["eval", "--json", "--run-dir"]).arg(&run).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["classes"], serde_json::json!(["cat", "dog"]));
    let val = report["splits"].as_array().unwrap().iter().find(|s| s["split"] == "val").unwrap();
    let rows_per_class: Vec<u64> =
        val["confusion"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum()).collect();
    assert_eq!(rows_per_class, vec![5, 5], "eval reads the val shard's records, 5 per class");
    common::assert_accuracy_close(val["accuracy"].as_f64().unwrap(), last_val, 10, "eval against the run's last validation");
}

/// Prepares a TFDS folder with tensorflow_datasets itself (no download): the train/ and val/
/// images, resized small, as the train and test splits of `pets` 1.0.0, classes named by
/// `names`, in folder order (no shuffling).
const WRITE_TFDS: &str = r#"
import os, sys
import tensorflow as tf
import tensorflow_datasets as tfds
src, out, names = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
classes = sorted(os.listdir(os.path.join(src, "train")))
def split(folder):
    images, labels = [], []
    for c in classes:
        for f in sorted(os.listdir(os.path.join(src, folder, c))):
            img = tf.io.decode_image(tf.io.read_file(os.path.join(src, folder, c, f)), channels=3, expand_animations=False)
            images.append(tf.cast(tf.image.resize(img, [64, 80]), tf.uint8).numpy())
            labels.append(classes.index(c))
    return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
features = tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(None, None, 3)), "label": tfds.features.ClassLabel(names=names)})
tfds.dataset_builders.store_as_tfds_dataset(name="pets", version="1.0.0", features=features, split_datasets={"train": split("train"), "test": split("val")}, data_dir=out, disable_shuffling=True)
"#;

/// A folder prepared by tensorflow_datasets trains, with the class names of its label.labels.txt;
/// its test split validates, its labels (from 0) come out of the graph as the source folders'.
#[test]
fn a_tfds_folder_prepared_by_tensorflow_datasets_trains_with_its_class_names() {
    let tmp = common::temp_dir("records-tfds");
    let images = common::small_dataset(tmp.path(), 5);
    let data_dir = tmp.path().join("tfds");
    run_python(WRITE_TFDS, &[images.to_str().unwrap(), data_dir.to_str().unwrap(), "kitty,puppy"]);
    let version = data_dir.join("pets/1.0.0");
    let (ds, _) = split::dataset(&version, None, 0, None).unwrap();
    assert_eq!(ds.classes, vec!["kitty", "puppy"], "from label.labels.txt");
    let set = ds.records.clone().unwrap();
    assert!(set.describe().starts_with("TFDS records in"), "{}", set.describe());
    let records = RecordsSpec {
        train: set.train.clone(),
        val: set.val.clone(),
        image_key: set.image_key.clone(),
        label_key: set.label_key.clone(),
        label_offset: set.label_offset,
        seed: 0,
        num_shards: 1,
        shard_index: 0,
    };
    let labels: Vec<i32> = val_pass(&spec_of(&ds, Some(records))).iter().map(|v| v.1).collect();
    let folder: Vec<i32> = data::scan(&images).unwrap().val.iter().map(|e| e.label as i32).collect();
    assert_eq!(labels, folder, "the test split's labels, in order");

    let run = tmp.path().join("run");
    let out = common::train_command(&version, None, &run).args(["--batch-size", "5", "--epochs", "1", "--quiet"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("data: 2 classes [kitty, puppy], 10 train + 10 val images"), "{stderr}");
}

/// From shards (three, GZIP, read in parallel), 2 epochs straight equal 1 epoch and 1 more with
/// --resume: the seeded shard order refills the cache as the uninterrupted run filled it.
#[test]
fn training_from_shards_resumes_exactly() {
    let tmp = common::temp_dir("records-resume");
    let images = common::small_dataset(tmp.path(), 6);
    let shards = tmp.path().join("shards");
    let made = common::alexnet().args(["make-records", "--shards", "3", "--compression", "gzip"]).arg(&images).arg(&shards).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let train = |run: &Path, extra: &[&str]| {
        let recipe = ["--batch-size", "4", "--augment", "crop-flip", "--checkpoint-every", "1", "--val-every", "1", "--seed", "3", "--quiet"];
        let out = common::train_command(&shards, Some(&common::weights()), run).args(recipe).args(extra).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        alexnet::run::metrics::read(&run.join("metrics.csv")).unwrap()
    };
    let full = train(&tmp.path().join("full"), &["--epochs", "2"]);
    assert_eq!(full.len(), 2);
    let split = tmp.path().join("split");
    train(&split, &["--epochs", "1"]);
    let resumed = train(&split, &["--epochs", "2", "--resume"]);
    assert_eq!(resumed, full, "resume mid-run == uninterrupted");
}

/// Shards of other names and keys train with --format, --train-files/--val-files, --image-key,
/// --label-key, --label-offset and --labels; `eval` and `--resume` read them back from the run's
/// records.json; a wrong key is named with the record and the flag.
#[test]
fn flags_name_other_shards_and_keys_and_the_run_keeps_them() {
    let tmp = common::temp_dir("records-flags");
    let images = common::small_dataset(tmp.path(), 4);
    let shards = tmp.path().join("shards");
    std::fs::create_dir(&shards).unwrap();
    let ds = data::scan(&images).unwrap();
    for (name, list) in [("mine-train-0", &ds.train), ("mine-val-0", &ds.val)] {
        let mut w = Writer::create(&shards.join(name), Compression::Gzip).unwrap();
        for e in list.iter() {
            w.write(&build(vec![("jpeg", Value::Bytes(std::fs::read(&e.path).unwrap())), ("cls", Value::Int(e.label as i64 + 10))])).unwrap();
        }
        w.finish().unwrap();
    }
    let names = tmp.path().join("names.txt");
    std::fs::write(&names, "felis\ncanis\n").unwrap();
    let run = tmp.path().join("run");
    let flags = ["--format", "tfrecord", "--train-files", "mine-train-*", "--val-files", "mine-val-*", "--label-key", "cls", "--label-offset", "-10"];
    let train = |extra: &[&str]| {
        let out = common::train_command(&shards, None, &run).args(flags).args(["--batch-size", "4", "--quiet"]).args(extra).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, stderr) = train(&["--epochs", "1"]);
    assert!(!ok);
    assert!(stderr.contains("mine-train-0 record 0: no feature 'image/encoded' (the record has: cls, jpeg) (--image-key names the image's key)"), "{stderr}");
    let (ok, stderr) = train(&["--epochs", "1", "--image-key", "jpeg", "--labels", names.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("data: 2 classes [felis, canis], 8 train + 8 val images"), "{stderr}");
    // Resumed and evaluated without the flags: the run's records.json has them.
    let out = common::train_command(&shards, None, &run).args(["--resume", "--epochs", "2", "--quiet"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(run.join("metrics.csv")).unwrap().lines().count(), 3);
    let out = common::alexnet().args(["eval", "--json", "--run-dir"]).arg(&run).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["classes"], serde_json::json!(["felis", "canis"]));
}
