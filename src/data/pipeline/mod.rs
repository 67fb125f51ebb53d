//! The input pipeline on tf.data's own dataset ops, built from raw ops into the training graph.
//!
//! Once per session, each split's files become a cached dataset of decoded uint8 images:
//! TensorSliceDataset of (path, label, index) -> ParallelMapDatasetV2 (`decode`) ->
//! IgnoreErrorsDataset -> CacheDatasetV2 (in memory, or a file past the cache limit). That dataset is
//! held in a variant resource variable, so every later epoch reads the same dataset object and its
//! cache instead of the JPEGs. Each epoch then re-makes the one iterator from: the held dataset
//! -> ShuffleDataset (seeds fed: run seed and epoch; in the first epoch a buffer of one, as the
//! files come in a seeded order and the cache fills as it is read) -> ParallelMapDatasetV2 (`finish`: crop, flip,
//! float, mean, BGR) -> BatchDatasetV2 -> PrefetchDataset (autotuned) -> ModelDataset; the
//! training step takes `IteratorGetNext`'s outputs directly, so no image crosses the C API per
//! step. Validation re-makes the same iterator from the val split (centre crop, no shuffle).
//!
//! With `random-resized-crop`, the training split's cache holds the files' encoded bytes instead
//! (ReadFile's output), and its `finish` decodes each epoch's random window of them
//! (`resized_crop`), then IgnoreErrorsDataset drops what fails to decode; its val split is
//! crop-flip's.
//!
//! Each element carries its example's index: a file that fails to decode is dropped by
//! IgnoreErrorsDataset, and the indices missing from an epoch name it.
//!
//! On a cluster every worker builds the same pipeline on its own CPU and its steps take their
//! part of each batch ([`cut`]).

pub mod check;
pub mod cut;
pub mod functions;
pub mod raw;
pub mod records;
pub mod resized_crop;

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tensorflow::{DataType, Operation, Output, Scope, Session, SessionRunArgs, Shape, Tensor, ops};

pub use self::cut::Cut;
use self::raw::{In, Signature, dataset_op, raw_op_on};
use crate::data::images::Preprocess;

/// tf.data's AUTOTUNE: parallelism and buffer sizes tuned at run time.
pub const AUTOTUNE: i64 = -1;

/// Data augmentation of the training images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Augment {
    /// The Swift recipe: the whole image resized to 227 x 227.
    #[default]
    None,
    /// The AlexNet paper's: short side 256, a random 227 x 227 crop, a random left-right flip
    /// (evaluation takes the centre crop).
    CropFlip,
    /// Inception's: a random window of 8-100% of the image's area and aspect ratio 3/4 to 4/3,
    /// resized to 227 x 227, a random left-right flip; only the window of a JPEG is decoded, so
    /// the training cache holds the files' bytes. Evaluation takes crop-flip's centre crop.
    RandomResizedCrop,
}

impl Augment {
    /// Whether the training split is cached as the files' encoded bytes, decoded every epoch.
    pub fn caches_encoded(self) -> bool {
        self == Augment::RandomResizedCrop
    }

    /// The name the `--augment` flag takes.
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self).map(|v| v.get_name().to_string()).unwrap_or_default()
    }
}

/// One split's examples, in the run's numbering.
#[derive(Clone, Debug, Default)]
pub struct Examples {
    pub paths: Vec<String>,
    pub labels: Vec<i32>,
}

/// What to build.
#[derive(Clone, Debug)]
pub struct PipelineSpec {
    pub train: Examples,
    pub val: Examples,
    pub preprocess: Preprocess,
    pub augment: Augment,
    pub batch: usize,
    pub eval_batch: usize,
    pub drop_remainder: bool,
    /// Elements of the shuffle buffer (the whole split when it is smaller).
    pub shuffle_buffer: usize,
    /// None: cache in memory; Some(dir): cache files in `dir` (past the cache limit).
    pub cache_dir: Option<PathBuf>,
    /// Parallel decodes (AUTOTUNE: tuned).
    pub parallel_calls: i64,
    /// Every training file is a JPEG ([`check::all_jpeg`]): random-resized-crop decodes only its
    /// window; otherwise each image is decoded whole and the window sliced out.
    pub jpeg_only: bool,
    /// Where the pipeline's ops run ("": wherever TensorFlow places them; on a cluster, a
    /// worker's CPU).
    pub device: String,
    /// On a cluster: the steps take a part of every batch (see [`Cut`]).
    pub cut: bool,
    /// A folder of TFRecord shards instead of image files ([`records`]; `train` and `val` then
    /// name the records).
    pub records: Option<records::RecordsSpec>,
}

