//! A non-chief worker's side (`alexnet train --between-graph` on worker 1..n): it follows the
//! chief's tokens, checks its recipe against the chief's, and trains its part of every step the
//! chief names, drawing the steps from the same epoch plan.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tensorflow::Session;

use super::protocol::{ASYNC_BIT, END, HOLD, WAIT, pause, push, push_part, recipe, recipe_differences, recipe_generation, token_generation, token_step};
use crate::data::split;
use crate::distributed::cluster::{ClusterConfig, Server};
use crate::graph::model;
use crate::run::config::TrainConfig;
use crate::train::between_ops::Protocol;
use crate::train::epoch::{Epoch, EpochPlan};
use crate::train::pipelined::{BadFiles, Seen, start_epoch};
use crate::train::progress::Progress;
use crate::train::source::{check_parts, load_pipeline, minibatch_default, wants_pipeline};
use crate::train::spec::{Replication, TrainSpec};
use crate::train::{self, Source, StepFeeds, TrainGraph, split_part};

/// A non-chief worker's `alexnet train --between-graph`: trains its part of every batch of the
/// steps the chief names, writes nothing, prints a line per epoch, and exits when the chief says
/// the run is over.
pub fn work(cfg: &TrainConfig, cluster: &ClusterConfig, quiet: bool) -> Result<()> {
    ensure!(cluster.task.job == "worker", "a {} task does not train: run `alexnet server` for it", cluster.task.job);
    ensure!(cfg.epochs >= 1, "--epochs must be at least 1");
    model::check_dropout_rate(cfg.dropout)?;
    let me = cluster.task.index;
    let name = format!("worker {me}");
    // First, so that the chief, which waits for every task's port, sees this one.
    let server = Server::start(cluster)?;

    // The chief's split: the same folder, fraction and seed give the same one.
    let (dataset, _) = split::dataset(&cfg.images, cfg.val_split, cfg.seed, None)?;
    let mut cfg = cfg.clone();
    if let Some((batch, line)) = minibatch_default(&cfg, dataset.train.len()) {
        eprintln!("{name}: {line}");
        cfg.batch_size = batch;
    }
    let cfg = &cfg;
    // The pipeline's cache files and bad-images.txt: this worker writes no run directory.
    let scratch = tempfile::TempDir::new().context("cannot create a temporary folder for the input pipeline")?;
    let t0 = Instant::now();
    let (dataset, images, source) = if wants_pipeline(cfg, dataset.train.len()) {
        let (kept, source) = load_pipeline(&dataset, cfg, scratch.path())?;
        check_parts(cfg, kept.train.len(), cluster.workers().len())?;
        (kept, None, source)
    } else {
        train::load_source(&dataset, &cfg.preprocess, cfg.skip_bad_images, cfg.cache_limit)?
    };
    ensure!(
        !matches!(source, Source::Streamed { .. }),
        "the data set is over the {} MiB --cache-limit: on a cluster every worker holds it decoded; raise --cache-limit (or train in minibatches, from the pipeline)",
        cfg.cache_limit >> 20
    );
    let how = if images.is_some() { "decoded" } else { "checked (the tf.data pipeline decodes them in the first epoch)" };
    eprintln!("{name}: {} train images {how} in {:.2} s", dataset.train.len(), t0.elapsed().as_secs_f64());

    let specs = model::param_specs(&cfg.model);
    let placement = cluster.own_placement(&specs)?;
    let replication = Replication::BetweenGraph { placement, asynchronous: cfg.async_updates, workers: cluster.workers().len() };
    let tg = TrainGraph::build(&TrainSpec { pipeline: source.pipeline_spec().cloned(), ..TrainSpec::of_run(cfg, replication) })?;
    cluster.wait_for_ps(Duration::from_secs(60))?;
    let own = format!("/job:worker/task:{me}");
    let (session, device) = cfg.runtime.cluster_session_with(&tg.scope.graph(), &server.target(), &["/job:ps", &own])?;
    eprintln!("{name}: {device}");
    let protocol = tg.between.as_ref().context("the graph was not built for between-graph replication")?;
    let plan = EpochPlan::new(cfg, dataset.train.len());
    // The files this worker's own copy fails to decode: named on its terminal (the chief names
    // those of its copy; the same folder fails alike).
    let bad = BadFiles::of(&source, cfg.drop_remainder).map(|b| b.spoken_by(&name));
    let mut worker = Worker {
        cfg,
        cluster,
        name: &name,
        quiet,
        tg: &tg,
        session: &session,
        protocol,
        plan,
        epoch: None,
        loss_sum: 0.0,
        examples: 0,
        steps: 0,
        cursor: None,
        seen: None,
        bad,
    };
    if let Some((images, labels)) = images {
        tg.load_data(&session, &images, &labels).map_err(|e| worker.blame(e))?;
    }
    for p in &tg.pipelines {
        p.hold(&session).map_err(|e| worker.blame(e))?;
    }
    worker.follow(&recipe(cfg, &dataset))?;
    eprintln!("{name}: done after {} steps", worker.steps);
    // See Server's Drop: the process exit ends the gRPC server.
    std::mem::forget(server);
    Ok(())
}

