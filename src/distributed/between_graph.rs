//! Between-graph replication (`alexnet train --between-graph` on every worker task): each worker
//! is a client of its own. All build the same graph: the network's variables and momentum slots
//! on the ps tasks under the same names (a VariableV2 lives in its ps' resource manager, shared
//! by name by every client of the cluster), and one replica (data variable, forward, loss,
//! gradients) on the worker's own device. A worker's session reaches only the ps tasks and
//! itself. Worker i of n takes part i of every global batch (`split_part`), from the same
//! shuffled order as one process.
//!
//! Synchronous updates follow TF1's SyncReplicasOptimizer, cut down to one exact update per batch:
//! - per variable a ConditionalAccumulator on that variable's ps, with SUM reduction: each worker
//!   pushes its gradients already weighted by its share of the batch, so the sum is the gradient
//!   of the whole batch's mean loss (uneven parts included); one more accumulator sums the loss;
//! - a worker computes a step only when the `token` variable on ps 0 names it; it pushes its
//!   gradients tagged with that token (an accumulator drops gradients tagged with an older step);
//! - the chief (worker 0) pushes its own, waits until all n have arrived, then in one run takes
//!   the sums, applies the momentum update and writes the next step's token.
//!
//! Tokens are `generation << 32 | async << 31 | step`; every start of the chief bumps the
//! generation on the ps and writes a HOLD token, so gradients and tokens left by an earlier chief
//! are dropped or ignored, and a restarted chief's workers simply follow its (resumed) steps.
//! With `--async` the chief's token only starts the workers: each then applies its own momentum
//! updates for its parts of the run's batches, as in-graph asynchronous replicas do.
//!
//! The chief also publishes its recipe (`recipe`: what decides the steps, not paths) on ps 0;
//! before its first step of a chief's generation a worker compares its own and refuses to go on,
//! naming every field that differs, since another recipe would compute other parts unnoticed.
//!
//! Nothing here blocks inside TensorFlow: the chief polls how many gradients have arrived and
//! the workers poll the token, and between polls they check that the tasks they wait for still
//! accept connections, so a lost worker is named within about a second.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tensorflow::{Session, SessionRunArgs, Tensor};

use crate::distributed::cluster::{ClusterConfig, Server};
use crate::data::images as data;
use crate::graph::model;
use crate::graph::runtime::CLUSTER_STEP_TIMEOUT_MS;
use crate::train::between_ops::{Protocol, SyncOps};
use crate::train::spec::{Replication, TrainSpec};
use crate::train::deployment::Blame;
use crate::train::epoch::{Epoch, EpochDriver, EpochPlan, EpochStats, warn};
use crate::train::{self, Source, StepFeeds, TrainConfig, TrainGraph, split_part};

/// Low 31 bits of a token: a step, or one of these.
const HOLD: i64 = 0x7fff_fffe;
const END: i64 = 0x7fff_ffff;
const ASYNC_BIT: i64 = 1 << 31;

fn token(generation: i64, asynchronous: bool, step: i64) -> i64 {
    generation << 32 | if asynchronous { ASYNC_BIT } else { 0 } | step
}

fn token_step(t: i64) -> i64 {
    t & 0x7fff_ffff
}

fn token_generation(t: i64) -> i64 {
    t >> 32
}

/// How long a task waits for the one it depends on: the chief for the workers' gradients, a
/// worker for the chief's next token (which may mean: for a lost chief to be restarted).
const WAIT: Duration = Duration::from_millis(CLUSTER_STEP_TIMEOUT_MS as u64);

