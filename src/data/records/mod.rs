//! Image data sets kept as TFRecord shards of `tf.train.Example`s: the ImageNet layout and TFDS
//! prepared folders ([`layout`]), the record framing ([`tfrecord`]), the Examples ([`example`]),
//! the host's scan of the shards ([`scan`]) and the `make-records` converter ([`write`]).
//!
//! A folder of shards becomes a [`Dataset`] like an image folder does, so the run's epochs, labels
//! and reports work unchanged: each record is an example named `<shard> record <n>`, numbered
//! shard after shard in name order. The training graph reads the shards themselves with
//! tf.data's ops (`crate::data::pipeline::records`), and each element's index is its shard's first
//! number plus its place in the shard, so a record the graph drops (an image that fails to
//! decode) is named by shard and record as a failed file is by path.

pub mod example;
pub mod layout;
pub mod options;
pub mod scan;
pub mod tfrecord;
pub mod write;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, ensure};

use self::layout::{Found, Layout};
use self::options::RecordOptions;
use self::scan::{Keys, ShardScan, check_labels, scan_shards};
use self::tfrecord::Compression;
use crate::data::images::{Dataset, Example};

/// One shard as the graph reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct Shard {
    pub path: PathBuf,
    pub compression: Compression,
    /// The split's number of its first record.
    pub first: u64,
    /// Its readable records (all of them unless it is corrupt).
    pub records: u64,
}

/// A folder of shards, scanned.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordSet {
    pub dir: PathBuf,
    pub layout: Layout,
    /// The options it was read with (saved in the run, for `--resume` and `eval`).
    pub options: RecordOptions,
    pub image_key: String,
    pub label_key: String,
    pub label_offset: i64,
    pub train: Vec<Shard>,
    pub val: Vec<Shard>,
    /// The records where a shard stops early, with why, one line each.
    pub corrupt: Vec<String>,
    /// Every training image is a JPEG (random-resized-crop decodes only its window).
    pub all_jpeg: bool,
    /// The training images' encoded bytes (the encoded cache's size).
    pub train_image_bytes: u64,
}

impl RecordSet {
    /// For the data line: the layout, shards and records of each split.
    pub fn describe(&self) -> String {
        let count = |s: &[Shard]| s.iter().map(|s| s.records).sum::<u64>();
        let gz = self.train.iter().chain(&self.val).filter(|s| s.compression != Compression::None).count();
        format!(
            "{} records in {}: {} train shards ({} records) + {} val shards ({} records){}",
            match self.layout {
                Layout::Imagenet => "TFRecord (ImageNet layout)",
                Layout::Tfds => "TFDS",
            },
            self.dir.display(),
            self.train.len(),
            count(&self.train),
            self.val.len(),
            count(&self.val),
            if gz > 0 { format!(", {gz} compressed") } else { String::new() }
        )
    }
}

/// The encoded image of record `number` of a split (in its shards' numbering).
pub fn image_of(shards: &[Shard], number: u64, image_key: &str) -> Result<Vec<u8>> {
    let shard = shards.iter().find(|s| (s.first..s.first + s.records).contains(&number)).context("no such record")?;
    let mut reader = tfrecord::Reader::open(&shard.path)?;
    for _ in shard.first..number {
        reader.next_record();
    }
    let at = (number - shard.first) as usize;
    let record = reader.next_record().context("the shard ended")?.map_err(|c| anyhow::anyhow!("{}: {}", scan::name(&shard.path, at), c.reason))?;
    let parsed = example::Parsed::from_record(&record).map_err(anyhow::Error::msg)?;
    Ok(parsed.bytes(image_key).map_err(anyhow::Error::msg)?.to_vec())
}

/// Every readable record's image written to a file of its own under `dir` (`<split>/<shard>
/// record <n>`), for the whole-set decode that `eval` runs: the same data set with those paths.
pub fn extract(set: &RecordSet, dataset: &Dataset, dir: &Path) -> Result<Dataset> {
    let mut out = Dataset { records: None, ..dataset.clone() };
    for (split, shards, examples) in [("train", &set.train, &mut out.train), ("val", &set.val, &mut out.val)] {
        let folder = dir.join(split);
        std::fs::create_dir_all(&folder)?;
        for shard in shards {
            let mut reader = tfrecord::Reader::open(&shard.path)?;
            let file_name = shard.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            for r in 0..shard.records as usize {
                let record = reader.next_record().context("the shard ended")?.map_err(|c| anyhow::anyhow!("{}: {}", scan::name(&shard.path, r), c.reason))?;
                let parsed = example::Parsed::from_record(&record).map_err(anyhow::Error::msg)?;
                let file = folder.join(format!("{file_name} record {r}"));
                std::fs::write(&file, parsed.bytes(&set.image_key).map_err(anyhow::Error::msg)?).with_context(|| format!("cannot write {}", file.display()))?;
                examples[(shard.first as usize) + r].path = file;
            }
        }
    }
    Ok(out)
}

/// The layout of `dir` if it is a folder of shards (None: an image folder), with the options of
/// the command line and of `run_dir`'s run.
pub fn detect(dir: &Path, run_dir: Option<&Path>) -> Result<Option<(Layout, RecordOptions)>> {
    let opts = options::resolve(run_dir)?;
    Ok(layout::detect(dir, &opts)?.map(|l| (l, opts)))
}

