//! The tf.data input pipeline built from raw ops, and training on it.

mod common;

use std::path::Path;

use alexnet::data::images::{self as data, Preprocess};
use alexnet::data::pipeline::check::all_jpeg;
use alexnet::data::pipeline::{AUTOTUNE, Augment, Examples, Pipeline, PipelineSpec, is_end_of_data};
use alexnet::run::metrics;
use tensorflow::{Scope, Session, SessionOptions, SessionRunArgs, Tensor};

fn examples(list: &[data::Example]) -> Examples {
    Examples { paths: list.iter().map(|e| e.path.to_str().unwrap().to_string()).collect(), labels: list.iter().map(|e| e.label as i32).collect() }
}

fn spec_for(images: &Path, augment: Augment) -> PipelineSpec {
    let ds = data::scan(images).unwrap();
    let train = examples(&ds.train);
    let jpeg_only = all_jpeg(&train.paths);
    PipelineSpec {
        train,
        val: examples(&ds.val),
        preprocess: Preprocess::default(),
        augment,
        batch: 16,
        eval_batch: 32,
        drop_remainder: false,
        shuffle_buffer: 1000,
        cache_dir: None,
        parallel_calls: AUTOTUNE,
        jpeg_only,
        device: String::new(),
        cut: false,
        records: None,
    }
}

fn start(spec: &PipelineSpec) -> (Pipeline, Session) {
    let mut scope = Scope::new_root_scope();
    let p = Pipeline::build(&mut scope, spec).unwrap();
    let session = Session::new(&SessionOptions::new(), &scope.graph()).unwrap();
    p.hold(&session).unwrap();
    (p, session)
}

/// Each example's index and image, in the order of an epoch.
type Seen = Vec<(i32, Vec<f32>)>;

/// One training epoch's batches: each example's index and image, in order, and the batches'
/// shapes.
fn train_epoch(p: &Pipeline, session: &Session, seed: u64, epoch: usize) -> (Seen, Vec<Vec<u64>>) {
    p.start_train(session, seed, epoch).unwrap();
    let (mut seen, mut shapes) = (vec![], vec![]);
    loop {
        let mut args = SessionRunArgs::new();
        let img = args.request_fetch(&p.next[0].operation, 0);
        let idx = args.request_fetch(&p.next[2].operation, 2);
        match session.run(&mut args) {
            Err(e) if is_end_of_data(&e) => break,
            r => r.unwrap(),
        }
        let t: Tensor<f32> = args.fetch(img).unwrap();
        shapes.push(t.dims().to_vec());
        let per = t.len() / t.dims()[0] as usize;
        let idx: Tensor<i32> = args.fetch(idx).unwrap();
        seen.extend(idx.iter().enumerate().map(|(k, &i)| (i, t[k * per..(k + 1) * per].to_vec())));
    }
    (seen, shapes)
}

/// Epoch `epoch`'s (indices, first image's first values) from a pipeline over a copy of the
/// Swift set whose files are deleted after the first epoch: later epochs read the cache.
fn epoch(augment: Augment, epoch: usize) -> (Vec<i32>, Vec<f32>) {
    let tmp = common::temp_dir("pipeline");
    let images = common::small_dataset(tmp.path(), 30);
    let (p, session) = start(&spec_for(&images, augment));
    let mut out = (vec![], vec![]);
    for e in 0..=epoch {
        let (seen, _) = train_epoch(&p, &session, 7, e);
        out = (seen.iter().map(|s| s.0).collect(), seen[0].1[..8].to_vec());
        if e == 0 {
            std::fs::remove_dir_all(images.join("train")).unwrap();
        }
    }
    out
}

/// Each epoch is a seeded shuffle of every example, read from the decoded cache after the first
/// (the files are gone by then); crop-flip draws other pixels, reproducibly.
#[test]
fn pipeline_epochs_are_seeded_shuffles_of_every_example() {
    let (a, img_a) = epoch(Augment::None, 1);
    let (b, img_b) = epoch(Augment::None, 1);
    assert_eq!(a, b, "same seed, same epoch: same order");
    assert_eq!(img_a, img_b);
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..60).collect::<Vec<_>>());
    let (c, _) = epoch(Augment::None, 0);
    assert_ne!(a, c, "another epoch, another order");
    let (d, img_d) = epoch(Augment::CropFlip, 1);
    assert_eq!(d, a);
    assert_ne!(img_d, img_a);
}

