//! Training on a cluster of TensorFlow servers: cluster files, servers and device placement
//! ([`cluster`]), training as the cluster's chief ([`deployment`]), and between-graph replication,
//! every worker its own client ([`between_graph`]).

pub mod between_graph;
pub mod cluster;
pub mod deployment;

pub use deployment::train;
