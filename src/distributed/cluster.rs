//! Distributed training on TensorFlow's own runtime: the cluster description (TF_CONFIG or
//! `--cluster FILE --job NAME --task N`), the ServerDef handed to TF_NewServer, a small safe
//! wrapper over the C API's server functions, and where variables and replicas are placed.
//!
//! The default design is in-graph replication: the chief (worker 0) is the only client. Its graph
//! holds the variables on the `ps` tasks and one forward pass per worker, pinned to that worker;
//! the gradients of the shards are averaged into one momentum update (or, with `--async`, each
//! replica applies its own from a thread of the chief). The other workers and the ps only run
//! `alexnet server`. With `--between-graph` every worker is a client of its own: see
//! [`crate::distributed::between_graph`].

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::graph::model::ParamSpec;
use crate::proto::tensorflow::{ClusterDef, JobDef, ServerDef};
pub use crate::train::spec::{Placement, device};

/// The TF_CONFIG layout: `{"cluster": {"ps": [...], "worker": [...]}, "task": {"type": "worker", "index": 0}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// Job name to the addresses (host:port) of its tasks, in task order.
    pub cluster: BTreeMap<String, Vec<String>>,
    pub task: Task,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    #[serde(rename = "type")]
    pub job: String,
    pub index: usize,
}

