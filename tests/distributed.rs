//! Training on a loopback cluster (1 ps + 2 workers): the same losses as one process with the
//! same global batch, also after a chief restart with --resume, and a killed worker named by the
//! chief; with --async, training that carries on without a killed worker. The same with
//! --between-graph (every worker its own `alexnet train`, here with --augment crop-flip), --async
//! included, where a worker given another recipe than the chief's is also refused. In both async
//! runs a file that fails to decode mid-epoch is named by the chief. Every process is killed at
//! the end, pass or fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use alexnet::run::metrics;

/// Kills its processes on drop.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Three free loopback ports, as a cluster file: 1 ps, 2 workers.
fn cluster_file(dir: &Path) -> PathBuf {
    let listeners: Vec<_> = (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let addr: Vec<String> = listeners.iter().map(|l| l.local_addr().unwrap().to_string()).collect();
    let json = format!(r#"{{"cluster": {{"ps": ["{}"], "worker": ["{}", "{}"]}}}}"#, addr[0], addr[1], addr[2]);
    let path = dir.join("cluster.json");
    std::fs::write(&path, json).unwrap();
    path
}

/// `alexnet server` for the ps and worker 1.
fn start_servers(cluster: &Path) -> Procs {
    let mut procs = Procs(vec![]);
    for (job, task) in [("ps", "0"), ("worker", "1")] {
        let child = common::alexnet()
            .args(["server", "--job", job, "--task", task, "--cluster"])
            .arg(cluster)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        procs.0.push(child);
    }
    procs
}

fn train_cmd(images: &Path, run: &Path, extra: &[&str]) -> Command {
    let mut cmd = common::train_command(images, None, run);
    // Batches of 12 of 24: one process and the clusters all train from the tf.data pipeline.
    cmd.args(["--quiet", "--dropout", "0", "--seed", "1", "--batch-size", "12", "--val-every", "1", "--image-summary-every", "0"])
        .args(extra)
        .env_remove("TF_CONFIG");
    cmd
}

/// Runs `cmd` to the end, killing it after `limit`.
fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let watchdog = std::thread::spawn(move || {
        if !common::poll_until(limit, Duration::from_millis(100), || flag.load(std::sync::atomic::Ordering::SeqCst)) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    });
    let out = child.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    watchdog.join().unwrap();
    out
}

/// Rows in `run`'s metrics.csv so far (0 before it exists).
/// A copy of `images` with one training photo swapped for a file that fails to decode mid-epoch
/// (24 files listed, 23 decoded: batches of 12 and 11, parts of 6/6 and 6/5).
fn with_corrupt_file(images: &Path, copy: &Path) -> PathBuf {
    for entry in walkdir(images) {
        let to = copy.join(entry.strip_prefix(images).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, to).unwrap();
    }
    let dogs = copy.join("train/dog");
    let mut files: Vec<_> = std::fs::read_dir(&dogs).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    std::fs::remove_file(&files[0]).unwrap();
    common::write_corrupt_jpeg(&dogs.join("corrupt.jpg"));
    copy.to_path_buf()
}

/// The files under `dir`.
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flat_map(|e| {
            let p = e.unwrap().path();
            if p.is_dir() { walkdir(&p) } else { vec![p] }
        })
        .collect()
}

/// The chief named the file that failed to decode, on its terminal and once in bad-images.txt.
fn assert_corrupt_named(run: &Path, err: &str) {
    assert!(err.contains("corrupt.jpg: failed to decode during training (skipped)"), "{err}");
    let bad = std::fs::read_to_string(run.join("bad-images.txt")).unwrap_or_default();
    assert_eq!(bad.matches("corrupt.jpg: failed to decode").count(), 1, "named once in bad-images.txt: {bad}");
}

fn epochs_written(run: &Path) -> usize {
    metrics::read(&run.join("metrics.csv")).map(|r| r.len()).unwrap_or(0)
}

