//! `alexnet export`: a trained run as a TensorFlow SavedModel (tag `serve`) for TensorFlow
//! Serving, Python's `tf.saved_model.load` and the Rust crate's `SavedModelBundle`.
//!
//! The folder is what TF1's SavedModelBuilder writes: `saved_model.pb` (one MetaGraphDef: the
//! [`InferenceGraph`], a SaverDef, two signatures) and
//! `variables/variables.{index,data-00000-of-00001}` (written by a SaveV2 op, keyed by variable
//! name). The MetaGraphDef is assembled here from [`crate::proto`] rather than by the crate's
//! SavedModelBuilder, whose output Python TensorFlow 2 cannot load (no save_tensor_name,
//! nameless VariableDefs). It is written into a temporary sibling folder that is renamed into
//! place when complete, so a failed export leaves nothing behind.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use prost::Message;
use tensorflow::{DataType, Operation, Output, Scope, Session, SessionOptions, SessionRunArgs, Shape, Tensor, Variable, ops};

use crate::graph::params;
use crate::proto::tensorflow::{TensorInfo, TensorShapeProto, meta_graph_def::MetaInfoDef, saver_def::CheckpointFormatVersion, tensor_info::Encoding};
use crate::proto::{self, tensorflow as tf};
use crate::run::trained;
use crate::serve::inference::{self, InferenceGraph};
use crate::util::fsutil;

pub const SERVE_TAG: &str = "serve";
/// Encoded image bytes in, probabilities, class ids and names out.
pub const SERVING_SIGNATURE: &str = "serving_default";
/// Preprocessed float tensors in, probabilities and logits out.
pub const TENSOR_SIGNATURE: &str = "predict_tensor";

/// What an export wrote.
#[derive(Clone, Debug)]
pub struct Exported {
    pub dir: PathBuf,
    /// The run's checkpoint the weights came from, and its epoch.
    pub checkpoint: PathBuf,
    pub epoch: usize,
    pub classes: Vec<String>,
}

/// Exports the latest checkpoint of `run_dir` as a SavedModel in `out`. An existing `out` is
/// refused unless `force`, and even then only when it holds a SavedModel (or nothing).
pub fn export(run_dir: &Path, out: &Path, force: bool) -> Result<Exported> {
    export_at(run_dir, "latest", out, force)
}

/// The same from the checkpoint `which` names: `latest`, `best` or `epoch-N`.
pub fn export_at(run_dir: &Path, which: &str, out: &Path, force: bool) -> Result<Exported> {
    check_destination(out, force)?;
    let run = trained::load_trained_at(run_dir, which)?;
    let cfg = &run.config;
    let mut g = InferenceGraph::build(&cfg.model, &cfg.preprocess, &cfg.classes)?;
    let saver = ServingSaver::build(&mut g.scope, &g.net.variables())?;
    // The SavedModel's variables are written from a session holding the run's parameters.
    // Default session options, not the run's: it may have asked for a GPU this machine lacks.
    let session = Session::new(&SessionOptions::new(), &g.scope.graph())?;
    params::init_params(&session, &g.net, &run.params)?;
    let meta_graph = meta_graph_def(&g, &saver)?;
    let saved_model = tf::SavedModel { saved_model_schema_version: 1, meta_graphs: vec![meta_graph] };

    write_atomically(out, force, |tmp| {
        let vars_dir = tmp.join("variables");
        fs::create_dir_all(&vars_dir).with_context(|| format!("cannot create {}", vars_dir.display()))?;
        saver.save(&session, &vars_dir.join("variables"))?;
        let pb = tmp.join("saved_model.pb");
        fs::write(&pb, saved_model.encode_to_vec()).with_context(|| format!("cannot write {}", pb.display()))?;
        for dir in [tmp, vars_dir.as_path()] {
            for f in fs::read_dir(dir)? {
                let p = f?.path();
                if p.is_file() {
                    fs::File::open(&p)?.sync_all()?;
                }
            }
        }
        Ok(())
    })?;
    Ok(Exported { dir: out.to_path_buf(), checkpoint: run.checkpoint, epoch: run.epoch, classes: run.config.classes })
}

/// Refuses to replace anything but a SavedModel, and that only with `force`.
fn check_destination(out: &Path, force: bool) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    if !force {
        bail!("{} already exists: pass --force to replace it, or choose another --out", out.display());
    }
    ensure!(out.is_dir(), "{} exists and is not a folder: refusing to replace it, even with --force", out.display());
    let empty = fs::read_dir(out)?.next().is_none();
    ensure!(
        empty || out.join("saved_model.pb").is_file(),
        "{} exists and is not a SavedModel (no saved_model.pb): refusing to replace it, even with --force",
        out.display()
    );
    Ok(())
}

