//! Model versions as TensorFlow Serving keeps them: numbered folders under the base path, the
//! highest one served. A poller loads a newer folder when one appears and swaps it in; requests
//! already running keep the `Arc` of the version they started on, so none is dropped, and the old
//! session closes when its last request ends. A folder that fails to load is reported (log line
//! and version status) and the served version stays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::server::model::LoadedModel;
use crate::server::warmup;

/// One version's line of `GET /v1/models/NAME`.
#[derive(Clone, Debug)]
pub struct VersionStatus {
    /// AVAILABLE (served), LOADING, or END (replaced, or failed: `error` says why).
    pub state: &'static str,
    pub error: Option<String>,
}

/// The served version and what happened to the others.
pub struct Versions {
    /// The model's name (metrics label its runs with it).
    name: String,
    base: PathBuf,
    current: RwLock<Arc<LoadedModel>>,
    status: Mutex<BTreeMap<u64, VersionStatus>>,
    /// Failed folders with the time of their saved_model.pb: retried only when it changes.
    failed: Mutex<BTreeMap<u64, Option<SystemTime>>>,
}

impl Versions {
    /// Loads the highest version under `base`; an error when there is none or it fails.
    pub fn load(base: &Path, name: &str) -> Result<Versions> {
        let Some((version, dir)) = version_folders(base)?.pop() else {
            bail!("{} has no version folders (numbered SavedModel folders such as {}/1; alexnet export --out writes one)", base.display(), base.display());
        };
        let model = load_warm(&dir, version, name)?;
        let status = BTreeMap::from([(version, VersionStatus { state: "AVAILABLE", error: None })]);
        Ok(Versions {
            name: name.to_string(),
            base: base.to_path_buf(),
            current: RwLock::new(Arc::new(model)),
            status: Mutex::new(status),
            failed: Mutex::new(BTreeMap::new()),
        })
    }

    /// The version new requests run on.
    pub fn current(&self) -> Arc<LoadedModel> {
        self.current.read().unwrap().clone()
    }

    /// The current version if it is `version` (only the highest is served, as TF Serving's
    /// default policy does).
    pub fn get(&self, version: Option<u64>) -> Option<Arc<LoadedModel>> {
        let m = self.current();
        (version.is_none() || version == Some(m.version)).then_some(m)
    }

    /// Every version seen (or only `version`), newest first, with its state.
    pub fn statuses(&self, version: Option<u64>) -> Vec<(u64, VersionStatus)> {
        let status = self.status.lock().unwrap();
        status.iter().rev().filter(|(v, _)| version.is_none_or(|w| w == **v)).map(|(v, s)| (*v, s.clone())).collect()
    }

    /// `{"model_version_status": [...]}` for every version seen, or only `version`.
    pub fn status_json(&self, version: Option<u64>) -> Option<Value> {
        let lines: Vec<Value> = self
            .statuses(version)
            .into_iter()
            .map(|(v, s)| {
                let (code, msg) = match &s.error {
                    Some(e) => ("UNKNOWN", e.as_str()),
                    None => ("OK", ""),
                };
                json!({"version": v.to_string(), "state": s.state, "status": {"error_code": code, "error_message": msg}})
            })
            .collect();
        (!lines.is_empty()).then(|| json!({ "model_version_status": lines }))
    }

    /// Loads a version newer than the served one, if there is one, and swaps it in. Blocking:
    /// run it off the async workers.
    pub fn poll(&self) {
        let Ok(folders) = version_folders(&self.base) else { return };
        let Some((version, dir)) = folders.into_iter().next_back() else { return };
        let stamp = std::fs::metadata(dir.join("saved_model.pb")).and_then(|m| m.modified()).ok();
        if version <= self.current().version || self.failed.lock().unwrap().get(&version) == Some(&stamp) {
            return;
        }
        self.set_status(version, "LOADING", None);
        match load_warm(&dir, version, &self.name) {
            Ok(model) => {
                let old = std::mem::replace(&mut *self.current.write().unwrap(), Arc::new(model));
                self.set_status(old.version, "END", None);
                self.set_status(version, "AVAILABLE", None);
                eprintln!("alexnet serve: now serving version {version} ({})", dir.display());
            }
            Err(e) => {
                eprintln!("alexnet serve: version {version} failed to load, still serving version {}: {e:#}", self.current().version);
                self.set_status(version, "END", Some(format!("{e:#}")));
                self.failed.lock().unwrap().insert(version, stamp);
            }
        }
    }

    fn set_status(&self, version: u64, state: &'static str, error: Option<String>) {
        self.status.lock().unwrap().insert(version, VersionStatus { state, error });
    }
}

/// A version loaded and warmed up with its recorded requests (before it is AVAILABLE).
fn load_warm(dir: &Path, version: u64, name: &str) -> Result<LoadedModel> {
    let model = LoadedModel::load(dir, version, name)?;
    let n = warmup::replay(&model)?;
    if n > 0 {
        eprintln!("alexnet serve: version {version} warmed up with {n} requests from {}", warmup::WARMUP_FILE);
    }
    Ok(model)
}

/// Polls every `every` on a thread of its own until the process ends.
pub fn watch(versions: Arc<Versions>, every: Duration) {
    std::thread::Builder::new()
        .name("version-watcher".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                versions.poll();
            }
        })
        .expect("spawn the version watcher");
}

/// The numbered folders under `base`, lowest first (names that are not numbers are ignored, as
/// TF Serving ignores them: `tmp-export`, `.1.partial`).
fn version_folders(base: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = std::fs::read_dir(base).map_err(|e| anyhow::anyhow!("cannot read the model base path {}: {e}", base.display()))?;
    let mut out: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok().map(|v| (v, e.path())))
        .collect();
    out.sort();
    Ok(out)
}
