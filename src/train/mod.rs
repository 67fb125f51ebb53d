//! Training: the Swift original's recipe (momentum SGD on mean softmax cross-entropy), with run
//! directories, checkpoints and exact resumption.
//!
//! The decoded images live in a TensorFlow variable and each step feeds only the indices of its
//! batch, so no image data crosses the C API per step (unless the decoded set would exceed
//! `cache_limit`: then each batch is decoded from disk and fed, and the variable stays empty).
//! Shuffles come from the host RNG keyed by (seed, epoch) and dropout masks from stateless ops
//! keyed by (seed, step): a resumed run draws exactly what the uninterrupted run would have.

pub mod async_replicas;
pub mod between_ops;
pub mod feeds;
pub mod graph;
pub mod replicas;
pub mod source;
pub mod spec;
pub mod summaries;
pub mod updates;

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::data::images as data;
use crate::data::weights::{self, LoadOptions};
use crate::distributed::between_graph;
use crate::distributed::cluster::{ClusterConfig, Server};
use crate::graph::model;
pub use crate::graph::scoring::accuracy;
use crate::observe::plot;
use crate::observe::tensorboard;
use self::spec::{Replication, TrainSpec};
use self::summaries::Summaries;
use crate::run::checkpoint;
use crate::run::metrics::{self, Row};
use crate::util::fsutil;

use self::async_replicas::async_epoch;

pub use self::feeds::{Batch, StepFeeds, StepOutput};
pub use self::graph::TrainGraph;
pub use self::replicas::{ReplicaStep, split_part};
pub use self::source::{Source, load_source};
pub use crate::data::decoded::{decode_dataset, decoded_bytes, load_images};
pub use crate::graph::params::{init_params, read_params};
pub use crate::graph::scoring::{argmax, softmax_loss};
pub use crate::run::config::{DEFAULT_CACHE_LIMIT, Schedule, TrainConfig};
pub use crate::run::trained::{TrainedRun, load_trained};

/// How a training run ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub epochs: usize,
    pub final_loss: f64,
    pub final_train_accuracy: f64,
    pub final_val_accuracy: Option<f64>,
    pub seconds: f64,
    pub seconds_per_epoch: f64,
    pub device: String,
}

/// Options of one invocation that are not part of the run's recipe.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub resume: bool,
    /// Start over in an existing run directory.
    pub force: bool,
    /// No per-epoch table (setup lines and errors are still printed).
    pub quiet: bool,
    /// Train on a cluster (this process must be its chief, worker 0).
    pub cluster: Option<ClusterConfig>,
    /// Between-graph replication: every worker runs `alexnet train --between-graph`, and this
    /// one (the chief) drives the steps through the ps (see [`crate::distributed::between_graph`]).
    pub between_graph: bool,
}

/// Set by SIGINT/SIGTERM: the loop finishes its step, checkpoints and stops. A second signal
/// while the first is pending ends the process at once (the last checkpoint stays loadable).
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone());
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    flag
}

