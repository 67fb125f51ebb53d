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

    /// Refuses `--device gpu` where TensorFlow sees no GPU: called before any data is read, so
    /// the user hears it at once rather than after decoding a data set.
    pub fn check_device(&self) -> Result<()> {
        if self.device == DeviceChoice::Gpu && !list_devices()?.iter().any(|d| d.device_type == "GPU") {
            bail!("--device gpu, but TensorFlow sees no GPU: {}", no_gpu_reason());
        }
        Ok(())
    }

    /// A session on `graph`, checking that the requested device exists.
    pub fn session(&self, graph: &Graph) -> Result<(Session, String)> {
        let session = Session::new(&self.session_options()?, graph)?;
        let devices = session.device_list()?;
        let gpu = devices.iter().find(|d| d.device_type == "GPU");
        let used = match (self.device, gpu) {
            (DeviceChoice::Gpu, None) => bail!("--device gpu, but TensorFlow sees no GPU: {}", no_gpu_reason()),
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

/// Whether the linked libtensorflow is the CUDA build: build.rs finds the NVIDIA runtime that
/// `scripts/install-libtensorflow --gpu` puts next to it; without that answer, whether
/// TensorFlow registered a GPU kernel for MatMul.
pub fn cuda_build() -> bool {
    match option_env!("ALEXNET_TF_CUDA") {
        Some(v) => v == "1",
        None => tensorflow::get_registered_kernels_for_op("MatMul").is_ok_and(|k| k.windows(3).any(|w| w == b"GPU")),
    }
}

/// Why TensorFlow sees no GPU, for this library and machine.
pub fn no_gpu_reason() -> String {
    if !cuda_build() {
        return "the tensorflow-cpu library has none: run scripts/install-libtensorflow --gpu on a machine with an NVIDIA driver, then rebuild".into();
    }
    let mut why = "this binary uses the CUDA libtensorflow, but no NVIDIA GPU or driver (libcuda.so.1) is visible".to_string();
    if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES")
        && (v.trim().is_empty() || v.trim().starts_with('-'))
    {
        return format!("{why}: CUDA_VISIBLE_DEVICES='{v}' hides every GPU");
    }
    match dlopen_error("libcuda.so.1") {
        Some(e) => why += &format!(" ({e})"),
        None if !std::path::Path::new("/dev/nvidia0").exists() => {
            why += " (the driver library libcuda.so.1 loads, but there is no /dev/nvidia0: no GPU, or a container started without --gpus)"
        }
        None => why += " (libcuda.so.1 loads and /dev/nvidia0 exists: see `alexnet devices --verbose` for TensorFlow's own reason)",
    }
    why
}

/// The dynamic loader's error for a library it can't load, None when it loads.
fn dlopen_error(lib: &str) -> Option<String> {
    use std::ffi::{CStr, CString, c_char, c_int, c_void};
    unsafe extern "C" {
        fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
        fn dlerror() -> *const c_char;
        fn dlclose(handle: *mut c_void) -> c_int;
    }
    const RTLD_LAZY: c_int = 1;
    let name = CString::new(lib).ok()?;
    // SAFETY: a NUL-terminated name; the handle is closed again, and dlerror's string is copied at once.
    unsafe {
        let handle = dlopen(name.as_ptr(), RTLD_LAZY);
        if !handle.is_null() {
            dlclose(handle);
            return None;
        }
        let e = dlerror();
        Some(if e.is_null() { format!("cannot load {lib}") } else { CStr::from_ptr(e).to_string_lossy().into_owned() })
    }
}

/// What `alexnet devices` prints, one line each: which TensorFlow library this is (CPU-only, or
/// CUDA with or without a visible GPU, and why not), then every device TensorFlow sees. The CPU's
/// line gives the machine's RAM from /proc/meminfo (TensorFlow's own CPU figure is an allocator
/// default, not the machine's memory); a GPU's gives TensorFlow's memory limit for it and, where
/// nvidia-smi answers, its name and compute capability.
pub fn describe_devices() -> Result<Vec<String>> {
    let devices = list_devices()?;
    let tf = tensorflow::version().unwrap_or_else(|_| "unknown".into());
    let gpus: Vec<&Device> = devices.iter().filter(|d| d.device_type == "GPU").collect();
    let mut lines = vec![match (cuda_build(), gpus.len()) {
        (false, _) => format!(
            "TensorFlow {tf}, CPU-only library (tensorflow-cpu): no GPU support; for an NVIDIA GPU run scripts/install-libtensorflow --gpu, then rebuild"
        ),
        (true, 0) => format!("TensorFlow {tf}, CUDA library, no GPU: {}", no_gpu_reason()),
        (true, n) => format!("TensorFlow {tf}, CUDA library, {n} GPU{} found", if n == 1 { "" } else { "s" }),
    }];
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
    let smi = if gpus.is_empty() || std::env::var_os("CUDA_VISIBLE_DEVICES").is_some() { vec![] } else { nvidia_smi_gpus() };
    for d in &devices {
        let what = match d.device_type.as_str() {
            "CPU" => cpu_summary(),
            "GPU" => {
                let index: Option<usize> = d.name.rsplit(':').next().and_then(|i| i.parse().ok());
                let mut s = format!("memory {} (TensorFlow's limit)", gib(d.memory_bytes.max(0) as u64));
                if let Some(info) = index.and_then(|i| smi.get(i)).filter(|_| smi.len() == gpus.len()) {
                    s = format!("{info}, {s}");
                }
                s
            }
            _ => String::new(),
        };
        lines.push(format!("{:<5} {:<40} {what}", d.device_type, d.name));
    }
    Ok(lines)
}

/// The machine's RAM in bytes (MemTotal of /proc/meminfo), where that file says.
pub fn machine_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = meminfo.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())?;
    Some(kib << 10)
}

