//! The command line as a user meets it: `predict` over a mix of good and bad files, every
//! subcommand without TensorFlow's log lines, shell completions, and `bench` on a missing folder.
//!
//! `predict --weights` needs all eight layers and the Swift original's weights/ has five (no
//! conv4.weights, no fc6..fc8), so `predict` runs from a 1-epoch run on a 2-image-per-class copy.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Scratch space under the target folder, shared by the tests of this file.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

/// The binary with TensorFlow's log level unset, as a user runs it.
fn alexnet_unset() -> Command {
    let mut c = common::alexnet();
    c.env_remove("TF_CPP_MIN_LOG_LEVEL");
    c
}

fn run(c: &mut Command) -> Output {
    c.output().expect("run alexnet")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A 1-epoch run trained with the log level unset; its `train` output is checked for log lines too.
fn trained() -> &'static (PathBuf, Output) {
    static RUN: OnceLock<(PathBuf, Output)> = OnceLock::new();
    RUN.get_or_init(|| {
        let images = common::small_dataset(&scratch().join("data"), 2);
        let run_dir = scratch().join("run");
        let out = run(alexnet_unset()
            .args(["train", "--epochs", "1", "--quiet", "--image-summary-every", "0", "--images"])
            .arg(&images)
            .arg("--run-dir")
            .arg(&run_dir));
        assert!(out.status.success(), "train failed:\n{}", stderr(&out));
        (run_dir, out)
    })
}

/// TensorFlow's C++ log lines: `I1201 14:43:09.123 ...` (glog/absl prefix) and its banners.
fn tf_log_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| {
            let b = l.as_bytes();
            let prefixed = b.len() > 5 && b"IWEF".contains(&b[0]) && b[1..5].iter().all(u8::is_ascii_digit) && b[5] == b' ';
            prefixed || l.contains("absl::InitializeLog") || l.contains("cpu_feature_guard")
        })
        .collect()
}

fn good_images() -> (PathBuf, PathBuf) {
    let first = |class: &str| {
        let mut f: Vec<PathBuf> = std::fs::read_dir(common::images().join("val").join(class)).unwrap().map(|e| e.unwrap().path()).collect();
        f.sort();
        f.remove(0)
    };
    (first("cat"), first("dog"))
}

#[test]
fn predict_names_bad_files_and_classifies_the_rest() {
    let (run_dir, _) = trained();
    let (cat, dog) = good_images();
    let text = scratch().join("x.jpg");
    std::fs::write(&text, "this is a text file, not a JPEG\n").unwrap();
    let missing = scratch().join("missing.jpg");
    let files = [cat.clone(), text.clone(), missing.clone(), dog.clone()];

    let out = run(common::alexnet().arg("predict").arg("--run-dir").arg(run_dir).args(&files));
    let (so, se) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "stdout:\n{so}\nstderr:\n{se}");
    let lines: Vec<&str> = so.lines().collect();
    assert_eq!(lines.len(), 2, "one line per good image:\n{so}");
    for (line, image) in lines.iter().zip([&cat, &dog]) {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 3, "{line}");
        assert_eq!(fields[0], image.display().to_string());
        assert!(["cat", "dog"].contains(&fields[1]), "{line}");
        let p: f32 = fields[2].parse().unwrap();
        assert!((0.0..=1.0).contains(&p), "{line}");
    }
    assert!(!se.contains("{{node") && !se.contains("While"), "TensorFlow node names in:\n{se}");
    let line_of =
        |path: &Path| se.lines().find(|l| l.contains(&path.display().to_string())).unwrap_or_else(|| panic!("{} not named in:\n{se}", path.display()));
    assert!(line_of(&text).contains("not a JPEG, PNG, GIF or BMP image"), "{se}");
    assert!(line_of(&missing).contains("cannot read: No such file"), "{se}");
    assert!(se.contains("2 of 4 files could not be classified"), "{se}");

    let out = run(common::alexnet().arg("predict").arg("--json").arg("--run-dir").arg(run_dir).args(&files));
    let (so, se) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "stdout:\n{so}\nstderr:\n{se}");
    let objects: Vec<serde_json::Value> = so.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(objects.len(), 4, "one object per file, in argument order:\n{so}");
    for (o, f) in objects.iter().zip(&files) {
        assert_eq!(o["path"], f.display().to_string(), "{o}");
    }
    assert!(objects[0]["class"].is_string() && objects[3]["class"].is_string(), "{so}");
    assert_eq!(objects[1]["error"], "not a JPEG, PNG, GIF or BMP image");
    assert!(objects[2]["error"].as_str().unwrap().starts_with("cannot read: No such file"), "{so}");
    assert!(objects[1].get("class").is_none() && objects[2].get("class").is_none(), "{so}");
    assert!(!se.contains("{{node"), "{se}");
}