/// On a cluster, a worker's step takes part k of n of each batch of its pipeline: exactly the
/// rows `split_part` gives of the whole batch (the last partial batch too), weighted by its share.
#[test]
fn a_workers_part_of_each_batch_is_split_part_of_the_batch() {
    let tmp = common::temp_dir("pipeline-cut");
    let images = common::small_dataset(tmp.path(), 30);
    let (p, session) = start(&PipelineSpec { cut: true, ..spec_for(&images, Augment::CropFlip) });
    let cut = p.cut.clone().unwrap();
    let n = 3;
    for e in 0..2 {
        p.start_train(&session, 7, e).unwrap();
        let mut sizes = vec![];
        for b in 0.. {
            let k = (b + e) % n;
            let (part, parts) = (Tensor::from(k as i32), Tensor::from(n as i32));
            let mut args = SessionRunArgs::new();
            args.add_feed(&cut.part.operation, cut.part.index, &part);
            args.add_feed(&cut.parts.operation, cut.parts.index, &parts);
            let whole = args.request_fetch(&cut.batch_indices.operation, cut.batch_indices.index);
            let mine = args.request_fetch(&p.next[2].operation, p.next[2].index);
            let images = args.request_fetch(&p.next[0].operation, p.next[0].index);
            let weight = args.request_fetch(&cut.weight.operation, cut.weight.index);
            match session.run(&mut args) {
                Err(err) if is_end_of_data(&err) => break,
                r => r.unwrap(),
            }
            let whole: Tensor<i32> = args.fetch(whole).unwrap();
            let mine: Tensor<i32> = args.fetch(mine).unwrap();
            let expected = alexnet::train::split_part(&whole, k, n);
            assert_eq!(&mine[..], expected, "epoch {e} batch {b} part {k}");
            assert_eq!(args.fetch::<f32>(images).unwrap().dims()[0] as usize, expected.len());
            assert_eq!(args.fetch::<f32>(weight).unwrap()[0], expected.len() as f32 / whole.len() as f32);
            sizes.push(whole.len());
        }
        assert_eq!(sizes, [16, 16, 16, 12], "epoch {e}");
    }
}

/// Replaces the first `n` files of `dir` by PNGs of other sizes (a drawn pattern).
fn replace_with_pngs(dir: &Path, n: usize) {
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for (k, f) in files.iter().take(n).enumerate() {
        std::fs::remove_file(f).unwrap();
        let img = image::RgbImage::from_fn(300 + 60 * k as u32, 260, |x, y| image::Rgb([x as u8, y as u8, ((x * y) % 251) as u8]));
        img.save(f.with_extension("png")).unwrap();
    }
}

/// random-resized-crop: 227 x 227 batches of every example, the same for a seed and epoch, other
/// windows for another epoch or seed; on JPEGs only (only the window decoded) and on a mix with
/// PNGs (decoded whole, then cut); evaluation takes whole 227 x 227 batches too.
#[test]
fn random_resized_crop_is_seeded_per_epoch_and_takes_pngs() {
    let tmp = common::temp_dir("pipeline-rrc");
    let images = common::small_dataset(tmp.path(), 12);
    let by_index = |run: &[(i32, Vec<f32>)]| {
        let mut v = run.to_vec();
        v.sort_by_key(|x| x.0);
        v.into_iter().map(|x| x.1).collect::<Vec<_>>()
    };
    for mixed in [false, true] {
        if mixed {
            replace_with_pngs(&images.join("train/cat"), 3);
            replace_with_pngs(&images.join("train/dog"), 2);
        }
        let spec = spec_for(&images, Augment::RandomResizedCrop);
        assert_eq!(spec.jpeg_only, !mixed);
        let (p, session) = start(&spec);
        let (a, shapes) = train_epoch(&p, &session, 7, 1);
        assert!(shapes.iter().all(|s| s[1..] == [227, 227, 3]), "{shapes:?}");
        let mut indices: Vec<i32> = a.iter().map(|x| x.0).collect();
        indices.sort();
        assert_eq!(indices, (0..24).collect::<Vec<_>>(), "every example, PNGs too (mixed: {mixed})");
        let (again, _) = train_epoch(&p, &session, 7, 1);
        assert!(a == again, "same seed and epoch: the same batches");
        // A resumed run: a new session that starts at epoch 1.
        let (p2, session2) = start(&spec);
        assert!(a == train_epoch(&p2, &session2, 7, 1).0, "a new session draws the same epoch 1");
        let base = by_index(&a);
        for (seed, e) in [(7, 2), (8, 1)] {
            let other = by_index(&train_epoch(&p, &session, seed, e).0);
            let same = base.iter().zip(&other).filter(|(x, y)| x == y).count();
            assert!(same <= 1, "seed {seed}, epoch {e}: {same} of 24 images as with seed 7, epoch 1");
        }
        p.start_val(&session).unwrap();
        let mut args = SessionRunArgs::new();
        let img = args.request_fetch(&p.next[0].operation, 0);
        session.run(&mut args).unwrap();
        assert_eq!(args.fetch::<f32>(img).unwrap().dims(), [24, 227, 227, 3]);
    }
}

