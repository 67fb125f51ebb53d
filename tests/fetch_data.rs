//! Runs `scripts/fetch-data` against a temporary copy of the local mirror of the Swift original's
//! data (`../shared/data/swift-original` next to the repository, or `$ALEXNET_MIRROR`).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::{mirror, repo};

/// Relative paths of all files under `dir/images` and `dir/weights`, excluding README.md.
fn data_files(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, base, out);
            } else if path.file_name().unwrap() != "README.md" {
                out.push(path.strip_prefix(base).unwrap().to_str().unwrap().to_owned());
            }
        }
    }
    let mut out = Vec::new();
    for sub in ["images", "weights"] {
        if dir.join(sub).is_dir() {
            walk(&dir.join(sub), dir, &mut out);
        }
    }
    out.sort();
    out
}

/// Copies the mirror's data files into `to` as ordinary writable files.
fn copy_mirror(to: &Path) {
    let from = mirror();
    for rel in data_files(&from) {
        fs::create_dir_all(to.join(&rel).parent().unwrap()).unwrap();
        fs::write(to.join(&rel), fs::read(from.join(&rel)).unwrap()).unwrap();
    }
}

/// Runs fetch-data with `ALEXNET_MIRROR=mirror --dest dest`; returns (success, stdout + stderr).
fn fetch(mirror: &Path, dest: &Path) -> (bool, String) {
    let out =
        Command::new("bash").arg(repo().join("scripts/fetch-data")).arg("--dest").arg(dest).env("ALEXNET_MIRROR", mirror).output().expect("cannot run bash");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("cannot run sha256sum");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

/// The manifest's SHA-256 for `rel`.
fn manifest_sha256(rel: &str) -> String {
    let manifest = fs::read_to_string(repo().join("scripts/swift-original.manifest")).unwrap();
    let line = manifest.lines().find(|l| l.ends_with(&format!("  {rel}"))).unwrap();
    line.split_whitespace().nth(1).unwrap().to_owned()
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0xff;
    fs::write(path, bytes).unwrap();
}

fn assert_same_as_mirror(mirror: &Path, dest: &Path) {
    let files = data_files(dest);
    assert_eq!(files, data_files(mirror), "destination holds other files than the mirror");
    for rel in files {
        assert!(fs::read(dest.join(&rel)).unwrap() == fs::read(mirror.join(&rel)).unwrap(), "{rel} differs");
    }
}

#[test]
fn first_run_fills_second_run_does_nothing() {
    let tmp = common::temp_dir("fill");
    let (mirror, dest) = (tmp.path().join("mirror"), tmp.path().join("dest"));
    copy_mirror(&mirror);

    let (ok, out) = fetch(&mirror, &dest);
    assert!(ok, "first run failed:\n{out}");
    let files = data_files(&dest);
    assert_eq!(files.iter().filter(|f| f.starts_with("images/")).count(), 120, "{out}");
    assert_eq!(files.iter().filter(|f| f.starts_with("weights/")).count(), 9, "{out}");
    assert_same_as_mirror(&mirror, &dest);
    assert!(out.contains("warning: weights/conv4.weights is not in"), "{out}");

    // Backdate every file, so any rewrite by the second run shows up as a new mtime.
    let old = SystemTime::now() - Duration::from_secs(86_400);
    for rel in &files {
        fs::File::options().write(true).open(dest.join(rel)).unwrap().set_modified(old).unwrap();
    }
    let (ok, out) = fetch(&mirror, &dest);
    assert!(ok, "second run failed:\n{out}");
    assert!(out.contains("120 images and 9 weight files already present and verified; nothing to do"), "{out}");
    for rel in &files {
        assert_eq!(fs::metadata(dest.join(rel)).unwrap().modified().unwrap(), old, "{rel} was rewritten");
    }
    assert_eq!(data_files(&dest), files);
}

#[test]
fn corrupted_source_file_is_refused() {
    let tmp = common::temp_dir("corrupt-source");
    let (mirror, dest) = (tmp.path().join("mirror"), tmp.path().join("dest"));
    copy_mirror(&mirror);
    let bad = mirror.join("weights/conv2.weights");
    flip_byte(&bad, 1000);

    let (ok, out) = fetch(&mirror, &dest);
    assert!(!ok, "a corrupted source file was accepted:\n{out}");
    assert!(out.contains("weights/conv2.weights"), "{out}");
    assert!(out.contains(&manifest_sha256("weights/conv2.weights")), "expected sha256 not shown:\n{out}");
    assert!(out.contains(&sha256(&bad)), "actual sha256 not shown:\n{out}");
    // Nothing under the real name, no temp file left behind, and the other files still fetched.
    let files = data_files(&dest);
    assert!(!files.iter().any(|f| f.contains("conv2.weights")), "{files:?}");
    assert_eq!(files.len(), 128, "{files:?}");
}

#[test]
fn damaged_destination_file_is_replaced() {
    let tmp = common::temp_dir("damaged-dest");
    let (mirror, dest) = (tmp.path().join("mirror"), tmp.path().join("dest"));
    copy_mirror(&mirror);
    let (ok, out) = fetch(&mirror, &dest);
    assert!(ok, "first run failed:\n{out}");

    flip_byte(&dest.join("weights/conv1.biases"), 0);
    let image = "images/val/dog/pexels-photo-997564.jpeg";
    let len = fs::metadata(dest.join(image)).unwrap().len();
    fs::File::options().write(true).open(dest.join(image)).unwrap().set_len(len / 2).unwrap();

    let (ok, out) = fetch(&mirror, &dest);
    assert!(ok, "repair run failed:\n{out}");
    assert!(out.contains("weights/conv1.biases is damaged"), "{out}");
    assert!(out.contains(&format!("{image} is damaged")), "{out}");
    assert!(out.contains("2 of them replacing damaged files"), "{out}");
    assert_same_as_mirror(&mirror, &dest);
}

#[test]
fn missing_mirror_is_a_clear_error() {
    let tmp = common::temp_dir("no-mirror");
    let (ok, out) = fetch(&tmp.path().join("nowhere"), &tmp.path().join("dest"));
    assert!(!ok);
    assert!(out.contains("mirror directory not found"), "{out}");
    assert!(!tmp.path().join("dest").exists());
}