/// From epoch `from` on, `other`'s loss is within 1e-4 relative of one process's (`one`).
fn assert_losses_match(one: &[metrics::Row], other: &[metrics::Row], from: usize, what: &str) {
    assert!(one.len() > from && other.len() > from, "no epoch {from} to compare: {} and {} rows", one.len(), other.len());
    for (x, y) in one.iter().zip(other).skip(from) {
        assert!((x.loss - y.loss).abs() <= 1e-4 * x.loss.abs(), "epoch {}: one process {} vs {what} {}", x.epoch, x.loss, y.loss);
    }
}

#[test]
fn cluster_matches_one_process_and_names_a_lost_worker() {
    let tmp = common::temp_dir("distributed");
    // 24 training images: 2 steps of 12 per epoch, 6 per worker.
    let images = common::small_dataset(tmp.path(), 12);
    let cluster = cluster_file(tmp.path());
    let limit = Duration::from_secs(240);

    let single = tmp.path().join("single");
    let out = run_bounded(train_cmd(&images, &single, &["--epochs", "3"]), limit);
    assert!(out.status.success(), "single process failed:\n{}", String::from_utf8_lossy(&out.stderr));

    let servers = start_servers(&cluster);
    let dist = tmp.path().join("dist");
    let mut cmd = train_cmd(&images, &dist, &["--epochs", "3", "--job", "worker", "--task", "0"]);
    cmd.arg("--cluster").arg(&cluster);
    let out = run_bounded(cmd, limit);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chief failed:\n{err}");
    assert!(err.contains("cluster through grpc://"), "{err}");

    let a = metrics::read(&single.join("metrics.csv")).unwrap();
    let b = metrics::read(&dist.join("metrics.csv")).unwrap();
    assert_eq!(a.len(), 3);
    assert_eq!(b.len(), 3);
    assert_losses_match(&a, &b, 0, "cluster");
    // Replicas on a cluster sum their halves' gradients in another order than one process: the
    // losses agree within 1e-4 (above), accuracies within one example of the 24.
    for (x, y) in a.iter().zip(&b) {
        common::assert_accuracy_close(x.train_accuracy, y.train_accuracy, 24, &format!("epoch {}", x.epoch));
    }

    // A restarted chief continues from its last checkpoint: the ps' values are replaced by it,
    // and the fourth epoch is the one process's fourth epoch.
    let out = run_bounded(train_cmd(&images, &single, &["--epochs", "4", "--resume"]), limit);
    assert!(out.status.success(), "single process resume failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let mut cmd = train_cmd(&images, &dist, &["--epochs", "4", "--resume", "--job", "worker", "--task", "0"]);
    cmd.arg("--cluster").arg(&cluster);
    let out = run_bounded(cmd, limit);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success() && err.contains("resumed from"), "chief resume failed:\n{err}");
    let a = metrics::read(&single.join("metrics.csv")).unwrap();
    let b = metrics::read(&dist.join("metrics.csv")).unwrap();
    assert_eq!(b.len(), 4);
    assert_losses_match(&a, &b, 3, "resumed cluster");

    // Worker 1 killed mid-run: the chief stops and names it.
    let mut servers = servers;
    let lost = tmp.path().join("lost");
    let mut cmd = train_cmd(&images, &lost, &["--epochs", "1000", "--checkpoint-every", "1", "--job", "worker", "--task", "0"]);
    cmd.arg("--cluster").arg(&cluster);
    let chief = std::thread::spawn(move || run_bounded(cmd, Duration::from_secs(240)));
    let wrote = common::poll_until(Duration::from_secs(180), Duration::from_millis(200), || epochs_written(&lost) >= 1);
    assert!(wrote, "the chief wrote no epoch");
    servers.0[1].kill().unwrap();
    let out = chief.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the chief went on without worker 1:\n{err}");
    assert!(err.contains("lost worker 1 (/job:worker/replica:0/task:1"), "{err}");
    assert!(err.contains("--resume"), "{err}");
    assert!(alexnet::run::checkpoint::latest(&lost).unwrap().is_some(), "no checkpoint kept");
}

