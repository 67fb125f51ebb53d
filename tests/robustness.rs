//! Bad input gets a clear answer; interruptions and crashes lose nothing. Every test makes its
//! own bad files.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use alexnet::data::images::{self as data, Decoder, Preprocess};
use alexnet::run::metrics;

fn train(images: &Path, run: &Path, extra: &[&str]) -> Command {
    let mut cmd = common::train_command(images, Some(&common::weights()), run);
    cmd.args(["--quiet", "--checkpoint-every", "1"]).args(extra);
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn a_real_jpeg() -> PathBuf {
    common::images().join("train/cat/pexels-photo-1097288.jpeg")
}

#[test]
fn every_bad_image_is_listed_and_can_be_skipped() {
    let tmp = common::temp_dir("bad-images");
    let images = common::small_dataset(tmp.path(), 3);
    let cats = images.join("train/cat");
    std::fs::write(cats.join("empty.jpg"), b"").unwrap();
    let jpeg = std::fs::read(a_real_jpeg()).unwrap();
    std::fs::write(cats.join("truncated.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
    std::fs::write(cats.join("notes-as.jpeg"), b"this is not an image\n").unwrap();
    std::fs::write(images.join("val/dog/broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    std::fs::write(cats.join(".DS_Store"), b"junk").unwrap();
    std::fs::write(cats.join("README.txt"), b"about these cats").unwrap();

    let out = train(&images, &tmp.path().join("run"), &["--epochs", "1"]).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("4 of 16 images can't be used"), "{err}");
    for (name, why) in [("empty.jpg", "empty file (0 bytes)"), ("truncated.jpg", ""), ("notes-as.jpeg", ""), ("broken.png", "")] {
        let line = err.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("{name} not listed:\n{err}"));
        assert!(line.contains(why), "{line}");
    }
    assert!(err.contains("--skip-bad-images"), "{err}");
    assert!(err.contains("ignoring 2 files that are hidden or have no image extension"), "{err}");

    let out = train(&images, &tmp.path().join("run2"), &["--epochs", "1", "--skip-bad-images"]).output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("warning: skipping 4 of 16 images"), "{err}");
    assert!(err.contains("6 train + 6 val images"), "{err}");
}

#[test]
fn end_markers_tell_cut_off_files_from_whole_ones_and_allow_trailing_bytes() {
    use alexnet::data::encoded::check_whole;
    let mut jpegs = 0;
    for class in ["cat", "dog"] {
        for entry in std::fs::read_dir(common::images().join("train").join(class)).unwrap() {
            let jpeg = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(check_whole(&jpeg).is_ok());
            // Some cameras append data after the end-of-image marker: such files are fine.
            let trailer: Vec<u8> = jpeg.iter().copied().chain([0u8, 1, 2, 0xFF, 0xD8, 7].repeat(100)).collect();
            assert!(check_whole(&trailer).is_ok());
            for cut in [jpeg.len() / 3, jpeg.len() - 2] {
                let err = check_whole(&jpeg[..cut]).unwrap_err();
                assert!(err.contains("truncated JPEG"), "{err}");
            }
            jpegs += 1;
        }
    }
    assert_eq!(jpegs, 60);
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0\x90wS\xde\0\0\0\0IEND\xaeB`\x82";
    assert!(check_whole(png).is_ok());
    assert!(check_whole(&png[..png.len() - 10]).unwrap_err().contains("truncated PNG file"));
}

#[test]
fn other_formats_and_colour_modes_are_converted_and_used() {
    let tmp = common::temp_dir("formats");
    let images = common::small_dataset(tmp.path(), 2);
    let made = tmp.path().join("made");
    let status = Command::new(common::python()).arg(common::repo().join("tests/support/make_images.py")).arg(&made).arg(a_real_jpeg()).status().unwrap();
    assert!(status.success());
    for f in ["gray.jpg", "cmyk.jpg", "rgba.png", "palette.png", "anim.gif", "image.bmp"] {
        std::fs::copy(made.join(f), images.join("train/dog").join(f)).unwrap();
    }
    std::fs::copy(made.join("huge.jpg"), images.join("val/dog/huge.jpg")).unwrap();

    let out = train(&images, &tmp.path().join("run"), &["--epochs", "1"]).output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("10 train + 5 val images"), "{err}");

    // Grayscale becomes three equal channels; the 12000 x 12000 image decodes to its colour.
    let decoder = Decoder::new(&Preprocess::default()).unwrap();
    let mut px = vec![0f32; 227 * 227 * 3];
    decoder.decode_file(&made.join("gray.jpg"), &mut px).unwrap();
    assert!(px.chunks(3).all(|c| c[0] == c[1] && c[1] == c[2]));
    decoder.decode_file(&made.join("huge.jpg"), &mut px).unwrap();
    let bgr = &px[..3];
    assert!((bgr[0] - 200.0).abs() < 4.0 && (bgr[1] - 120.0).abs() < 4.0 && (bgr[2] - 90.0).abs() < 4.0, "{bgr:?}");
}

#[test]
fn an_absurdly_large_image_is_refused_before_decoding() {
    let tmp = common::temp_dir("huge");
    // A JPEG header claiming 30000 x 30000 pixels (900 megapixels).
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0x75, 0x30, 0x75, 0x30, 0x03];
    bytes.extend([0u8; 64]);
    let path = tmp.path().join("huge.jpg");
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(alexnet::data::encoded::image_dimensions(&bytes), Some((30000, 30000)));
    let decoder = Decoder::new(&Preprocess::default()).unwrap();
    let (_, bad) = decoder.decode_checked(&[path.as_path()]);
    assert_eq!(bad.len(), 1);
    assert!(bad[0].reason.contains("30000 x 30000 pixels (900 megapixels)"), "{}", bad[0].reason);
}

#[test]
fn folder_structure_problems_are_explained() {
    let tmp = common::temp_dir("structure");
    let err = |p: &Path| format!("{:#}", data::scan(p).unwrap_err());

    assert!(err(&tmp.path().join("nope")).contains("does not exist"));

    let images = common::small_dataset(tmp.path(), 1);
    std::fs::create_dir_all(images.join("train/bird")).unwrap();
    std::fs::create_dir_all(images.join("val/bird")).unwrap();
    let e = err(&images);
    assert!(e.contains("bird") && e.contains("has no images"), "{e}");

    std::fs::remove_dir_all(images.join("val/bird")).unwrap();
    let e = err(&images);
    assert!(e.contains("[cat, dog]") && e.contains("[bird, cat, dog]") && e.contains("must be the same"), "{e}");

    std::fs::remove_dir_all(images.join("train/bird")).unwrap();
    std::fs::remove_dir_all(images.join("train/dog")).unwrap();
    let e = err(&images);
    assert!(e.contains("single class (cat)"), "{e}");
}

#[test]
fn weight_file_problems_name_the_file() {
    use alexnet::data::weights::{LoadOptions, load};
    use alexnet::graph::model::{ModelConfig, param_specs};
    let tmp = common::temp_dir("weights");
    let specs = param_specs(&ModelConfig::new(2));
    let opts = LoadOptions { strict: false, seed: 0 };
    let err = |dir: &Path| format!("{:#}", load(Some(dir), &specs, &opts).unwrap_err());

    assert!(err(&tmp.path().join("missing")).contains("does not exist"));

    let dir = tmp.path().join("w");
    std::fs::create_dir_all(&dir).unwrap();
    let copy = || {
        for f in std::fs::read_dir(common::weights()).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
        }
    };
    copy();
    assert!(load(Some(&dir), &specs, &opts).is_ok());

    // Unreadable (a folder where the file should be: root reads files whatever their mode).
    std::fs::remove_file(dir.join("conv1.weights")).unwrap();
    std::fs::create_dir(dir.join("conv1.weights")).unwrap();
    let e = err(&dir);
    assert!(e.contains("cannot read weight file") && e.contains("conv1.weights"), "{e}");
    std::fs::remove_dir(dir.join("conv1.weights")).unwrap();
    copy();

    // Truncated mid-float.
    let bytes = std::fs::read(dir.join("conv3.biases")).unwrap();
    std::fs::write(dir.join("conv3.biases"), &bytes[..bytes.len() - 3]).unwrap();
    let e = err(&dir);
    assert!(e.contains("conv3.biases") && e.contains("1533 bytes, not a whole number of float32 values"), "{e}");
    copy();

    // NaN and Inf values.
    let mut bytes = std::fs::read(dir.join("conv5.weights")).unwrap();
    bytes[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
    bytes[80..84].copy_from_slice(&f32::INFINITY.to_le_bytes());
    std::fs::write(dir.join("conv5.weights"), &bytes).unwrap();
    let e = err(&dir);
    assert!(e.contains("conv5.weights: 2 non-finite values (first at element 10: NaN)"), "{e}");
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    let tmp = common::temp_dir("nan");
    let images = common::small_dataset(tmp.path(), 3);
    let run = tmp.path().join("run");
    let out = train(&images, &run, &["--epochs", "20", "--lr", "1e6", "--dropout", "0"]).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    let (prefix, epoch) = alexnet::run::checkpoint::latest(&run).unwrap().expect("a checkpoint before the divergence");
    assert!(err.contains(&format!("in epoch {}", epoch + 1)) && err.contains("training diverged"), "{err}");
    assert!(err.contains(&format!("epoch {epoch}) is kept")), "{err}");
    assert!(prefix.with_extension("index").exists());
    // Every row written is finite: the diverged epoch left no row.
    let rows = metrics::read(&run.join("metrics.csv")).unwrap();
    assert_eq!(rows.len(), epoch + 1);
    assert!(rows.iter().all(|r| r.loss.is_finite()));
}

/// Starts a training run and waits until it has written `epochs` checkpoints.
fn start_and_wait(images: &Path, run: &Path, total: &str, epochs: usize) -> std::process::Child {
    let mut child = train(images, run, &["--epochs", total, "--seed", "7"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let written = common::poll_until(Duration::from_secs(300), Duration::from_millis(20), || {
        if let Ok(Some((_, e))) = alexnet::run::checkpoint::latest(run)
            && e + 1 >= epochs
        {
            return true;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("training ended early ({status})");
        }
        false
    });
    assert!(written, "no checkpoint within 300 s");
    child
}

fn signal(child: &std::process::Child, sig: &str) {
    assert!(Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status().unwrap().success());
}

#[test]
fn sigint_and_sigterm_checkpoint_and_say_how_to_resume() {
    let tmp = common::temp_dir("signals");
    let images = common::small_dataset(tmp.path(), 3);
    for sig in ["INT", "TERM"] {
        let run = tmp.path().join(format!("run-{sig}"));
        let child = start_and_wait(&images, &run, "1000", 1);
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "SIG{sig}: exit status {}", out.status);
        let err = stderr(&out);
        assert!(err.contains("interrupted after epoch") && err.contains("--resume"), "SIG{sig}: {err}");
        // The checkpoint is that of the last finished epoch, and the metrics end there too.
        let (_, epoch) = alexnet::run::checkpoint::latest(&run).unwrap().unwrap();
        assert!(err.contains(&format!("interrupted after epoch {epoch};")), "{err}");
        assert_eq!(metrics::read(&run.join("metrics.csv")).unwrap().last().unwrap().epoch, epoch);
    }
}

#[test]
fn sigkill_then_resume_gives_the_uninterrupted_result() {
    let tmp = common::temp_dir("sigkill");
    let images = common::small_dataset(tmp.path(), 3);
    let total = "12";
    let full = tmp.path().join("full");
    assert!(train(&images, &full, &["--epochs", total, "--seed", "7"]).status().unwrap().success());

    let run = tmp.path().join("killed");
    let mut child = start_and_wait(&images, &run, total, 3);
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run finished before it was killed");
    let out = train(&images, &run, &["--epochs", total, "--seed", "7", "--resume"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let a = metrics::read(&full.join("metrics.csv")).unwrap();
    let b = metrics::read(&run.join("metrics.csv")).unwrap();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.epoch, y.epoch);
        assert!((x.loss - y.loss).abs() <= 1e-6 * x.loss.abs().max(1e-6), "epoch {}: {} vs {}", x.epoch, x.loss, y.loss);
        // Exact: a resume restores every variable and runs the same graph, batches and threads.
        assert_eq!(x.train_accuracy, y.train_accuracy, "epoch {}", x.epoch);
    }
    assert_eq!(a.last().unwrap().val_accuracy, b.last().unwrap().val_accuracy);
    // No temporary files are left in the run directory.
    for entry in std::fs::read_dir(&run).unwrap().chain(std::fs::read_dir(run.join("checkpoints")).unwrap()) {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp"), "leftover {name}");
    }
}
