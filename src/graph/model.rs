//! AlexNet as a TensorFlow graph of raw ops.
//!
//! [`layers`] is the network as a table, in the order and with the names of the 2012 paper and the
//! Swift original; [`build`] turns that table into graph ops, one scope per layer (`conv1/Conv2D`,
//! `conv1/weights`, ...), so graph dumps, checkpoints and logs all use the same names.

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use tensorflow::{DataType, Operation, Output, Scope, Shape, Variable, ops};

/// Side of the square input image, as in the paper.
pub const INPUT_SIZE: usize = 227;

/// Local response normalisation parameters (TensorFlow's definition of the op).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LrnProfile {
    /// What the Swift original used: depth_radius 5, alpha 1e-4.
    Swift,
    /// Caffe's LRN (local_size 5, alpha 1e-4) in TensorFlow's terms: depth_radius 2, alpha 2e-5.
    Caffe,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrnParams {
    pub depth_radius: i64,
    pub bias: f32,
    pub alpha: f32,
    pub beta: f32,
}

impl LrnProfile {
    pub fn params(self) -> LrnParams {
        match self {
            LrnProfile::Swift => LrnParams { depth_radius: 5, bias: 1.0, alpha: 1e-4, beta: 0.75 },
            LrnProfile::Caffe => LrnParams { depth_radius: 2, bias: 1.0, alpha: 2e-5, beta: 0.75 },
        }
    }
}

/// Arithmetic of the convolutions and matmuls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    /// Convolutions, matmuls and the activations between them in bfloat16 (Cast ops in the graph),
    /// for CPUs with AVX512_BF16 or AMX and for GPUs. Weights stay float32 (cast on every read,
    /// updated in float32); LRN, the logits, softmax and loss are float32.
    Bf16,
}

