//! The front of the pipeline for a folder of TFRecord shards, on tf.data's own ops: the shard list
//! (path, compression, first record number, records) -> ShuffleDataset of the files (training;
//! seeded by the run's seed) -> ShardDataset (a worker's shards; all of them by default) ->
//! ParallelInterleaveDatasetV4 over each shard's `TFRecordDataset` zipped with its record numbers
//! -> ParallelMapDatasetV2 `ParseExampleV2` -> (image bytes, label, index), the elements the
//! file list gives the decode step as (path, label, index).
//!
//! `TFRecordDataset` is the V1 op: in TF 2.21 a pipeline with `TFRecordDatasetV2` fails at
//! MakeIterator. When a record is corrupt (a bad CRC, a shard cut short) the op reports data loss
//! and moves to its next file; the IgnoreErrorsDataset inside each shard's dataset turns that
//! into the end of the shard, as the host's scan counted it. The record numbers (a RangeDataset
//! from the shard's first number) make each element's index, so a record the graph drops later
//! is named by shard and record. The interleave is deterministic: the same seed gives the same
//! order, and `--resume` refills the cache in the order the uninterrupted run did.

use anyhow::Result;
use tensorflow::{DataType, Output, Scope, Shape, Tensor, ops};

use super::functions::MapFn;
use super::raw::{In, Signature, add_function, arg, dataset_op, raw_op, raw_op_on};
use super::{AUTOTUNE, parallel_map};
use crate::data::images::Decoder;
use crate::data::records::Shard;

/// What the graph needs to read a folder of shards.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordsSpec {
    pub train: Vec<Shard>,
    pub val: Vec<Shard>,
    pub image_key: String,
    pub label_key: String,
    /// Added to a stored label to make it 0-based (-1 for the ImageNet layout).
    pub label_offset: i64,
    /// The seed of the training files' order.
    pub seed: u64,
    /// ShardDataset's `num_shards` and `index`: which of the (shuffled) shards this process reads.
    pub num_shards: i64,
    pub shard_index: i64,
}

/// Shards read at once per split: tf.data's default cycle is the core count; past a few, more
/// open files only cost memory on this kind of machine.
const CYCLE: usize = 8;

/// TFRecordDataset's read buffer (TensorFlow's default is 256 KB).
const READ_BUFFER: i64 = 256 << 10;

fn scalar() -> Shape {
    Shape::from(Some(vec![]))
}