/// A non-chief worker following the chief's tokens.
struct Worker<'a> {
    cfg: &'a TrainConfig,
    cluster: &'a ClusterConfig,
    name: &'a str,
    quiet: bool,
    tg: &'a TrainGraph,
    session: &'a Session,
    protocol: &'a Protocol,
    /// The steps, as the chief and one process draw them.
    plan: EpochPlan,
    /// The epoch of the last step (its shuffled order).
    epoch: Option<Epoch>,
    /// Of the current epoch's parts so far.
    loss_sum: f64,
    examples: usize,
    steps: usize,
    /// From the pipeline: the epoch and batch its iterator yields next (batch None: the epoch's
    /// batches are done).
    cursor: Option<(usize, Option<usize>)>,
    /// From the pipeline: the examples of the epoch's batches so far (None when a restart
    /// skipped batches whose examples it did not see).
    seen: Option<Seen>,
    bad: Option<BadFiles<'a>>,
}

impl Worker<'_> {
    fn blame(&self, e: anyhow::Error) -> anyhow::Error {
        let down = self.cluster.lost_tasks(Duration::from_secs(3));
        if down.is_empty() { e.context(format!("{}: a session run failed", self.name)) } else { e.context(format!("{}: lost {}", self.name, down.join(", "))) }
    }

    /// Runs the steps the chief names until it ends the run; `mine` is this worker's recipe.
    fn follow(&mut self, mine: &[(&str, String)]) -> Result<()> {
        let mut follower = Follower { protocol: self.protocol, cluster: self.cluster, last: None, followed: None, name: self.name };
        // The generation whose chief's recipe was checked: a restarted chief may bring another.
        let mut checked = None;
        eprintln!("{}: waiting for the chief's first step", self.name);
        while let Some(t) = follower.next(self.session, self.cfg.async_updates)? {
            if checked != Some(token_generation(t)) {
                if !check_recipe(self.session, self.protocol, self.name, mine, token_generation(t)).map_err(|e| self.blame(e))? {
                    continue;
                }
                checked = Some(token_generation(t));
            }
            let first = token_step(t) as usize;
            // Asynchronous: the rest of the run, at this worker's own pace; synchronous: one step.
            let last = if self.cfg.async_updates { self.plan.total_steps() } else { first + 1 };
            for step in first..last {
                self.step(step, t)?;
            }
            if self.cfg.async_updates {
                // Stay up until the chief ends the run: until then, a closed port means lost.
                follower.wait_for_end(self.session)?;
                break;
            }
        }
        Ok(())
    }

    /// This worker's part of the run's `step` (synchronous: pushed with the token `t`).
    fn step(&mut self, step: usize, t: i64) -> Result<()> {
        let plan = &self.plan;
        let (index, b) = plan.step_position(step);
        if self.epoch.as_ref().is_none_or(|e| e.index != index) {
            self.epoch = Some(plan.epoch(index));
        }
        if self.tg.is_cut() {
            return self.part_step(step, t);
        }
        let (me, n) = (self.cluster.task.index, self.cluster.workers().len());
        let plan = &self.plan;
        let epoch = self.epoch.as_ref().unwrap();
        let steps_per_epoch = plan.steps_per_epoch;
        let global = epoch.order.chunks(plan.batch).nth(b).with_context(|| {
            format!("step {step} is past the data set's {steps_per_epoch} steps per epoch: does this worker have the chief's images and --batch-size?")
        })?;
        let part = split_part(global, me, n);
        let (lr, dropout) = (epoch.rate(step), epoch.dropout);
        let seed = epoch.dropout_seed(step, me, n);
        let loss = match &self.protocol.sync {
            Some(sync) => {
                ensure!(!part.is_empty(), "a batch of {} examples cannot be split across {n} workers: use a larger --batch-size", global.len());
                push(self.session, self.tg, sync, part, global.len(), &StepFeeds::new(lr, dropout, seed)?, t).map_err(|e| self.blame(e))?
            }
            None if part.is_empty() => return Ok(()),
            None => self.tg.replica_steps()[0].run(self.session, part, lr, dropout, seed).map_err(|e| self.blame(e))?,
        };
        ensure!(loss.is_finite(), "{}: loss became {loss} at step {step}: training diverged", self.name);
        self.counted(loss, part.len(), index, b + 1 == steps_per_epoch);
        Ok(())
    }

    /// Counts a step of `examples` with mean `loss`; at the end of epoch `index`, says so.
    fn counted(&mut self, loss: f32, examples: usize, index: usize, last: bool) {
        self.loss_sum += loss as f64 * examples as f64;
        self.examples += examples;
        self.steps += 1;
        if last {
            if !self.quiet && self.examples > 0 {
                eprintln!("{}: epoch {index}: mean loss of its parts {:.6}", self.name, self.loss_sum / self.examples as f64);
            }
            (self.loss_sum, self.examples) = (0.0, 0);
        }
    }

    /// From the pipeline: this worker's part of the run's `step`, from its own pipeline's batch
    /// of that step (after a restart, the iterator is re-made for the step's epoch and catches up
    /// with it). An epoch whose batches end before its last numbered step (--drop-remainder, a
    /// file that failed) leaves the rest of its steps empty, as the chief's does.
    fn part_step(&mut self, step: usize, t: i64) -> Result<()> {
        let (me, n) = (self.cluster.task.index, self.cluster.workers().len());
        let (index, b) = self.plan.step_position(step);
        if self.cursor.is_some_and(|(e, next)| e == index && next.is_none()) {
            return Ok(());
        }
        if self.cursor != Some((index, Some(b))) {
            start_epoch(self.tg, self.session, self.cfg.seed, index).map_err(|e| self.blame(e))?;
            self.seen = (b == 0).then(|| Seen::new(self.plan.n_train));
            let pipeline = self.tg.pipeline().context("the graph reads no pipeline")?;
            for _ in 0..b {
                ensure!(pipeline.skip(self.session).map_err(|e| self.blame(e))?, "{}: step {step} is past the pipeline's batches of epoch {index}", self.name);
            }
        }
        let epoch = self.epoch.as_ref().context("the step's epoch")?;
        let (lr, dropout, seed) = (epoch.rate(step), epoch.dropout, epoch.dropout_seed(step, me, n));
        let feeds = StepFeeds::new(lr, dropout, seed)?;
        let done = match &self.protocol.sync {
            Some(sync) => push_part(self.session, self.tg, sync, (me, n), &feeds, t)
                .map_err(|e| self.blame(e))?
                .map(|(loss, batch)| (loss, split_part(&batch, me, n).len(), batch)),
            None => {
                self.tg.replica_steps()[0].run_part(self.session, (me, n), lr, dropout, seed).map_err(|e| self.blame(e))?.map(|p| (p.loss, p.examples, p.batch))
            }
        };
        let Some((loss, examples, batch)) = done else {
            self.cursor = Some((index, None));
            return self.name_missing();
        };
        self.cursor = Some((index, Some(b + 1)));
        ensure!(loss.is_finite(), "{}: loss became {loss} at step {step}: training diverged", self.name);
        if let Some(seen) = &mut self.seen {
            seen.mark(&batch);
        }
        let last = b + 1 == self.plan.steps_per_epoch;
        self.counted(loss, examples, index, last);
        if last { self.name_missing() } else { Ok(()) }
    }

    /// At the end of an epoch's batches: names the files they left out, once each.
    fn name_missing(&mut self) -> Result<()> {
        match (self.seen.take(), self.bad.as_mut()) {
            (Some(seen), Some(bad)) => bad.report_missing(&seen, &Progress::new(true)),
            _ => Ok(()),
        }
    }
}

