//! Where the training steps' images come from: the decoded data set in the graph's data
//! variable, or (over the cache limit) batches decoded from disk and fed.

use std::path::{Path, PathBuf};

use anyhow::Result;
use tensorflow::{Session, Tensor};

use crate::data::decoded::{decoded_bytes, keep_good, load_images};
use crate::data::images::{Dataset, Decoder, Preprocess};
use crate::train::feeds::Batch;
use crate::train::graph::TrainGraph;

/// Where the steps' images come from.
pub enum Source {
    /// Decoded once into the graph's data variable; steps feed indices.
    InGraph,
    /// Decoded from disk for every batch and fed (the data set is over the cache limit).
    Streamed { decoder: Decoder, paths: Vec<PathBuf>, labels: Vec<i32> },
}

impl Source {
    /// The examples at `idx` (train then val numbering).
    pub fn batch(&self, idx: &[i32]) -> Result<Batch> {
        match self {
            Source::InGraph => Batch::indices(idx),
            Source::Streamed { decoder, paths, labels } => {
                let files: Vec<&Path> = idx.iter().map(|&i| paths[i as usize].as_path()).collect();
                let l: Vec<i32> = idx.iter().map(|&i| labels[i as usize]).collect();
                Batch::fed(decoder.decode_files(&files)?, &l)
            }
        }
    }

    /// Logits (dropout off) of the examples at `idx`, `chunk` at a time.
    pub fn logits(&self, tg: &TrainGraph, session: &Session, idx: &[i32], chunk: usize) -> Result<Vec<Vec<f32>>> {
        let mut out = vec![];
        for part in idx.chunks(chunk.max(1)) {
            out.extend(tg.batch_logits(session, &self.batch(part)?)?);
        }
        Ok(out)
    }
}

/// Decoded images [N, S, S, 3] and their labels.
pub type Decoded = (Tensor<f32>, Vec<i32>);

/// The kept data set, and either its decoded images and labels (to load into the graph) or, when
/// they would take more than `cache_limit` bytes, a streaming source (every image decode-checked).
pub fn load_source(dataset: &Dataset, p: &Preprocess, skip_bad: bool, cache_limit: u64) -> Result<(Dataset, Option<Decoded>, Source)> {
    let total = (dataset.train.len() + dataset.val.len()) as u64;
    if total * decoded_bytes(p) <= cache_limit {
        let (kept, images, labels) = load_images(dataset, p, skip_bad)?;
        return Ok((kept, Some((images, labels)), Source::InGraph));
    }
    let decoder = Decoder::new(p)?;
    let all: Vec<&Path> = dataset.train.iter().chain(&dataset.val).map(|e| e.path.as_path()).collect();
    let bad = decoder.check(&all);
    let kept = keep_good(dataset, &bad, skip_bad)?;
    let paths = kept.train.iter().chain(&kept.val).map(|e| e.path.clone()).collect();
    let labels = kept.train.iter().chain(&kept.val).map(|e| e.label as i32).collect();
    Ok((kept, None, Source::Streamed { decoder, paths, labels }))
}
