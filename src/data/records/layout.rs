//! Where a folder of records keeps its shards, and what it calls its keys: the ImageNet layout of
//! tensorflow/models and tensorflow/tpu (`train-00000-of-01024`, `validation-00000-of-00128`;
//! `image/encoded`, `image/class/label` numbered from 1), and TFDS's prepared version folders
//! (`dataset_info.json` with each split's `shardLengths`, `NAME-train.tfrecord-00000-of-00016`,
//! `label.labels.txt`; `image` and `label` numbered from 0). Which one a folder is comes from what
//! is in it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use super::options::{Format, RecordOptions, glob_match};

/// The two layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Shards named `train-*` and `validation-*` (keys image/encoded, image/class/label from 1).
    Imagenet,
    /// A TFDS version folder (dataset_info.json; keys image, label from 0).
    Tfds,
}

/// One split's shards in a folder, in name order, and (TFDS) the records each holds.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitFiles {
    pub name: String,
    pub shards: Vec<PathBuf>,
    /// From dataset_info.json's `shardLengths` (TFDS); None: counted by the scan.
    pub lengths: Option<Vec<u64>>,
}

/// What the folder says about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub layout: Layout,
    pub train: SplitFiles,
    pub val: SplitFiles,
    pub image_key: String,
    pub label_key: String,
    /// Added to a stored label to make it 0-based.
    pub label_offset: i64,
    /// Class names from a labels file (TFDS's `label.labels.txt`), line = class id.
    pub class_names: Option<Vec<String>>,
}

/// The TFDS metadata file that marks a version folder.
pub const DATASET_INFO: &str = "dataset_info.json";

/// The layout of `dir` (`--format` if given), or None for an image folder: a TFDS folder has
/// dataset_info.json, the ImageNet layout files matching the training pattern (`train-*`).
pub fn detect(dir: &Path, opts: &RecordOptions) -> Result<Option<Layout>> {
    match opts.format {
        Some(Format::Folder) => return Ok(None),
        Some(Format::Tfds) => return Ok(Some(Layout::Tfds)),
        Some(Format::Tfrecord) => return Ok(Some(Layout::Imagenet)),
        None => {}
    }
    if dir.join(DATASET_INFO).is_file() {
        return Ok(Some(Layout::Tfds));
    }
    let pattern = opts.train_files.as_deref().unwrap_or(TRAIN_FILES);
    Ok((dir.is_dir() && !matching(dir, pattern)?.is_empty()).then_some(Layout::Imagenet))
}

/// The ImageNet layout's shard names.
const TRAIN_FILES: &str = "train-*";
const VAL_FILES: &str = "validation-*";

/// The shards and keys of `dir` in `layout`, with the options' keys, offset and class names.
pub fn find(dir: &Path, layout: Layout, opts: &RecordOptions) -> Result<Found> {
    let mut found = match layout {
        Layout::Imagenet => imagenet(dir, opts)?,
        Layout::Tfds => tfds(dir)?,
    };
    found.image_key = opts.image_key.clone().unwrap_or(found.image_key);
    found.label_key = opts.label_key.clone().unwrap_or(found.label_key);
    found.label_offset = opts.label_offset.unwrap_or(found.label_offset);
    if let Some(file) = &opts.labels {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read the --labels file {}", file.display()))?;
        found.class_names = Some(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect());
    }
    Ok(found)
}

fn imagenet(dir: &Path, opts: &RecordOptions) -> Result<Found> {
    let (train_glob, val_glob) = (opts.train_files.as_deref().unwrap_or(TRAIN_FILES), opts.val_files.as_deref().unwrap_or(VAL_FILES));
    let train = SplitFiles { name: "train".into(), shards: matching(dir, train_glob)?, lengths: None };
    let val = SplitFiles { name: "validation".into(), shards: matching(dir, val_glob)?, lengths: None };
    ensure!(!train.shards.is_empty(), "{} has no training shards matching {train_glob} (--train-files names them)", dir.display());
    ensure!(
        !val.shards.is_empty(),
        "{} has training shards but no validation shards matching {val_glob} (--val-files names them): the run validates on them",
        dir.display()
    );
    Ok(Found {
        layout: Layout::Imagenet,
        train,
        val,
        image_key: "image/encoded".into(),
        label_key: "image/class/label".into(),
        label_offset: -1,
        class_names: None,
    })
}

/// The files of `dir` whose names match `pattern`, sorted (hidden ones left out: a converter's
/// half-written shard, under a temporary dot-name, is not a shard).
fn matching(dir: &Path, pattern: &str) -> Result<Vec<PathBuf>> {
    let wanted = |n: &str| !n.starts_with('.') && glob_match(pattern, n);
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| wanted(&n.to_string_lossy())))
        .collect();
    out.sort();
    Ok(out)
}

