//! Checkpoints in TensorFlow's V2 format (SaveV2 / RestoreV2), readable by TensorFlow's own
//! tools (`tf.train.load_checkpoint`), with the variables' graph names as keys.
//!
//! Layout in a run directory: `checkpoints/epoch-000010/ckpt.{index,data-00000-of-00001}` and
//! `checkpoints/latest` naming the newest one. A checkpoint is written into a temporary folder
//! that is renamed when complete, and `latest` is replaced atomically after that, so a crash at
//! any moment leaves the previous checkpoint loadable; a resume whose `latest` is missing or
//! names a lost folder starts from the newest complete `epoch-N` instead. Each epoch's checkpoint
//! is written once, whether it is the new best, the periodic one or both; a full disk is named as
//! such, with the space needed and free.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tensorflow::{DataType, Operation, Output, Scope, Session, SessionRunArgs, Shape, Tensor, ops};

use crate::util::fsutil;

/// How many checkpoints a run keeps.
const KEEP: usize = 3;

/// Save and restore ops for a set of variables, plus the epoch counter.
pub struct Saver {
    prefix: Output,
    epoch: Output,
    save: Operation,
    restore: Operation,
    restored_epoch: Output,
    /// The checkpoint's payload: the variables' bytes.
    bytes: u64,
    /// Epochs this saver wrote (a best checkpoint that is also the periodic one is written once).
    written: std::cell::RefCell<Vec<usize>>,
    last_size: std::cell::Cell<Option<u64>>,
}

impl Saver {
    /// `vars` are (checkpoint key, variable output, its type) triples.
    pub fn build(scope: &mut Scope, vars: &[(String, Output, DataType)]) -> Result<Saver> {
        let scope = &mut scope.new_sub_scope("save");
        let prefix: Output = ops::Placeholder::new().dtype(DataType::String).shape(Shape::from(Some(vec![]))).build(&mut scope.with_op_name("prefix"))?.into();
        let epoch: Output = ops::Placeholder::new().dtype(DataType::Int64).shape(Shape::from(Some(vec![]))).build(&mut scope.with_op_name("epoch"))?.into();
        let mut names: Vec<String> = vars.iter().map(|(n, _, _)| n.clone()).collect();
        names.push("epoch".into());
        let n = names.len() as u64;
        let names_t = ops::constant(Tensor::<String>::new(&[n]).with_values(&names)?, scope)?;
        let slices = ops::constant(Tensor::<String>::new(&[n]).with_values(&vec![String::new(); n as usize])?, scope)?;
        let mut dtypes: Vec<DataType> = vars.iter().map(|(_, _, t)| *t).collect();
        dtypes.push(DataType::Int64);
        let mut tensors: Vec<Output> = vars.iter().map(|(_, v, _)| v.clone()).collect();
        tensors.push(epoch.clone());

        let save = save_v2(scope, &prefix, &names_t.clone().into(), &slices.clone().into(), &tensors, &dtypes)?;
        let restore_v2 = ops::RestoreV2::new().dtypes(dtypes).build(prefix.clone(), names_t, slices, scope)?;
        let mut assigns = vec![];
        for (i, (_, var, _)) in vars.iter().enumerate() {
            assigns.push(ops::assign(var.clone(), Output { operation: restore_v2.clone(), index: i as i32 }, scope)?);
        }
        let mut restore = ops::NoOp::new();
        for a in assigns {
            restore = restore.add_control_input(a);
        }
        let restore = restore.build(&mut scope.with_op_name("restore_all"))?;
        let restored_epoch = Output { operation: restore_v2, index: vars.len() as i32 };
        let bytes = vars.iter().map(|(_, v, _)| 4 * v.operation.get_attr_shape("shape").ok().and_then(|s| element_count(&s)).unwrap_or(1)).sum();
        Ok(Saver { prefix, epoch, save, restore, restored_epoch, bytes, written: Default::default(), last_size: Default::default() })
    }

    /// Writes a checkpoint for `epoch` into `run_dir/checkpoints`, atomically, and points
    /// `latest` at it.
    pub fn save(&self, session: &Session, run_dir: &Path, epoch: usize) -> Result<PathBuf> {
        self.save_as(session, run_dir, epoch, true)
    }