/// The split's records as (image bytes, label, index) elements.
pub fn records_dataset(s: &mut Scope, device: &str, spec: &RecordsSpec, train: bool, parallel_calls: i64) -> Result<Output> {
    let shards = if train { &spec.train } else { &spec.val };
    let n = shards.len() as u64;
    let paths: Vec<String> = shards.iter().map(|sh| sh.path.to_string_lossy().into_owned()).collect();
    let compression: Vec<String> = shards.iter().map(|sh| sh.compression.tf_name().to_string()).collect();
    let first: Vec<i64> = shards.iter().map(|sh| sh.first as i64).collect();
    let count: Vec<i64> = shards.iter().map(|sh| sh.records as i64).collect();
    let list = vec![
        ops::constant(Tensor::<String>::new(&[n]).with_values(&paths)?, s)?.into(),
        ops::constant(Tensor::<String>::new(&[n]).with_values(&compression)?, s)?.into(),
        ops::constant(Tensor::<i64>::new(&[n]).with_values(&first)?, s)?.into(),
        ops::constant(Tensor::<i64>::new(&[n]).with_values(&count)?, s)?.into(),
    ];
    let files = Signature { types: vec![DataType::String, DataType::String, DataType::Int64, DataType::Int64], shapes: vec![scalar(); 4] };
    let mut ds = raw_op_on(s, device, "TensorSliceDataset", vec![In::List(list)], |nd| {
        nd.set_attr_type_list("Toutput_types", &files.types)?;
        nd.set_attr_shape_list("output_shapes", &files.shapes)?;
        Ok(())
    })?
    .output(0);
    if train {
        // The files' order, once per session: the cache keeps what the first epoch read, and
        // later epochs shuffle the cache. seed2 is never 0 (a (0, 0) pair draws a random seed).
        let buffer = ops::constant(n.max(1) as i64, s)?;
        let seed = ops::constant(spec.seed as i64, s)?;
        let seed2 = ops::constant(0x5EED_F11E_i64, s)?;
        ds = dataset_op(s, device, "ShuffleDataset", vec![In::One(ds), In::One(buffer.into()), In::One(seed.into()), In::One(seed2.into())], &files, |nd| {
            nd.set_attr_bool("reshuffle_each_iteration", false)?;
            Ok(())
        })?;
    }
    let num_shards = ops::constant(spec.num_shards, s)?;
    let index = ops::constant(spec.shard_index, s)?;
    ds = dataset_op(s, device, "ShardDataset", vec![In::One(ds), In::One(num_shards.into()), In::One(index.into())], &files, |nd| {
        nd.set_attr_bool("require_non_empty", false)?;
        Ok(())
    })?;
    let split = if train { "train" } else { "val" };
    let read = read_shard(&mut s.graph_mut(), &format!("alexnet_read_shard_{split}"))?;
    let cycle = ops::constant(shards.len().clamp(1, CYCLE) as i64, s)?;
    let block = ops::constant(1i64, s)?;
    let buffer_out = ops::constant(AUTOTUNE, s)?;
    let prefetch_in = ops::constant(AUTOTUNE, s)?;
    let calls = ops::constant(AUTOTUNE, s)?;
    let inputs = vec![
        In::One(ds),
        In::List(vec![]),
        In::One(cycle.into()),
        In::One(block.into()),
        In::One(buffer_out.into()),
        In::One(prefetch_in.into()),
        In::One(calls.into()),
    ];
    ds = dataset_op(s, device, "ParallelInterleaveDatasetV4", inputs, &read.output, |nd| {
        nd.set_attr_func_name("f", &read.name)?;
        nd.set_attr_type_list("Targuments", &[])?;
        nd.set_attr_string("deterministic", "true")?;
        Ok(())
    })?;
    let parse = parse_example(&mut s.graph_mut(), &format!("alexnet_parse_{split}"), spec)?;
    parallel_map(s, device, ds, &parse, vec![], parallel_calls)
}

/// (path, compression, first, count) -> the shard's (record, number) elements: TFRecordDataset
/// zipped with a RangeDataset of its numbers, its first read error taken as its end.
fn read_shard(graph: &mut tensorflow::Graph, name: &str) -> Result<MapFn> {
    let mut s = Scope::new_root_scope();
    let path = arg(&mut s, "path", DataType::String, Some(vec![]))?;
    let compression = arg(&mut s, "compression", DataType::String, Some(vec![]))?;
    let first = arg(&mut s, "first", DataType::Int64, Some(vec![]))?;
    let count = arg(&mut s, "count", DataType::Int64, Some(vec![]))?;
    let buffer = ops::constant(READ_BUFFER, &mut s)?;
    let records = raw_op(&mut s, "TFRecordDataset", vec![In::One(path.clone()), In::One(compression.clone()), In::One(buffer.into())], |_| Ok(()))?.output(0);
    let stop = ops::add(first.clone(), count.clone(), &mut s)?;
    let step = ops::constant(1i64, &mut s)?;
    let numbers_sig = Signature { types: vec![DataType::Int64], shapes: vec![scalar()] };
    let numbers = dataset_op(&mut s, "", "RangeDataset", vec![In::One(first.clone()), In::One(stop.into()), In::One(step.into())], &numbers_sig, |_| Ok(()))?;
    let sig = Signature { types: vec![DataType::String, DataType::Int64], shapes: vec![scalar(), scalar()] };
    let zipped = dataset_op(&mut s, "", "ZipDataset", vec![In::List(vec![records, numbers])], &sig, |nd| {
        nd.set_attr_int("N", 2)?;
        Ok(())
    })?;
    let ended = dataset_op(&mut s, "", "IgnoreErrorsDataset", vec![In::One(zipped)], &sig, |_| Ok(()))?;
    let name = add_function(graph, &s.graph(), name, &[path, compression, first, count], &[ended])?;
    Ok(MapFn { name, output: sig })
}