fn tfds(dir: &Path) -> Result<Found> {
    let info_path = dir.join(DATASET_INFO);
    let info: Value = serde_json::from_str(&std::fs::read_to_string(&info_path).with_context(|| format!("cannot read {}", info_path.display()))?)
        .with_context(|| format!("{} is not JSON", info_path.display()))?;
    let format = info["fileFormat"].as_str().unwrap_or("tfrecord");
    ensure!(
        format == "tfrecord",
        "{}: fileFormat '{format}'; only TFRecord shards can be read (prepare the data set with file_format='tfrecord')",
        info_path.display()
    );
    let name = info["name"].as_str().with_context(|| format!("{} has no name", info_path.display()))?;
    let splits = info["splits"].as_array().with_context(|| format!("{} lists no splits", info_path.display()))?;
    let split = |wanted: &str| -> Result<Option<SplitFiles>> {
        let Some(s) = splits.iter().find(|s| s["name"].as_str() == Some(wanted)) else { return Ok(None) };
        let lengths: Vec<u64> = s["shardLengths"]
            .as_array()
            .with_context(|| format!("{}: split '{wanted}' has no shardLengths", info_path.display()))?
            .iter()
            .map(|v| v.as_str().and_then(|t| t.parse().ok()).or(v.as_u64()))
            .collect::<Option<_>>()
            .with_context(|| format!("{}: split '{wanted}' has a shard length that is not a number", info_path.display()))?;
        let n = lengths.len();
        let shards = (0..n).map(|i| dir.join(tfds_shard_name(name, wanted, i, n))).collect();
        Ok(Some(SplitFiles { name: wanted.into(), shards, lengths: Some(lengths) }))
    };
    let Some(train) = split("train")? else { bail!("{} has no 'train' split", info_path.display()) };
    let val = match (split("validation")?, split("test")?) {
        (Some(v), _) | (None, Some(v)) => v,
        (None, None) => bail!("{} has neither a 'validation' nor a 'test' split to validate on", info_path.display()),
    };
    for shard in train.shards.iter().chain(&val.shards) {
        ensure!(shard.is_file(), "{} lists shard {}, which is missing", info_path.display(), shard.display());
    }
    let labels_file = dir.join("label.labels.txt");
    let class_names = match std::fs::read_to_string(&labels_file) {
        Ok(text) => Some(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()),
        Err(_) => None,
    };
    Ok(Found { layout: Layout::Tfds, train, val, image_key: "image".into(), label_key: "label".into(), label_offset: 0, class_names })
}

/// TFDS's shard file name: `{DATASET}-{SPLIT}.tfrecord-{SHARD_X_OF_Y}`.
pub fn tfds_shard_name(dataset: &str, split: &str, i: usize, n: usize) -> String {
    format!("{dataset}-{split}.tfrecord-{i:05}-of-{n:05}")
}

/// The ImageNet layout's shard file name.
pub fn imagenet_shard_name(split: &str, i: usize, n: usize) -> String {
    format!("{split}-{i:05}-of-{n:05}")
}

/// dataset_info.json for a TFDS version folder that `make-records` writes: its splits with their
/// shard lengths (strings, as TFDS writes them).
pub fn tfds_info(name: &str, version: &str, splits: &[(&str, Vec<u64>, u64)]) -> Value {
    let splits: Vec<Value> = splits
        .iter()
        .map(|(split, lengths, bytes)| {
            json!({
                "name": split,
                "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
                "numBytes": bytes.to_string(),
                "shardLengths": lengths.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "name": name,
        "version": version,
        "fileFormat": "tfrecord",
        "description": "Written by alexnet make-records from a folder of class folders.",
        "moduleName": "alexnet.make_records",
        "splits": splits,
    })
}

/// features.json for the same folder: an image and a class label of `classes` classes.
pub fn tfds_features(classes: usize) -> Value {
    json!({
        "pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
        "featuresDict": {
            "features": {
                "image": {
                    "pythonClassName": "tensorflow_datasets.core.features.image_feature.Image",
                    "image": {"shape": {"dimensions": ["-1", "-1", "3"]}, "dtype": "uint8", "encodingFormat": "jpeg"}
                },
                "label": {
                    "pythonClassName": "tensorflow_datasets.core.features.class_label_feature.ClassLabel",
                    "classLabel": {"numClasses": classes.to_string()}
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_told_from_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let none = RecordOptions::default();
        assert_eq!(detect(dir.path(), &none).unwrap(), None);
        std::fs::create_dir(dir.path().join("train")).unwrap();
        assert_eq!(detect(dir.path(), &none).unwrap(), None, "a train/ folder is the image layout");
        std::fs::write(dir.path().join("train-00000-of-00001"), b"").unwrap();
        assert_eq!(detect(dir.path(), &none).unwrap(), Some(Layout::Imagenet));
        let e = find(dir.path(), Layout::Imagenet, &none).unwrap_err().to_string();
        assert!(e.contains("no validation shards"), "{e}");
        let info = tfds_info("shapes", "1.0.0", &[("train", vec![3, 4], 10), ("test", vec![2], 5)]);
        std::fs::write(dir.path().join(DATASET_INFO), info.to_string()).unwrap();
        assert_eq!(detect(dir.path(), &none).unwrap(), Some(Layout::Tfds));
        let e = find(dir.path(), Layout::Tfds, &none).unwrap_err().to_string();
        assert!(e.contains("shapes-train.tfrecord-00000-of-00002, which is missing"), "{e}");
        for f in ["shapes-train.tfrecord-00000-of-00002", "shapes-train.tfrecord-00001-of-00002", "shapes-test.tfrecord-00000-of-00001"] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        let found = find(dir.path(), Layout::Tfds, &none).unwrap();
        assert_eq!(found.train.lengths, Some(vec![3, 4]));
        assert_eq!(found.val.name, "test", "no validation split: the test split validates");
        assert_eq!((found.label_offset, found.class_names), (0, None));
    }
}