    /// The same; `latest` moves only with `as_latest` (a best checkpoint written before its
    /// epoch's row is final must not be where a resume starts). A checkpoint of `epoch` that is
    /// already complete is not written again: only `latest` moves to it.
    pub fn save_as(&self, session: &Session, run_dir: &Path, epoch: usize, as_latest: bool) -> Result<PathBuf> {
        let root = run_dir.join("checkpoints");
        fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
        let name = format!("epoch-{epoch:06}");
        let dest = root.join(&name);
        if !self.written.borrow().contains(&epoch) || !complete(&dest) {
            self.write(session, &root, &name, epoch)?;
            self.written.borrow_mut().push(epoch);
        }
        if as_latest {
            fsutil::write_atomic(&root.join("latest"), format!("{name}\n").as_bytes())?;
        }
        prune(&root, &name)?;
        Ok(dest)
    }

    /// The size of the newest checkpoint this saver wrote (None before the first).
    pub fn last_size(&self) -> Option<u64> {
        self.last_size.get()
    }

    /// Writes checkpoint `name` into a temporary folder, then renames it into place.
    fn write(&self, session: &Session, root: &Path, name: &str, epoch: usize) -> Result<()> {
        let tmp = root.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        let prefix = Tensor::<String>::from(path_str(&tmp.join("ckpt"))?.to_string());
        let epoch_t = Tensor::<i64>::from(epoch as i64);
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.prefix.operation, self.prefix.index, &prefix);
        args.add_feed(&self.epoch.operation, self.epoch.index, &epoch_t);
        args.add_target(&self.save);
        if let Err(e) = session.run(&mut args).map_err(anyhow::Error::from).and_then(|_| sync_files(&tmp)) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(self.write_error(e, root, &tmp));
        }
        self.last_size.set(Some(fsutil::dir_size(&tmp)));
        let dest = root.join(name);
        if dest.exists() {
            fs::remove_dir_all(&dest)?;
        }
        fs::rename(&tmp, &dest)?;
        fsutil::sync_dir(root);
        Ok(())
    }

    /// A failed write's error: "disk full" with the space needed and free when that is why (the
    /// session's own message is about SaveV2 and tensor allocations).
    fn write_error(&self, e: anyhow::Error, root: &Path, tmp: &Path) -> anyhow::Error {
        let text = format!("{e:#}");
        let full = text.contains("No space left") || text.contains("ENOSPC") || fsutil::free_space(root).is_some_and(|free| free < self.expected_size());
        if !full {
            return e.context(format!("cannot write checkpoint {}", tmp.display()));
        }
        let free = fsutil::free_space(root).map_or("unknown".into(), fsutil::human_bytes);
        anyhow::anyhow!(
            "disk full: cannot write checkpoint {} (it needs about {}; {} free on that filesystem): free some space or move --run-dir, then continue with --resume (the last complete checkpoint is kept)",
            tmp.display(),
            fsutil::human_bytes(self.expected_size()),
            free
        )
    }

    /// The size a checkpoint takes: the last one's, or the variables' bytes.
    pub fn expected_size(&self) -> u64 {
        self.last_size.get().unwrap_or(self.bytes)
    }

    /// Restores every variable from the checkpoint at `prefix`; returns its epoch.
    pub fn restore(&self, session: &Session, prefix: &Path) -> Result<usize> {
        let prefix_t = Tensor::<String>::from(path_str(prefix)?.to_string());
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.prefix.operation, self.prefix.index, &prefix_t);
        args.add_target(&self.restore);
        let epoch = args.request_fetch(&self.restored_epoch.operation, self.restored_epoch.index);
        session.run(&mut args).with_context(|| format!("cannot restore checkpoint {}", prefix.display()))?;
        let epoch: Tensor<i64> = args.fetch(epoch)?;
        Ok(epoch[0] as usize)
    }
}

