//! The network alone as a graph: an `input` placeholder (NHWC float32, already preprocessed),
//! then the network with dropout off unless fed; no decoding, no softmax. `alexnet graph` writes
//! its GraphDef (`alexnet.pb` as TensorFlow serialises it, `alexnet.pbtxt` in text format),
//! `compare-graph` checks it against the Swift original, `activations` runs it.
//! `graphs/alexnet.pbtxt` in the repository is the one of [`ModelConfig::swift_original`]; a
//! test fails when the built graph drifts from it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use prost::Message;
use tensorflow::{DataType, Output, Scope, Shape, ops};

use crate::graph::model::{self, ModelConfig, Network};
use crate::proto::{self, tensorflow::GraphDef};
use crate::util::fsutil;

/// Name of the input placeholder: NHWC float32, already preprocessed.
pub const INPUT: &str = "input";

pub struct NetworkGraph {
    /// Owns the graph.
    pub scope: Scope,
    pub input: Output,
    pub net: Network,
}

impl NetworkGraph {
    /// `batch`: None for any batch size (the GraphDef files); a fixed size makes shape inference
    /// give complete shapes.
    pub fn build(cfg: &ModelConfig, batch: Option<i64>) -> Result<NetworkGraph> {
        let mut scope = Scope::new_root_scope();
        let side = Some(cfg.input_size as i64);
        let input: Output = ops::Placeholder::new()
            .dtype(DataType::Float)
            .shape(Shape::from(Some(vec![batch, side, side, Some(3)])))
            .build(&mut scope.with_op_name(INPUT))?
            .into();
        let dropout = model::dropout_inputs(&mut scope)?;
        let net = model::build(&mut scope, cfg, input.clone(), &dropout)?;
        Ok(NetworkGraph { scope, input, net })
    }

    /// The serialised GraphDef, as TensorFlow writes it.
    pub fn graph_def_bytes(&self) -> Result<Vec<u8>> {
        Ok(self.scope.graph().graph_def()?)
    }

    pub fn graph_def(&self) -> Result<GraphDef> {
        GraphDef::decode(&self.graph_def_bytes()?[..]).context("TensorFlow's GraphDef does not decode as tensorflow.GraphDef")
    }
}

/// The GraphDef of `cfg`'s network graph in text format.
pub fn graph_text(cfg: &ModelConfig) -> Result<String> {
    proto::to_text(&NetworkGraph::build(cfg, None)?.graph_def()?)
}

/// Writes `alexnet.pb` and `alexnet.pbtxt` into `dir` (created if needed); returns their paths.
pub fn write_graph(cfg: &ModelConfig, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let graph = NetworkGraph::build(cfg, None)?;
    let bytes = graph.graph_def_bytes()?;
    let text = proto::to_text(&GraphDef::decode(&bytes[..])?)?;
    let (pb, pbtxt) = (dir.join("alexnet.pb"), dir.join("alexnet.pbtxt"));
    fsutil::write_atomic(&pb, &bytes)?;
    fsutil::write_atomic(&pbtxt, text.as_bytes())?;
    Ok((pb, pbtxt))
}