/// What every worker must share with the chief to compute its parts of the same steps, as
/// (flag or name, value) pairs; not paths or the run directory, which may differ per host.
/// `dataset` is the data set as loaded (after --skip-bad-images).
pub fn recipe(cfg: &TrainConfig, dataset: &data::Dataset) -> Vec<(&'static str, String)> {
    let n_train = dataset.train.len();
    let batch = EpochPlan::new(cfg, n_train).batch;
    vec![
        ("--epochs", cfg.epochs.to_string()),
        ("--batch-size", batch.to_string()),
        ("--seed", cfg.seed.to_string()),
        ("--lr", cfg.learning_rate.to_string()),
        ("--lr-schedule", format!("{:?}", cfg.schedule)),
        ("--momentum", cfg.momentum.to_string()),
        ("--weight-decay", cfg.weight_decay.to_string()),
        ("--dropout", cfg.dropout.to_string()),
        ("--precision", cfg.precision.name().to_string()),
        ("--async", cfg.async_updates.to_string()),
        ("--fc-width", cfg.model.fc_width.to_string()),
        ("--lrn", format!("{:?}", cfg.model.lrn)),
        ("input size", cfg.model.input_size.to_string()),
        ("preprocessing", format!("{:?}", cfg.preprocess)),
        ("classes", dataset.classes.join(", ")),
        ("train images", n_train.to_string()),
        ("val images", dataset.val.len().to_string()),
    ]
}

/// The recipe as published for the chief of `generation`.
fn recipe_json(recipe: &[(&str, String)], generation: i64) -> String {
    let mut map: serde_json::Map<String, serde_json::Value> = recipe.iter().map(|(k, v)| (k.to_string(), v.clone().into())).collect();
    map.insert("generation".into(), generation.into());
    serde_json::Value::Object(map).to_string()
}

fn recipe_generation(published: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(published).ok()?.get("generation")?.as_i64()
}

/// Every field of `mine` that differs from the chief's `published` recipe, as one sentence each.
fn recipe_differences(name: &str, mine: &[(&str, String)], published: &str) -> Result<Vec<String>> {
    let chief: serde_json::Map<String, serde_json::Value> = serde_json::from_str(published).context("the chief's recipe on ps 0 is not JSON")?;
    Ok(mine
        .iter()
        .filter_map(|(k, v)| {
            let theirs = chief.get(*k).and_then(|x| x.as_str()).unwrap_or("(none)");
            (theirs != v).then(|| format!("{name}'s {k} {v} differs from the chief's {theirs}"))
        })
        .collect())
}

/// The chief's side.
pub struct Chief<'a> {
    protocol: &'a Protocol,
    cluster: &'a ClusterConfig,
    generation: i64,
    asynchronous: bool,
    /// Workers found lost (asynchronous: warned about once).
    lost: std::cell::RefCell<Vec<usize>>,
}

