//! Where the training steps' images come from: the decoded data set in the graph's data
//! variable (the Swift recipe's full batch), the tf.data pipeline in the graph (minibatches,
//! augmentation, large folders), or, on a cluster over the cache limit, batches decoded from disk
//! and fed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tensorflow::{Session, Tensor};

use crate::data::decoded::{decoded_bytes, keep_good, load_images};
use crate::data::images::{Dataset, Decoder, Preprocess};
use crate::data::pipeline::check::{all_jpeg, quick_check};
use crate::data::pipeline::functions::SHORT_SIDE;
use crate::data::pipeline::records::RecordsSpec;
use crate::data::pipeline::{AUTOTUNE, Augment, Examples, PipelineSpec};
use crate::data::records::RecordSet;
use crate::graph::model::{ModelConfig, output_shapes};
use crate::run::config::TrainConfig;
use crate::train::feeds::Batch;
use crate::train::graph::TrainGraph;
use crate::util::rng::Rng;

/// Where the steps' images come from.
pub enum Source {
    /// Decoded once into the graph's data variable; steps feed indices.
    InGraph,
    /// Decoded from disk for every batch and fed (the data set is over the cache limit).
    Streamed { decoder: Decoder, paths: Vec<PathBuf>, labels: Vec<i32> },
    /// The tf.data pipeline in the training graph (see [`crate::data::pipeline`]); `decoder`,
    /// `paths` and `labels` (train then val) serve TensorBoard's one example image.
    Pipeline { spec: Box<PipelineSpec>, decoder: Decoder, paths: Vec<PathBuf>, labels: Vec<i32>, bad_log: PathBuf },
}

