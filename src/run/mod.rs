//! A run directory on disk, as training writes it and evaluation, export and prediction read it:
//! TensorFlow V2 checkpoints ([`checkpoint`]) and the per-epoch `metrics.csv` ([`metrics`]).

pub mod checkpoint;
pub mod metrics;
pub mod config;
pub mod trained;
