//! The Swift original's layer table as data (`graphs/swift-original.json`), and the check of a
//! built graph against it.
//!
//! The check does not trust `model.rs`'s bookkeeping: it walks the built graph itself, along the
//! data path from the `input` placeholder, one top-level scope (`conv1/`, `norm1/`, ...) at a
//! time, reads the ops' attributes and lets TensorFlow's shape inference give the shapes.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use tensorflow::{Graph, Operation, Output, Shape};

use crate::graph::model::ModelConfig;
use crate::graph::network_graph::NetworkGraph;

/// The table as committed, built into the binary so the default works from any folder.
pub const SWIFT_ORIGINAL: &str = include_str!("../../graphs/swift-original.json");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub source: String,
    #[serde(default)]
    pub conventions: String,
    /// Per image: [H, W, C].
    pub input: Vec<i64>,
    pub layers: Vec<LayerSpec>,
}

/// One layer, as the spec states it or as the graph has it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    pub name: String,
    /// The layer's main op: Conv2D, LRN, MaxPool or MatMul.
    pub op: String,
    /// Conv: [kh, kw, in, out]; fc: [in, out].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<Vec<i64>>,
    /// Pool window, NHWC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ksize: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strides: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lrn: Option<LrnSpec>,
    #[serde(default)]
    pub bias: bool,
    /// The op type after the bias (Relu).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<String>,
    #[serde(default)]
    pub dropout: bool,
    /// Per image: [H, W, C] or [width].
    pub output: Vec<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrnSpec {
    pub depth_radius: i64,
    pub bias: f32,
    pub alpha: f32,
    pub beta: f32,
}