impl ClusterConfig {
    /// From `--cluster FILE` (the TF_CONFIG JSON; its "task" may be left out) with `--job` and
    /// `--task`, else from the TF_CONFIG environment variable; None when neither is given.
    pub fn from_args_or_env(file: Option<&Path>, job: Option<&str>, task: Option<usize>) -> Result<Option<ClusterConfig>> {
        let (text, origin) = match file {
            Some(f) => (std::fs::read_to_string(f).with_context(|| format!("cannot read the cluster file {}", f.display()))?, f.display().to_string()),
            None => match std::env::var("TF_CONFIG") {
                Ok(t) if !t.trim().is_empty() => (t, "TF_CONFIG".to_string()),
                _ => {
                    ensure!(job.is_none() && task.is_none(), "--job and --task need --cluster FILE (or TF_CONFIG)");
                    return Ok(None);
                }
            },
        };
        let mut value: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{origin} is not JSON"))?;
        if let (Some(job), Some(obj)) = (job, value.as_object_mut()) {
            obj.insert("task".into(), serde_json::json!({"type": job, "index": task.unwrap_or(0)}));
        }
        let cfg: ClusterConfig = serde_json::from_value(value).with_context(|| {
            format!(r#"{origin} must look like {{"cluster": {{"ps": ["host:port"], "worker": ["host:port", ...]}}, "task": {{"type": "worker", "index": 0}}}} (or give --job and --task)"#)
        })?;
        cfg.validate()?;
        Ok(Some(cfg))
    }

    fn validate(&self) -> Result<()> {
        let tasks = self.cluster.get(&self.task.job).with_context(|| {
            format!("task type '{}' is not a job of the cluster ({})", self.task.job, self.cluster.keys().cloned().collect::<Vec<_>>().join(", "))
        })?;
        ensure!(self.task.index < tasks.len(), "task {} of job '{}' does not exist: the job has {} tasks", self.task.index, self.task.job, tasks.len());
        ensure!(!self.workers().is_empty(), "the cluster has no 'worker' job");
        Ok(())
    }

    pub fn workers(&self) -> &[String] {
        self.cluster.get("worker").map(|v| v.as_slice()).unwrap_or(&[])
    }

    pub fn ps(&self) -> &[String] {
        self.cluster.get("ps").map(|v| v.as_slice()).unwrap_or(&[])
    }

    pub fn is_chief(&self) -> bool {
        self.task.job == "worker" && self.task.index == 0
    }

    pub fn task_name(&self) -> String {
        device(&self.task.job, self.task.index)
    }

    /// tensorflow.ServerDef for this task.
    pub fn server_def(&self) -> Vec<u8> {
        let job = self
            .cluster
            .iter()
            .map(|(name, addrs)| JobDef { name: name.clone(), tasks: addrs.iter().enumerate().map(|(i, a)| (i as i32, a.clone())).collect() })
            .collect();
        ServerDef {
            cluster: Some(ClusterDef { job }),
            job_name: self.task.job.clone(),
            task_index: self.task.index as i32,
            protocol: "grpc".into(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// Tasks whose port accepts no connection: what a step failure is blamed on.
    pub fn unreachable_tasks(&self) -> Vec<String> {
        let mut down = vec![];
        for (job, addrs) in &self.cluster {
            for i in 0..addrs.len() {
                if !self.is_reachable(job, i) {
                    down.push(self.describe(job, i));
                }
            }
        }
        down
    }

    /// Whether task `index` of `job` accepts connections.
    pub fn is_reachable(&self, job: &str, index: usize) -> bool {
        let Some(addr) = self.cluster.get(job).and_then(|a| a.get(index)) else { return false };
        addr.to_socket_addrs().ok().and_then(|mut a| a.next()).is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
    }

    /// Whether task `index` of `job` stops accepting connections within `within`: a killed
    /// task's connections can break a moment before its listening port closes.
    pub fn is_lost(&self, job: &str, index: usize, within: Duration) -> bool {
        let start = std::time::Instant::now();
        loop {
            if !self.is_reachable(job, index) {
                return true;
            }
            if start.elapsed() >= within {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The tasks that stop accepting connections within `within` (empty if all still do).
    pub fn lost_tasks(&self, within: Duration) -> Vec<String> {
        let start = std::time::Instant::now();
        loop {
            let down = self.unreachable_tasks();
            if !down.is_empty() || start.elapsed() >= within {
                return down;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// "worker 1 (/job:worker/replica:0/task:1 at host:port)"
    pub fn describe(&self, job: &str, index: usize) -> String {
        format!("{job} {index} ({} at {})", device(job, index), self.cluster[job][index])
    }

    /// Waits until every task accepts connections: TensorFlow's master would wait for a missing
    /// one forever.
    pub fn wait_for_tasks(&self, timeout: Duration) -> Result<()> {
        self.wait_for(&|_, _| true, timeout)
    }

    /// Waits until every ps task accepts connections (what a between-graph worker needs).
    pub fn wait_for_ps(&self, timeout: Duration) -> Result<()> {
        self.wait_for(&|job, _| job == "ps", timeout)
    }

    fn wait_for(&self, which: &dyn Fn(&str, usize) -> bool, timeout: Duration) -> Result<()> {
        let start = std::time::Instant::now();
        loop {
            let mut down = vec![];
            for (job, addrs) in &self.cluster {
                for i in 0..addrs.len() {
                    if which(job, i) && !self.is_reachable(job, i) {
                        down.push(self.describe(job, i));
                    }
                }
            }
            if down.is_empty() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "cannot reach {} after {} s: start each with the same cluster (--cluster FILE --job NAME --task N): `alexnet server` for a ps, and for a worker `alexnet server` (in-graph) or `alexnet train --between-graph`",
                    down.join(", "),
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Where the chief's graph puts things.
    pub fn placement(&self, specs: &[ParamSpec]) -> Result<Placement> {
        ensure!(!self.ps().is_empty(), "the cluster has no 'ps' job to hold the variables");
        Ok(Placement::new(self.ps().len(), self.workers().len(), specs))
    }

    /// Between-graph replication: the variables where the chief puts them, and one replica,
    /// this worker's own.
    pub fn own_placement(&self, specs: &[ParamSpec]) -> Result<Placement> {
        let mut p = self.placement(specs)?;
        p.workers = vec![self.task_name()];
        Ok(p)
    }
}

/// A started in-process TensorFlow server (TF_NewServer + TF_ServerStart).
pub struct Server {
    raw: *mut tensorflow_sys::TF_Server,
}

// SAFETY: TF_Server is thread-safe in TensorFlow; the pointer is owned by this struct.
unsafe impl Send for Server {}

struct Status(*mut tensorflow_sys::TF_Status);

impl Status {
    fn new() -> Status {
        // SAFETY: TF_NewStatus has no preconditions; the pointer is owned here and freed in drop.
        Status(unsafe { tensorflow_sys::TF_NewStatus() })
    }
    fn check(&self, what: &str) -> Result<()> {
        // SAFETY: self.0 is a live TF_Status (freed only in drop); TF_Message returns a
        // NUL-terminated string owned by the status, copied out before the status can change.
        unsafe {
            if tensorflow_sys::TF_GetCode(self.0) as i32 == tensorflow_sys::TF_Code::TF_OK as i32 {
                return Ok(());
            }
            let msg = CStr::from_ptr(tensorflow_sys::TF_Message(self.0)).to_string_lossy().into_owned();
            bail!("{what}: {msg}")
        }
    }
}

impl Drop for Status {
    fn drop(&mut self) {
        // SAFETY: self.0 came from TF_NewStatus and is deleted once, here.
        unsafe { tensorflow_sys::TF_DeleteStatus(self.0) }
    }
}

impl Server {
    /// Creates and starts this task's server (its gRPC port is bound here).
    pub fn start(cfg: &ClusterConfig) -> Result<Server> {
        let def = cfg.server_def();
        let status = Status::new();
        // SAFETY: `def` is a serialized ServerDef alive for the call (TensorFlow copies it), and
        // `status` a live TF_Status. A null result comes with an error status, checked next.
        let raw = unsafe { tensorflow_sys::TF_NewServer(def.as_ptr().cast(), def.len(), status.0) };
        status.check(&format!(
            "cannot create the TensorFlow server of {} (is its port {} free?)",
            cfg.task_name(),
            cfg.cluster[&cfg.task.job][cfg.task.index]
        ))?;
        let server = Server { raw };
        // SAFETY: server.raw is the non-null server just created (the status check above returned
        // early otherwise), and `status` is live.
        unsafe { tensorflow_sys::TF_ServerStart(server.raw, status.0) };
        status.check("cannot start the TensorFlow server")?;
        Ok(server)
    }

    /// The session target of this server ("grpc://host:port").
    pub fn target(&self) -> String {
        // SAFETY: self.raw is a live server (deleted only in drop); TF_ServerTarget returns a
        // NUL-terminated string owned by the server, copied out here.
        unsafe { CStr::from_ptr(tensorflow_sys::TF_ServerTarget(self.raw)).to_string_lossy().into_owned() }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // gRPC servers cannot be stopped cleanly (TF_ServerStop returns Unimplemented) and
        // deleting a running one blocks: the server is left to the end of the process.
        let status = Status::new();
        // SAFETY: self.raw is a live server and `status` a live TF_Status.
        unsafe { tensorflow_sys::TF_ServerStop(self.raw, status.0) };
        if status.check("stop").is_ok() {
            // SAFETY: the server is stopped, so deleting it does not block; deleted once, here.
            unsafe { tensorflow_sys::TF_DeleteServer(self.raw) };
        }
    }
}

/// `alexnet server`: runs this task's server until SIGINT or SIGTERM.
pub fn serve(cfg: &ClusterConfig) -> Result<()> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let server = Server::start(cfg)?;
    eprintln!("{} serving at {}; stop with Ctrl-C or SIGTERM", cfg.task_name(), server.target());
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{}: stopped", cfg.task_name());
    // See Server's Drop: the process exit ends the gRPC server.
    std::mem::forget(server);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_spreads_by_size() {
        let specs = crate::graph::model::param_specs(&crate::graph::model::ModelConfig::new(2));
        let p = Placement::new(2, 2, &specs);
        let total = |k: usize| -> usize {
            specs
                .iter()
                .flat_map(|s| {
                    let [w, b] = s.variable_names();
                    [(w, s.weight_count()), (b, s.biases)]
                })
                .filter(|(n, _)| p.variable_device(n) == device("ps", k))
                .map(|(_, c)| c)
                .sum()
        };
        let (a, b) = (total(0), total(1));
        assert!(a > 0 && b > 0 && a.abs_diff(b) < a.max(b) / 2, "{a} vs {b}");
    }

    #[test]
    fn server_def_layout() {
        let cfg: ClusterConfig = serde_json::from_str(r#"{"cluster": {"ps": ["h:1"], "worker": ["h:2"]}, "task": {"type": "worker", "index": 0}}"#).unwrap();
        let def = ServerDef::decode(&cfg.server_def()[..]).unwrap();
        assert_eq!(def.job_name, "worker");
        assert_eq!(def.cluster.unwrap().job[1].tasks[&0], "h:2");
    }
}
