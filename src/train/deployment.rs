//! Where and how a run's graph runs: the [`Deployment`] interface, and [`Local`], one process on
//! its own devices. The cluster deployments (in-graph replicas, the between-graph chief) are in
//! `crate::distributed`, which implements this interface.

use anyhow::Result;
use tensorflow::Session;

use crate::data::images::Dataset;
use crate::run::config::TrainConfig;
use crate::train::epoch::EpochDriver;
use crate::train::graph::TrainGraph;
use crate::train::local::LocalLoop;
use crate::train::pipelined::{BadFiles, PipelineLoop};
use crate::train::source::Source;
use crate::train::spec::Replication;

/// What a failed session run most likely means (on a cluster: a lost task, named).
pub trait Blame {
    fn blame(&self, e: anyhow::Error) -> anyhow::Error;
}

/// What a deployment's epoch driver runs on.
pub struct Run<'a> {
    pub cfg: &'a TrainConfig,
    pub tg: &'a TrainGraph,
    pub session: &'a Session,
    pub source: &'a Source,
    /// The data set as loaded (after --skip-bad-images).
    pub dataset: &'a Dataset,
}

/// Where a run's graph runs, in the order `train` asks.
pub trait Deployment: Blame {
    /// Checks that the run can go here and starts what it needs (a cluster's server); how the
    /// graph is replicated. `specs` are the model's parameters.
    fn replication(&mut self, cfg: &TrainConfig, source: &Source) -> Result<Replication>;

    /// A session on the built graph, and a description of its devices.
    fn session(&mut self, cfg: &TrainConfig, tg: &TrainGraph) -> Result<(Session, String)>;

    /// The driver of the run's epochs, before the variables are initialised.
    fn driver<'a>(&'a self, run: Run<'a>) -> Result<Box<dyn EpochDriver + 'a>>;
}

/// One process, on its own devices.
pub struct Local;

impl Blame for Local {
    fn blame(&self, e: anyhow::Error) -> anyhow::Error {
        e
    }
}

impl Deployment for Local {
    fn replication(&mut self, _cfg: &TrainConfig, _source: &Source) -> Result<Replication> {
        Ok(Replication::Local)
    }

    fn session(&mut self, cfg: &TrainConfig, tg: &TrainGraph) -> Result<(Session, String)> {
        cfg.runtime.session(&tg.scope.graph())
    }

    fn driver<'a>(&'a self, run: Run<'a>) -> Result<Box<dyn EpochDriver + 'a>> {
        if let (Some(bad), Some(pipeline)) = (BadFiles::of(run.source, run.cfg.drop_remainder), run.tg.pipeline()) {
            return Ok(Box::new(PipelineLoop::new(run.tg, run.session, pipeline, run.cfg.seed, bad, self)));
        }
        Ok(Box::new(LocalLoop { tg: run.tg, session: run.session, source: run.source, logits: true, blame: self }))
    }
}