impl Precision {
    pub fn dtype(self) -> DataType {
        match self {
            Precision::F32 => DataType::Float,
            Precision::Bf16 => DataType::BFloat16,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// Everything that decides the graph's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub classes: usize,
    /// Width of fc6 and fc7: 256 in the Swift original, 4096 in the paper.
    pub fc_width: usize,
    pub lrn: LrnProfile,
    /// Side of the (square) input; 227 for AlexNet, smaller in tests.
    #[serde(default = "default_input_size")]
    pub input_size: usize,
}

fn default_input_size() -> usize {
    INPUT_SIZE
}

impl ModelConfig {
    pub fn new(classes: usize) -> Self {
        ModelConfig { classes, fc_width: 256, lrn: LrnProfile::Swift, input_size: INPUT_SIZE }
    }

    /// The Swift original's network: two classes (cat, dog), fc width 256, its LRN.
    pub fn swift_original() -> Self {
        ModelConfig::new(2)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    Same,
    Valid,
}

impl Padding {
    pub fn as_str(self) -> &'static str {
        match self {
            Padding::Same => "SAME",
            Padding::Valid => "VALID",
        }
    }
}

/// One row of the network table.
#[derive(Clone, Debug, PartialEq)]
pub enum Layer {
    /// Conv2D + bias + ReLU.
    Conv {
        name: &'static str,
        kernel: usize,
        stride: usize,
        padding: Padding,
        out: usize,
    },
    Lrn {
        name: &'static str,
    },
    /// 3x3 max-pool, stride 2, VALID.
    MaxPool {
        name: &'static str,
    },
    /// MatMul + bias, then ReLU and dropout unless it is the last layer. The first one flattens
    /// its NHWC input in H x W x C order.
    Fc {
        name: &'static str,
        out: usize,
        relu_dropout: bool,
    },
}

impl Layer {
    pub fn name(&self) -> &'static str {
        match self {
            Layer::Conv { name, .. } | Layer::Lrn { name } | Layer::MaxPool { name } => name,
            Layer::Fc { name, .. } => name,
        }
    }
}

const POOL_WINDOW: usize = 3;
const POOL_STRIDE: usize = 2;

/// The network, top to bottom (the table in `../shared/swift-original.md`).
pub fn layers(cfg: &ModelConfig) -> Vec<Layer> {
    use Padding::*;
    let conv = |name, kernel, stride, padding, out| Layer::Conv { name, kernel, stride, padding, out };
    let fc = |name, out, relu_dropout| Layer::Fc { name, out, relu_dropout };
    vec![
        conv("conv1", 11, 4, Valid, 96),
        Layer::Lrn { name: "norm1" },
        Layer::MaxPool { name: "pool1" },
        conv("conv2", 5, 1, Same, 256),
        Layer::Lrn { name: "norm2" },
        Layer::MaxPool { name: "pool2" },
        conv("conv3", 3, 1, Same, 384),
        conv("conv4", 3, 1, Same, 384),
        conv("conv5", 3, 1, Same, 256),
        Layer::MaxPool { name: "pool5" },
        fc("fc6", cfg.fc_width, true),
        fc("fc7", cfg.fc_width, true),
        fc("fc8", cfg.classes, false),
    ]
}

/// Output side of a convolution or pool along one axis.
fn out_side(input: usize, window: usize, stride: usize, padding: Padding) -> usize {
    match padding {
        Padding::Same => input.div_ceil(stride),
        Padding::Valid => (input.saturating_sub(window)) / stride + 1,
    }
}

/// Each layer's name and output shape for one image: [H, W, C], or [width] for fc layers.
pub fn output_shapes(cfg: &ModelConfig) -> Vec<(&'static str, Vec<usize>)> {
    let mut shape = vec![cfg.input_size, cfg.input_size, 3];
    let mut out = vec![];
    for layer in layers(cfg) {
        shape = match layer {
            Layer::Conv { kernel, stride, padding, out: c, .. } => {
                let s = out_side(shape[0], kernel, stride, padding);
                vec![s, s, c]
            }
            Layer::Lrn { .. } => shape,
            Layer::MaxPool { .. } => {
                let s = out_side(shape[0], POOL_WINDOW, POOL_STRIDE, Padding::Valid);
                vec![s, s, shape[2]]
            }
            Layer::Fc { out: w, .. } => vec![w],
        };
        out.push((layer.name(), shape.clone()));
    }
    out
}

/// Shapes of one layer's parameters, in TensorFlow's layout.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub layer: &'static str,
    /// Conv: [kh, kw, in, out] (HWIO). Fc: [in, out].
    pub weights: Vec<usize>,
    pub biases: usize,
    /// For fc6: the [H, W, C] it flattens, whose order Caffe files differ in.
    pub flattened_from: Option<[usize; 3]>,
}

impl ParamSpec {
    pub fn is_conv(&self) -> bool {
        self.weights.len() == 4
    }
    pub fn weight_count(&self) -> usize {
        self.weights.iter().product()
    }
    /// The graph names [`build`] gives this layer's weights and biases, which are also their
    /// checkpoint keys.
    pub fn variable_names(&self) -> [String; 2] {
        [format!("{}/weights", self.layer), format!("{}/biases", self.layer)]
    }
}

/// The parameters of every layer that has some, in table order.
pub fn param_specs(cfg: &ModelConfig) -> Vec<ParamSpec> {
    let mut specs = vec![];
    let mut shape = vec![cfg.input_size, cfg.input_size, 3];
    for (layer, (_, out_shape)) in layers(cfg).iter().zip(output_shapes(cfg)) {
        match *layer {
            Layer::Conv { name, kernel, out, .. } => {
                specs.push(ParamSpec { layer: name, weights: vec![kernel, kernel, shape[2], out], biases: out, flattened_from: None })
            }
            Layer::Fc { name, out, .. } => {
                let flattened_from = (shape.len() == 3).then(|| [shape[0], shape[1], shape[2]]);
                specs.push(ParamSpec { layer: name, weights: vec![shape.iter().product(), out], biases: out, flattened_from })
            }
            _ => {}
        }
        shape = out_shape;
    }
    specs
}

