//! The network as a TensorFlow graph: the layer table and its ops ([`model`]), byte-string
//! tensors ([`bytes`]), the backward pass
//! with TensorFlow's LRN gradient repaired ([`gradients`]), the serving graph from encoded images
//! to probabilities ([`inference`]), sessions, devices and threads ([`runtime`]), and the network
//! alone as GraphDef files ([`network_graph`]), its parameters in a session ([`params`]) and the
//! scoring of its outputs ([`scoring`]). Everything else in the crate builds on this layer;
//! it depends only on [`crate::data`]'s preprocessing ops, [`crate::proto`] and [`crate::util`].

pub mod bytes;
pub mod gradients;
pub mod inference;
pub mod model;
pub mod network_graph;
pub mod params;
pub mod runtime;
pub mod scoring;