/// Reads float32 tensors by key from the checkpoint at `prefix`, in a graph of their own: no
/// model needs to be built to look at a run's parameters.
pub fn read_f32(prefix: &Path, keys: &[String]) -> Result<Vec<Tensor<f32>>> {
    let mut scope = Scope::new_root_scope();
    let s = &mut scope;
    let n = keys.len() as u64;
    let prefix_t = ops::constant(Tensor::<String>::from(path_str(prefix)?.to_string()), s)?;
    let names = ops::constant(Tensor::<String>::new(&[n]).with_values(keys)?, s)?;
    let slices = ops::constant(Tensor::<String>::new(&[n]).with_values(&vec![String::new(); keys.len()])?, s)?;
    let restore = ops::RestoreV2::new().dtypes(vec![DataType::Float; keys.len()]).build(prefix_t, names, slices, s)?;
    let session = Session::new(&tensorflow::SessionOptions::new(), &scope.graph())?;
    let mut args = SessionRunArgs::new();
    let fetches: Vec<_> = (0..keys.len()).map(|i| args.request_fetch(&restore, i as i32)).collect();
    session.run(&mut args).with_context(|| format!("cannot read [{}] from checkpoint {}", keys.join(", "), prefix.display()))?;
    fetches.into_iter().map(|f| Ok(args.fetch::<f32>(f)?)).collect()
}

/// Reads one int64 scalar by key (Adam's step count) from the checkpoint at `prefix`.
pub fn read_i64(prefix: &Path, key: &str) -> Result<i64> {
    let mut scope = Scope::new_root_scope();
    let s = &mut scope;
    let prefix_t = ops::constant(Tensor::<String>::from(path_str(prefix)?.to_string()), s)?;
    let names = ops::constant(Tensor::<String>::new(&[1]).with_values(&[key.to_string()])?, s)?;
    let slices = ops::constant(Tensor::<String>::new(&[1]).with_values(&[String::new()])?, s)?;
    let restore = ops::RestoreV2::new().dtypes(vec![DataType::Int64]).build(prefix_t, names, slices, s)?;
    let session = Session::new(&tensorflow::SessionOptions::new(), &scope.graph())?;
    let mut args = SessionRunArgs::new();
    let fetch = args.request_fetch(&restore, 0);
    session.run(&mut args).with_context(|| format!("cannot read {key} from checkpoint {}", prefix.display()))?;
    Ok(args.fetch::<i64>(fetch)?[0])
}

/// A SaveV2 op. (The crate's generated wrapper takes a single tensor; the op takes a list.)
pub fn save_v2(scope: &mut Scope, prefix: &Output, names: &Output, slices: &Output, tensors: &[Output], dtypes: &[DataType]) -> Result<Operation> {
    let name = scope.get_unique_name_for_op("SaveV2");
    let mut graph = scope.graph_mut();
    let mut nd = graph.new_operation("SaveV2", &name)?;
    nd.add_input(prefix.clone());
    nd.add_input(names.clone());
    nd.add_input(slices.clone());
    nd.add_input_list(tensors);
    nd.set_attr_type_list("dtypes", dtypes)?;
    Ok(nd.finish()?)
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().with_context(|| format!("path {} is not valid UTF-8", p.display()))
}

/// Elements of a fully known shape.
fn element_count(shape: &Shape) -> Option<u64> {
    let n = shape.dims()?;
    (0..n).map(|i| shape[i].map(|d| d as u64)).product()
}

/// fsyncs every file of a folder.
fn sync_files(dir: &Path) -> Result<()> {
    for f in fs::read_dir(dir)? {
        fs::File::open(f?.path())?.sync_all()?;
    }
    Ok(())
}

/// Whether `dir` holds a checkpoint written to the end (its index file is the last renamed in).
fn complete(dir: &Path) -> bool {
    dir.join("ckpt.index").is_file()
}

/// The newest complete `epoch-N` folder of a run (whatever `latest` says).
pub fn newest_complete(run_dir: &Path) -> Option<(PathBuf, usize)> {
    let root = run_dir.join("checkpoints");
    let mut found: Vec<(usize, PathBuf)> = fs::read_dir(&root)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let epoch = name.strip_prefix("epoch-")?.parse::<usize>().ok()?;
            complete(&e.path()).then(|| (epoch, e.path().join("ckpt")))
        })
        .collect();
    found.sort();
    found.pop().map(|(e, p)| (p, e))
}

/// The checkpoint a resume starts from: `latest`, or, where `latest` is missing or names a
/// checkpoint that is not there (a crash or a full disk between the two writes), the newest
/// complete one, said on stderr.
pub fn resume_point(run_dir: &Path) -> Result<Option<(PathBuf, usize)>> {
    match latest(run_dir) {
        Ok(Some(found)) => Ok(Some(found)),
        Ok(None) | Err(_) => {
            let newest = newest_complete(run_dir);
            if let Some((prefix, epoch)) = &newest {
                eprintln!(
                    "resume: checkpoints/latest is missing or broken; continuing from the newest complete checkpoint, {} (epoch {epoch})",
                    prefix.parent().unwrap_or(prefix).display()
                );
            }
            Ok(newest)
        }
    }
}

