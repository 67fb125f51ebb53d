//! The network as a TensorFlow graph: the layer table and its ops ([`model`]), the backward pass
//! with TensorFlow's LRN gradient repaired ([`gradients`]), its parameters on the host and in a
//! session ([`params`]), the scoring of its outputs ([`scoring`]), sessions, devices and threads
//! ([`runtime`]), the network alone as GraphDef files ([`network_graph`]) and byte-string tensors
//! ([`bytes`]). This is the bottom layer: it depends only on [`crate::proto`] and [`crate::util`].

pub mod bytes;
pub mod gradients;
pub mod model;
pub mod network_graph;
pub mod params;
pub mod runtime;
pub mod scoring;