#[test]
fn predict_names_a_truncated_image() {
    let (run_dir, _) = trained();
    let (cat, _) = good_images();
    let bytes = std::fs::read(&cat).unwrap();
    let truncated = scratch().join("truncated.jpg");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let out = run(common::alexnet().arg("predict").arg("--run-dir").arg(run_dir).arg(&cat).arg(&truncated));
    let (so, se) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "stdout:\n{so}\nstderr:\n{se}");
    assert_eq!(so.lines().count(), 1, "{so}");
    let line = se.lines().find(|l| l.contains("truncated.jpg")).unwrap_or_else(|| panic!("not named:\n{se}"));
    assert!(line.contains("truncated JPEG file"), "{line}");
    assert!(!se.contains("{{node"), "{se}");
    // Refused before decoding, so libjpeg never prints its own "Improper call to JPEG library".
    assert!(!se.contains("JPEG library"), "{se}");
}

#[test]
fn no_tensorflow_log_lines_without_verbose() {
    let (run_dir, train) = trained();
    let mut seen = vec![("train".to_string(), stderr(train))];
    let (cat, _) = good_images();
    let s = scratch().join("quiet");
    std::fs::create_dir_all(&s).unwrap();
    let acts = s.join("acts");
    let p = |p: &Path| p.as_os_str().to_owned();
    let commands: Vec<(&str, Vec<std::ffi::OsString>)> = vec![
        ("devices", vec!["devices".into()]),
        ("graph", vec!["graph".into(), "--out".into(), p(&s.join("graph"))]),
        ("compare-graph", vec!["compare-graph".into()]),
        ("eval", vec!["eval".into(), "--run-dir".into(), p(run_dir)]),
        ("export", vec!["export".into(), "--run-dir".into(), p(run_dir), "--out".into(), p(&s.join("models/1"))]),
        ("predict", vec!["predict".into(), "--run-dir".into(), p(run_dir), p(&cat)]),
        ("activations", vec!["activations".into(), "--run-dir".into(), p(run_dir), "--image".into(), p(&cat), "--out".into(), p(&acts)]),
        ("compare-activations", vec!["compare-activations".into(), "--reference".into(), p(&acts), "--ours".into(), p(&acts)]),
        ("plot", vec!["plot".into(), p(run_dir), "--out".into(), p(&s.join("curves.png"))]),
        ("completions", vec!["completions".into(), "bash".into()]),
    ];
    // In order: compare-activations reads what activations wrote.
    for (name, args) in commands {
        let out = run(alexnet_unset().args(&args));
        assert!(out.status.success(), "{name} failed:\n{}", stderr(&out));
        seen.push((name.to_string(), stderr(&out)));
    }
    seen.push(("serve".to_string(), serve_until_listening_then_stop(&s.join("models"))));
    for (name, err) in &seen {
        let lines = tf_log_lines(err);
        assert!(lines.is_empty(), "alexnet {name} printed TensorFlow log lines:\n{}", lines.join("\n"));
    }
    // The check can fail: asked for them, TensorFlow's lines show (cpu_feature_guard's
    // "optimized to use available CPU instructions" is logged on every x86 CPU with AVX).
    let out = run(alexnet_unset().args(["devices", "--verbose"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(tf_log_lines(&err).iter().any(|l| l.contains("cpu_feature_guard")), "devices --verbose printed no cpu_feature_guard line:\n{err}");
}

/// `alexnet serve` on the exported model until it says it listens (the model is loaded by then),
/// then SIGTERM; its stderr.
fn serve_until_listening_then_stop(base: &Path) -> String {
    use std::io::{BufRead, Read};
    let mut child = alexnet_unset()
        .args(["serve", "--port", "0", "--rest_api_port", "any", "--model-base-path"])
        .arg(base)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("http://127.0.0.1:"), "serve did not start: {line:?}");
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(child.wait().unwrap().success(), "serve did not exit 0 on SIGTERM:\n{err}");
    err
}

#[test]
fn devices_says_which_library_and_the_machine_ram() {
    let out = run(common::alexnet().arg("devices"));
    let so = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = so.lines().next().unwrap();
    assert!(first.contains("CPU-only library") || first.contains("CUDA library"), "{so}");
    let cpu = so.lines().find(|l| l.starts_with("CPU")).unwrap_or_else(|| panic!("no CPU line:\n{so}"));
    assert!(cpu.contains("machine RAM"), "{cpu}");
    assert!(!cpu.contains("memory 0.2 GiB"), "{cpu}");
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(common::alexnet().args(["completions", shell]));
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(!script.trim().is_empty() && script.contains("train"), "{shell} script:\n{script}");
    }
}

#[test]
fn bench_on_a_missing_folder_fails_in_one_line() {
    let missing = scratch().join("no-such-images");
    let out = run(common::alexnet().arg("bench").arg("--images").arg(&missing).arg("--compare-python"));
    let se = stderr(&out);
    assert!(!out.status.success(), "{se}");
    assert_eq!(se.trim().lines().count(), 1, "{se}");
    assert!(se.contains(&missing.display().to_string()) && se.contains("scripts/fetch-data"), "{se}");
    assert!(!se.contains("Traceback"), "{se}");
}