/// (record, number) -> (image bytes, label, index): ParseExampleV2 of the image and label keys
/// (both required: a record without one fails, and is dropped and named as an undecodable image
/// is), the label shifted to 0-based.
fn parse_example(graph: &mut tensorflow::Graph, name: &str, spec: &RecordsSpec) -> Result<MapFn> {
    let mut s = Scope::new_root_scope();
    let record = arg(&mut s, "record", DataType::String, Some(vec![]))?;
    let number = arg(&mut s, "number", DataType::Int64, Some(vec![]))?;
    let no_strings = || Tensor::<String>::new(&[0]);
    let names = ops::constant(no_strings(), &mut s)?;
    let sparse_keys = ops::constant(no_strings(), &mut s)?;
    let ragged_keys = ops::constant(no_strings(), &mut s)?;
    let dense_keys = ops::constant(Tensor::<String>::new(&[2]).with_values(&[spec.image_key.clone(), spec.label_key.clone()])?, &mut s)?;
    // An empty default makes a key required.
    let image_default = ops::constant(no_strings(), &mut s)?;
    let label_default = ops::constant(Tensor::<i64>::new(&[0]), &mut s)?;
    let inputs = vec![
        In::One(record.clone()),
        In::One(names.into()),
        In::One(sparse_keys.into()),
        In::One(dense_keys.into()),
        In::One(ragged_keys.into()),
        In::List(vec![image_default.into(), label_default.into()]),
    ];
    let parsed = raw_op(&mut s, "ParseExampleV2", inputs, |nd| {
        nd.set_attr_type_list("Tdense", &[DataType::String, DataType::Int64])?;
        nd.set_attr_int("num_sparse", 0)?;
        nd.set_attr_type_list("sparse_types", &[])?;
        nd.set_attr_type_list("ragged_value_types", &[])?;
        nd.set_attr_type_list("ragged_split_types", &[])?;
        nd.set_attr_shape_list("dense_shapes", &[scalar(), scalar()])?;
        Ok(())
    })?;
    // With no sparse or ragged keys, the dense values are the op's first outputs.
    let image: Output = ops::identity(parsed.output(0), &mut s)?.into();
    let shifted = ops::add(parsed.output(1), ops::constant(spec.label_offset, &mut s)?, &mut s)?;
    let label: Output = ops::Cast::new().DstT(DataType::Int32).build(shifted, &mut s)?.into();
    let index: Output = ops::Cast::new().DstT(DataType::Int32).build(number.clone(), &mut s)?.into();
    let name = add_function(graph, &s.graph(), name, &[record, number], &[image, label, index])?;
    Ok(MapFn { name, output: Signature::string_label_index() })
}

/// The images of the examples at `idx` (train then val numbering), read from their shards on
/// the host and decoded as files are: TensorBoard's example image.
pub fn decode_records(decoder: &Decoder, spec: &RecordsSpec, idx: &[i32]) -> Result<Tensor<f32>> {
    let n_train: u64 = spec.train.iter().map(|s| s.records).sum();
    let dir = tempfile::tempdir()?;
    let mut files = vec![];
    for (k, &i) in idx.iter().enumerate() {
        let (shards, number) = if (i as u64) < n_train { (&spec.train, i as u64) } else { (&spec.val, i as u64 - n_train) };
        let bytes = crate::data::records::image_of(shards, number, &spec.image_key)?;
        let file = dir.path().join(format!("{k}"));
        std::fs::write(&file, bytes)?;
        files.push(file);
    }
    let paths: Vec<&std::path::Path> = files.iter().map(|f| f.as_path()).collect();
    decoder.decode_files(&paths)
}