/// The CPU's model, cores, vector extensions and the machine's RAM, from /proc.
fn cpu_summary() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| info.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string());
    let mut parts = vec![];
    if let Some(model) = field("model name") {
        parts.push(model);
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    parts.push(format!("{cores} core{}", if cores == 1 { "" } else { "s" }));
    let flags = field("flags").unwrap_or_default();
    let ext: Vec<&str> = [("avx2", "AVX2"), ("avx512f", "AVX512F"), ("avx512_bf16", "AVX512_BF16"), ("amx_bf16", "AMX_BF16")]
        .iter()
        .filter(|(f, _)| flags.split_whitespace().any(|x| x == *f))
        .map(|(_, n)| *n)
        .collect();
    if !ext.is_empty() {
        parts.push(ext.join(" "));
    }
    if let Some(bytes) = machine_memory() {
        parts.push(format!("machine RAM {:.1} GiB", bytes as f64 / (1u64 << 30) as f64));
    }
    parts.join(", ")
}

/// "name, compute capability X.Y" of every GPU nvidia-smi lists, by index; empty without it.
fn nvidia_smi_gpus() -> Vec<String> {
    let Ok(out) = std::process::Command::new("nvidia-smi").args(["--query-gpu=name,compute_cap", "--format=csv,noheader"]).output() else {
        return vec![];
    };
    if !out.status.success() {
        return vec![];
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| match l.rsplit_once(',') {
            Some((name, cc)) => format!("{}, compute capability {}", name.trim(), cc.trim()),
            None => l.trim().to_string(),
        })
        .collect()
}

/// TensorFlow's C++ info and warning lines (`cpu_feature_guard`, oneDNN banners, the SavedModel
/// reader) off unless the user asks for them with `--verbose` or sets `TF_CPP_MIN_LOG_LEVEL`;
/// errors still show. TensorFlow reads that variable when its library loads, before `main`, so
/// setting it here would be too late: the process runs itself again with it set.
///
/// One error is certain and says nothing new: the CUDA build on a machine without the NVIDIA
/// driver logs "failed call to cuInit" in every command. There errors are hidden too (the
/// command's own errors still print, and `alexnet devices` says why there is no GPU).
pub fn quiet_tensorflow_logs(verbose: bool) {
    const LEVEL: &str = "TF_CPP_MIN_LOG_LEVEL";
    if verbose || std::env::var_os(LEVEL).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let level = if cuda_build() && dlopen_error("libcuda.so.1").is_some() { "3" } else { "2" };
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(exe).args(std::env::args_os().skip(1)).env(LEVEL, level).exec();
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