/// The newest complete checkpoint of a run: (prefix to pass to restore, its epoch).
pub fn latest(run_dir: &Path) -> Result<Option<(PathBuf, usize)>> {
    let root = run_dir.join("checkpoints");
    let pointer = root.join("latest");
    if !pointer.exists() {
        return Ok(None);
    }
    let name = fs::read_to_string(&pointer).with_context(|| format!("cannot read {}", pointer.display()))?;
    let name = name.trim();
    let Some(epoch) = name.strip_prefix("epoch-").and_then(|e| e.parse::<usize>().ok()) else {
        bail!("{} names '{name}', not a checkpoint (expected epoch-NNNNNN)", pointer.display());
    };
    let prefix = root.join(name).join("ckpt");
    if !prefix.with_extension("index").exists() {
        bail!("{} names {name}, but {} is missing", pointer.display(), prefix.with_extension("index").display());
    }
    Ok(Some((prefix, epoch)))
}

/// Marks the checkpoint of `epoch` (already saved) as the run's best: `checkpoints/best` names it,
/// and pruning keeps it.
pub fn mark_best(run_dir: &Path, epoch: usize) -> Result<()> {
    fsutil::write_atomic(&run_dir.join("checkpoints").join("best"), format!("epoch-{epoch:06}\n").as_bytes())
}

/// The checkpoint `which` names: `latest`, `best` (highest val accuracy) or `epoch-N`; (prefix,
/// epoch).
pub fn named(run_dir: &Path, which: &str) -> Result<(PathBuf, usize)> {
    let root = run_dir.join("checkpoints");
    let name = match which {
        "latest" => {
            return latest(run_dir)?
                .with_context(|| format!("{} has no checkpoint yet: train it first (alexnet train --run-dir {})", run_dir.display(), run_dir.display()));
        }
        "best" => {
            let pointer = root.join("best");
            let text = fs::read_to_string(&pointer).with_context(|| {
                format!("{} has no best checkpoint yet (it is written when validation accuracy improves); {}", run_dir.display(), kept_list(&root))
            })?;
            text.trim().to_string()
        }
        other => match other.strip_prefix("epoch-").and_then(|e| e.parse::<usize>().ok()) {
            Some(epoch) => format!("epoch-{epoch:06}"),
            None => bail!("--checkpoint {other}: expected latest, best or epoch-N"),
        },
    };
    let epoch = name.strip_prefix("epoch-").and_then(|e| e.parse::<usize>().ok()).with_context(|| format!("'{name}' is not a checkpoint name"))?;
    let prefix = root.join(&name).join("ckpt");
    if !prefix.with_extension("index").exists() {
        bail!("{} has no checkpoint {name}; {}", run_dir.display(), kept_list(&root));
    }
    Ok((prefix, epoch))
}

/// The checkpoints a run keeps, for an error message: which --checkpoint values exist.
fn kept_list(root: &Path) -> String {
    let mut kept: Vec<String> = fs::read_dir(root)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("epoch-")).collect())
        .unwrap_or_default();
    kept.sort();
    if kept.is_empty() {
        return format!("{} holds no checkpoint", root.display());
    }
    format!("{} holds {} (--checkpoint latest, best or one of these)", root.display(), kept.join(", "))
}

/// Keeps the newest KEEP checkpoints (and the best) and removes leftovers of interrupted saves.
fn prune(root: &Path, newest: &str) -> Result<()> {
    let best = fs::read_to_string(root.join("best")).unwrap_or_default().trim().to_string();
    let mut done = vec![];
    for entry in fs::read_dir(root)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(".epoch-") && !name.ends_with(&format!("tmp-{}", std::process::id())) {
            let _ = fs::remove_dir_all(root.join(&name));
        } else if name.starts_with("epoch-") {
            done.push(name);
        }
    }
    done.sort();
    let excess = done.len().saturating_sub(KEEP);
    for name in done.into_iter().take(excess) {
        if name != newest && name != best {
            fs::remove_dir_all(root.join(name))?;
        }
    }
    Ok(())
}