/// Dropout inputs: the drop rate (0 turns it off) and a stateless seed [2] int64, so masks
/// depend only on (run seed, step) and a resumed run draws the same ones.
#[derive(Clone, Debug)]
pub struct Dropout {
    pub rate: Output,
    pub seed: Output,
}

/// A layer's variables. Each is initialised by feeding its `init` placeholder, so the graph
/// carries no weight constants and initial values come from files or the host RNG.
#[derive(Clone, Debug)]
pub struct LayerVars {
    pub layer: &'static str,
    pub weights: Variable,
    pub biases: Variable,
    pub weights_init: Operation,
    pub biases_init: Operation,
}

/// The built network.
#[derive(Clone, Debug)]
pub struct Network {
    pub config: ModelConfig,
    pub precision: Precision,
    /// Float32 in either precision.
    pub logits: Output,
    /// `input` and every layer's output, in table order, for activation dumps (bfloat16 ones in
    /// bf16 precision, but LRN outputs and the logits are float32).
    pub activations: Vec<(&'static str, Output)>,
    /// The ReLU output of each fc layer that has dropout, before the dropout: what the layers
    /// after it see in inference mode.
    pub before_dropout: Vec<(&'static str, Output)>,
    pub vars: Vec<LayerVars>,
}

impl Network {
    pub fn variables(&self) -> Vec<Variable> {
        self.vars.iter().flat_map(|v| [v.weights.clone(), v.biases.clone()]).collect()
    }
    /// The variables of the layers not in `frozen`, in the order of [`Self::variables`].
    pub fn trained_variables(&self, frozen: &[&str]) -> Vec<Variable> {
        self.vars.iter().filter(|v| !frozen.contains(&v.layer)).flat_map(|v| [v.weights.clone(), v.biases.clone()]).collect()
    }
    pub fn activation(&self, name: &str) -> Option<&Output> {
        self.activations.iter().find(|(n, _)| *n == name).map(|(_, o)| o)
    }
}

/// Adds AlexNet on top of `input` (NHWC float32, already preprocessed), in float32.
pub fn build(scope: &mut Scope, cfg: &ModelConfig, input: Output, dropout: &Dropout) -> Result<Network> {
    build_impl(scope, cfg, input, dropout, Precision::F32, None)
}

/// Adds AlexNet on top of `input` (NHWC float32, already preprocessed) in `precision`.
pub fn build_with(scope: &mut Scope, cfg: &ModelConfig, input: Output, dropout: &Dropout, precision: Precision) -> Result<Network> {
    build_impl(scope, cfg, input, dropout, precision, None)
}

/// The network's variables alone, named as `build` names them ("conv1/weights"), each on the
/// device `device` gives it: for a graph with several replicas of the forward pass.
pub fn create_vars(scope: &mut Scope, cfg: &ModelConfig, device: &dyn Fn(&str) -> String) -> Result<Vec<LayerVars>> {
    param_specs(cfg)
        .iter()
        .map(|spec| {
            let s = &mut scope.new_sub_scope(spec.layer);
            let [w, b] = spec.variable_names();
            let (weights, weights_init) = variable(&mut s.with_device(&device(&w)), "weights", &spec.weights)?;
            let (biases, biases_init) = variable(&mut s.with_device(&device(&b)), "biases", &[spec.biases])?;
            Ok(LayerVars { layer: spec.layer, weights, biases, weights_init, biases_init })
        })
        .collect()
}

/// AlexNet on top of `input`, reading the variables of `shared` (from `create_vars`) instead of
/// creating its own.
pub fn build_shared(scope: &mut Scope, cfg: &ModelConfig, input: Output, dropout: &Dropout, precision: Precision, shared: &[LayerVars]) -> Result<Network> {
    build_impl(scope, cfg, input, dropout, precision, Some(shared))
}

fn build_impl(scope: &mut Scope, cfg: &ModelConfig, input: Output, dropout: &Dropout, precision: Precision, shared: Option<&[LayerVars]>) -> Result<Network> {
    let take = |scope: &mut Scope, spec: &ParamSpec| -> Result<LayerVars> {
        match shared {
            None => layer_vars(scope, spec),
            Some(vs) => vs.iter().find(|v| v.layer == spec.layer).cloned().with_context(|| format!("no shared variables for {}", spec.layer)),
        }
    };
    ensure!(cfg.classes >= 1, "the model needs at least one class");
    let specs = param_specs(cfg);
    let to_compute = |s: &mut Scope, x: Output| precision.from_f32(s, x);
    let mut activations = vec![("input", input.clone())];
    let mut x = to_compute(&mut scope.with_op_name("input_cast"), input)?;
    let mut vars = vec![];
    let mut before_dropout = vec![];
    for layer in layers(cfg) {
        let name = layer.name();
        let scope = &mut scope.new_sub_scope(name);
        let mut recorded = None;
        x = match layer {
            Layer::Conv { stride, padding, .. } => {
                let v = take(scope, specs.iter().find(|s| s.layer == name).unwrap())?;
                let s = stride as i64;
                let w = to_compute(scope, v.weights.output().clone())?;
                let conv = ops::Conv2D::new().strides(vec![1, s, s, 1]).padding(padding.as_str()).build(x, w, scope)?;
                let biased = ops::bias_add(conv, to_compute(scope, v.biases.output().clone())?, scope)?;
                vars.push(v);
                ops::relu(biased, scope)?.into()
            }
            Layer::Lrn { .. } => {
                // LRN and LRNGrad have float32 and half CPU kernels, no bfloat16 ones.
                let input = precision.to_f32(scope, x)?;
                let p = cfg.lrn.params();
                let output: Output = ops::LRN::new().depth_radius(p.depth_radius).bias(p.bias).alpha(p.alpha).beta(p.beta).build(input, scope)?.into();
                recorded = Some(output.clone());
                to_compute(scope, output)?
            }
            Layer::MaxPool { .. } => {
                let (w, s) = (POOL_WINDOW as i64, POOL_STRIDE as i64);
                ops::MaxPool::new().ksize(vec![1, w, w, 1]).strides(vec![1, s, s, 1]).padding("VALID").build(x, scope)?.into()
            }
            Layer::Fc { relu_dropout, .. } => {
                let spec = specs.iter().find(|s| s.layer == name).unwrap();
                let v = take(scope, spec)?;
                let mut y = fc(scope, x, &v, spec, precision)?;
                if relu_dropout {
                    y = ops::relu(y, scope)?.into();
                    before_dropout.push((name, y.clone()));
                    y = apply_dropout(scope, y, dropout, name, precision)?;
                } else {
                    y = precision.to_f32(&mut scope.with_op_name("logits"), y)?;
                }
                vars.push(v);
                y
            }
        };
        activations.push((name, recorded.unwrap_or_else(|| x.clone())));
    }
    Ok(Network { config: cfg.clone(), precision, logits: x, activations, before_dropout, vars })
}

/// MatMul + bias (flattening fc6's input first).
fn fc(scope: &mut Scope, mut x: Output, v: &LayerVars, spec: &ParamSpec, precision: Precision) -> Result<Output> {
    if spec.flattened_from.is_some() {
        let flat_shape = ops::constant(&[-1i64, spec.weights[0] as i64][..], scope)?;
        x = ops::reshape(x, flat_shape, &mut scope.with_op_name("flatten"))?.into();
    }
    let product = ops::mat_mul(x, precision.from_f32(scope, v.weights.output().clone())?, scope)?;
    Ok(ops::bias_add(product, precision.from_f32(scope, v.biases.output().clone())?, scope)?.into())
}

/// The fc layers after the first dropout again, with dropout off: the inference-mode logits
/// (float32) of the same batch. They start from the first dropout's input, which the training
/// pass has already computed, so only fc7 and fc8 run twice (about 0.5% of a training step's
/// multiply-adds); the convolutions and fc6 are shared.
pub fn inference_head(scope: &mut Scope, net: &Network) -> Result<Output> {
    let table = layers(&net.config);
    let specs = param_specs(&net.config);
    let (first, mut x) = net.before_dropout.first().cloned().context("the network has no fc layer with dropout")?;
    let after_first = table.iter().position(|l| l.name() == first).context("dropout outside the layer table")? + 1;
    for layer in &table[after_first..] {
        let Layer::Fc { name, relu_dropout, .. } = *layer else { bail!("layer {} after the fc layers", layer.name()) };
        let scope = &mut scope.new_sub_scope(name);
        let spec = specs.iter().find(|s| s.layer == name).unwrap();
        let v = net.vars.iter().find(|v| v.layer == name).unwrap();
        x = fc(scope, x, v, spec, net.precision)?;
        if relu_dropout {
            x = ops::relu(x, scope)?.into();
        }
    }
    net.precision.to_f32(&mut scope.with_op_name("logits"), x)
}

impl Precision {
    /// A float32 value in the compute type (no op in float32).
    pub fn from_f32(self, scope: &mut Scope, x: Output) -> Result<Output> {
        match self {
            Precision::F32 => Ok(x),
            _ => Ok(ops::Cast::new().DstT(self.dtype()).build(x, scope)?.into()),
        }
    }
    /// A compute-type value in float32 (no op in float32).
    pub fn to_f32(self, scope: &mut Scope, x: Output) -> Result<Output> {
        match self {
            Precision::F32 => Ok(x),
            _ => Ok(ops::Cast::new().DstT(DataType::Float).build(x, scope)?.into()),
        }
    }
}

fn variable(scope: &mut Scope, name: &str, shape: &[usize]) -> Result<(Variable, Operation)> {
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let init = ops::Placeholder::new()
        .dtype(DataType::Float)
        .shape(Shape::from(Some(dims.iter().map(|&d| Some(d)).collect::<Vec<_>>())))
        .build(&mut scope.with_op_name(&format!("{name}_init")))?;
    let var = Variable::builder()
        .initial_value(init.clone())
        .data_type(DataType::Float)
        .shape(Shape::from(Some(dims.iter().map(|&d| Some(d)).collect::<Vec<_>>())))
        .build(&mut scope.with_op_name(name))?;
    Ok((var, init))
}

fn layer_vars(scope: &mut Scope, spec: &ParamSpec) -> Result<LayerVars> {
    let (weights, weights_init) = variable(scope, "weights", &spec.weights)?;
    let (biases, biases_init) = variable(scope, "biases", &[spec.biases])?;
    Ok(LayerVars { layer: spec.layer, weights, biases, weights_init, biases_init })
}

/// Inverted dropout: keep a unit where uniform >= rate, scale kept units by 1 / (1 - rate).
fn apply_dropout(scope: &mut Scope, x: Output, d: &Dropout, layer: &str, precision: Precision) -> Result<Output> {
    let scope = &mut scope.new_sub_scope("dropout");
    // A different stream per layer: fc6 and fc7 have the same shape.
    let layer_no: i64 = layer.trim_start_matches("fc").parse().context("dropout layer name")?;
    let offset = ops::constant(&[layer_no, 0i64][..], scope)?;
    let seed = ops::add(d.seed.clone(), offset, scope)?;
    let shape = ops::shape(x.clone(), scope)?;
    let uniform = ops::StatelessRandomUniform::new().dtype(DataType::Float).build(shape, seed, scope)?;
    let keep = ops::greater_equal(uniform, d.rate.clone(), scope)?;
    let keep = ops::Cast::new().DstT(DataType::Float).build(keep, scope)?;
    let one = ops::constant(1.0f32, scope)?;
    let keep_prob = ops::sub(one, d.rate.clone(), scope)?;
    let mask = ops::div(keep, keep_prob, scope)?;
    Ok(ops::mul(x, precision.from_f32(scope, mask.into())?, scope)?.into())
}

/// Dropout inputs as placeholders with defaults (rate 0, seed [0, 0]), so the same graph serves
/// inference without feeding them.
pub fn dropout_inputs(scope: &mut Scope) -> Result<Dropout> {
    let scope = &mut scope.new_sub_scope("dropout");
    let rate0 = ops::constant(0.0f32, scope)?;
    let rate = ops::PlaceholderWithDefault::new().dtype(DataType::Float).shape(Shape::from(Some(vec![]))).build(rate0, &mut scope.with_op_name("rate"))?;
    let seed0 = ops::constant(&[0i64, 0][..], scope)?;
    let seed =
        ops::PlaceholderWithDefault::new().dtype(DataType::Int64).shape(Shape::from(Some(vec![Some(2)]))).build(seed0, &mut scope.with_op_name("seed"))?;
    Ok(Dropout { rate: rate.into(), seed: seed.into() })
}

/// Checks a drop rate from the command line.
pub fn check_dropout_rate(rate: f32) -> Result<f32> {
    if !(0.0..1.0).contains(&rate) {
        bail!("--dropout must be in [0, 1), got {rate}");
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_shapes_match_the_swift_table() {
        let shapes = output_shapes(&ModelConfig::new(2));
        let get = |n: &str| shapes.iter().find(|(l, _)| *l == n).unwrap().1.clone();
        assert_eq!(get("conv1"), vec![55, 55, 96]);
        assert_eq!(get("pool1"), vec![27, 27, 96]);
        assert_eq!(get("conv2"), vec![27, 27, 256]);
        assert_eq!(get("pool2"), vec![13, 13, 256]);
        assert_eq!(get("conv5"), vec![13, 13, 256]);
        assert_eq!(get("pool5"), vec![6, 6, 256]);
        assert_eq!(get("fc6"), vec![256]);
        assert_eq!(get("fc8"), vec![2]);
    }

    #[test]
    fn param_specs_follow_the_table() {
        let specs = param_specs(&ModelConfig::new(2));
        let names: Vec<_> = specs.iter().map(|s| s.layer).collect();
        assert_eq!(names, ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]);
        assert_eq!(specs[0].weights, vec![11, 11, 3, 96]);
        assert_eq!(specs[3].weights, vec![3, 3, 384, 384]);
        assert_eq!(specs[5].weights, vec![9216, 256]);
        assert_eq!(specs[5].flattened_from, Some([6, 6, 256]));
        assert_eq!(specs[6].flattened_from, None);
        assert_eq!(specs[7].weights, vec![256, 2]);
    }

    #[test]
    fn inference_head_reads_fc6_and_runs_only_fc7_and_fc8_again() {
        let mut scope = Scope::new_root_scope();
        let input = ops::Placeholder::new().dtype(DataType::Float).build(&mut scope.with_op_name("images")).unwrap();
        let dropout = dropout_inputs(&mut scope).unwrap();
        let net = build(&mut scope, &ModelConfig::new(2), input.into(), &dropout).unwrap();
        inference_head(&mut scope.new_sub_scope("eval"), &net).unwrap();
        let graph = scope.graph();
        let head: Vec<_> = graph.operation_iter().filter(|o| o.name().unwrap().starts_with("eval/") && o.op_type().unwrap() == "MatMul").collect();
        assert_eq!(head.len(), 2, "fc7 and fc8: {:?}", head.iter().map(|o| o.name().unwrap()).collect::<Vec<_>>());
        let fc6_relu = net.before_dropout[0].1.operation.name().unwrap();
        assert!(fc6_relu.starts_with("fc6/"), "{fc6_relu}");
        let reads_fc6 = head.iter().filter(|o| o.input(0).0.name().unwrap() == fc6_relu).count();
        assert_eq!(reads_fc6, 1, "the head's fc7 reads fc6's ReLU output, the one dropout reads");
    }
}
