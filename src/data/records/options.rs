//! How to read a folder of shards when what is in it does not say enough: `--format`,
//! `--train-files`/`--val-files`, `--image-key`, `--label-key`, `--label-offset`, `--labels`.
//!
//! The command line sets them once for the process ([`set`]); a run saves the ones it trained
//! with as `<run-dir>/records.json` ([`save`]), which `--resume` and `eval` read back (the
//! data set is found by `crate::data::split::dataset`, whose callers pass the run directory, not
//! the flags). Flags given win over the saved file; the layout's defaults fill the rest.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::util::fsutil;

/// The run directory's copy of the options.
pub const FILE: &str = "records.json";

/// What `--images` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// train/<class>/ + val/<class>/, or <class>/ folders.
    Folder,
    /// TFRecord shards (default names and keys: the ImageNet layout's).
    Tfrecord,
    /// A TFDS prepared version folder.
    Tfds,
}

/// The options; None: the folder's own (or the layout's default).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordOptions {
    pub format: Option<Format>,
    pub train_files: Option<String>,
    pub val_files: Option<String>,
    pub image_key: Option<String>,
    pub label_key: Option<String>,
    pub label_offset: Option<i64>,
    /// Class names, one per line (line = class id).
    pub labels: Option<PathBuf>,
}

impl RecordOptions {
    /// `self`'s options, and `other`'s where `self` has none.
    pub fn or(self, other: RecordOptions) -> RecordOptions {
        RecordOptions {
            format: self.format.or(other.format),
            train_files: self.train_files.or(other.train_files),
            val_files: self.val_files.or(other.val_files),
            image_key: self.image_key.or(other.image_key),
            label_key: self.label_key.or(other.label_key),
            label_offset: self.label_offset.or(other.label_offset),
            labels: self.labels.or(other.labels),
        }
    }
}

static FLAGS: OnceLock<RecordOptions> = OnceLock::new();

/// The command line's options, for the whole process (set once, before any data set is read).
pub fn set(flags: RecordOptions) {
    let _ = FLAGS.set(flags);
}

/// The options for a data set read for `run_dir` (None: no run): the flags, then the run's
/// saved ones.
pub fn resolve(run_dir: Option<&Path>) -> Result<RecordOptions> {
    let flags = FLAGS.get().cloned().unwrap_or_default();
    let saved = match run_dir.map(|d| d.join(FILE)).filter(|p| p.exists()) {
        Some(path) => serde_json::from_str(&std::fs::read_to_string(&path)?).with_context(|| format!("{} is not valid", path.display()))?,
        None => RecordOptions::default(),
    };
    Ok(flags.or(saved))
}

/// Saves the options a run trains with.
pub fn save(run_dir: &Path, options: &RecordOptions) -> Result<()> {
    fsutil::write_atomic(&run_dir.join(FILE), serde_json::to_string_pretty(options)?.as_bytes())
}

/// Whether `name` matches the shell pattern `pattern` (`*`: any run of characters, `?`: one).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Dynamic programming over (pattern prefix, name prefix).
    let mut row = vec![false; n.len() + 1];
    row[0] = true;
    for pc in &p {
        let mut next = vec![false; n.len() + 1];
        next[0] = *pc == '*' && row[0];
        for j in 1..=n.len() {
            next[j] = match pc {
                '*' => next[j - 1] || row[j],
                '?' => row[j - 1],
                c => row[j - 1] && *c == n[j - 1],
            };
        }
        row = next;
    }
    row[n.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_a_shell_does() {
        assert!(glob_match("train-*", "train-00000-of-01024"));
        assert!(!glob_match("train-*", "validation-00000-of-00128"));
        assert!(glob_match("*-train.tfrecord-*", "pets-train.tfrecord-00000-of-00001"));
        assert!(glob_match("shard-?", "shard-1") && !glob_match("shard-?", "shard-10"));
        assert!(glob_match("*", "") && !glob_match("a", ""));
    }

    #[test]
    fn flags_win_over_saved_options() {
        let flags = RecordOptions { image_key: Some("jpeg".into()), ..Default::default() };
        let saved = RecordOptions { image_key: Some("png".into()), label_offset: Some(0), ..Default::default() };
        let both = flags.or(saved);
        assert_eq!((both.image_key.as_deref(), both.label_offset), (Some("jpeg"), Some(0)));
    }
}