/// Trains `cfg` in `run_dir` (a new run, or the continuation of one with `opts.resume`).
pub fn train(cfg: &TrainConfig, run_dir: &Path, opts: &RunOptions) -> Result<Summary> {
    let say = |s: String| eprintln!("{s}");
    ensure!(
        !cfg.async_updates || opts.cluster.is_some(),
        "--async needs a cluster to train on: --cluster FILE --job worker --task 0, or the TF_CONFIG environment variable"
    );
    let between = opts.between_graph;
    ensure!(
        !between || opts.cluster.is_some(),
        "--between-graph needs a cluster to train on: --cluster FILE --job worker --task N, or the TF_CONFIG environment variable"
    );
    prepare_run_dir(run_dir, opts)?;
    ensure!(cfg.epochs >= 1, "--epochs must be at least 1");
    model::check_dropout_rate(cfg.dropout)?;

    let dataset = data::scan(&cfg.images)?;
    ensure!(
        dataset.classes == cfg.classes,
        "the classes in {} ([{}]) differ from the run's ([{}])",
        cfg.images.display(),
        dataset.classes.join(", "),
        cfg.classes.join(", ")
    );
    cfg.write(run_dir)?;

    if !dataset.ignored.is_empty() {
        let names: Vec<String> = dataset.ignored.iter().take(5).map(|p| p.display().to_string()).collect();
        let more = if dataset.ignored.len() > 5 { format!(" and {} more", dataset.ignored.len() - 5) } else { String::new() };
        say(format!("note: ignoring {} files that are hidden or have no image extension: {}{more}", dataset.ignored.len(), names.join(", ")));
    }
    let t0 = Instant::now();
    let (dataset, images, source) = load_source(&dataset, &cfg.preprocess, cfg.skip_bad_images, cfg.cache_limit)?;
    say(format!(
        "data: {} classes [{}], {} train + {} val images {} in {:.2} s",
        dataset.classes.len(),
        dataset.classes.join(", "),
        dataset.train.len(),
        dataset.val.len(),
        match source {
            Source::InGraph => "decoded".to_string(),
            Source::Streamed { .. } => format!("checked (over the {} MiB --cache-limit: decoded from disk every step)", cfg.cache_limit >> 20),
        },
        t0.elapsed().as_secs_f64()
    ));

    let specs = model::param_specs(&cfg.model);
    let (params, report) = weights::load(cfg.weights.as_deref(), &specs, &LoadOptions { strict: cfg.strict_weights, seed: cfg.seed })?;
    say(report.to_string());

    let cluster = opts.cluster.as_ref();
    let (placement, server) = match cluster {
        None => (None, None),
        Some(c) => {
            ensure!(
                c.is_chief(),
                "{} is not the chief: in this in-graph design only worker 0 runs `alexnet train`; run `alexnet server` with the same cluster for the other tasks (or give every worker's `alexnet train` --between-graph)",
                c.task_name()
            );
            ensure!(
                matches!(source, Source::InGraph),
                "the data set is over the {} MiB --cache-limit: on a cluster every worker holds it decoded; raise --cache-limit",
                cfg.cache_limit >> 20
            );
            let placement = if between { c.own_placement(&specs)? } else { c.placement(&specs)? };
            (Some(placement), Some(Server::start(c)?))
        }
    };
    let replication = match (placement, cluster) {
        (Some(placement), Some(c)) if between => Replication::BetweenGraph { placement, asynchronous: cfg.async_updates, workers: c.workers().len() },
        (Some(placement), _) => Replication::InGraph { placement, asynchronous: cfg.async_updates },
        _ => Replication::Local,
    };
    let tg = TrainGraph::build(&TrainSpec::of_run(cfg, replication))?;
    let tb = Summaries::build(&tg, cfg)?;
    let (session, device) = match &server {
        None => cfg.runtime.session(&tg.scope.graph())?,
        Some(server) => {
            let c = cluster.unwrap();
            if between {
                // Only the ps and itself: the other workers are clients of their own. The other
                // workers are waited for after `Chief::begin`, so that one that sees this chief's
                // port open soon finds its recipe (see `between_graph::check_recipe`).
                c.wait_for_ps(Duration::from_secs(60))?;
                let own = format!("/job:worker/task:{}", c.task.index);
                cfg.runtime.cluster_session_with(&tg.scope.graph(), &server.target(), &["/job:ps", &own])?
            } else {
                c.wait_for_tasks(Duration::from_secs(60))?;
                cfg.runtime.cluster_session(&tg.scope.graph(), &server.target())?
            }
        }
    };
    // On a cluster, a failed run is most likely a lost task: name it.
    let blame = |e: anyhow::Error| -> anyhow::Error {
        let Some(c) = cluster else { return e };
        let down = c.lost_tasks(Duration::from_secs(3));
        if down.is_empty() {
            return e.context("a session run on the cluster failed");
        }
        e.context(format!(
            "lost {}: {} training cannot go on without it; restart it, then continue with: alexnet train{} --run-dir {} --resume (and the same cluster)",
            down.join(", "),
            if cfg.async_updates { "asynchronous" } else { "synchronous" },
            if between { " --between-graph" } else { "" },
            run_dir.display()
        ))
    };
    // Between-graph: the workers hold until the variables are ready (see `chief.release`).
    let chief = match cluster {
        Some(c) if between => Some(between_graph::Chief::begin(&tg, &session, c, cfg.async_updates, &between_graph::recipe(cfg, &dataset)).map_err(blame)?),
        _ => None,
    };
    if let (Some(c), true) = (cluster, between) {
        c.wait_for_tasks(Duration::from_secs(60))?;
    }
    let (intra, inter) = cfg.runtime.threads();
    say(format!("device: {device}; threads: intra-op {intra}, inter-op {inter}; precision {}", cfg.precision.name()));
    if let Some((images, labels)) = images {
        // The host copy is dropped right after: the graph holds the data set from here on.
        tg.load_data(&session, &images, &labels).map_err(blame)?;
    }
    tg.init_variables(&session, &params).map_err(blame)?;

    let n_train = dataset.train.len();
    let train_idx: Vec<i32> = (0..n_train as i32).collect();
    let val_idx: Vec<i32> = (n_train as i32..(n_train + dataset.val.len()) as i32).collect();
    let train_labels: Vec<usize> = dataset.train.iter().map(|e| e.label).collect();
    let val_labels: Vec<usize> = dataset.val.iter().map(|e| e.label).collect();
    let batch = if cfg.batch_size == 0 { n_train } else { cfg.batch_size.min(n_train) };
    let eval_chunk = batch.max(60);

    let metrics_path = run_dir.join("metrics.csv");
    let mut rows = vec![];
    let mut start_epoch = 0;
    if opts.resume {
        if let Some((prefix, epoch)) = checkpoint::latest(run_dir)? {
            let restored = tg.saver.restore(&session, &prefix)?;
            ensure!(restored == epoch, "checkpoint {} holds epoch {restored}, expected {epoch}", prefix.display());
            start_epoch = epoch + 1;
            if metrics_path.exists() {
                rows = metrics::read(&metrics_path)?;
                rows.retain(|r| r.epoch <= epoch);
            }
            say(format!("resumed from {} (epoch {epoch})", prefix.parent().unwrap().display()));
        } else {
            say("no checkpoint yet: starting from the beginning".into());
        }
    }
    metrics::write(&metrics_path, &rows)?;
    let tb_dir = tb.open(&session, &tg.scope.graph(), run_dir, start_epoch)?;
    if start_epoch >= cfg.epochs {
        say(format!("the run already has {} epochs; nothing to train (raise --epochs to continue)", cfg.epochs));
    }

    let interrupted = interrupt_flag();
    let bar = progress_bar(((cfg.epochs - start_epoch.min(cfg.epochs)) * n_train.div_ceil(batch)) as u64, opts.quiet);
    let print_row = |s: String| match (opts.quiet, bar.is_hidden()) {
        (true, _) => {}
        (false, true) => say(s),
        (false, false) => bar.println(s),
    };
    print_row(metrics::display_header());
    let steps_per_epoch = n_train.div_ceil(batch);
    let total_steps = cfg.epochs * steps_per_epoch;
    if let Some(chief) = &chief {
        chief.release(&session, start_epoch * steps_per_epoch, total_steps).map_err(blame)?;
    }
    // Train accuracy is the Swift original's: inference mode, after the epoch's step. With one
    // full-set step per epoch, the next step computes exactly that on the way (the convolutions
    // are shared, and its dropout-off fc head gives the pre-update logits), so the row waits one
    // step instead of running another forward pass. Epochs that end in a checkpoint (and the
    // last, and an interrupted one) still run the pass: every row on disk is final, and a
    // resumed run computes every row the way the uninterrupted run did.
    let lookahead = steps_per_epoch == 1 && cluster.is_none();
    let mut pending: Option<Row> = None;
    // TensorBoard's images show the first val image.
    let example = source.batch(&[n_train as i32])?;
    let finish = |row: Row, rows: &mut Vec<Row>| -> Result<()> {
        print_row(row.display());
        let last = row.epoch + 1 == cfg.epochs;
        tb.epoch(&session, &tg, &example, &row, cfg.schedule.rate(cfg.learning_rate, row.epoch, cfg.epochs), last)?;
        rows.push(row);
        metrics::write(&metrics_path, rows)
    };
    let diverged = |loss: f32, epoch: usize, b: usize| -> Result<anyhow::Error> {
        bar.finish_and_clear();
        let kept = checkpoint::latest(run_dir)?.map(|(p, e)| format!("the last good checkpoint ({}, epoch {e}) is kept", p.parent().unwrap().display()));
        Ok(anyhow::anyhow!(
            "loss became {loss} in epoch {epoch} (step {b}): training diverged; {} (try a lower --lr)",
            kept.unwrap_or_else(|| "no checkpoint was written yet".into())
        ))
    };
    // Asynchronous: the replicas still training (all of them until a worker is lost).
    let mut live: Vec<usize> = (0..tg.replica_steps().len()).collect();
    let started = Instant::now();
    for epoch in start_epoch..cfg.epochs {
        let mut order = train_idx.clone();
        crate::util::rng::Rng::new(cfg.seed, 1_000_000 + epoch as u64).shuffle(&mut order);
        let lr = cfg.schedule.rate(cfg.learning_rate, epoch, cfg.epochs);
        let mut loss_sum = 0.0;
        let mut trained = n_train;
        if let Some(chief) = &chief {
            let batches: Vec<&[i32]> = order.chunks(batch).collect();
            let feeds = (lr, cfg.dropout, cfg.seed as i64);
            let e = chief.epoch(&session, &tg, &batches, (epoch * steps_per_epoch, total_steps), feeds, &bar, &blame)?;
            if let Some((loss, b)) = e.diverged {
                return Err(diverged(loss, epoch, b)?);
            }
            (loss_sum, trained) = (e.loss_sum, e.examples);
        } else if let Some(c) = cluster.filter(|_| cfg.async_updates) {
            let batches: Vec<&[i32]> = order.chunks(batch).collect();
            let feeds = (lr, cfg.dropout, cfg.seed as i64);
            let e = async_epoch(&session, tg.replica_steps(), &mut live, &batches, feeds, epoch * steps_per_epoch, c, &bar).map_err(blame)?;
            if let Some((loss, b)) = e.diverged {
                return Err(diverged(loss, epoch, b)?);
            }
            (loss_sum, trained) = (e.loss_sum, e.examples);
        } else {
            for (b, part) in order.chunks(batch).enumerate() {
                let step = (epoch * steps_per_epoch + b) as i64;
                let out = tg.run_step(&session, &source.batch(part)?, lr, cfg.dropout, [cfg.seed as i64, step]).map_err(blame)?;
                if let Some(mut row) = pending.take() {
                    let labels: Vec<usize> = part.iter().map(|&i| train_labels[i as usize]).collect();
                    row.train_accuracy = accuracy(&out.logits, &labels);
                    finish(row, &mut rows)?;
                }
                let loss = out.loss;
                if !loss.is_finite() {
                    return Err(diverged(loss, epoch, b)?);
                }
                loss_sum += loss as f64 * part.len() as f64;
                bar.inc(1);
            }
        }
        let last = epoch + 1 == cfg.epochs;
        let stop = interrupted.load(Ordering::SeqCst);
        let checkpoint_now = last || stop || (cfg.checkpoint_every > 0 && (epoch + 1) % cfg.checkpoint_every == 0);
        let val_accuracy = if epoch % cfg.val_every.max(1) == 0 || last {
            Some(accuracy(&source.logits(&tg, &session, &val_idx, eval_chunk).map_err(blame)?, &val_labels))
        } else {
            None
        };
        let mut row = Row { epoch, loss: loss_sum / trained.max(1) as f64, train_accuracy: f64::NAN, val_accuracy };
        if lookahead && !checkpoint_now && !tb.images_due(epoch, last) {
            pending = Some(row);
        } else {
            row.train_accuracy = accuracy(&source.logits(&tg, &session, &train_idx, eval_chunk).map_err(blame)?, &train_labels);
            finish(row, &mut rows)?;
        }
        if checkpoint_now {
            tg.saver.save(&session, run_dir, epoch)?;
        }
        if stop {
            bar.finish_and_clear();
            plot::write_run_curves(run_dir, &rows)?;
            bail!(
                "interrupted after epoch {epoch}; checkpoint written. Continue with: alexnet train --run-dir {} --resume",
                run_dir.display()
            );
        }
    }
    bar.finish_and_clear();
    if let Some(chief) = &chief {
        chief.finish(&session).map_err(blame)?;
    }
    tb.close(&session)?;
    let seconds = started.elapsed().as_secs_f64();
    let trained = cfg.epochs.saturating_sub(start_epoch);
    let last = rows.last().context("no epochs were trained")?;
    let summary = Summary {
        epochs: cfg.epochs,
        final_loss: last.loss,
        final_train_accuracy: last.train_accuracy,
        final_val_accuracy: rows.iter().rev().find_map(|r| r.val_accuracy),
        seconds,
        seconds_per_epoch: seconds / trained.max(1) as f64,
        device,
    };
    fsutil::write_atomic(&run_dir.join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    plot::write_run_curves(run_dir, &rows)?;
    say(format!(
        "trained {trained} epochs in {:.1} s ({:.2} s per epoch); final train accuracy {:.2}%, val accuracy {}",
        seconds,
        summary.seconds_per_epoch,
        summary.final_train_accuracy,
        summary.final_val_accuracy.map(|v| format!("{v:.2}%")).unwrap_or("-".into())
    ));
    say(format!(
        "tensorboard: {} ({:.0} ms of summaries per epoch); curves: {}",
        tb_dir.display(),
        tb.seconds_per_epoch() * 1000.0,
        run_dir.join(plot::CURVES).display()
    ));
    Ok(summary)
}

/// Refuses to overwrite a run silently.
fn prepare_run_dir(run_dir: &Path, opts: &RunOptions) -> Result<()> {
    let has_run = run_dir.join("config.json").exists();
    if has_run && !opts.resume {
        if !opts.force {
            bail!(
                "{} already holds a run: add --resume to continue it, or --force to start it over (its checkpoints and metrics are deleted)",
                run_dir.display()
            );
        }
        for sub in ["checkpoints", "metrics.csv", "summary.json", "config.json", tensorboard::DIR, plot::CURVES] {
            let p = run_dir.join(sub);
            if p.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else if p.exists() {
                std::fs::remove_file(&p)?;
            }
        }
    }
    std::fs::create_dir_all(run_dir).with_context(|| format!("cannot create run directory {}", run_dir.display()))
}
fn progress_bar(total: u64, quiet: bool) -> indicatif::ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} steps  {elapsed_precise} (eta {eta})").unwrap(),
    );
    bar
}