impl Spec {
    /// `path`: a spec file; None for the built-in graphs/swift-original.json.
    pub fn read(path: Option<&Path>) -> Result<Spec> {
        let Some(path) = path else {
            return serde_json::from_str(SWIFT_ORIGINAL).context("the built-in graphs/swift-original.json is invalid");
        };
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read spec {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a layer spec (see graphs/swift-original.json for the fields)", path.display()))
    }
}

/// The layers a graph's data path goes through: each top-level scope and the ops data reaches in it.
struct Walked {
    scope: String,
    ops: Vec<Operation>,
    output: Output,
}

fn top_scope(op: &Operation) -> Result<String> {
    Ok(op.name()?.split('/').next().unwrap_or_default().to_string())
}

/// Follows the data from `input` through the graph, one scope at a time. A scope's output is
/// where its data leaves it (or, for the last layer, the op nothing consumes).
fn walk(input: &Operation) -> Result<Vec<Walked>> {
    let mut layers = vec![];
    let mut current = Output { operation: input.clone(), index: 0 };
    loop {
        let consumers = current.operation.output_consumers(current.index as usize);
        if consumers.is_empty() {
            return Ok(layers);
        }
        let scopes: BTreeSet<String> = consumers.iter().map(|(op, _)| top_scope(op)).collect::<Result<_>>()?;
        ensure!(
            scopes.len() == 1,
            "{} feeds several scopes ({}): the check expects a chain of layers",
            current.operation.name()?,
            scopes.into_iter().collect::<Vec<_>>().join(", ")
        );
        let scope = scopes.into_iter().next().unwrap();
        ensure!(!layers.iter().any(|l: &Walked| l.scope == scope), "the data path enters scope {scope} twice");
        let mut ops = vec![];
        let mut seen = HashSet::new();
        let mut exits = vec![];
        let mut queue: VecDeque<Operation> = consumers.into_iter().map(|(op, _)| op).collect();
        while let Some(op) = queue.pop_front() {
            if !seen.insert(op.name()?) {
                continue;
            }
            let mut consumed = false;
            for index in 0..op.num_outputs() {
                for (c, _) in op.output_consumers(index) {
                    consumed = true;
                    if top_scope(&c)? == scope {
                        queue.push_back(c);
                    } else {
                        exits.push(Output { operation: op.clone(), index: index as i32 });
                    }
                }
            }
            if !consumed && op.num_outputs() > 0 {
                exits.push(Output { operation: op.clone(), index: 0 });
            }
            ops.push(op);
        }
        let mut names = BTreeSet::new();
        exits.retain(|o| names.insert((o.operation.name().unwrap_or_default(), o.index)));
        ensure!(exits.len() == 1, "the data leaves scope {scope} at {} places: the check expects one output per layer", exits.len());
        let output = exits.pop().unwrap();
        current = output.clone();
        layers.push(Walked { scope, ops, output });
    }
}

fn dims(shape: &Shape) -> Vec<i64> {
    match shape.dims() {
        Some(n) => (0..n).map(|i| shape[i].unwrap_or(-1)).collect(),
        None => vec![],
    }
}

/// What the graph has for one walked layer, in the spec's terms.
fn observe_layer(graph: &Graph, layer: &Walked, batch: i64) -> Result<LayerSpec> {
    let main = layer
        .ops
        .iter()
        .find(|op| matches!(op.op_type().as_deref(), Ok("Conv2D" | "LRN" | "MaxPool" | "MatMul")))
        .with_context(|| format!("scope {} has no Conv2D, LRN, MaxPool or MatMul on its data path", layer.scope))?;
    let op = main.op_type()?;
    let ctx = |attr: &str| format!("{}: attribute {attr}", main.name().unwrap_or_default());
    let mut seen = LayerSpec { name: layer.scope.clone(), op: op.clone(), ..Default::default() };
    let kernel = || -> Result<Vec<i64>> {
        let (op, index) = main.input(1);
        Ok(dims(&graph.tensor_shape(Output { operation: op, index: index as i32 })?))
    };
    match op.as_str() {
        "Conv2D" => {
            seen.kernel = Some(kernel()?);
            seen.strides = Some(main.get_attr_int_list("strides").with_context(|| ctx("strides"))?);
            seen.padding = Some(main.get_attr_string("padding").with_context(|| ctx("padding"))?);
        }
        "MaxPool" => {
            seen.ksize = Some(main.get_attr_int_list("ksize").with_context(|| ctx("ksize"))?);
            seen.strides = Some(main.get_attr_int_list("strides").with_context(|| ctx("strides"))?);
            seen.padding = Some(main.get_attr_string("padding").with_context(|| ctx("padding"))?);
        }
        "LRN" => {
            seen.lrn = Some(LrnSpec {
                depth_radius: main.get_attr_int("depth_radius").with_context(|| ctx("depth_radius"))?,
                bias: main.get_attr_float("bias").with_context(|| ctx("bias"))?,
                alpha: main.get_attr_float("alpha").with_context(|| ctx("alpha"))?,
                beta: main.get_attr_float("beta").with_context(|| ctx("beta"))?,
            });
        }
        _ => seen.kernel = Some(kernel()?), // MatMul
    }
    let types: Vec<String> = layer.ops.iter().map(|o| o.op_type()).collect::<Result<_, _>>()?;
    seen.bias = types.iter().any(|t| t == "BiasAdd");
    seen.activation = types.iter().find(|t| matches!(t.as_str(), "Relu" | "Relu6" | "Elu" | "Selu" | "Tanh" | "Sigmoid")).cloned();
    let dropout_prefix = format!("{}/dropout/", layer.scope);
    seen.dropout = layer.ops.iter().any(|o| o.name().is_ok_and(|n| n.starts_with(&dropout_prefix)));
    let out = dims(&graph.tensor_shape(layer.output.clone())?);
    // Per image: the batch axis is dropped when it is the fixed batch the graph was built with.
    seen.output = if out.first() == Some(&batch) { out[1..].to_vec() } else { out };
    Ok(seen)
}

/// One row of the comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerCheck {
    pub name: String,
    pub spec: Option<LayerSpec>,
    pub graph: Option<LayerSpec>,
    /// `field: spec X, graph Y`, empty when the layer matches.
    pub differences: Vec<String>,
}

