//! `alexnet make-records`: an image folder to TFRecord shards (the ImageNet layout or a TFDS
//! version folder), which `alexnet train --images` then reads with tf.data's own ops.

use std::path::PathBuf;

use alexnet::data::records::layout::Layout;
use alexnet::data::records::options::{self, Format, RecordOptions};
use alexnet::data::records::tfrecord::Compression;
use alexnet::data::records::write::{MakeOptions, make_records};
use alexnet::data::split;
use anyhow::Result;
use clap::{Args, ValueEnum};

#[derive(Args)]
pub(crate) struct MakeRecordsArgs {
    /// The image folder: train/<class>/ and val/<class>/, or <class>/ folders with --val-split.
    dir: PathBuf,
    /// The folder to write the shards into (new or empty).
    out: PathBuf,
    /// Training shards (the validation split gets an eighth as many, at least one).
    #[arg(long, default_value_t = 16)]
    shards: usize,
    /// imagenet: train-00000-of-000NN and validation-*, keys image/encoded and image/class/label from 1; tfds: a TFDS version folder, keys image and label from 0.
    #[arg(long, value_enum, default_value_t = Layout::Imagenet)]
    layout: Layout,
    /// Compress each shard (readers tell it from the bytes).
    #[arg(long, value_enum, default_value_t = ShardCompression::None)]
    compression: ShardCompression,
    /// With <class>/ folders: the share of each class held out as the validation split.
    #[arg(long)]
    val_split: Option<f64>,
    /// Seed of the --val-split choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The TFDS data set's name (default: the image folder's, lower case).
    #[arg(long)]
    name: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ShardCompression {
    None,
    Gzip,
}

/// Converts, and says what was written.
pub(crate) fn run_make_records(a: MakeRecordsArgs) -> Result<()> {
    let (dataset, _) = split::dataset(&a.dir, a.val_split, a.seed, None)?;
    let compression = match a.compression {
        ShardCompression::None => Compression::None,
        ShardCompression::Gzip => Compression::Gzip,
    };
    let opts = MakeOptions { shards: a.shards, layout: a.layout, compression, name: a.name };
    let made = make_records(&a.dir, &dataset, &a.out, &opts)?;
    eprintln!(
        "make-records: {} images ({} classes) into {} shards in {}, {:.1} MB, in {:.1} s ({:.0} images/s)",
        made.images,
        dataset.classes.len(),
        made.shards,
        a.out.display(),
        made.bytes as f64 / 1e6,
        made.seconds,
        made.images as f64 / made.seconds.max(1e-9)
    );
    Ok(())
}

/// `alexnet train`'s flags for folders of shards (all optional: the folder says the rest).
#[derive(Args)]
pub(crate) struct RecordArgs {
    /// What --images holds: image folders, TFRecord shards (ImageNet layout's names and keys by default) or a TFDS version folder (default: told from its files).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// The training shards' file names, a shell pattern (default train-*; TFDS: the train split).
    #[arg(long, value_name = "GLOB")]
    train_files: Option<String>,
    /// The validation shards' file names (default validation-*; TFDS: the validation or test split).
    #[arg(long, value_name = "GLOB")]
    val_files: Option<String>,
    /// The Example feature holding the encoded image (default image/encoded; TFDS: image).
    #[arg(long)]
    image_key: Option<String>,
    /// The Example feature holding the class id (default image/class/label; TFDS: label).
    #[arg(long)]
    label_key: Option<String>,
    /// Added to each stored label to make it 0-based (default -1 for the ImageNet layout, whose ids start at 1; TFDS: 0).
    #[arg(long, allow_hyphen_values = true)]
    label_offset: Option<i64>,
    /// Class names, one per line, line = class id (default: TFDS's label.labels.txt, or the records' image/class/text).
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
}

impl RecordArgs {
    /// Sets the flags for the process (the data set is read through them; the run saves them).
    pub(crate) fn apply(&self) {
        options::set(RecordOptions {
            format: self.format,
            train_files: self.train_files.clone(),
            val_files: self.val_files.clone(),
            image_key: self.image_key.clone(),
            label_key: self.label_key.clone(),
            label_offset: self.label_offset,
            labels: self.labels.clone(),
        });
    }
}