impl<'a> Chief<'a> {
    /// A new generation, before the variables are initialised: workers hold, and whatever an
    /// earlier chief left in the accumulators is dropped. `recipe` (see [`recipe`]) is published
    /// first, so that a worker that sees this generation's token finds it.
    pub fn begin(
        tg: &'a TrainGraph,
        session: &Session,
        cluster: &'a ClusterConfig,
        asynchronous: bool,
        recipe: &[(&str, String)],
    ) -> Result<Chief<'a>> {
        let protocol = tg.between.as_ref().context("the graph was not built for between-graph replication")?;
        let generation = protocol.generation.read(session, false)?.unwrap_or(0) + 1;
        protocol.recipe.write(session, recipe_json(recipe, generation))?;
        protocol.generation.write(session, generation)?;
        protocol.token.write(session, token(generation, asynchronous, HOLD))?;
        if let Some(sync) = &protocol.sync {
            // From here on, gradients tagged by an earlier generation are dropped; then the
            // accumulators are emptied of any taken before (a take of one empties one).
            set_acc_step(session, sync, token(generation, false, 0))?;
            let mut args = SessionRunArgs::new();
            let counts: Vec<_> = sync.counts.iter().map(|c| args.request_fetch(&c.operation, c.index)).collect();
            session.run(&mut args)?;
            let mut args2 = SessionRunArgs::new();
            let mut any = false;
            for (c, drain) in counts.into_iter().zip(&sync.drains) {
                if args.fetch::<i32>(c)?[0] > 0 {
                    args2.add_target(drain);
                    any = true;
                }
            }
            if any {
                session.run(&mut args2)?;
            }
        }
        Ok(Chief { protocol, cluster, generation, asynchronous, lost: Default::default() })
    }

    /// The variables hold their initial or restored values: the workers start at `step` (or stop,
    /// when `step` is `total`, the run's number of steps).
    pub fn release(&self, session: &Session, step: usize, total: usize) -> Result<()> {
        if let Some(sync) = &self.protocol.sync {
            set_acc_step(session, sync, token(self.generation, false, step as i64))?;
        }
        self.protocol.token.write(session, self.token_for(step, total))
    }

    fn token_for(&self, step: usize, total: usize) -> i64 {
        token(self.generation, self.asynchronous, if step < total { step as i64 } else { END })
    }

    /// The end of the run: the workers that are still waiting stop.
    pub fn finish(&self, session: &Session) -> Result<()> {
        self.protocol.token.write(session, token(self.generation, self.asynchronous, END))
    }

    /// One epoch of `plan`: its batches, the global batches' losses (synchronous) or those of
    /// the chief's parts (asynchronous). Session run failures go through `blame`.
    pub fn epoch(
        &self,
        session: &Session,
        tg: &TrainGraph,
        (plan, epoch): (&EpochPlan, &Epoch),
        bar: &indicatif::ProgressBar,
        blame: &dyn Fn(anyhow::Error) -> anyhow::Error,
    ) -> Result<EpochStats> {
        let n = self.protocol.workers;
        let total = plan.total_steps();
        let (lr, dropout) = (epoch.learning_rate, epoch.dropout);
        let mut e = EpochStats::default();
        for (b, batch) in epoch.batches(plan.batch).into_iter().enumerate() {
            let step = epoch.first_step + b;
            let part = split_part(batch, 0, n);
            let seed = epoch.dropout_seed(step, 0, n);
            let feeds = StepFeeds::new(lr, dropout, seed)?;
            let loss = match &self.protocol.sync {
                Some(sync) => {
                    ensure!(batch.len() >= n, "a batch of {} examples cannot be split across {n} workers: use a larger --batch-size", batch.len());
                    push(session, tg, sync, part, batch.len(), &feeds, token(self.generation, false, step as i64)).map_err(blame)?;
                    self.wait_for_gradients(session, sync, step, blame)?;
                    let loss = self.update(session, tg, sync, lr, self.token_for(step + 1, total)).map_err(blame)?;
                    e.add(loss, batch.len());
                    loss
                }
                None if part.is_empty() => continue,
                None => {
                    let loss = tg.replica_steps()[0].run(session, part, lr, dropout, seed).map_err(blame)?;
                    e.add(loss, part.len());
                    loss
                }
            };
            if !loss.is_finite() {
                e.diverged = Some((loss, b));
                return Ok(e);
            }
            bar.inc(1);
        }
        if self.asynchronous {
            self.warn_lost(bar);
        }
        Ok(e)
    }

    /// Polls until all n workers' gradients of `step` are in; names a worker that stops
    /// accepting connections meanwhile.
    fn wait_for_gradients(&self, session: &Session, sync: &SyncOps, step: usize, blame: &dyn Fn(anyhow::Error) -> anyhow::Error) -> Result<()> {
        let n = self.protocol.workers;
        let start = Instant::now();
        let mut checked = start;
        loop {
            let mut args = SessionRunArgs::new();
            let count = args.request_fetch(&sync.arrived.operation, sync.arrived.index);
            session.run(&mut args).map_err(|e| blame(e.into()))?;
            let count = args.fetch::<i32>(count).map_err(|e| blame(e.into()))?[0] as usize;
            if count >= n {
                return Ok(());
            }
            if checked.elapsed() >= Duration::from_millis(500) {
                checked = Instant::now();
                if let Some(k) = (1..n).find(|&k| !self.cluster.is_reachable("worker", k)) {
                    // A moment for a worker being restarted by hand to be seen as what it is.
                    std::thread::sleep(Duration::from_millis(200));
                    if !self.cluster.is_reachable("worker", k) {
                        bail!(
                            "lost {}: its gradients for step {step} did not arrive ({count} of {n} did) and it accepts no connection; synchronous training cannot go on without it: restart it (alexnet train --between-graph ... --task {k}), then continue with: alexnet train --between-graph --resume (same run directory and cluster)",
                            self.cluster.describe("worker", k)
                        );
                    }
                }
            }
            if start.elapsed() > WAIT {
                bail!(
                    "only {count} of {n} workers pushed their gradients for step {step} within {} s: is every worker running `alexnet train --between-graph` with the same recipe (--batch-size, --epochs, --seed, images)?",
                    WAIT.as_secs()
                );
            }
            std::thread::sleep(pause(start.elapsed()));
        }
    }

    /// Takes the sums, updates the variables and names the next step for the workers; returns
    /// the global batch's mean loss.
    fn update(&self, session: &Session, tg: &TrainGraph, sync: &SyncOps, lr: f32, next: i64) -> Result<f32> {
        let next = Tensor::from(next);
        let lr = Tensor::from(lr);
        let mut args = SessionRunArgs::new();
        let rate = tg.learning_rate();
        args.add_feed(&rate.operation, rate.index, &lr);
        let v = &self.protocol.token.value;
        args.add_feed(&v.operation, v.index, &next);
        args.add_target(tg.train_op());
        args.add_target(&self.protocol.token_after_update);
        let loss = args.request_fetch(&sync.loss_sum.operation, sync.loss_sum.index);
        session.run(&mut args)?;
        Ok(args.fetch::<f32>(loss)?[0])
    }

    /// Asynchronous: a warning for each worker newly found not accepting connections (the
    /// others carry on).
    fn warn_lost(&self, bar: &indicatif::ProgressBar) {
        let mut lost = self.lost.borrow_mut();
        for k in 1..self.protocol.workers {
            if !lost.contains(&k) && !self.cluster.is_reachable("worker", k) {
                lost.push(k);
                warn(bar, format!("warning: lost {}: it accepts no connection; the other workers carry on asynchronously", self.cluster.describe("worker", k)));
            }
        }
    }
}