/// The pipeline's handles in the training graph.
#[derive(Clone)]
pub struct Pipeline {
    /// Images [N, S, S, 3] float, labels [N], indices [N] of the next batch (on a cluster, of
    /// the part [`Cut`] takes of it).
    pub next: Vec<Output>,
    /// On a cluster: which part of each batch `next` holds.
    pub cut: Option<Cut>,
    make_train: Operation,
    make_val: Operation,
    run_seed: Output,
    epoch: Output,
    hold: Vec<Operation>,
}

impl Pipeline {
    /// Adds the pipeline to the graph of `scope`.
    pub fn build(scope: &mut Scope, spec: &PipelineSpec) -> Result<Pipeline> {
        let device = spec.device.as_str();
        let s = &mut scope.new_sub_scope("input").with_device(device);
        let run_seed: Output = ops::Placeholder::new().dtype(DataType::Int64).shape(Shape::from(Some(vec![]))).build(&mut s.with_op_name("run_seed"))?.into();
        let epoch: Output = ops::Placeholder::new().dtype(DataType::Int64).shape(Shape::from(Some(vec![]))).build(&mut s.with_op_name("epoch"))?.into();
        let (train_held, hold_train) = cached(&mut s.new_sub_scope("train_cache"), spec, &spec.train, true)?;
        let (val_held, hold_val) = cached(&mut s.new_sub_scope("val_cache"), spec, &spec.val, false)?;
        let train = per_epoch(&mut s.new_sub_scope("train"), spec, train_held, &run_seed, &epoch, true)?;
        let val = per_epoch(&mut s.new_sub_scope("val"), spec, val_held, &run_seed, &epoch, false)?;
        let sig = signature_of_batches(spec);
        let iterator = raw_op_on(s, device, "IteratorV2", vec![], |nd| {
            nd.set_attr_string("shared_name", "")?;
            nd.set_attr_string("container", "")?;
            nd.set_attr_type_list("output_types", &sig.types)?;
            nd.set_attr_shape_list("output_shapes", &sig.shapes)?;
            Ok(())
        })?
        .output(0);
        let make = |s: &mut Scope, ds: Output| raw_op_on(s, device, "MakeIterator", vec![In::One(ds), In::One(iterator.clone())], |_| Ok(()));
        let make_train = make(s, train)?;
        let make_val = make(s, val)?;
        let get_next = raw_op_on(&mut s.with_op_name("next"), device, "IteratorGetNext", vec![In::One(iterator.clone())], |nd| {
            nd.set_attr_type_list("output_types", &sig.types)?;
            nd.set_attr_shape_list("output_shapes", &sig.shapes)?;
            Ok(())
        })?;
        let mut next: Vec<Output> = (0..3).map(|i| get_next.output(i)).collect();
        let cut = if spec.cut {
            let (part, cut) = Cut::build(&mut s.new_sub_scope("part"), device, &next)?;
            next = part;
            Some(cut)
        } else {
            None
        };
        Ok(Pipeline { next, cut, make_train, make_val, run_seed, epoch, hold: vec![hold_train, hold_val] })
    }

    /// Once per session: creates the cached datasets (empty until the first epoch reads them).
    pub fn hold(&self, session: &Session) -> Result<()> {
        let mut args = SessionRunArgs::new();
        for op in &self.hold {
            args.add_target(op);
        }
        session.run(&mut args).context("cannot create the input pipeline's datasets")
    }

    /// Points the iterator at epoch `epoch` of the training split (its shuffle and crops).
    pub fn start_train(&self, session: &Session, run_seed: u64, epoch: usize) -> Result<()> {
        self.start(session, &self.make_train, run_seed, epoch)
    }

    /// Pulls the next batch and drops it (a resumed worker catching up with the run's step);
    /// false when the split's batches are done.
    pub fn skip(&self, session: &Session) -> Result<bool> {
        let mut args = SessionRunArgs::new();
        args.request_fetch(&self.next[2].operation, self.next[2].index);
        match session.run(&mut args) {
            Err(e) if is_end_of_data(&e) => Ok(false),
            r => r.map(|_| true).context("cannot read the input pipeline"),
        }
    }

    /// Points the iterator at the validation split.
    pub fn start_val(&self, session: &Session) -> Result<()> {
        self.start(session, &self.make_val, 0, 0)
    }

    fn start(&self, session: &Session, make: &Operation, run_seed: u64, epoch: usize) -> Result<()> {
        let seed = Tensor::from(run_seed as i64);
        let epoch = Tensor::from(epoch as i64);
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.run_seed.operation, self.run_seed.index, &seed);
        args.add_feed(&self.epoch.operation, self.epoch.index, &epoch);
        args.add_target(make);
        session.run(&mut args).context("cannot start the input pipeline")
    }
}

