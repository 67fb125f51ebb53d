//! `alexnet make-records`: an image folder to TFRecord shards (the ImageNet layout or a TFDS
//! version folder), which `alexnet train --images` then reads with tf.data's own ops.

use std::path::PathBuf;

use alexnet::data::records::layout::Layout;
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