/// The chief as the run's epoch driver.
pub struct ChiefDriver<'a> {
    pub chief: Chief<'a>,
    pub tg: &'a TrainGraph,
    pub session: &'a Session,
    pub blame: &'a dyn Blame,
}

impl EpochDriver for ChiefDriver<'_> {
    fn start(&mut self, plan: &EpochPlan, first_step: usize) -> Result<()> {
        self.chief.release(self.session, first_step, plan.total_steps()).map_err(|e| self.blame.blame(e))
    }

    fn run_epoch(&mut self, plan: &EpochPlan, epoch: &Epoch, bar: &indicatif::ProgressBar) -> Result<EpochStats> {
        self.chief.epoch(self.session, self.tg, (plan, epoch), bar, &|e| self.blame.blame(e))
    }

    fn finish(&mut self) -> Result<()> {
        self.chief.finish(self.session).map_err(|e| self.blame.blame(e))
    }
}

fn set_acc_step(session: &Session, sync: &SyncOps, step: i64) -> Result<()> {
    let t = Tensor::from(step);
    let mut args = SessionRunArgs::new();
    args.add_feed(&sync.acc_step.operation, sync.acc_step.index, &t);
    args.add_target(&sync.set_acc_step);
    Ok(session.run(&mut args)?)
}

/// Pushes this worker's gradients (and loss) for its `part` of a batch of `batch_len` examples,
/// tagged with `tag`; returns its part's own mean loss.
fn push(session: &Session, tg: &TrainGraph, sync: &SyncOps, part: &[i32], batch_len: usize, feeds: &StepFeeds, tag: i64) -> Result<f32> {
    let idx = Tensor::<i32>::new(&[part.len() as u64]).with_values(part)?;
    let weight = Tensor::from(part.len() as f32 / batch_len as f32);
    let tag = Tensor::from(tag);
    let mut args = SessionRunArgs::new();
    tg.feed_part(&mut args, &idx, &weight, feeds);
    args.add_feed(&sync.local_step.operation, sync.local_step.index, &tag);
    args.add_target(&sync.push);
    let loss = args.request_fetch(&sync.local_loss.operation, sync.local_loss.index);
    session.run(&mut args)?;
    Ok(args.fetch::<f32>(loss)?[0])
}

