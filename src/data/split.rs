//! The second image-folder layout: one folder of `<class>/` folders, split into training and
//! validation images by `--val-split FRACTION`, per class (stratified) and seeded.
//!
//! The split a run was trained with is saved in its run directory as `split.json` (the val
//! files, relative to the image folder), so `--resume` and `eval` take the same files as
//! validation even if the folder has gained images since (new files go to training). Without a
//! saved split, the same folder, fraction and seed give the same split again, which is how every
//! worker of a cluster arrives at the chief's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::data::images::{self, Dataset, Example};
use crate::data::records;
use crate::util::fsutil;
use crate::util::rng::Rng;

/// The split's file in a run directory.
pub const FILE: &str = "split.json";

/// The random stream of the split (independent of the run's other uses of its seed).
const STREAM: u64 = 0x5eed_5971;

/// How an image folder is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `train/<class>/` and `val/<class>/`.
    TrainVal,
    /// `<class>/`, split by `--val-split`.
    ClassFolders,
}

/// A saved split: which files of the image folder are validation images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub fraction: f64,
    pub seed: u64,
    /// `<class>/<file>`, relative to the image folder, sorted.
    pub val: Vec<String>,
}

/// The layout of `images`; a folder that mixes both (train/ or val/ beside class folders holding
/// images) is refused, naming the folders. Other folders beside train/ and val/ (a test/ without
/// images of its own, say) are left alone, as before.
pub fn layout(images: &Path) -> Result<Layout> {
    ensure!(
        images.is_dir(),
        "image folder {} does not exist (fill it with scripts/fetch-data, or point --images at a folder with train/<class>/ and val/<class>/, or with <class>/ folders and --val-split)",
        images.display()
    );
    let folders = images::class_folders(images)?;
    let (splits, others): (Vec<&String>, Vec<&String>) = folders.iter().partition(|f| *f == "train" || *f == "val");
    if splits.is_empty() {
        return Ok(Layout::ClassFolders);
    }
    let holds_images = |f: &&String| std::fs::read_dir(images.join(f)).is_ok_and(|d| d.filter_map(|e| e.ok()).any(|e| images::is_image_file(&e.path())));
    let classes: Vec<&String> = others.into_iter().filter(holds_images).collect();
    match (splits.is_empty(), classes.is_empty()) {
        (true, _) => Ok(Layout::ClassFolders),
        (false, true) => Ok(Layout::TrainVal),
        (false, false) => bail!(
            "{} mixes two layouts: [{}] beside class folders [{}]; use either train/<class>/ + val/<class>/, or only <class>/ folders with --val-split",
            images.display(),
            splits.iter().map(|s| format!("{s}/")).collect::<Vec<_>>().join(", "),
            classes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The data set in `images` in either layout. Class folders take the split saved in `run_dir`
/// if there is one, else a new one of `fraction` (an error saying to add --val-split when there
/// is none); the split is returned so training can save it.
pub fn dataset(images: &Path, fraction: Option<f64>, seed: u64, run_dir: Option<&Path>) -> Result<(Dataset, Option<Split>)> {
    if let Some((layout, opts)) = records::detect(images, run_dir)? {
        ensure!(fraction.is_none(), "{} holds TFRecord shards with their own validation split: --val-split is for class folders", images.display());
        return Ok((records::dataset(images, layout, &opts)?, None));
    }
    if layout(images)? == Layout::TrainVal {
        return Ok((images::scan(images)?, None));
    }
    let classes = images::class_folders(images)?;
    ensure!(!classes.is_empty(), "{} has no class subfolders (expected <class>/<image>, or train/<class>/ and val/<class>/)", images.display());
    ensure!(classes.len() >= 2, "{} has a single class ({}): a classifier needs at least two", images.display(), classes[0]);
    let mut ignored = vec![];
    let all = images::examples(images, &classes, &mut ignored)?;
    let saved = match run_dir.map(|d| d.join(FILE)).filter(|p| p.exists()) {
        Some(path) => Some(read(&path)?),
        None => None,
    };
    let split = match (saved, fraction) {
        (Some(s), _) => s,
        (None, Some(f)) => make(images, &classes, &all, f, seed)?,
        (None, None) => bail!(
            "{} holds class folders [{}] and no train/ and val/: add --val-split FRACTION (e.g. --val-split 0.2) to hold out that share of each class for validation",
            images.display(),
            classes.join(", ")
        ),
    };
    let (train, val) = apply(images, &all, &split)?;
    Ok((Dataset { classes, train, val, ignored, records: None }, Some(split)))
}

/// A new stratified split: in each class, `fraction` of its images (rounded, at least one, and
/// at least one left for training) chosen by a seeded shuffle.
pub fn make(images: &Path, classes: &[String], all: &[Example], fraction: f64, seed: u64) -> Result<Split> {
    ensure!(fraction > 0.0 && fraction < 1.0, "--val-split {fraction}: expected a fraction between 0 and 1 (e.g. 0.2)");
    let mut val = vec![];
    for (label, class) in classes.iter().enumerate() {
        let mut files: Vec<String> = all.iter().filter(|e| e.label == label).map(|e| relative(images, &e.path)).collect::<Result<_>>()?;
        let n = files.len();
        let n_val = ((n as f64 * fraction).round() as usize).max(1);
        ensure!(
            n_val < n,
            "class {class} has {n} images: too few for --val-split {fraction} (it needs at least one for training and one for validation; add images or change the fraction)"
        );
        // One stream per class: a class's split does not depend on the other classes' sizes.
        Rng::new(seed, STREAM ^ label as u64).shuffle(&mut files);
        val.extend(files.into_iter().take(n_val));
    }
    val.sort();
    Ok(Split { fraction, seed, val })
}

/// Training and validation examples of `all` under `split`. A val file of the split that is gone
/// is an error: the run's validation set would change.
fn apply(images: &Path, all: &[Example], split: &Split) -> Result<(Vec<Example>, Vec<Example>)> {
    let wanted: BTreeSet<&str> = split.val.iter().map(|s| s.as_str()).collect();
    let (mut train, mut val) = (vec![], vec![]);
    for e in all {
        if wanted.contains(relative(images, &e.path)?.as_str()) { val.push(e.clone()) } else { train.push(e.clone()) }
    }
    if val.len() != wanted.len() {
        let found: BTreeSet<String> = val.iter().map(|e| relative(images, &e.path)).collect::<Result<_>>()?;
        let missing: Vec<&str> = wanted.iter().filter(|w| !found.contains(**w)).take(5).copied().collect();
        bail!(
            "the run's validation split ({FILE}) names {} files that are not image files in class folders of {} (e.g. {}): restore them, or start a new run",
            wanted.len() - val.len(),
            images.display(),
            missing.join(", ")
        );
    }
    Ok((train, val))
}

/// `<class>/<file>` of a path under `images`, with `/` on every platform.
fn relative(images: &Path, path: &Path) -> Result<String> {
    let rel: PathBuf = path.strip_prefix(images).with_context(|| format!("{} is not under {}", path.display(), images.display()))?.to_path_buf();
    Ok(rel.iter().map(|c| c.to_string_lossy()).collect::<Vec<_>>().join("/"))
}

/// Reads a saved split.
pub fn read(path: &Path) -> Result<Split> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a valid split (expected {{fraction, seed, val: [<class>/<file>, ...]}})", path.display()))
}

/// Saves the split in the run directory (atomically).
pub fn write(run_dir: &Path, split: &Split) -> Result<()> {
    fsutil::write_atomic(&run_dir.join(FILE), serde_json::to_string_pretty(split)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples(root: &Path, counts: &[usize]) -> Vec<Example> {
        let mut out = vec![];
        for (label, &n) in counts.iter().enumerate() {
            out.extend((0..n).map(|i| Example { path: root.join(format!("c{label}")).join(format!("{i:03}.png")), label }));
        }
        out
    }

    #[test]
    fn split_is_stratified_and_seeded() {
        let root = Path::new("/data");
        let classes: Vec<String> = (0..3).map(|c| format!("c{c}")).collect();
        let all = examples(root, &[10, 20, 5]);
        let a = make(root, &classes, &all, 0.2, 7).unwrap();
        let per_class: Vec<usize> = classes.iter().map(|c| a.val.iter().filter(|v| v.starts_with(&format!("{c}/"))).count()).collect();
        assert_eq!(per_class, [2, 4, 1]);
        assert_eq!(make(root, &classes, &all, 0.2, 7).unwrap(), a, "same seed, same split");
        assert_ne!(make(root, &classes, &all, 0.2, 8).unwrap().val, a.val, "another seed, another split");
        let (train, val) = apply(root, &all, &a).unwrap();
        assert_eq!((train.len(), val.len()), (28, 7));
    }

    #[test]
    fn too_small_a_class_is_named() {
        let root = Path::new("/data");
        let classes: Vec<String> = (0..2).map(|c| format!("c{c}")).collect();
        let err = make(root, &classes, &examples(root, &[10, 1]), 0.2, 0).unwrap_err().to_string();
        assert!(err.contains("class c1 has 1 images: too few for --val-split 0.2"), "{err}");
        assert!(make(root, &classes, &examples(root, &[10, 10]), 1.5, 0).is_err());
    }
}