fn make_dataset(args: &[&str]) {
    let out = std::process::Command::new(common::repo().join("scripts/make-dataset")).args(args).output().unwrap();
    assert!(out.status.success(), "make-dataset failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

fn train(images: &Path, run: &Path, extra: &[&str]) -> String {
    let out = common::train_command(images, Some(&common::weights()), run)
        .args(["--quiet", "--image-summary-every", "0", "--val-every", "1", "--seed", "5"])
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "alexnet failed:\n{err}");
    err
}

/// 40 generated photos per split and class, one of them truncated (refused up front unless
/// skipped) and one that passes the check but fails to decode.
fn photos_with_bad_files(tmp: &Path) -> std::path::PathBuf {
    let images = tmp.join("photos");
    make_dataset(&[common::images().to_str().unwrap(), images.to_str().unwrap(), "40", "--bad", "1", "--seed", "2"]);
    common::write_corrupt_jpeg(&images.join("train/dog/corrupt.jpg"));
    images
}

/// Trains `recipe` for 2 epochs, and for 1 then 1 more with --resume: the failing file is
/// skipped mid-epoch and named once, the runs' rows are equal; returns the rows.
fn resumes_exactly(images: &Path, tmp: &Path, recipe: &[&str]) -> Vec<metrics::Row> {
    std::fs::create_dir_all(tmp).unwrap();
    let recipe = [recipe, &["--skip-bad-images", "--checkpoint-every", "1"]].concat();
    let full = tmp.join("full");
    let err = train(images, &full, &[&recipe[..], &["--epochs", "2"]].concat());
    assert!(err.contains("corrupt.jpg: failed to decode during training (skipped)"), "{err}");
    let bad = std::fs::read_to_string(full.join("bad-images.txt")).unwrap();
    assert!(bad.contains("bad-0000.jpg: truncated JPEG") && bad.contains("corrupt.jpg: failed to decode"), "{bad}");
    assert_eq!(bad.lines().count(), 2, "each file named once: {bad}");
    let rows = metrics::read(&full.join("metrics.csv")).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.loss.is_finite() && r.val_accuracy.is_some()));

    let split = tmp.join("split");
    train(images, &split, &[&recipe[..], &["--epochs", "1"]].concat());
    train(images, &split, &[&recipe[..], &["--epochs", "2", "--resume"]].concat());
    let resumed = metrics::read(&split.join("metrics.csv")).unwrap();
    assert_eq!(resumed, rows, "resume mid-run == uninterrupted (same shuffles, crops and dropout; {recipe:?})");
    rows
}