/// Fills a temporary sibling of `out` with `write`, then renames it to `out` (replacing an
/// existing one when `force`). On any error the temporary folder is removed.
pub fn write_atomically(out: &Path, force: bool, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = fsutil::temp_sibling(out);
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = write(&tmp).and_then(|()| {
        if out.exists() {
            ensure!(force, "{} appeared while exporting: pass --force to replace it", out.display());
            // Moved aside first, so `out` is never missing a complete model for long and a
            // failed rename can be undone.
            let old = out.with_file_name(format!(".{}.old-{}", file_name(out), std::process::id()));
            fs::rename(out, &old).with_context(|| format!("cannot move {} aside", out.display()))?;
            if let Err(e) = fs::rename(&tmp, out) {
                let _ = fs::rename(&old, out);
                return Err(e).with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()));
            }
            // The new model is in place: a leftover of the old one is worth a warning, not an error.
            if let Err(e) = fs::remove_dir_all(&old) {
                eprintln!("warning: cannot remove the replaced model {}: {e}", old.display());
            }
        } else {
            fs::rename(&tmp, out).with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()))?;
        }
        Ok(())
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    fsutil::sync_dir(&parent);
    result
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The save/restore ops TF1's `tf.compat.v1.train.Saver(sharded=False)` adds, with the same
/// names: loaders feed the variables' prefix to `save/Const:0` and run `save/restore_all`.
struct ServingSaver {
    filename: Output,
    save: Output,
    restore_all: Operation,
}

impl ServingSaver {
    fn build(scope: &mut Scope, vars: &[Variable]) -> Result<ServingSaver> {
        let s = &mut scope.new_sub_scope("save");
        let n = vars.len() as u64;
        let default = ops::constant(Tensor::<String>::from("model".to_string()), &mut s.with_op_name("default_filename"))?;
        let filename: Output =
            ops::PlaceholderWithDefault::new().dtype(DataType::String).shape(Shape::from(Some(vec![]))).build(default, &mut s.with_op_name("Const"))?.into();
        let names: Vec<String> = vars.iter().map(|v| v.name().to_string()).collect();
        let names = ops::constant(Tensor::<String>::new(&[n]).with_values(&names)?, &mut s.with_op_name("tensor_names"))?;
        let slices = Tensor::<String>::new(&[n]).with_values(&vec![String::new(); vars.len()])?;
        let slices = ops::constant(slices, &mut s.with_op_name("shape_and_slices"))?;
        let dtypes = vec![DataType::Float; vars.len()];
        let tensors: Vec<Output> = vars.iter().map(|v| v.output().clone()).collect();
        let save_op = crate::run::checkpoint::save_v2(s, &filename, &names.clone().into(), &slices.clone().into(), &tensors, &dtypes)?;
        // SaveV2 has no output: the SaverDef names this instead, the filename once saved.
        let save: Output = ops::Identity::new().add_control_input(save_op).build(filename.clone(), &mut s.with_op_name("Identity"))?.into();
        let restored = ops::RestoreV2::new().dtypes(dtypes).build(filename.clone(), names, slices, s)?;
        let mut restore_all = ops::NoOp::new();
        for (i, v) in vars.iter().enumerate() {
            let value = Output { operation: restored.clone(), index: i as i32 };
            restore_all = restore_all.add_control_input(ops::assign(v.output().clone(), value, &mut s.with_op_name("Assign"))?);
        }
        let restore_all = restore_all.build(&mut s.with_op_name("restore_all"))?;
        Ok(ServingSaver { filename, save, restore_all })
    }

    fn saver_def(&self) -> Result<tf::SaverDef> {
        Ok(tf::SaverDef {
            filename_tensor_name: tensor_name(&self.filename)?,
            save_tensor_name: tensor_name(&self.save)?,
            restore_op_name: self.restore_all.name()?,
            max_to_keep: 5,
            sharded: false,
            keep_checkpoint_every_n_hours: 10000.0,
            version: CheckpointFormatVersion::V2 as i32,
        })
    }

    /// Writes every variable to `prefix`.{index,data-00000-of-00001}.
    fn save(&self, session: &Session, prefix: &Path) -> Result<()> {
        let p = prefix.to_str().with_context(|| format!("path {} is not valid UTF-8", prefix.display()))?;
        let p = Tensor::<String>::from(p.to_string());
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.filename.operation, self.filename.index, &p);
        args.add_target(&self.save.operation);
        session.run(&mut args).with_context(|| format!("cannot write the variables to {}", prefix.display()))?;
        Ok(())
    }
}