/// True when a session run failed because the iterator reached the end of its split.
pub fn is_end_of_data(e: &tensorflow::Status) -> bool {
    e.code() == tensorflow::Code::OutOfRange
}

/// The batches' signature: float images [N, S, S, 3], labels [N], indices [N].
fn signature_of_batches(spec: &PipelineSpec) -> Signature {
    let side = Some(spec.preprocess.size as i64);
    let scalar = Shape::from(Some(vec![]));
    Signature {
        types: vec![DataType::Float, DataType::Int32, DataType::Int32],
        shapes: vec![Shape::from(Some(vec![side, side, Some(3)])), scalar.clone(), scalar],
    }
    .batched()
}

/// A split's decoded (or, random-resized-crop's training split, read), cached dataset in a
/// variant variable: its read, and the op that fills the variable.
fn cached(s: &mut Scope, spec: &PipelineSpec, examples: &Examples, train: bool) -> Result<(Output, Operation)> {
    let split = if train { "train" } else { "val" };
    let d = spec.device.as_str();
    let encoded = train && spec.augment.caches_encoded();
    // Records come as (image bytes, label, index), files as (path, label, index).
    let (elements, from_bytes) = match &spec.records {
        Some(r) => (records::records_dataset(s, d, r, train, spec.parallel_calls)?, true),
        None => (file_list(s, d, examples)?, false),
    };
    let (decoded, sig) = match (encoded, from_bytes) {
        // random-resized-crop's training cache holds the encoded bytes: a record already is them.
        (true, true) => (elements, Signature::string_label_index()),
        (true, false) => {
            let read = resized_crop::read(&mut s.graph_mut(), &format!("alexnet_read_{split}"))?;
            (parallel_map(s, d, elements, &read, vec![], spec.parallel_calls)?, read.output)
        }
        (false, _) => {
            let decode = functions::decode(&mut s.graph_mut(), &format!("alexnet_decode_{split}"), &spec.preprocess, spec.augment, from_bytes)?;
            (parallel_map(s, d, elements, &decode, vec![], spec.parallel_calls)?, decode.output)
        }
    };
    let good = dataset_op(s, d, "IgnoreErrorsDataset", vec![In::One(decoded)], &sig, |_| Ok(()))?;
    let file = match &spec.cache_dir {
        None => String::new(),
        Some(dir) => dir.join(split).to_str().context("the cache folder's path is not valid UTF-8")?.to_string(),
    };
    let file = ops::constant(Tensor::<String>::from(file), s)?;
    // MakeIterator rebuilds a dataset from its graph when it applies tf.data's optimisations: a
    // CacheDataset (v1) would come back with a new, empty memory cache every epoch. CacheDatasetV2
    // finds its cache by the handle, in the session's resources, which live as long as the
    // AnonymousMemoryCache's deleter: that is held in a variable beside the dataset.
    let memory = raw_op_on(s, d, "AnonymousMemoryCache", vec![], |_| Ok(()))?;
    let cache = dataset_op(s, d, "CacheDatasetV2", vec![In::One(good), In::One(file.into()), In::One(memory.output(0))], &sig, |_| Ok(()))?;
    let keep = variant_variable(s, &format!("alexnet_{split}_cache"))?;
    let keep_cache = ops::AssignVariableOp::new().dtype(DataType::Variant).build(keep, memory.output(1), s)?;
    let var = variant_variable(s, &format!("alexnet_{split}_dataset"))?;
    let hold = ops::AssignVariableOp::new().dtype(DataType::Variant).add_control_input(keep_cache).build(var.clone(), cache, s)?;
    let held = ops::ReadVariableOp::new().dtype(DataType::Variant).build(var, s)?;
    Ok((held.into(), hold))
}

/// The split's files as (path, label, index) elements.
fn file_list(s: &mut Scope, d: &str, examples: &Examples) -> Result<Output> {
    let n = examples.paths.len();
    let paths = ops::constant(Tensor::<String>::new(&[n as u64]).with_values(&examples.paths)?, s)?;
    let labels = ops::constant(Tensor::<i32>::new(&[n as u64]).with_values(&examples.labels)?, s)?;
    let index: Vec<i32> = (0..n as i32).collect();
    let index = ops::constant(Tensor::<i32>::new(&[n as u64]).with_values(&index)?, s)?;
    let sig = Signature::string_label_index();
    // TensorSliceDataset names its types Toutput_types.
    let slices = raw_op_on(s, d, "TensorSliceDataset", vec![In::List(vec![paths.into(), labels.into(), index.into()])], |nd| {
        nd.set_attr_type_list("Toutput_types", &sig.types)?;
        nd.set_attr_shape_list("output_shapes", &sig.shapes)?;
        Ok(())
    })?
    .output(0);
    Ok(slices)
}

