//! Sessions: device choice and thread settings, passed to TensorFlow as a ConfigProto.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use prost::Message;
use serde::{Deserialize, Serialize};
use tensorflow::{Device, Graph, Session, SessionOptions};

use crate::proto::tensorflow::{ConfigProto, GpuOptions};

/// Where to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// A GPU when TensorFlow sees one, else the CPU.
    #[default]
    Auto,
    Cpu,
    Gpu,
}

/// Session settings from the command line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    pub device: DeviceChoice,
    /// 0: chosen for the machine (see [`RuntimeConfig::threads`]).
    pub intra_op_threads: i32,
    pub inter_op_threads: i32,
}

impl RuntimeConfig {
    /// The (intra-op, inter-op) thread counts a session gets: the user's, or where they are 0,
    /// TensorFlow's own environment variables (`TF_NUM_INTRAOP_THREADS`, `TF_NUM_INTEROP_THREADS`,
    /// which its default sessions honour too), else one per core for both. Measured with `alexnet bench` on 2 cores: intra-op 1 or 2 and
    /// inter-op 1, 2 or 3 train, infer and peak at the same figures within the noise (±3%), since
    /// every big op is a oneDNN kernel that already spreads over the intra-op pool. So this is
    /// TensorFlow's own choice, made explicit so that logs and `bench` show real numbers.
    pub fn threads(&self) -> (i32, i32) {
        let cores = std::thread::available_parallelism().map(|n| n.get() as i32).unwrap_or(1);
        let from_env = |var: &str| std::env::var(var).ok().and_then(|v| v.trim().parse::<i32>().ok()).filter(|n| *n > 0);
        let pick = |given: i32, var: &str| if given > 0 { given } else { from_env(var).unwrap_or(cores) };
        (pick(self.intra_op_threads, "TF_NUM_INTRAOP_THREADS"), pick(self.inter_op_threads, "TF_NUM_INTEROP_THREADS"))
    }

    fn config_proto(&self) -> ConfigProto {
        let (intra, inter) = self.threads();
        let mut device_count = BTreeMap::new();
        if self.device == DeviceChoice::Cpu {
            device_count.insert("GPU".to_string(), 0);
        }
        ConfigProto {
            device_count,
            intra_op_parallelism_threads: intra,
            inter_op_parallelism_threads: inter,
            // Share a GPU politely instead of taking all its memory up front.
            gpu_options: Some(GpuOptions { allow_growth: true, ..Default::default() }),
            // Ops without a GPU kernel (DecodeJpeg, SaveV2, ...) fall back to the CPU.
            allow_soft_placement: true,
            ..Default::default()
        }
    }

    /// A session on the TensorFlow server at `target` (the chief's own, "grpc://..."), running
    /// `graph` on the devices of the cluster's ps and worker jobs.
    pub fn cluster_session(&self, graph: &Graph, target: &str) -> Result<(Session, String)> {
        self.cluster_session_with(graph, target, &["/job:ps", "/job:worker"])
    }

    /// A cluster session that reaches only the devices under `filters` ("/job:ps",
    /// "/job:worker/task:1"): a between-graph worker talks to the ps tasks and itself, so it
    /// neither waits for nor depends on the other workers.
    pub fn cluster_session_with(&self, graph: &Graph, target: &str, filters: &[&str]) -> Result<(Session, String)> {
        let mut config = self.config_proto();
        // Only these devices (job prefixes) take part: in a cluster, the ps and the workers.
        config.device_filters = filters.iter().map(|f| f.to_string()).collect();
        // A bound on every session run, so a lost task ends a run instead of hanging it.
        config.operation_timeout_in_ms = CLUSTER_STEP_TIMEOUT_MS;
        let mut options = SessionOptions::new();
        options.set_config(&config.encode_to_vec())?;
        options.set_target(target)?;
        let session = Session::new(&options, graph)?;
        let devices = session.device_list()?;
        let gpus = devices.iter().filter(|d| d.device_type == "GPU").count();
        Ok((session, format!("cluster through {target}: {} devices, {gpus} GPUs", devices.len())))
    }

    pub fn session_options(&self) -> Result<SessionOptions> {
        let mut options = SessionOptions::new();
        options.set_config(&self.config_proto().encode_to_vec())?;
        Ok(options)
    }

    /// A session on `graph`, checking that the requested device exists.
    pub fn session(&self, graph: &Graph) -> Result<(Session, String)> {
        let session = Session::new(&self.session_options()?, graph)?;
        let devices = session.device_list()?;
        let gpu = devices.iter().find(|d| d.device_type == "GPU");
        let used = match (self.device, gpu) {
            (DeviceChoice::Gpu, None) => bail!(
                "--device gpu, but TensorFlow sees no GPU (the tensorflow-cpu library has none: run scripts/install-libtensorflow --gpu on a machine with an NVIDIA driver, then rebuild)"
            ),
            (DeviceChoice::Cpu, _) | (_, None) => "CPU".to_string(),
            (_, Some(g)) => format!("GPU ({})", g.name),
        };
        Ok((session, used))
    }
}

/// The longest a session run may take on a cluster (loading the data set onto every worker is
/// the longest one).
pub const CLUSTER_STEP_TIMEOUT_MS: i64 = 300_000;

/// The devices TensorFlow sees.
pub fn list_devices() -> Result<Vec<Device>> {
    let session = Session::new(&SessionOptions::new(), &Graph::new())?;
    Ok(session.device_list()?)
}

/// TensorFlow's C++ info and warning lines (`cpu_feature_guard`, oneDNN banners, the SavedModel
/// reader) off unless the user asks for them with `--verbose` or sets `TF_CPP_MIN_LOG_LEVEL`;
/// errors still show. TensorFlow reads that variable when its library loads, before `main`, so
/// setting it here would be too late: the process runs itself again with it set.
pub fn quiet_tensorflow_logs(verbose: bool) {
    const LEVEL: &str = "TF_CPP_MIN_LOG_LEVEL";
    if verbose || std::env::var_os(LEVEL).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(exe).args(std::env::args_os().skip(1)).env(LEVEL, "2").exec();
    // Only reached when the exec failed: carry on, with TensorFlow's lines showing.
    eprintln!("warning: could not restart quietly ({err}); TensorFlow's log lines will show");
}

/// Whether this CPU computes bfloat16 natively: AVX512_BF16 or AMX (the `avx512_bf16`,
/// `amx_bf16` flags of /proc/cpuinfo; false where that file is missing).
pub fn cpu_has_native_bf16() -> bool {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = info.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    flags.split_whitespace().any(|f| f == "avx512_bf16" || f == "amx_bf16")
}

/// The one line a bfloat16 run on a CPU without native bfloat16 gets, or None where it will run
/// on a GPU or the CPU has it.
pub fn bf16_warning(device: DeviceChoice) -> Option<String> {
    if cpu_has_native_bf16() || device == DeviceChoice::Gpu {
        return None;
    }
    if device == DeviceChoice::Auto && list_devices().is_ok_and(|d| d.iter().any(|d| d.device_type == "GPU")) {
        return None;
    }
    Some(
        "warning: --precision bf16 on a CPU without native bfloat16 (no AVX512_BF16, no AMX): its bfloat16 arithmetic is \
         emulated through float32 conversions, so this runs slower than --precision f32 here"
            .to_string(),
    )
}
