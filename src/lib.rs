//! alexnet-tf: AlexNet built as a TensorFlow graph from raw ops, through the TensorFlow C API,
//! trained the way the 2019 Swift for TensorFlow demo did.
//!
//! One module per concept, read in this order: [`model`] (the network table and its graph),
//! [`data`] (image folders and the in-graph input pipeline), [`weights`] (Caffe-layout files),
//! [`caffe`] (importing `.caffemodel` files into them), [`gradients`] (add_gradients, with
//! TensorFlow's LRN gradient repaired), [`train`] (the recipe, run directories), [`checkpoint`],
//! [`eval`], [`runtime`] (sessions and devices), [`bench`] (speed, against Python TensorFlow); [`metrics`], [`rng`] and [`fsutil`] are small
//! helpers.

pub mod bench;
pub mod caffe;
pub mod checkpoint;
pub mod data;
pub mod eval;
pub mod fsutil;
pub mod gradients;
pub mod metrics;
pub mod model;
pub mod rng;
pub mod runtime;
pub mod train;
pub mod weights;
