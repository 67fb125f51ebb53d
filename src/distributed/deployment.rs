//! Training on a cluster as its chief (worker 0), as a [`Deployment`] of `crate::train`: the
//! variables on the ps tasks and either one replica per worker in the chief's graph (in-graph,
//! synchronous through the local loop or asynchronous replicas), or this worker's replica only,
//! the chief driving the other workers' steps through the ps (between-graph).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, ensure};
use tensorflow::Session;

use crate::distributed::between_graph::{self, Chief, ChiefDriver};
use crate::distributed::cluster::{ClusterConfig, Server};
use crate::graph::model;
use crate::run::config::TrainConfig;
use crate::train::async_replicas::{AsyncReplicas, Workers};
use crate::train::deployment::{Blame, Deployment, Run};
use crate::train::epoch::EpochDriver;
use crate::train::graph::TrainGraph;
use crate::train::local::LocalLoop;
use crate::train::pipelined::{BadFiles, PipelineLoop};
use crate::train::source::{Source, check_parts};
use crate::train::spec::Replication;
use crate::train::{self, RunOptions, Summary};

/// Trains `cfg` in `run_dir`: in this process, or, with a `cluster`, as its chief (in-graph, or
/// `between_graph`).
pub fn train(cfg: &TrainConfig, run_dir: &Path, opts: &RunOptions, cluster: Option<&ClusterConfig>, between_graph: bool) -> Result<Summary> {
    let Some(cluster) = cluster else {
        // (--async without a cluster is refused by `train::train`.)
        ensure!(
            !between_graph || cfg.async_updates,
            "--between-graph needs a cluster to train on: --cluster FILE --job worker --task N, or the TF_CONFIG environment variable"
        );
        return train::train(cfg, run_dir, opts);
    };
    let mut chief = ClusterChief {
        cluster,
        between: between_graph,
        asynchronous: cfg.async_updates,
        run_dir: run_dir.to_path_buf(),
        server: None,
        workers: ClusterWorkers(cluster),
    };
    train::train_on(cfg, run_dir, opts, &mut chief)
}

/// The chief of a cluster.
struct ClusterChief<'c> {
    cluster: &'c ClusterConfig,
    /// Between-graph replication (else in-graph).
    between: bool,
    asynchronous: bool,
    run_dir: PathBuf,
    server: Option<Server>,
    workers: ClusterWorkers<'c>,
}

impl Blame for ClusterChief<'_> {
    /// On a cluster, a failed run is most likely a lost task: name it.
    fn blame(&self, e: anyhow::Error) -> anyhow::Error {
        let down = self.cluster.lost_tasks(Duration::from_secs(3));
        if down.is_empty() {
            return e.context("a session run on the cluster failed");
        }
        e.context(format!(
            "lost {}: {} training cannot go on without it; restart it, then continue with: alexnet train{} --run-dir {} --resume (and the same cluster)",
            down.join(", "),
            if self.asynchronous { "asynchronous" } else { "synchronous" },
            if self.between { " --between-graph" } else { "" },
            self.run_dir.display()
        ))
    }
}

/// The cluster's workers, as the asynchronous replicas see them.
struct ClusterWorkers<'c>(&'c ClusterConfig);

impl Workers for ClusterWorkers<'_> {
    fn is_lost(&self, i: usize) -> bool {
        self.0.is_lost("worker", i, Duration::from_secs(3))
    }

    fn describe(&self, i: usize) -> String {
        self.0.describe("worker", i)
    }
}

impl Deployment for ClusterChief<'_> {
    fn replication(&mut self, cfg: &TrainConfig, source: &Source) -> Result<Replication> {
        let c = self.cluster;
        ensure!(
            c.is_chief(),
            "{} is not the chief: in this in-graph design only worker 0 runs `alexnet train`; run `alexnet server` with the same cluster for the other tasks (or give every worker's `alexnet train` --between-graph)",
            c.task_name()
        );
        ensure!(
            !matches!(source, Source::Streamed { .. }),
            "the data set is over the {} MiB --cache-limit: on a cluster every worker holds it decoded; raise --cache-limit (or train in minibatches, from the pipeline)",
            cfg.cache_limit >> 20
        );
        if let Some(spec) = source.pipeline_spec() {
            check_parts(cfg, spec.train.paths.len(), c.workers().len())?;
        }
        let specs = model::param_specs(&cfg.model);
        let asynchronous = cfg.async_updates;
        let replication = if self.between {
            Replication::BetweenGraph { placement: c.own_placement(&specs)?, asynchronous, workers: c.workers().len() }
        } else {
            Replication::InGraph { placement: c.placement(&specs)?, asynchronous }
        };
        self.server = Some(Server::start(c)?);
        Ok(replication)
    }

    fn session(&mut self, cfg: &TrainConfig, tg: &TrainGraph) -> Result<(Session, String)> {
        let (c, server) = (self.cluster, self.server.as_ref().expect("the server starts with the replication"));
        if self.between {
            // Only the ps and itself: the other workers are clients of their own. The other
            // workers are waited for after `Chief::begin`, so that one that sees this chief's
            // port open soon finds its recipe (see `between_graph::check_recipe`).
            c.wait_for_ps(Duration::from_secs(60))?;
            let own = format!("/job:worker/task:{}", c.task.index);
            cfg.runtime.cluster_session_with(&tg.scope.graph(), &server.target(), &["/job:ps", &own])
        } else {
            c.wait_for_tasks(Duration::from_secs(60))?;
            cfg.runtime.cluster_session(&tg.scope.graph(), &server.target())
        }
    }

    fn driver<'a>(&'a self, run: Run<'a>) -> Result<Box<dyn EpochDriver + 'a>> {
        let Run { cfg, tg, session, source, dataset } = run;
        // From the pipeline: the files its epochs leave out, named.
        let bad = BadFiles::of(source, cfg.drop_remainder);
        if self.between {
            // The workers hold until the variables are ready (see `ChiefDriver::start`).
            let recipe = between_graph::recipe(cfg, dataset);
            let chief = Chief::begin(tg, session, self.cluster, cfg.async_updates, &recipe).map_err(|e| self.blame(e))?;
            self.cluster.wait_for_tasks(Duration::from_secs(60))?;
            return Ok(Box::new(ChiefDriver { chief, tg, session, blame: self, seed: cfg.seed, bad }));
        }
        if cfg.async_updates {
            return Ok(Box::new(AsyncReplicas::new(tg, cfg.seed, session, &self.workers, self, bad)));
        }
        if let (Some(bad), Some(pipeline)) = (bad, tg.pipeline()) {
            return Ok(Box::new(PipelineLoop::new(tg, session, pipeline, cfg.seed, bad, self)));
        }
        Ok(Box::new(LocalLoop { tg, session, source, logits: false, blame: self }))
    }
}
