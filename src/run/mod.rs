//! A run directory on disk, as training writes it and evaluation, export and prediction read it:
//! its recipe (`config.json`, [`config`]; the optimizer, rates and recipes in [`recipe`]), TensorFlow V2 checkpoints ([`checkpoint`]), the
//! per-epoch `metrics.csv` ([`metrics`]), and a trained run read back for inference
//! ([`trained`]).

pub mod checkpoint;
pub mod config;
pub mod metrics;
pub mod recipe;
pub mod trained;
