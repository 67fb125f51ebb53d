//! `make-records`: an image folder (train/<class>/ + val/<class>/, or <class>/ folders with a
//! val split) to TFRecord shards of `tf.train.Example`s, in the ImageNet layout or as a TFDS
//! version folder. Each shard's images are a seeded, class-mixed share of its split (as
//! tensorflow/models' converter shuffles before sharding); each is written to a temporary name
//! and renamed when complete, so a reader never meets half a shard. The files are copied as they
//! are (no re-encoding), one at a time per thread: memory stays at a few images whatever the
//! folder's size.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, ensure};

use super::example::{Value, build};
use super::layout::{self, Layout};
use super::tfrecord::{Compression, Writer};
use crate::data::encoded::{image_dimensions, image_format};
use crate::data::images::{Dataset, Example};
use crate::util::fsutil;
use crate::util::parallel::map_each;
use crate::util::rng::Rng;

/// What to write.
#[derive(Clone, Debug)]
pub struct MakeOptions {
    /// Training shards (the val split gets an eighth as many, at least one).
    pub shards: usize,
    pub layout: Layout,
    pub compression: Compression,
    /// The TFDS data set's name (default: the image folder's, in TFDS's lower-case form).
    pub name: Option<String>,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Made {
    pub images: usize,
    pub shards: usize,
    pub bytes: u64,
    pub seconds: f64,
}

/// The random stream that deals the images to shards.
const SHARD_STREAM: u64 = 0x5A4D_0001;

/// Writes `dataset` (the images of `dir`) as shards into `out` (a new or empty folder).
pub fn make_records(dir: &Path, dataset: &Dataset, out: &Path, opts: &MakeOptions) -> Result<Made> {
    let started = Instant::now();
    ensure!(opts.shards >= 1, "--shards must be at least 1");
    ensure!(
        opts.layout == Layout::Imagenet || opts.compression == Compression::None,
        "--compression gzip with --layout tfds: tensorflow_datasets reads TFDS folders as uncompressed shards only (use --layout imagenet for GZIP shards)"
    );
    if out.exists() {
        let empty = std::fs::read_dir(out).with_context(|| format!("cannot list {}", out.display()))?.next().is_none();
        ensure!(empty, "{} is not empty: make-records writes into a new or empty folder", out.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let name = opts.name.clone().unwrap_or_else(|| tfds_name(dir));
    let (val_split, val_shards) = ("validation", opts.shards.div_ceil(8));
    let mut jobs = vec![];
    for (split, examples, n) in [("train", &dataset.train, opts.shards), (val_split, &dataset.val, val_shards)] {
        let n = n.min(examples.len()).max(1);
        let mut order = examples.clone();
        Rng::new(0, SHARD_STREAM).shuffle(&mut order);
        for (i, part) in deal(&order, n).into_iter().enumerate() {
            let file = match opts.layout {
                Layout::Imagenet => layout::imagenet_shard_name(split, i, n),
                Layout::Tfds => layout::tfds_shard_name(&name, split, i, n),
            };
            jobs.push((split, out.join(file), part));
        }
    }
    let shards = jobs.len();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let written: Vec<(String, u64, u64)> = map_each(jobs, threads, |(split, path, part)| {
        let n = part.len() as u64;
        write_shard(&path, &part, &dataset.classes, opts).map(|bytes| (split.to_string(), n, bytes))
    })
    .into_iter()
    .collect::<Result<_>>()?;
    if opts.layout == Layout::Tfds {
        write_tfds_metadata(out, &name, &dataset.classes, &written)?;
    }
    let images = dataset.train.len() + dataset.val.len();
    let bytes = written.iter().map(|w| w.2).sum();
    Ok(Made { images, shards, bytes, seconds: started.elapsed().as_secs_f64() })
}

/// `items` dealt into `n` contiguous parts whose sizes differ by at most one.
fn deal(items: &[Example], n: usize) -> Vec<Vec<Example>> {
    let (q, r) = (items.len() / n, items.len() % n);
    let mut at = 0;
    (0..n)
        .map(|i| {
            let len = q + usize::from(i < r);
            let part = items[at..at + len].to_vec();
            at += len;
            part
        })
        .collect()
}

/// One shard: written to a temporary name, renamed when whole. Returns its size.
fn write_shard(path: &Path, examples: &[Example], classes: &[String], opts: &MakeOptions) -> Result<u64> {
    let tmp = fsutil::temp_sibling(path);
    let result = (|| -> Result<()> {
        let mut w = Writer::create(&tmp, opts.compression)?;
        for e in examples {
            let bytes = std::fs::read(&e.path).with_context(|| format!("cannot read {}", e.path.display()))?;
            let record = match opts.layout {
                Layout::Imagenet => imagenet_example(&e.path, bytes, e.label, &classes[e.label]),
                Layout::Tfds => build(vec![("image", Value::Bytes(bytes)), ("label", Value::Int(e.label as i64))]),
            };
            w.write(&record).with_context(|| format!("cannot write {}", tmp.display()))?;
        }
        w.finish().with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    Ok(std::fs::metadata(path)?.len())
}

/// An Example with the keys of tensorflow/models' `build_imagenet_data.py`: the label from 1.
fn imagenet_example(path: &Path, bytes: Vec<u8>, label: usize, class: &str) -> Vec<u8> {
    let (width, height) = image_dimensions(&bytes).unwrap_or((0, 0));
    let format = image_format(&bytes).unwrap_or("unknown");
    let filename = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    build(vec![
        ("image/height", Value::Int(height.into())),
        ("image/width", Value::Int(width.into())),
        ("image/colorspace", Value::Bytes(b"RGB".to_vec())),
        ("image/channels", Value::Int(3)),
        ("image/class/label", Value::Int(label as i64 + 1)),
        ("image/class/text", Value::Bytes(class.as_bytes().to_vec())),
        ("image/format", Value::Bytes(format.as_bytes().to_vec())),
        ("image/filename", Value::Bytes(filename.into_bytes())),
        ("image/encoded", Value::Bytes(bytes)),
    ])
}

/// dataset_info.json, features.json and label.labels.txt of a TFDS version folder.
fn write_tfds_metadata(out: &Path, name: &str, classes: &[String], written: &[(String, u64, u64)]) -> Result<()> {
    let splits: Vec<(&str, Vec<u64>, u64)> = ["train", "validation"]
        .iter()
        .map(|&split| {
            let mine = written.iter().filter(|w| w.0 == split);
            (split, mine.clone().map(|w| w.1).collect(), mine.map(|w| w.2).sum())
        })
        .collect();
    let info = layout::tfds_info(name, "1.0.0", &splits);
    fsutil::write_atomic(&out.join(layout::DATASET_INFO), serde_json::to_string_pretty(&info)?.as_bytes())?;
    fsutil::write_atomic(&out.join("features.json"), serde_json::to_string_pretty(&layout::tfds_features(classes.len()))?.as_bytes())?;
    fsutil::write_atomic(&out.join("label.labels.txt"), format!("{}\n", classes.join("\n")).as_bytes())
}

/// A TFDS data set name from a folder's: lower case, letters, digits and underscores.
fn tfds_name(dir: &Path) -> String {
    let base = dir.canonicalize().unwrap_or_else(|_| PathBuf::from(dir)).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let name: String = base.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let name = name.trim_matches('_').to_string();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) { format!("images_{name}").trim_end_matches('_').to_string() } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_contiguous_and_even() {
        let ex: Vec<Example> = (0..10).map(|i| Example { path: PathBuf::from(i.to_string()), label: 0 }).collect();
        let sizes: Vec<usize> = deal(&ex, 4).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![3, 3, 2, 2]);
        assert_eq!(deal(&ex, 4).concat(), ex);
        assert_eq!(tfds_name(Path::new("/tmp/My Photos")), "my_photos");
        assert_eq!(tfds_name(Path::new("/tmp/2026")), "images_2026");
    }
}