impl Source {
    /// The examples at `idx` (train then val numbering).
    pub fn batch(&self, idx: &[i32]) -> Result<Batch> {
        match self {
            Source::InGraph => Batch::indices(idx),
            Source::Pipeline { spec, decoder, labels, .. } if spec.records.is_some() => {
                let records = spec.records.as_ref().expect("records");
                let l: Vec<i32> = idx.iter().map(|&i| labels[i as usize]).collect();
                Batch::fed(crate::data::pipeline::records::decode_records(decoder, records, idx)?, &l)
            }
            Source::Streamed { decoder, paths, labels } | Source::Pipeline { decoder, paths, labels, .. } => {
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

    /// Logits and labels of the validation examples `val_idx` (labelled `val_labels`): through
    /// the pipeline's val split when there is one (without the files that failed to decode).
    pub fn val_scores(&self, tg: &TrainGraph, session: &Session, val_idx: &[i32], val_labels: &[usize], chunk: usize) -> Result<(Vec<Vec<f32>>, Vec<usize>)> {
        match (self, tg.pipeline()) {
            (Source::Pipeline { .. }, Some(p)) => tg.pipeline_logits(session, p),
            _ => Ok((self.logits(tg, session, val_idx, chunk)?, val_labels.to_vec())),
        }
    }

    pub fn pipeline_spec(&self) -> Option<&PipelineSpec> {
        match self {
            Source::Pipeline { spec, .. } => Some(spec),
            _ => None,
        }
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

/// Bytes of a training step's activations and gradients per image, with room for the
/// kernels' workspaces: (input + every layer's output) x 4 bytes x 4.
pub fn step_bytes_per_image(model: &ModelConfig) -> u64 {
    let values: usize = output_shapes(model).iter().map(|(_, s)| s.iter().product::<usize>()).sum::<usize>() + model.input_size * model.input_size * 3;
    values as u64 * 16
}

/// The machine's RAM (MemTotal), or 4 GiB where /proc/meminfo can't say.
fn total_memory() -> u64 {
    crate::graph::runtime::machine_memory().unwrap_or(4 << 30)
}

/// Minibatches when the run asked for the whole set as one batch but its step would take more
/// than half the machine's memory: the batch to use, and the line that says so. A set the size of
/// the Swift original's (up to `FULL_BATCH_ALWAYS` images) always keeps its full batch, so its
/// numbers do not depend on the machine.
pub fn minibatch_default(cfg: &TrainConfig, n_train: usize) -> Option<(usize, String)> {
    let need = n_train as u64 * step_bytes_per_image(&cfg.model);
    (cfg.batch_size == 0 && n_train > FULL_BATCH_ALWAYS && need > total_memory() / 2).then(|| {
        (
            DEFAULT_MINIBATCH,
            format!(
                "batch: {n_train} training images are too many for one full batch (about {} GiB of activations); training in minibatches of {DEFAULT_MINIBATCH} (--batch-size to choose)",
                need >> 30
            ),
        )
    })
}

/// Training sets up to this size keep the full batch whatever the machine.
pub const FULL_BATCH_ALWAYS: usize = 128;

/// The batch a large folder gets when none is given.
pub const DEFAULT_MINIBATCH: usize = 64;

/// Whether the run trains from the tf.data pipeline: minibatches or augmentation (alone or on a
/// cluster). A full batch (the Swift recipe) keeps the decoded variable and its numbers (over the
/// cache limit: batches decoded from disk, as before); a folder too large for a full batch gets
/// minibatches by default ([`minibatch_default`]), so the pipeline.
pub fn wants_pipeline(cfg: &TrainConfig, n_train: usize) -> bool {
    let minibatch = cfg.batch_size > 0 && cfg.batch_size < n_train;
    // Shards are only read by the pipeline's own ops.
    let records = crate::data::records::scanned() || matches!(crate::data::records::detect(&cfg.images, None), Ok(Some(_)));
    cfg.augment != Augment::None || minibatch || records
}

/// On a cluster of `workers` training from the pipeline: refuses a batch size that leaves a
/// worker an empty part (the last partial batch included), which the decoded variable's steps
/// refuse when they meet it.
pub fn check_parts(cfg: &TrainConfig, n_train: usize, workers: usize) -> Result<()> {
    let batch = if cfg.batch_size == 0 { n_train } else { cfg.batch_size.min(n_train) };
    let last = if cfg.drop_remainder { batch } else { n_train % batch };
    for size in [batch, last] {
        anyhow::ensure!(
            size == 0 || size >= workers,
            "a batch of {size} examples cannot be split across {workers} workers: use a larger --batch-size{}",
            if size == batch { "" } else { " (or --drop-remainder: this is each epoch's last batch)" }
        );
    }
    Ok(())
}

/// The pipeline source: every file's header and end checked (or, `--strict-images`, decoded),
/// bad ones refused or (`--skip-bad-images`) left out and written to `bad-images.txt`.
pub fn load_pipeline(dataset: &Dataset, cfg: &TrainConfig, run_dir: &Path) -> Result<(Dataset, Source)> {
    let p = &cfg.preprocess;
    let decoder = Decoder::new(p)?;
    let bad_log = run_dir.join(BAD_IMAGES);
    let (kept, records) = match &dataset.records {
        Some(set) => (dataset.clone(), Some(records_spec(set, cfg, &bad_log)?)),
        None => (kept_files(dataset, cfg, &decoder, &bad_log)?, None),
    };
    let examples = |list: &[crate::data::images::Example]| -> Result<Examples> {
        let paths = list
            .iter()
            .map(|e| e.path.to_str().map(String::from).with_context(|| format!("path {} is not valid UTF-8", e.path.display())))
            .collect::<Result<_>>()?;
        Ok(Examples { paths, labels: list.iter().map(|e| e.label as i32).collect() })
    };
    let cache_dir = (cache_bytes(&kept, cfg) > cfg.cache_limit).then(|| run_dir.join("input-cache"));
    if let Some(dir) = &cache_dir {
        // A cache file left by an interrupted run is incomplete: TensorFlow refuses to reuse it.
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let batch = if cfg.batch_size == 0 { kept.train.len() } else { cfg.batch_size.min(kept.train.len()) };
    let train = examples(&kept.train)?;
    let jpeg_only = cfg.augment.caches_encoded() && kept.records.as_ref().map_or_else(|| all_jpeg(&train.paths), |r| r.all_jpeg);
    let spec = PipelineSpec {
        train,
        val: examples(&kept.val)?,
        preprocess: p.clone(),
        augment: cfg.augment,
        batch,
        eval_batch: batch.clamp(60, 256),
        drop_remainder: cfg.drop_remainder,
        shuffle_buffer: SHUFFLE_BUFFER,
        cache_dir,
        parallel_calls: AUTOTUNE,
        jpeg_only,
        device: String::new(),
        cut: false,
        records,
    };
    let paths = kept.train.iter().chain(&kept.val).map(|e| e.path.clone()).collect();
    let labels = kept.train.iter().chain(&kept.val).map(|e| e.label as i32).collect();
    Ok((kept, Source::Pipeline { spec: Box::new(spec), decoder, paths, labels, bad_log }))
}

/// An image folder's files after the up-front check (or, `--strict-images`, a full decode), in
/// the seeded order the pipeline's cache fills in.
fn kept_files(dataset: &Dataset, cfg: &TrainConfig, decoder: &Decoder, bad_log: &Path) -> Result<Dataset> {
    let all: Vec<&Path> = dataset.train.iter().chain(&dataset.val).map(|e| e.path.as_path()).collect();
    let bad = if cfg.strict_images { decoder.check(&all) } else { quick_check(&all) };
    let mut kept = keep_good(dataset, &bad, cfg.skip_bad_images)?;
    // The cache fills in this order and the first epoch reads it as it fills (unshuffled after
    // the cache, see data::pipeline): a seeded permutation of the files, so the first batch
    // waits for one batch of decodes, not for a full shuffle buffer of them.
    Rng::new(cfg.seed, FILE_ORDER_STREAM).shuffle(&mut kept.train);
    append_bad(bad_log, &bad.iter().map(|b| b.to_string()).collect::<Vec<_>>())?;
    Ok(kept)
}

/// A folder of shards for the pipeline: its corrupt records named (refused with
/// `--strict-images`, else skipped and listed in bad-images.txt); the files' order is the
/// pipeline's own seeded shuffle of the shards, so the examples keep the shards' numbering.
fn records_spec(set: &RecordSet, cfg: &TrainConfig, bad_log: &Path) -> Result<RecordsSpec> {
    eprintln!("records: {}", set.describe());
    crate::data::records::options::save(bad_log.parent().unwrap_or(Path::new(".")), &set.options)?;
    if !set.corrupt.is_empty() {
        let list: String = set.corrupt.iter().map(|l| format!("\n  {l}")).collect();
        anyhow::ensure!(
            !cfg.strict_images,
            "{} shards stop at a corrupt record:{list}\nrepair or remove them, or train without --strict-images to skip those records",
            set.corrupt.len()
        );
        eprintln!("warning: {} shards stop at a corrupt record; skipping the records from there:{list}", set.corrupt.len());
        append_bad(bad_log, &set.corrupt)?;
    }
    Ok(RecordsSpec {
        train: set.train.clone(),
        val: set.val.clone(),
        image_key: set.image_key.clone(),
        label_key: set.label_key.clone(),
        label_offset: set.label_offset,
        seed: cfg.seed,
        num_shards: 1,
        shard_index: 0,
    })
}

/// Decoded images the shuffle buffer holds: the whole split up to this many; a larger split is
/// shuffled within a window of this many (tf.data's own trade of memory for randomness).
pub const SHUFFLE_BUFFER: usize = 4096;

/// The random stream of the training files' order in the pipeline's cache.
const FILE_ORDER_STREAM: u64 = 0x0F11_E0DE;

/// The run directory's list of images that could not be used.
pub const BAD_IMAGES: &str = "bad-images.txt";

/// Bytes of one image in the pipeline's uint8 cache (a 4:3 photo at short side 256 when
/// augmenting).
pub fn cached_bytes(cfg: &TrainConfig) -> u64 {
    match cfg.augment {
        Augment::None => (cfg.preprocess.size * cfg.preprocess.size * 3) as u64,
        Augment::CropFlip | Augment::RandomResizedCrop => (SHORT_SIDE as u64) * (SHORT_SIDE as u64 * 4 / 3) * 3,
    }
}

/// Bytes the pipeline's caches take: decoded images, or (random-resized-crop's training split)
/// the files themselves.
fn cache_bytes(kept: &Dataset, cfg: &TrainConfig) -> u64 {
    let decoded = |n: usize| n as u64 * cached_bytes(cfg);
    if let (true, Some(r)) = (cfg.augment.caches_encoded(), &kept.records) {
        return r.train_image_bytes + decoded(kept.val.len());
    }
    if cfg.augment.caches_encoded() {
        let files: u64 = kept.train.iter().map(|e| std::fs::metadata(&e.path).map(|m| m.len()).unwrap_or(0)).sum();
        files + decoded(kept.val.len())
    } else {
        decoded(kept.train.len() + kept.val.len())
    }
}

/// Appends `lines` to the run's bad-images.txt.
pub fn append_bad(path: &Path, lines: &[String]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("cannot write {}", path.display()))?;
    for l in lines {
        writeln!(f, "{l}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_folders_get_minibatches_by_default() {
        let cfg = TrainConfig::swift_recipe("images".into(), None, vec!["cat".into(), "dog".into()]);
        assert!(minibatch_default(&cfg, 60).is_none(), "the Swift set keeps its full batch");
        let (batch, line) = minibatch_default(&cfg, 1_000_000).unwrap();
        assert_eq!(batch, DEFAULT_MINIBATCH);
        assert!(line.contains("1000000 training images are too many for one full batch"), "{line}");
        assert!(minibatch_default(&TrainConfig { batch_size: 32, ..cfg }, 1_000_000).is_none(), "a batch given is kept");
    }

    #[test]
    fn cluster_parts_are_never_empty() {
        let cfg = TrainConfig { batch_size: 12, ..TrainConfig::swift_recipe("images".into(), None, vec!["cat".into(), "dog".into()]) };
        assert!(check_parts(&cfg, 24, 2).is_ok());
        let e = check_parts(&cfg, 25, 2).unwrap_err().to_string();
        assert!(e.contains("a batch of 1 examples cannot be split across 2 workers") && e.contains("--drop-remainder"), "{e}");
        assert!(check_parts(&TrainConfig { drop_remainder: true, ..cfg.clone() }, 25, 2).is_ok());
        let e = check_parts(&cfg, 24, 13).unwrap_err().to_string();
        assert!(e.contains("a batch of 12 examples cannot be split across 13 workers: use a larger --batch-size"), "{e}");
    }
}