/// Runs the chief of `cluster` with `extra` arguments, in the background.
fn spawn_chief(images: &Path, run: &Path, cluster: &Path, extra: &[&str], limit: Duration) -> std::thread::JoinHandle<Output> {
    let mut cmd = train_cmd(images, run, extra);
    cmd.args(["--job", "worker", "--task", "0"]).arg("--cluster").arg(cluster);
    std::thread::spawn(move || run_bounded(cmd, limit))
}

#[test]
fn async_cluster_trains_and_survives_a_lost_worker() {
    let tmp = common::temp_dir("distributed-async");
    // 24 training images: 2 batches of 12 per epoch, 6 per replica.
    let images = common::small_dataset(tmp.path(), 12);
    let cluster = cluster_file(tmp.path());
    let limit = Duration::from_secs(120);

    // --async without a cluster is refused before anything is trained.
    let out = run_bounded(train_cmd(&images, &tmp.path().join("alone"), &["--async", "--epochs", "1"]), limit);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && err.contains("--async needs a cluster"), "{err}");

    let mut servers = start_servers(&cluster);
    let run = tmp.path().join("async");
    // From the Swift original's weights: 3 epochs from scratch hover around ln 2 whichever way.
    let weights = common::weights();
    let out = spawn_chief(&images, &run, &cluster, &["--async", "--epochs", "3", "--weights", weights.to_str().unwrap()], limit).join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "async chief failed:\n{err}");
    let rows = metrics::read(&run.join("metrics.csv")).unwrap();
    assert_eq!(rows.len(), 3, "{err}");
    assert!(rows.iter().all(|r| r.loss.is_finite() && r.val_accuracy.is_some()), "{rows:?}");
    assert!(rows[2].loss < rows[0].loss, "no progress: {rows:?}");

    // Worker 1 killed after the first epoch: the chief names it, carries on alone and finishes;
    // and names the file that failed to decode (each replica skipped it in its pipeline).
    let images = with_corrupt_file(&images, &tmp.path().join("with-corrupt"));
    let lost = tmp.path().join("async-lost");
    let chief = spawn_chief(&images, &lost, &cluster, &["--async", "--epochs", "6"], limit);
    // No timeout of its own: run_bounded's limit ends the chief.
    let _ = common::poll_until(Duration::MAX, Duration::from_millis(100), || epochs_written(&lost) >= 1 || chief.is_finished());
    servers.0[1].kill().unwrap();
    let out = chief.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "the async chief stopped without worker 1:\n{err}");
    assert!(err.contains("warning: lost worker 1 (/job:worker/replica:0/task:1"), "{err}");
    assert!(err.contains("continuing asynchronously with 1 worker"), "{err}");
    let rows = metrics::read(&lost.join("metrics.csv")).unwrap();
    assert_eq!(rows.len(), 6, "{err}");
    assert!(rows.iter().all(|r| r.loss.is_finite()), "{rows:?}");
    assert_corrupt_named(&lost, &err);
}

/// `alexnet train --between-graph` as worker `task` of `cluster`, in the background; its stderr
/// goes to `log`.
fn spawn_between_worker(images: &Path, cluster: &Path, task: usize, extra: &[&str], log: &Path) -> Child {
    let mut cmd = train_cmd(images, &log.with_extension("run"), extra);
    cmd.args(["--between-graph", "--job", "worker", "--task", &task.to_string()]).arg("--cluster").arg(cluster);
    cmd.stdout(Stdio::null()).stderr(std::fs::File::create(log).unwrap()).spawn().unwrap()
}

/// The between-graph chief (worker 0) of `cluster` with `extra` arguments, in the background.
fn spawn_between_chief(images: &Path, run: &Path, cluster: &Path, extra: &[&str], limit: Duration) -> std::thread::JoinHandle<Output> {
    let mut extra = extra.to_vec();
    extra.push("--between-graph");
    spawn_chief(images, run, cluster, &extra, limit)
}

/// Waits up to `limit` for `child` to exit; its exit status, or None if it is still running.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let mut status = None;
    let _ = common::poll_until(limit, Duration::from_millis(100), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status
}

