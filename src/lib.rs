//! alexnet-tf: AlexNet built as a TensorFlow graph from raw ops, through the TensorFlow C API,
//! trained the way the 2019 Swift for TensorFlow demo did.
//!
//! One module per concept, read in this order: [`model`] (the network table and its graph),
//! [`data`] (image folders and the in-graph input pipeline), [`weights`] (Caffe-layout files),
//! [`caffe`] (importing `.caffemodel` files into them), [`gradients`] (add_gradients, with
//! TensorFlow's LRN gradient repaired), [`train`] (the recipe, run directories), [`checkpoint`],
//! [`eval`], [`bench`] (speed and memory, against Python TensorFlow), [`inference`] (the graph
//! from encoded images to class probabilities), [`export`] (SavedModel for serving, messages in
//! [`proto`]), [`predict`], [`runtime`] (sessions and devices), [`cluster`] (TensorFlow servers
//! and training placed on a cluster; [`between_graph`]: every worker a client), [`tensorboard`]
//! (summary ops in the graph; their event files are read back by [`events`]), [`plot`]
//! (curves.png); [`metrics`], [`rng`] and [`fsutil`] are small helpers.
//!
//! Comparing with the Swift original: [`network_graph`] (the network alone as a graph, and its
//! GraphDef files through the messages of [`proto`]), [`graph_spec`] (the Swift original's layer
//! table as data, checked against the built graph), [`activations`] (every layer's output for one
//! image, from the graph or from [`reference`], an independent forward pass in plain Rust),
//! [`visualize`] (activation pictures) and [`compare`] (activation dumps side by side).

pub mod activations;
pub mod bench;
pub mod between_graph;
pub mod caffe;
pub mod checkpoint;
pub mod cluster;
pub mod compare;
pub mod data;
pub mod eval;
pub mod events;
pub mod export;
pub mod fsutil;
pub mod gradients;
pub mod graph_spec;
pub mod inference;
pub mod metrics;
pub mod model;
pub mod network_graph;
pub mod plot;
pub mod predict;
pub mod proto;
pub mod reference;
pub mod rng;
pub mod runtime;
pub mod tensorboard;
pub mod train;
pub mod visualize;
pub mod weights;