/// Between polls: short at first (a step's wait is usually short), longer for long waits.
fn pause(waited: Duration) -> Duration {
    if waited < Duration::from_millis(100) {
        Duration::from_millis(1)
    } else if waited < Duration::from_secs(5) {
        Duration::from_millis(5)
    } else {
        Duration::from_millis(50)
    }
}

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

    let dataset = data::scan(&cfg.images)?;
    let t0 = Instant::now();
    let (dataset, images, source) = train::load_source(&dataset, &cfg.preprocess, cfg.skip_bad_images, cfg.cache_limit)?;
    ensure!(
        matches!(source, Source::InGraph),
        "the data set is over the {} MiB --cache-limit: on a cluster every worker holds it decoded; raise --cache-limit",
        cfg.cache_limit >> 20
    );
    let (images, labels) = images.context("the decoded data set")?;
    eprintln!("{name}: {} train images decoded in {:.2} s", dataset.train.len(), t0.elapsed().as_secs_f64());

    let specs = model::param_specs(&cfg.model);
    let placement = cluster.own_placement(&specs)?;
    let replication = Replication::BetweenGraph { placement, asynchronous: cfg.async_updates, workers: cluster.workers().len() };
    let tg = TrainGraph::build(&TrainSpec::of_run(cfg, replication))?;
    cluster.wait_for_ps(Duration::from_secs(60))?;
    let own = format!("/job:worker/task:{me}");
    let (session, device) = cfg.runtime.cluster_session_with(&tg.scope.graph(), &server.target(), &["/job:ps", &own])?;
    eprintln!("{name}: {device}");
    let protocol = tg.between.as_ref().context("the graph was not built for between-graph replication")?;
    let plan = EpochPlan::new(cfg, dataset.train.len());
    let mut worker = Worker { cfg, cluster, name: &name, quiet, tg: &tg, session: &session, protocol, plan, epoch: None, loss_sum: 0.0, examples: 0, steps: 0 };
    tg.load_data(&session, &images, &labels).map_err(|e| worker.blame(e))?;
    drop(images);
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
        let (me, n) = (self.cluster.task.index, self.cluster.workers().len());
        let plan = &self.plan;
        let (index, b) = plan.step_position(step);
        if self.epoch.as_ref().is_none_or(|e| e.index != index) {
            self.epoch = Some(plan.epoch(index));
        }
        let epoch = self.epoch.as_ref().unwrap();
        let steps_per_epoch = plan.steps_per_epoch;
        let global = epoch.order.chunks(plan.batch).nth(b).with_context(|| format!("step {step} is past the data set's {steps_per_epoch} steps per epoch: does this worker have the chief's images and --batch-size?"))?;
        let part = split_part(global, me, n);
        let (lr, dropout) = (epoch.learning_rate, epoch.dropout);
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
        self.loss_sum += loss as f64 * part.len() as f64;
        self.examples += part.len();
        self.steps += 1;
        if b + 1 == steps_per_epoch {
            if !self.quiet && self.examples > 0 {
                eprintln!("{}: epoch {index}: mean loss of its parts {:.6}", self.name, self.loss_sum / self.examples as f64);
            }
            (self.loss_sum, self.examples) = (0.0, 0);
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_their_fields_apart() {
        let t = token(3, true, 12345);
        assert_eq!((token_generation(t), token_step(t), t & ASYNC_BIT != 0), (3, 12345, true));
        let t = token(7, false, END);
        assert_eq!((token_generation(t), token_step(t), t & ASYNC_BIT != 0), (7, END, false));
        // A later generation's steps are all above an earlier one's (accumulators drop older).
        assert!(token(2, false, 0) > token(1, true, END));
    }

    #[test]
    fn recipe_differences_name_every_field_with_both_values() {
        let chief = [("--epochs", "3".to_string()), ("--batch-size", "12".to_string()), ("--seed", "1".to_string())];
        let mine = [("--epochs", "5".to_string()), ("--batch-size", "24".to_string()), ("--seed", "1".to_string())];
        let d = recipe_differences("worker 1", &mine, &recipe_json(&chief, 4)).unwrap();
        assert_eq!(d, ["worker 1's --epochs 5 differs from the chief's 3", "worker 1's --batch-size 24 differs from the chief's 12"]);
        assert!(recipe_differences("worker 1", &chief, &recipe_json(&chief, 4)).unwrap().is_empty());
        assert_eq!(recipe_generation(&recipe_json(&chief, 4)), Some(4));
    }
}