/// The check of one graph against one spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub spec_name: String,
    pub layers: Vec<LayerCheck>,
}

impl Report {
    pub fn differing_layers(&self) -> Vec<&str> {
        self.layers.iter().filter(|l| !l.differences.is_empty()).map(|l| l.name.as_str()).collect()
    }

    /// An error naming every layer that differs.
    pub fn ensure_matches(&self) -> Result<()> {
        let bad = self.differing_layers();
        if !bad.is_empty() {
            bail!("the graph differs from {} in {}", self.spec_name, bad.join(", "));
        }
        Ok(())
    }
}

fn show<T: fmt::Debug>(v: &Option<T>) -> String {
    v.as_ref().map(|v| format!("{v:?}")).unwrap_or_else(|| "-".into())
}

fn shape_text(v: &[i64]) -> String {
    v.iter().map(|d| if *d < 0 { "?".into() } else { d.to_string() }).collect::<Vec<_>>().join("x")
}

fn differences(spec: &LayerSpec, graph: &LayerSpec) -> Vec<String> {
    let mut d = vec![];
    let mut check = |field: &str, s: String, g: String| {
        if s != g {
            d.push(format!("{field}: spec {s}, graph {g}"));
        }
    };
    check("op", spec.op.clone(), graph.op.clone());
    check("kernel", show(&spec.kernel), show(&graph.kernel));
    check("ksize", show(&spec.ksize), show(&graph.ksize));
    check("strides", show(&spec.strides), show(&graph.strides));
    check("padding", show(&spec.padding), show(&graph.padding));
    match (&spec.lrn, &graph.lrn) {
        (Some(s), Some(g)) => {
            check("depth_radius", s.depth_radius.to_string(), g.depth_radius.to_string());
            check("bias", format!("{:?}", s.bias), format!("{:?}", g.bias));
            check("alpha", format!("{:?}", s.alpha), format!("{:?}", g.alpha));
            check("beta", format!("{:?}", s.beta), format!("{:?}", g.beta));
        }
        (s, g) => check("lrn", show(s), show(g)),
    }
    check("bias add", spec.bias.to_string(), graph.bias.to_string());
    check("activation", show(&spec.activation), show(&graph.activation));
    check("dropout", spec.dropout.to_string(), graph.dropout.to_string());
    check("output", shape_text(&spec.output), shape_text(&graph.output));
    d
}

/// Builds `cfg`'s network graph (batch 1, so every shape is known) and checks it against `spec`.
pub fn check(cfg: &ModelConfig, spec: &Spec, spec_name: &str) -> Result<Report> {
    const BATCH: i64 = 1;
    let built = NetworkGraph::build(cfg, Some(BATCH))?;
    let graph = built.scope.graph();
    let walked = walk(&built.input.operation)?;

    let mut layers = vec![];
    let input_shape = dims(&graph.tensor_shape(built.input.clone())?);
    let input_seen = LayerSpec {
        name: "input".into(),
        op: built.input.operation.op_type()?,
        output: input_shape.get(1..).unwrap_or_default().to_vec(),
        ..Default::default()
    };
    let input_spec = LayerSpec { name: "input".into(), op: "Placeholder".into(), output: spec.input.clone(), ..Default::default() };
    layers.push(LayerCheck { name: "input".into(), differences: differences(&input_spec, &input_seen), spec: Some(input_spec), graph: Some(input_seen) });

    let observed: Vec<LayerSpec> = walked.iter().map(|w| observe_layer(&graph, w, BATCH)).collect::<Result<_>>()?;
    for (i, s) in spec.layers.iter().enumerate() {
        let g = observed.iter().position(|o| o.name == s.name);
        let mut diffs = match g {
            Some(g) => differences(s, &observed[g]),
            None => vec!["not in the graph".to_string()],
        };
        if let Some(g) = g
            && g != i
        {
            diffs.push(format!("position: spec layer {}, graph layer {}", i + 1, g + 1));
        }
        layers.push(LayerCheck { name: s.name.clone(), spec: Some(s.clone()), graph: g.map(|g| observed[g].clone()), differences: diffs });
    }
    for o in observed.iter().filter(|o| !spec.layers.iter().any(|s| s.name == o.name)) {
        layers.push(LayerCheck { name: o.name.clone(), spec: None, graph: Some(o.clone()), differences: vec!["not in the spec".into()] });
    }
    Ok(Report { spec_name: spec_name.to_string(), layers })
}