/// Minibatches with crop-flip, then random-resized-crop, from the pipeline on generated photos:
/// a truncated file is refused up front (or skipped), a file that passes the check but fails to
/// decode is skipped mid-epoch and named; both land in bad-images.txt; a resumed run equals the
/// uninterrupted one; the two augmentations train on other pixels.
#[test]
fn minibatch_pipeline_training_skips_bad_files_and_resumes_exactly() {
    let tmp = common::temp_dir("pipeline-train");
    let images = photos_with_bad_files(tmp.path());
    let refused = common::train_command(&images, None, &tmp.path().join("refused")).args(["--quiet", "--batch-size", "8"]).output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("bad-0000.jpg: truncated JPEG"), "{err}");

    let crop_flip = resumes_exactly(&images, &tmp.path().join("crop-flip"), &["--batch-size", "8", "--augment", "crop-flip"]);
    let resized = resumes_exactly(&images, &tmp.path().join("rrc"), &["--batch-size", "8", "--augment", "random-resized-crop"]);
    assert_ne!(crop_flip[0].loss, resized[0].loss, "random-resized-crop trains on other crops than crop-flip");
}

/// The drawn shapes set is learnt in a few epochs from the pipeline; the best validation is
/// kept as checkpoints/best and `eval --checkpoint best` reads it; --early-stop ends a run that
/// stops improving (here a learning rate of 0), saying so.
#[test]
fn shapes_are_learnt_best_checkpoint_is_kept_and_early_stop_stops() {
    let tmp = common::temp_dir("pipeline-shapes");
    let images = tmp.path().join("shapes");
    make_dataset(&["--shapes", images.to_str().unwrap(), "100", "--classes", "4", "--seed", "1"]);
    let run = tmp.path().join("run");
    train(&images, &run, &["--batch-size", "16", "--lr", "0.005", "--epochs", "4", "--checkpoint-every", "0"]);
    let rows = metrics::read(&run.join("metrics.csv")).unwrap();
    let last = rows.last().unwrap().val_accuracy.unwrap();
    assert!(last >= 75.0, "val accuracy after 4 epochs: {last}% ({rows:?})");
    let best = rows.iter().filter_map(|r| r.val_accuracy.map(|v| (v, r.epoch))).fold((-1.0, 0), |a, b| if b.0 > a.0 { b } else { a });
    let named = std::fs::read_to_string(run.join("checkpoints/best")).unwrap();
    assert_eq!(named.trim(), format!("epoch-{:06}", best.1));
    let out = common::alexnet().args(["eval", "--checkpoint", "best", "--run-dir"]).arg(&run).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("val: accuracy"), "{text}");

    let stopped = tmp.path().join("stopped");
    let err = train(&images, &stopped, &["--batch-size", "16", "--lr", "0", "--dropout", "0", "--epochs", "5", "--early-stop", "1"]);
    assert!(err.contains("early stop: no better val accuracy in 1 validations"), "{err}");
    assert_eq!(metrics::read(&stopped.join("metrics.csv")).unwrap().len(), 2, "stopped after epoch 1");
}

/// On a terminal (a pty from `script`), the per-step bar shows the epoch's steps, images/s from
/// the steps' batch sizes and the time left; without one (every other test) it stays hidden.
#[test]
fn progress_bar_shows_images_rate_and_time_left_on_a_terminal() {
    if std::process::Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux's `script` (for a pty) is not installed");
        return;
    }
    let tmp = common::temp_dir("pipeline-bar");
    let images = common::small_dataset(tmp.path(), 8);
    let mut train = common::train_command(&images, None, &tmp.path().join("run"));
    train.args(["--batch-size", "4", "--epochs", "1", "--image-summary-every", "0"]);
    let line: Vec<String> = std::iter::once(train.get_program()).chain(train.get_args()).map(|a| format!("'{}'", a.to_str().unwrap())).collect();
    let out = std::process::Command::new("script").args(["-q", "-e", "-c", &line.join(" "), "/dev/null"]).env("TF_CPP_MIN_LOG_LEVEL", "3").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // 16 training images (8 a class), in 4 steps of 4.
    assert!(text.contains("epoch 1/1") && text.contains("16/16 images"), "{text}");
    let rates: Vec<&str> = text.split(" images/s").filter_map(|before| before.rsplit(' ').next()).collect();
    assert!(rates.iter().any(|r| r.parse::<f64>().is_ok_and(|v| v > 0.0)), "a measured images/s: {rates:?}\n{text}");
    assert!(text.contains("eta 0:0"), "{text}");
}
