//! The data set decoded into one tensor (train then val) with its labels, every image
//! decode-checked first: bad ones are an error that lists them all, or are left out with a
//! warning.

use std::path::Path;

use anyhow::{Result, bail, ensure};
use tensorflow::Tensor;

use crate::data::images::{self as data, Dataset, Decoder, Preprocess};
use crate::data::records;

/// Decodes train then val into one tensor, with the matching labels; any bad image is an error.
pub fn decode_dataset(dataset: &Dataset, p: &Preprocess) -> Result<(Tensor<f32>, Vec<i32>)> {
    let (_, images, labels) = load_images(dataset, p, false)?;
    Ok((images, labels))
}

/// Decodes train then val into one tensor. Every image is decode-checked first: bad ones are an
/// error that lists them all, or, with `skip_bad`, a warning that lists them all and leaves them
/// out. Returns the data set of the images kept.
pub fn load_images(dataset: &Dataset, p: &Preprocess, skip_bad: bool) -> Result<(Dataset, Tensor<f32>, Vec<i32>)> {
    if let Some(set) = &dataset.records {
        // Shards are read once into files of their own, which decode as any image folder's.
        let dir = tempfile::tempdir()?;
        return load_images(&records::extract(set, dataset, dir.path())?, p, skip_bad);
    }
    let decoder = Decoder::new(p)?;
    let all: Vec<&Path> = dataset.train.iter().chain(&dataset.val).map(|e| e.path.as_path()).collect();
    let (images, bad) = decoder.decode_checked(&all);
    let kept = keep_good(dataset, &bad, skip_bad)?;
    let labels = kept.train.iter().chain(&kept.val).map(|e| e.label as i32).collect();
    Ok((kept, images, labels))
}

/// The data set without its bad images, or the error that lists them.
pub fn keep_good(dataset: &Dataset, bad: &[data::BadImage], skip_bad: bool) -> Result<Dataset> {
    let total = dataset.train.len() + dataset.val.len();
    if !bad.is_empty() {
        let list: String = bad.iter().map(|b| format!("\n  {b}")).collect();
        if !skip_bad {
            bail!("{} of {total} images can't be used:{list}\nfix or remove them, or pass --skip-bad-images to train without them", bad.len());
        }
        eprintln!("warning: skipping {} of {total} images that can't be used:{list}", bad.len());
    }
    let is_bad = |e: &data::Example| bad.iter().any(|b| b.path == e.path);
    let kept = Dataset {
        classes: dataset.classes.clone(),
        train: dataset.train.iter().filter(|e| !is_bad(e)).cloned().collect(),
        val: dataset.val.iter().filter(|e| !is_bad(e)).cloned().collect(),
        ignored: dataset.ignored.clone(),
        records: dataset.records.clone(),
    };
    for (label, class) in kept.classes.iter().enumerate() {
        ensure!(kept.train.iter().any(|e| e.label == label), "class '{class}' has no usable training image left");
    }
    ensure!(!kept.val.is_empty(), "no usable validation image left");
    Ok(kept)
}

/// Bytes of one decoded image.
pub fn decoded_bytes(p: &Preprocess) -> u64 {
    (p.size * p.size * 3 * 4) as u64
}
