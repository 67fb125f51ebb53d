//! alexnet-tf: AlexNet built as a TensorFlow graph from raw ops, through the TensorFlow C API,
//! trained the way the 2019 Swift for TensorFlow demo did.
//!
//! Each folder is one layer of the architecture; dependencies run one way, from the command line
//! (`main.rs`) down:
//!
//! - [`distributed`]: clusters of TensorFlow servers, between-graph replication;
//! - [`bench`]: speed and memory, against Python TensorFlow;
//! - [`train`]: the training graph, the epoch plan and its drivers, the run loop;
//! - [`server`]: `alexnet serve`, TensorFlow Serving's REST API over HTTP, batching, hot swaps;
//! - [`serve`]: evaluate, export and predict from a trained run;
//! - [`compare`]: the graph and its activations against the Swift original;
//! - [`observe`]: TensorBoard, event files, curves;
//! - [`run`]: the run directory on disk (the recipe, checkpoints, metrics, a trained run read back);
//! - [`graph`]: the network, its gradients, inference graph and sessions;
//! - [`data`]: image folders, in-graph decoding, weight files, Caffe import;
//! - [`proto`]: the TensorFlow messages; [`util`]: small helpers.

pub mod bench;
pub mod compare;
pub mod data;
pub mod distributed;
pub mod graph;
pub mod observe;
pub mod proto;
pub mod run;
pub mod serve;
pub mod server;
pub mod train;
pub mod util;
