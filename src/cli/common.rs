//! Argument groups shared by several subcommands (the model, the input preprocessing, the
//! TensorFlow runtime, the cluster) and the size parser of `--cache-limit`.

use std::path::PathBuf;

use alexnet::distributed::cluster::ClusterConfig;
use alexnet::graph::model::{LrnProfile, ModelConfig};
use alexnet::graph::runtime::{DeviceChoice, RuntimeConfig};
use anyhow::{Result, bail};
use clap::Args;

/// The cluster: --cluster FILE with --job and --task, or the TF_CONFIG environment variable.
#[derive(Args)]
pub(crate) struct ClusterArgs {
    /// JSON as in TF_CONFIG: {"cluster": {"ps": ["host:port"], "worker": ["host:port", ...]}}.
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// This task's job in the cluster: ps or worker (worker 0 is the chief that trains).
    #[arg(long, requires = "cluster")]
    job: Option<String>,
    /// This task's index in its job.
    #[arg(long, requires = "job")]
    task: Option<usize>,
}

impl ClusterArgs {
    pub(crate) fn config(&self) -> Result<Option<ClusterConfig>> {
        ClusterConfig::from_args_or_env(self.cluster.as_deref(), self.job.as_deref(), self.task)
    }
}

/// A size in bytes: a number with an optional K, M, G or T suffix (powers of 1024).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().trim_end_matches(['B', 'b']);
    let (num, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("'{s}' is not a size (e.g. 4G, 512M, 1000000)"))?;
    if n.is_nan() || n < 0.0 {
        return Err(format!("'{s}' is not a size"));
    }
    Ok((n * (1u64 << shift) as f64) as u64)
}

#[derive(Args)]
pub(crate) struct ModelArgs {
    /// Width of fc6 and fc7 (256 in the Swift original, 4096 in the paper).
    #[arg(long, default_value_t = 256)]
    pub(crate) fc_width: usize,
    /// LRN parameters: the Swift original's (depth_radius 5, alpha 1e-4) or Caffe's (2, 2e-5).
    #[arg(long, value_enum, default_value_t = LrnProfile::Swift)]
    pub(crate) lrn: LrnProfile,
}

#[derive(Args)]
pub(crate) struct InputArgs {
    /// Subtracted from every pixel after resizing: one value, or three (R,G,B).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pixel_mean: Vec<f32>,
    /// Keep RGB channel order (the Caffe-trained weights expect BGR).
    #[arg(long)]
    rgb: bool,
}

#[derive(Args)]
pub(crate) struct RuntimeArgs {
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Threads inside one op (0: one per core).
    #[arg(long, default_value_t = 0)]
    intra_op_threads: i32,
    /// Ops run at once (0: one per core).
    #[arg(long, default_value_t = 0)]
    inter_op_threads: i32,
}

impl InputArgs {
    pub(crate) fn preprocess(&self) -> Result<alexnet::data::images::Preprocess> {
        if self.pixel_mean.len() != 1 && self.pixel_mean.len() != 3 {
            bail!("--pixel-mean takes one value or three (R,G,B), got {}", self.pixel_mean.len());
        }
        Ok(alexnet::data::images::Preprocess { pixel_mean: self.pixel_mean.clone(), bgr: !self.rgb, ..Default::default() })
    }
}

impl RuntimeArgs {
    pub(crate) fn config(&self) -> RuntimeConfig {
        RuntimeConfig { device: self.device, intra_op_threads: self.intra_op_threads, inter_op_threads: self.inter_op_threads }
    }
}

impl ModelArgs {
    /// The Swift original's network with these flags.
    pub(crate) fn config(&self) -> ModelConfig {
        ModelConfig { fc_width: self.fc_width, lrn: self.lrn, ..ModelConfig::swift_original() }
    }
}