/// Whether this process has read a folder of shards: its run trains from the pipeline, the only
/// reader of shards (a run resumed with `--train-files` is found only through its records.json).
pub fn scanned() -> bool {
    SCANNED.load(std::sync::atomic::Ordering::Relaxed)
}

static SCANNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The data set of the shards in `dir`: every record scanned (see [`scan`]), once per process
/// (the command line reads the classes, then the run the data set: 7 s apiece for 1.7 GB of
/// shards in the page cache, twice that GZIP-compressed, on 2 busy cores).
pub fn dataset(dir: &Path, layout: Layout, opts: &RecordOptions) -> Result<Dataset> {
    SCANNED.store(true, std::sync::atomic::Ordering::Relaxed);
    let key = (dir.to_path_buf(), layout, opts.clone());
    let mut memo = MEMO.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, ds)) = memo.iter().find(|(k, _)| *k == key) {
        return Ok(ds.clone());
    }
    let ds = scan_dataset(dir, layout, opts)?;
    memo.push((key, ds.clone()));
    Ok(ds)
}

type MemoKey = (PathBuf, Layout, RecordOptions);
static MEMO: std::sync::Mutex<Vec<(MemoKey, Dataset)>> = std::sync::Mutex::new(Vec::new());

fn scan_dataset(dir: &Path, layout: Layout, opts: &RecordOptions) -> Result<Dataset> {
    let found = layout::find(dir, layout, opts)?;
    let text_key = (layout == Layout::Imagenet).then_some("image/class/text");
    let keys = Keys { image: &found.image_key, label: &found.label_key, text: text_key };
    let all: Vec<PathBuf> = found.train.shards.iter().chain(&found.val.shards).cloned().collect();
    let mut scans = scan_shards(&all, &keys)?;
    let val_scans = scans.split_off(found.train.shards.len());
    let classes = class_names(&found, &scans)?;
    let hint = match layout {
        Layout::Imagenet => " (the ImageNet layout numbers classes from 1)",
        Layout::Tfds => "",
    };
    check_labels(&scans, found.label_offset, classes.len(), hint)?;
    check_labels(&val_scans, found.label_offset, classes.len(), hint)?;
    let (train_shards, train) = split_examples(&scans, found.label_offset);
    let (val_shards, val) = split_examples(&val_scans, found.label_offset);
    ensure!(!train.is_empty(), "the training shards of {} hold no readable records", dir.display());
    ensure!(!val.is_empty(), "the validation shards of {} hold no readable records", dir.display());
    let set = RecordSet {
        dir: dir.to_path_buf(),
        layout,
        options: opts.clone(),
        image_key: found.image_key.clone(),
        label_key: found.label_key.clone(),
        label_offset: found.label_offset,
        train: train_shards,
        val: val_shards,
        corrupt: corrupt_lines(&found, &scans, &val_scans),
        all_jpeg: scans.iter().all(|s| s.all_jpeg),
        train_image_bytes: scans.iter().map(|s| s.image_bytes).sum(),
    };
    Ok(Dataset { classes, train, val, ignored: vec![], records: Some(Arc::new(set)) })
}

/// The class names: the layout's labels file, else the ImageNet layout's texts (a class without
/// one is named by its stored label), as many as the largest training label says.
fn class_names(found: &Found, train: &[ShardScan]) -> Result<Vec<String>> {
    let names = match &found.class_names {
        Some(names) => names.clone(),
        None => {
            let top = train.iter().flat_map(|s| s.labels.iter()).max().copied().unwrap_or(0);
            let n = (top + found.label_offset + 1).max(0);
            (0..n)
                .map(|class| {
                    let stored = class - found.label_offset;
                    train.iter().find_map(|s| s.texts.get(&stored).cloned()).unwrap_or_else(|| stored.to_string())
                })
                .collect()
        }
    };
    ensure!(names.len() >= 2, "{} has {} class(es): a classifier needs at least two", found.train.shards[0].display(), names.len());
    Ok(names)
}

/// A split's shards in the graph's numbering and its examples, named by shard and record.
fn split_examples(scans: &[ShardScan], offset: i64) -> (Vec<Shard>, Vec<Example>) {
    let mut shards = vec![];
    let mut examples = vec![];
    for s in scans {
        let first = examples.len() as u64;
        examples.extend(s.labels.iter().enumerate().map(|(r, &l)| Example { path: PathBuf::from(scan::name(&s.path, r)), label: (l + offset) as usize }));
        shards.push(Shard { path: s.path.clone(), compression: s.compression, first, records: s.labels.len() as u64 });
    }
    (shards, examples)
}

/// One line per shard that stops early: where, why, and (TFDS, whose metadata says how many it
/// should hold) how many records are lost.
fn corrupt_lines(found: &Found, train: &[ShardScan], val: &[ShardScan]) -> Vec<String> {
    let lengths = |split: &layout::SplitFiles, i: usize| split.lengths.as_ref().and_then(|l| l.get(i).copied());
    let expected = |i: usize| if i < train.len() { lengths(&found.train, i) } else { lengths(&found.val, i - train.len()) };
    train
        .iter()
        .chain(val)
        .enumerate()
        .filter_map(|(i, s)| {
            let (record, reason) = s.corrupt.as_ref()?;
            let lost = match expected(i) {
                Some(n) => format!("its last {} records are skipped", n.saturating_sub(*record)),
                None => "it and the shard's records after it are skipped".to_string(),
            };
            Some(format!("{}: {reason}; {lost}", scan::name(&s.path, *record as usize)))
        })
        .collect()
}