/// Before a worker's first step for the chief of `generation`: Ok(true) when its recipe is the
/// chief's, Ok(false) when a newer chief has begun (the token is a lost chief's last: wait for the
/// next), an error naming every difference otherwise (another recipe would compute other parts of
/// other batches, unnoticed).
fn check_recipe(session: &Session, protocol: &Protocol, name: &str, mine: &[(&str, String)], generation: i64) -> Result<bool> {
    let start = Instant::now();
    loop {
        let published = protocol.recipe.read(session, false)?.context("the chief published no recipe on ps 0")?;
        let differences = recipe_differences(name, mine, &published)?;
        match recipe_generation(&published) {
            Some(g) if g > generation => return Ok(false),
            Some(g) if g == generation && differences.is_empty() => return Ok(true),
            Some(g) if g == generation => {}
            _ => bail!("the recipe on ps 0 is not that of the chief of generation {generation}"),
        }
        // The token and recipe may be those of a lost chief while a new one, its port already
        // open, is about to begin (and publish its own): give it a moment before refusing.
        if start.elapsed() > RECIPE_GRACE {
            bail!("{}; start every worker with the chief's recipe flags and images", differences.join("; "));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How long a worker whose recipe differs waits for a newer chief before it refuses (a chief
/// begins within seconds of opening its port: it waits only for the ps first).
const RECIPE_GRACE: Duration = Duration::from_secs(10);

/// A worker's view of the token.
struct Follower<'a> {
    protocol: &'a Protocol,
    cluster: &'a ClusterConfig,
    /// The token of the step last computed.
    last: Option<i64>,
    /// The generation of the chief followed.
    followed: Option<i64>,
    name: &'a str,
}

impl Follower<'_> {
    /// The next token to compute, or None when the chief followed has ended the run. Waits up to
    /// WAIT for it; a lost chief is reported once and waited for (a restarted one continues).
    fn next(&mut self, session: &Session, asynchronous: bool) -> Result<Option<i64>> {
        let start = Instant::now();
        let mut checked = start;
        let mut chief_lost = false;
        loop {
            let token = self.protocol.token.read(session, self.last.is_some()).context("cannot read the chief's token on ps 0")?;
            if let Some(t) = token {
                let step = token_step(t);
                let generation = token_generation(t);
                // An END is only this worker's if it followed that chief: one found at start
                // is an earlier run's.
                let fresh = Some(t) != self.last && step != HOLD && (step != END || self.followed == Some(generation));
                // A new chief's first token, while no chief answers, is a lost chief's last.
                let stale = fresh && self.followed != Some(generation) && !self.cluster.is_reachable("worker", 0);
                if fresh && !stale {
                    ensure!(
                        (t & ASYNC_BIT != 0) == asynchronous,
                        "{}: the chief runs {} updates: give every worker the same --async choice",
                        self.name,
                        if asynchronous { "synchronous" } else { "asynchronous" }
                    );
                    if step == END {
                        return Ok(None);
                    }
                    self.last = Some(t);
                    self.followed = Some(generation);
                    return Ok(Some(t));
                }
            }
            if checked.elapsed() >= Duration::from_secs(1) {
                checked = Instant::now();
                let reachable = self.cluster.is_reachable("worker", 0);
                if !reachable && !chief_lost {
                    eprintln!(
                        "{}: the chief ({}) accepts no connection; waiting up to {} s for it (restart it with --resume)",
                        self.name,
                        self.cluster.describe("worker", 0),
                        WAIT.as_secs()
                    );
                }
                chief_lost = !reachable;
            }
            if start.elapsed() > WAIT {
                bail!(
                    "{}: no step from the chief ({}) in {} s: start it with `alexnet train --between-graph` and the same cluster",
                    self.name,
                    self.cluster.describe("worker", 0),
                    WAIT.as_secs()
                );
            }
            std::thread::sleep(pause(start.elapsed()));
        }
    }
}

impl Follower<'_> {
    /// Asynchronous, after this worker's last step: waits until the chief ends the run, stops
    /// answering, or WAIT has passed.
    fn wait_for_end(&self, session: &Session) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < WAIT {
            let t = self.protocol.token.read(session, true).context("cannot read the chief's token on ps 0")?;
            if t.is_none_or(|t| token_step(t) == END || Some(token_generation(t)) != self.followed) || !self.cluster.is_reachable("worker", 0) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }
}
