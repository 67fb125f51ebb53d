//! Checking the network against the Swift original: its layer table as data ([`graph_spec`]),
//! an independent forward pass in plain Rust ([`reference`]), every layer's activations for one
//! image ([`activations`]) drawn as pictures ([`visualize`]), and two activation dumps side by
//! side ([`dumps`]).

pub mod activations;
pub mod dumps;
pub mod graph_spec;
pub mod reference;
pub mod visualize;