/// `extra` with --augment crop-flip: every worker crops and flips the whole batch as one
/// process would, then takes its part.
fn crop_flip<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    [&["--augment", "crop-flip"][..], extra].concat()
}

#[test]
fn between_graph_matches_one_process_resumes_and_names_a_lost_worker() {
    let tmp = common::temp_dir("distributed-between");
    // 24 training images: 2 steps of 12 per epoch, 6 per worker.
    let images = common::small_dataset(tmp.path(), 12);
    let cluster = cluster_file(tmp.path());
    let limit = Duration::from_secs(180);
    let log = |name: &str| tmp.path().join(format!("{name}.log"));
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();

    let single = tmp.path().join("single");
    let out = run_bounded(train_cmd(&images, &single, &crop_flip(&["--epochs", "3"])), limit);
    assert!(out.status.success(), "single process failed:\n{}", String::from_utf8_lossy(&out.stderr));

    // Only the ps runs `alexnet server`; each worker is a client of its own.
    let mut procs = Procs(vec![]);
    procs.0.push(
        common::alexnet()
            .args(["server", "--job", "ps", "--task", "0", "--cluster"])
            .arg(&cluster)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    procs.0.push(spawn_between_worker(&images, &cluster, 1, &crop_flip(&["--epochs", "3"]), &log("w1-a")));
    let dist = tmp.path().join("dist");
    let out = spawn_between_chief(&images, &dist, &cluster, &crop_flip(&["--epochs", "3"]), limit).join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chief failed:\n{err}\nworker 1:\n{}", read(&log("w1-a")));
    let status = wait_bounded(&mut procs.0[1], Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "worker 1 did not finish with the chief:\n{}", read(&log("w1-a")));
    let w1 = read(&log("w1-a"));
    assert!(w1.contains("worker 1: done after 6 steps"), "{w1}");
    // Every example of its epochs seen: no file named.
    assert!(!w1.contains("failed to decode"), "{w1}");

    let a = metrics::read(&single.join("metrics.csv")).unwrap();
    let b = metrics::read(&dist.join("metrics.csv")).unwrap();
    assert_eq!(b.len(), 3, "{err}");
    assert_losses_match(&a, &b, 0, "between-graph");
    // Replicas on a cluster sum their halves' gradients in another order than one process: the
    // losses agree within 1e-4 (above), accuracies within one example of the 24.
    for (x, y) in a.iter().zip(&b) {
        common::assert_accuracy_close(x.train_accuracy, y.train_accuracy, 24, &format!("epoch {}", x.epoch));
    }

    // The chief killed mid-epoch and restarted with --resume continues from its last checkpoint;
    // worker 1, not restarted, waits for it and follows.
    let out = run_bounded(train_cmd(&images, &single, &crop_flip(&["--epochs", "5", "--resume"])), limit);
    assert!(out.status.success(), "single process resume failed:\n{}", String::from_utf8_lossy(&out.stderr));
    procs.0.push(spawn_between_worker(&images, &cluster, 1, &crop_flip(&["--epochs", "5"]), &log("w1-b")));
    let mut cmd =
        train_cmd(&images, &dist, &crop_flip(&["--epochs", "5", "--resume", "--checkpoint-every", "1", "--between-graph", "--job", "worker", "--task", "0"]));
    cmd.arg("--cluster").arg(&cluster);
    procs.0.push(cmd.stdout(Stdio::null()).stderr(std::fs::File::create(log("chief-b")).unwrap()).spawn().unwrap());
    let wrote = common::poll_until(Duration::from_secs(120), Duration::from_millis(50), || {
        epochs_written(&dist) >= 4 || {
            assert!(procs.0[3].try_wait().unwrap().is_none(), "the chief stopped:\n{}", read(&log("chief-b")));
            false
        }
    });
    assert!(wrote, "the chief wrote no fourth epoch:\n{}", read(&log("chief-b")));
    procs.0[3].kill().unwrap();
    procs.0[3].wait().unwrap();
    let out = spawn_between_chief(&images, &dist, &cluster, &crop_flip(&["--epochs", "5", "--resume"]), limit).join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success() && err.contains("resumed from"), "chief resume failed:\n{err}\nworker 1:\n{}", read(&log("w1-b")));
    assert!(wait_bounded(&mut procs.0[2], Duration::from_secs(30)).is_some_and(|s| s.success()), "{}", read(&log("w1-b")));
    let a = metrics::read(&single.join("metrics.csv")).unwrap();
    let b = metrics::read(&dist.join("metrics.csv")).unwrap();
    assert_eq!(b.len(), 5, "{b:?}");
    assert_losses_match(&a, &b, 3, "resumed between-graph");

    // Worker 1 killed mid-run: the chief names it and stops, without hanging.
    let lost = tmp.path().join("lost");
    procs.0.push(spawn_between_worker(&images, &cluster, 1, &["--epochs", "1000"], &log("w1-c")));
    let w1 = procs.0.len() - 1;
    let chief = spawn_between_chief(&images, &lost, &cluster, &["--epochs", "1000", "--checkpoint-every", "1"], limit);
    let wrote = common::poll_until(Duration::from_secs(120), Duration::from_millis(100), || epochs_written(&lost) >= 1 || chief.is_finished());
    assert!(wrote, "the chief wrote no epoch");
    procs.0[w1].kill().unwrap();
    let killed = Instant::now();
    let out = chief.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the chief went on without worker 1:\n{err}");
    assert!(killed.elapsed() < Duration::from_secs(30), "the chief took {:?} to stop", killed.elapsed());
    assert!(err.contains("lost worker 1 (/job:worker/replica:0/task:1"), "{err}");
    assert!(err.contains("--resume"), "{err}");
    assert!(alexnet::run::checkpoint::latest(&lost).unwrap().is_some(), "no checkpoint kept");

    // With dropout and weight decay, between-graph worker i draws the masks of in-graph replica i
    // and decays on the ps: the same losses as in-graph.
    let recipe = |run: &Path, task: usize| {
        let mut cmd = common::train_command(&images, None, run);
        cmd.args(["--quiet", "--dropout", "0.5", "--weight-decay", "0.0005", "--seed", "2", "--batch-size", "12", "--epochs", "2"])
            .args(["--image-summary-every", "0", "--job", "worker", "--task", &task.to_string()])
            .arg("--cluster")
            .arg(&cluster)
            .env_remove("TF_CONFIG");
        cmd
    };
    let mut server = common::alexnet()
        .args(["server", "--job", "worker", "--task", "1", "--cluster"])
        .arg(&cluster)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let in_graph = tmp.path().join("in-graph-dropout");
    let out = run_bounded(recipe(&in_graph, 0), limit);
    let _ = server.kill();
    let _ = server.wait();
    assert!(out.status.success(), "in-graph chief failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let mut worker = recipe(&tmp.path().join("unused"), 1);
    procs.0.push(worker.arg("--between-graph").stdout(Stdio::null()).stderr(std::fs::File::create(log("w1-d")).unwrap()).spawn().unwrap());
    let between = tmp.path().join("between-dropout");
    let mut chief = recipe(&between, 0);
    chief.arg("--between-graph");
    let out = run_bounded(chief, limit);
    assert!(out.status.success(), "between-graph chief failed:\n{}\nworker 1:\n{}", String::from_utf8_lossy(&out.stderr), read(&log("w1-d")));
    let a = metrics::read(&in_graph.join("metrics.csv")).unwrap();
    let b = metrics::read(&between.join("metrics.csv")).unwrap();
    assert_eq!(b.len(), 2);
    for (x, y) in a.iter().zip(&b) {
        assert!((x.loss - y.loss).abs() <= 1e-5 * x.loss.abs(), "epoch {}: in-graph {} vs between-graph {}", x.epoch, x.loss, y.loss);
    }
}

#[test]
fn between_graph_async_survives_a_lost_worker_and_refuses_another_recipe() {
    let tmp = common::temp_dir("distributed-between-async");
    // 24 training images: 2 batches of 12 per epoch, 6 per worker.
    let images = common::small_dataset(tmp.path(), 12);
    let cluster = cluster_file(tmp.path());
    let limit = Duration::from_secs(120);
    let log = |name: &str| tmp.path().join(format!("{name}.log"));
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();

    let mut procs = Procs(vec![]);
    procs.0.push(
        common::alexnet()
            .args(["server", "--job", "ps", "--task", "0", "--cluster"])
            .arg(&cluster)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Both workers to the end, each skipping a file that fails to decode (in its own copy of the
    // folder, the same one here): the chief names it, and worker 1 on its own terminal.
    let corrupt = with_corrupt_file(&images, &tmp.path().join("with-corrupt"));
    procs.0.push(spawn_between_worker(&corrupt, &cluster, 1, &["--async", "--epochs", "3"], &log("w1-a")));
    let run = tmp.path().join("async");
    let out = spawn_between_chief(&corrupt, &run, &cluster, &["--async", "--epochs", "3"], limit).join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "async chief failed:\n{err}\nworker 1:\n{}", read(&log("w1-a")));
    let rows = metrics::read(&run.join("metrics.csv")).unwrap();
    assert_eq!(rows.len(), 3, "{err}");
    assert!(rows.iter().all(|r| r.loss.is_finite()), "{rows:?}");
    assert_corrupt_named(&run, &err);
    let status = wait_bounded(&mut procs.0[1], Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "worker 1 did not finish with the chief:\n{}", read(&log("w1-a")));
    let w1 = read(&log("w1-a"));
    let named: Vec<&str> = w1.lines().filter(|l| l.contains("corrupt.jpg: failed to decode during training (skipped)")).collect();
    assert_eq!(named.len(), 1, "worker 1 names the file once:\n{w1}");
    assert!(named[0].starts_with("worker 1: warning: "), "as worker 1: {}", named[0]);

    // Worker 1 killed after the chief's first epoch: the chief warns, naming it, and finishes.
    procs.0.push(spawn_between_worker(&images, &cluster, 1, &["--async", "--epochs", "5"], &log("w1-b")));
    let w1 = procs.0.len() - 1;
    let lost = tmp.path().join("async-lost");
    let chief = spawn_between_chief(&images, &lost, &cluster, &["--async", "--epochs", "5"], limit);
    let wrote = common::poll_until(Duration::from_secs(60), Duration::from_millis(100), || epochs_written(&lost) >= 1 || chief.is_finished());
    assert!(wrote, "the chief wrote no epoch");
    procs.0[w1].kill().unwrap();
    let out = chief.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "the async chief stopped without worker 1:\n{err}");
    assert!(err.contains("warning: lost worker 1 (/job:worker/replica:0/task:1"), "{err}");
    let rows = metrics::read(&lost.join("metrics.csv")).unwrap();
    assert_eq!(rows.len(), 5, "{err}");
    assert!(rows.iter().all(|r| r.loss.is_finite()), "{rows:?}");

    // A worker given another recipe than the chief's is refused before its first step, naming
    // every field that differs with both values.
    procs.0.push(spawn_between_worker(&images, &cluster, 1, &["--epochs", "5", "--lr", "0.01"], &log("w1-c")));
    let w1 = procs.0.len() - 1;
    let chief = spawn_between_chief(&images, &tmp.path().join("other-recipe"), &cluster, &["--epochs", "3"], limit);
    let status = wait_bounded(&mut procs.0[w1], Duration::from_secs(60));
    let werr = read(&log("w1-c"));
    assert!(status.is_some_and(|s| !s.success()), "worker 1 was not refused:\n{werr}");
    assert!(werr.contains("worker 1's --epochs 5 differs from the chief's 3"), "{werr}");
    assert!(werr.contains("worker 1's --lr 0.01 differs from the chief's 0.002"), "{werr}");
    assert!(werr.contains("start every worker with the chief's recipe flags"), "{werr}");
    assert!(!werr.contains("--batch-size"), "{werr}");
    // Synchronous: the chief cannot go on without it, and names it.
    let out = chief.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && err.contains("lost worker 1 (/job:worker/replica:0/task:1"), "{err}");
}
