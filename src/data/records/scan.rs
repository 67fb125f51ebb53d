//! The host's one pass over a folder's shards before training: each shard's records counted and
//! both CRCs of each checked, each Example's label read (and its class text, where the ImageNet
//! layout stores one). A shard whose records stop early (a bad CRC, a shard cut short) is named
//! by shard and record: TensorFlow's reader stops there too, so the records from there on are
//! not in the run. A label out of range, or a record without the image or label key, is an
//! error naming the shard and record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::example::Parsed;
use super::tfrecord::{Compression, Reader};
use crate::util::parallel::map_each;

/// What one shard holds.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardScan {
    pub path: PathBuf,
    pub compression: Compression,
    /// Each readable record's stored label (before the offset), in order.
    pub labels: Vec<i64>,
    /// Class texts by stored label (ImageNet layout's `image/class/text`).
    pub texts: BTreeMap<i64, String>,
    /// Where and why its records stop early.
    pub corrupt: Option<(u64, String)>,
    /// Every readable record's image is a JPEG.
    pub all_jpeg: bool,
    /// The readable records' encoded image bytes.
    pub image_bytes: u64,
}

/// The keys to read.
pub struct Keys<'a> {
    pub image: &'a str,
    pub label: &'a str,
    /// The class text next to the label, if the layout stores one.
    pub text: Option<&'a str>,
}

/// Scans every shard of `paths`, several at once.
pub fn scan_shards(paths: &[PathBuf], keys: &Keys) -> Result<Vec<ShardScan>> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8);
    map_each(paths.to_vec(), threads, |p| scan_shard(&p, keys)).into_iter().collect()
}

/// One shard's scan.
pub fn scan_shard(path: &Path, keys: &Keys) -> Result<ShardScan> {
    let compression = Compression::of_file(path)?;
    let mut reader = Reader::open(path)?;
    let mut scan = ShardScan { path: path.to_path_buf(), compression, labels: vec![], texts: BTreeMap::new(), corrupt: None, all_jpeg: true, image_bytes: 0 };
    while let Some(record) = reader.next_record() {
        let data = match record {
            Ok(data) => data,
            Err(c) => {
                scan.corrupt = Some((c.record, c.reason));
                break;
            }
        };
        let at = scan.labels.len();
        let parsed = Parsed::from_record(&data).map_err(|e| anyhow::anyhow!("{}: {e}", name(path, at)))?;
        let image = parsed.bytes(keys.image).map_err(|e| anyhow::anyhow!("{}: {e} (--image-key names the image's key)", name(path, at)))?;
        scan.all_jpeg &= image.starts_with(&[0xFF, 0xD8, 0xFF]);
        scan.image_bytes += image.len() as u64;
        let label = parsed.int(keys.label).map_err(|e| anyhow::anyhow!("{}: {e} (--label-key names the label's key)", name(path, at)))?;
        if let Some(text) = keys.text.and_then(|k| parsed.text(k)) {
            scan.texts.entry(label).or_insert(text);
        }
        scan.labels.push(label);
    }
    Ok(scan)
}

/// How a record is named to the user: its shard and its number in it (from 0, as TensorFlow's
/// readers count).
pub fn name(shard: &Path, record: usize) -> String {
    format!("{} record {record}", shard.display())
}

/// Checks that every label, shifted by `offset`, is a class of `classes`; the error names the
/// first record that is not.
pub fn check_labels(scans: &[ShardScan], offset: i64, classes: usize, hint: &str) -> Result<()> {
    for s in scans {
        if let Some((at, label)) = s.labels.iter().enumerate().find(|(_, l)| !(0..classes as i64).contains(&(**l + offset))) {
            bail!(
                "{}: label {label} is out of range: with a label offset of {offset} the {classes} classes are stored as {}..{}{hint}",
                name(&s.path, at),
                -offset,
                classes as i64 - 1 - offset
            );
        }
    }
    Ok(())
}