fn tensor_name(o: &Output) -> Result<String> {
    Ok(format!("{}:{}", o.operation.name()?, o.index))
}

/// tensorflow.DataType numbers (types.proto) of the dtypes the signatures use.
fn dtype_code(t: DataType) -> i32 {
    match t {
        DataType::Float => tf::DataType::DtFloat as i32,
        DataType::String => tf::DataType::DtString as i32,
        DataType::Int64 => tf::DataType::DtInt64 as i32,
        other => unreachable!("no signature tensor of type {other}"),
    }
}

fn tensor_info(o: &Output, dtype: DataType, dims: &[i64]) -> Result<TensorInfo> {
    Ok(TensorInfo { encoding: Some(Encoding::Name(tensor_name(o)?)), dtype: dtype_code(dtype), tensor_shape: Some(TensorShapeProto::of(dims)) })
}

fn meta_graph_def(g: &InferenceGraph, saver: &ServingSaver) -> Result<tf::MetaGraphDef> {
    let k = g.net.config.classes as i64;
    let side = g.side as i64;
    let probabilities = tensor_info(&g.probabilities, DataType::Float, &[-1, k])?;
    let serving = tf::SignatureDef {
        inputs: [(inference::IMAGES.to_string(), tensor_info(&g.images, DataType::String, &[-1])?)].into(),
        outputs: [
            (inference::PROBABILITIES.to_string(), probabilities.clone()),
            (inference::CLASS_IDS.to_string(), tensor_info(&g.class_ids, DataType::Int64, &[-1])?),
            (inference::CLASSES.to_string(), tensor_info(&g.classes, DataType::String, &[-1])?),
        ]
        .into(),
        method_name: proto::PREDICT_METHOD_NAME.to_string(),
        ..Default::default()
    };
    let tensor = tf::SignatureDef {
        inputs: [(inference::INPUT.to_string(), tensor_info(&g.input, DataType::Float, &[-1, side, side, 3])?)].into(),
        outputs: [(inference::PROBABILITIES.to_string(), probabilities), (inference::LOGITS.to_string(), tensor_info(&g.logits, DataType::Float, &[-1, k])?)]
            .into(),
        method_name: proto::PREDICT_METHOD_NAME.to_string(),
        ..Default::default()
    };
    // TensorFlow's GraphDef, decoded whole (the generated messages have every field).
    let graph_def = tf::GraphDef::decode(&g.scope.graph().graph_def()?[..])?;
    Ok(tf::MetaGraphDef {
        meta_info_def: Some(MetaInfoDef {
            tags: vec![SERVE_TAG.to_string()],
            tensorflow_version: tensorflow::version().unwrap_or_default(),
            ..Default::default()
        }),
        graph_def: Some(graph_def),
        // No "variables" collection (TF1 writes one): loaders restore through the SaverDef
        // alone. Python TF2 makes no objects of ref variables (tf.saved_model.load gives
        // `.variables == []` either way) and, given the collection, warns four times per variable.
        saver_def: Some(saver.saver_def()?),
        signature_def: [(SERVING_SIGNATURE.to_string(), serving), (TENSOR_SIGNATURE.to_string(), tensor)].into(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("alexnet-export-unit-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = scratch("fail");
        let out = dir.join("model");
        let err = write_atomically(&out, false, |tmp| {
            fs::write(tmp.join("saved_model.pb"), b"partial")?;
            bail!("disk full")
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "left behind: {:?}", fs::read_dir(&dir).unwrap().collect::<Vec<_>>());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn force_replaces_only_a_saved_model() {
        let dir = scratch("force");
        let out = dir.join("model");
        write_atomically(&out, false, |tmp| Ok(fs::write(tmp.join("saved_model.pb"), b"one")?)).unwrap();
        assert!(check_destination(&out, false).unwrap_err().to_string().contains("--force"));
        check_destination(&out, true).unwrap();
        write_atomically(&out, true, |tmp| Ok(fs::write(tmp.join("saved_model.pb"), b"two")?)).unwrap();
        assert_eq!(fs::read(out.join("saved_model.pb")).unwrap(), b"two");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);

        let other = dir.join("notes");
        fs::create_dir_all(&other).unwrap();
        fs::write(other.join("todo.txt"), b"keep me").unwrap();
        assert!(check_destination(&other, true).unwrap_err().to_string().contains("not a SavedModel"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