/// Reads the spec (None: the built-in one) and checks `cfg`'s graph against it.
pub fn compare(cfg: &ModelConfig, spec_path: Option<&Path>) -> Result<Report> {
    let spec = Spec::read(spec_path)?;
    let name = spec_path.map(|p| p.display().to_string()).unwrap_or_else(|| "graphs/swift-original.json".into());
    check(cfg, &spec, &name)
}

impl fmt::Display for Report {
    /// A table of what the graph has, one row per layer, and under a differing row what the spec says.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(f, "graph against {}", self.spec_name)?;
        writeln!(f, "{:<6} {:<11} {:<14} {:<10} {:<7} {:<44} {:<10} result", "layer", "op", "kernel/window", "strides", "padding", "parameters", "output")?;
        for l in &self.layers {
            let Some(g) = l.graph.as_ref().or(l.spec.as_ref()) else { continue };
            let window = g.kernel.as_ref().or(g.ksize.as_ref()).map(|k| shape_text(k)).unwrap_or_else(|| "-".into());
            let strides = g.strides.as_ref().map(|s| s.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",")).unwrap_or_else(|| "-".into());
            let mut params = vec![];
            if let Some(p) = g.lrn {
                params.push(format!("radius {}, bias {:?}, alpha {:?}, beta {:?}", p.depth_radius, p.bias, p.alpha, p.beta));
            }
            if g.bias {
                params.push("+bias".into());
            }
            if let Some(a) = &g.activation {
                params.push(a.clone());
            }
            if g.dropout {
                params.push("dropout".into());
            }
            let result = if l.differences.is_empty() { "ok" } else { "DIFFERS" };
            writeln!(
                f,
                "{:<6} {:<11} {:<14} {:<10} {:<7} {:<44} {:<10} {result}",
                l.name,
                g.op,
                window,
                strides,
                g.padding.as_deref().unwrap_or("-"),
                params.join(" "),
                shape_text(&g.output)
            )?;
            for d in &l.differences {
                writeln!(f, "       {}: {d}", l.name)?;
            }
        }
        let bad = self.differing_layers();
        if bad.is_empty() {
            writeln!(f, "every layer matches")
        } else {
            writeln!(f, "{} of {} layers differ: {}", bad.len(), self.layers.len(), bad.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_spec_parses_and_agrees_with_the_model_table() {
        let spec = Spec::read(None).unwrap();
        let shapes = crate::graph::model::output_shapes(&ModelConfig::swift_original());
        let names: Vec<&str> = spec.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, shapes.iter().map(|(n, _)| *n).collect::<Vec<_>>());
        for (l, (_, s)) in spec.layers.iter().zip(&shapes) {
            assert_eq!(l.output, s.iter().map(|&d| d as i64).collect::<Vec<_>>(), "{}", l.name);
        }
    }

    #[test]
    fn differences_name_the_field() {
        let a = LayerSpec {
            name: "norm1".into(),
            op: "LRN".into(),
            lrn: Some(LrnSpec { depth_radius: 5, bias: 1.0, alpha: 1e-4, beta: 0.75 }),
            output: vec![55, 55, 96],
            ..Default::default()
        };
        let mut b = a.clone();
        b.lrn = Some(LrnSpec { depth_radius: 2, bias: 1.0, alpha: 2e-5, beta: 0.75 });
        assert_eq!(differences(&a, &a), Vec::<String>::new());
        assert_eq!(differences(&a, &b), vec!["depth_radius: spec 5, graph 2", "alpha: spec 0.0001, graph 2e-5"]);
    }
}