/// A resource variable holding one variant (a dataset, a resource's deleter).
fn variant_variable(s: &mut Scope, name: &str) -> Result<Output> {
    Ok(ops::VarHandleOp::new().dtype(DataType::Variant).shape(Shape::from(Some(vec![]))).shared_name(name).build(s)?.into())
}

/// A split's batches for one pass: shuffled (training), finished, batched, prefetched.
fn per_epoch(s: &mut Scope, spec: &PipelineSpec, held: Output, run_seed: &Output, epoch: &Output, train: bool) -> Result<Output> {
    let split = if train { "train" } else { "val" };
    let encoded = train && spec.augment.caches_encoded();
    let cached_sig = if encoded { Signature::string_label_index() } else { functions::decode_signature(spec.augment, spec.preprocess.size as i64) };
    let d = spec.device.as_str();
    let mut ds = held;
    if train {
        // The first epoch reads the cache as it fills, in the files' own (seeded) order: a
        // shuffle buffer there would wait for that many decodes before the first batch. Later
        // epochs shuffle the cached images.
        let full = ops::constant(spec.shuffle_buffer.min(spec.train.paths.len()).max(1) as i64, s)?;
        let after_first = ops::minimum(epoch.clone(), ops::constant(1i64, s)?, s)?;
        let buffer = ops::maximum(ops::mul(full, after_first, s)?, ops::constant(1i64, s)?, s)?;
        // seed2 is never 0: a (0, 0) pair would make ShuffleDataset draw a random seed.
        let seed2 = ops::add(epoch.clone(), ops::constant(1_000_000i64, s)?, s)?;
        ds = dataset_op(
            s,
            d,
            "ShuffleDataset",
            vec![In::One(ds), In::One(buffer.into()), In::One(run_seed.clone()), In::One(seed2.into())],
            &cached_sig,
            |nd| {
                nd.set_attr_bool("reshuffle_each_iteration", false)?;
                Ok(())
            },
        )?;
    }
    let name = format!("alexnet_finish_{split}");
    let finish = if encoded {
        resized_crop::crop(&mut s.graph_mut(), &name, &spec.preprocess, spec.jpeg_only)?
    } else {
        functions::finish(&mut s.graph_mut(), &name, &spec.preprocess, spec.augment, train)?
    };
    ds = parallel_map(s, d, ds, &finish, vec![run_seed.clone(), epoch.clone()], spec.parallel_calls)?;
    if encoded {
        // Decoding happens here, every epoch: a file that fails is dropped, and named by the
        // driver from the indices missing.
        ds = dataset_op(s, d, "IgnoreErrorsDataset", vec![In::One(ds)], &finish.output, |_| Ok(()))?;
    }
    let batch = ops::constant(if train { spec.batch } else { spec.eval_batch } as i64, s)?;
    let drop = ops::constant(train && spec.drop_remainder, s)?;
    let sig = finish.output.batched();
    // Elements copied into the batch in parallel, as tf.data's `parallel_batch` rewrite sets for
    // Python: copying 64 float images into a batch one after the other halved the cached
    // pipeline's rate on 2 cores (and Python's, with that rewrite and map_and_batch_fusion off).
    ds = dataset_op(s, d, "BatchDatasetV2", vec![In::One(ds), In::One(batch.into()), In::One(drop.into())], &sig, |nd| {
        nd.set_attr_bool("parallel_copy", true)?;
        Ok(())
    })?;
    let prefetch = ops::constant(AUTOTUNE, s)?;
    ds = dataset_op(s, d, "PrefetchDataset", vec![In::One(ds), In::One(prefetch.into())], &sig, |_| Ok(()))?;
    // What tf.data's Python front end adds when iterating: the autotuner's model.
    dataset_op(s, d, "ModelDataset", vec![In::One(ds)], &sig, |_| Ok(()))
}

/// ParallelMapDatasetV2 of `f` over `input`, with `captured` as its extra arguments; outputs
/// in input order (deterministic), parallelism `calls`.
fn parallel_map(s: &mut Scope, device: &str, input: Output, f: &functions::MapFn, captured: Vec<Output>, calls: i64) -> Result<Output> {
    let calls = ops::constant(calls, s)?;
    let captured_types: Vec<DataType> = captured.iter().map(|_| DataType::Int64).collect();
    dataset_op(s, device, "ParallelMapDatasetV2", vec![In::One(input), In::List(captured), In::One(calls.into())], &f.output, |nd| {
        nd.set_attr_func_name("f", &f.name)?;
        nd.set_attr_type_list("Targuments", &captured_types)?;
        nd.set_attr_bool("use_inter_op_parallelism", true)?;
        nd.set_attr_string("deterministic", "true")?;
        nd.set_attr_bool("preserve_cardinality", true)?;
        Ok(())
    })
}
