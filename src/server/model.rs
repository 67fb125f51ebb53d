//! One loaded version of the model: the SavedModel's session (loaded by the C API's
//! `LoadSavedModel`, as `alexnet predict --saved-model` and TensorFlow Serving load it), its
//! signatures, and the graph's layer outputs for activation pictures.
//!
//! A session is shared by every request that resolved this version: TensorFlow sessions are
//! safe to run from several threads at once. A signature is served when it has one input of
//! strings (encoded images) or floats, the two kinds `alexnet export` writes; requests arrive as
//! a [`Column`] (one row per instance) and leave as [`Fetched`] outputs, one per signature output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use ndarray::{ArrayD, IxDyn};
use tensorflow::{DataType, Graph, Output, SavedModelBundle, Session, SessionOptions, SessionRunArgs, Tensor, TensorType};

use crate::graph::bytes::{self, Bytes};
use crate::serve::export::{SERVE_TAG, SERVING_SIGNATURE, TENSOR_SIGNATURE};
use crate::serve::inference::PROBABILITIES;
use crate::server::metrics;
use crate::util::parallel::map_each;

/// The graph ops whose outputs the page draws, in layer order: (layer, op name). Those missing
/// from a graph (another architecture) are skipped.
const LAYER_OPS: [(&str, &str); 13] = [
    ("conv1", "conv1/Relu"),
    ("norm1", "norm1/LRN"),
    ("pool1", "pool1/MaxPool"),
    ("conv2", "conv2/Relu"),
    ("norm2", "norm2/LRN"),
    ("pool2", "pool2/MaxPool"),
    ("conv3", "conv3/Relu"),
    ("conv4", "conv4/Relu"),
    ("conv5", "conv5/Relu"),
    ("pool5", "pool5/MaxPool"),
    ("fc6", "fc6/Relu"),
    ("fc7", "fc7/Relu"),
    ("fc8", "logits"),
];

/// One named tensor of a signature.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub key: String,
    pub output: Output,
    pub dtype: DataType,
    /// Dimensions (None: unknown size), or None for an unknown rank.
    pub shape: Option<Vec<Option<i64>>>,
}

/// A signature that takes one input.
#[derive(Clone, Debug)]
pub struct Signature {
    pub name: String,
    pub method_name: String,
    pub input: TensorSpec,
    pub outputs: Vec<TensorSpec>,
}

/// The rows of one request (or of a batch of requests) for a signature's input.
#[derive(Clone, Debug, PartialEq)]
pub enum Column {
    /// Encoded images, one per row.
    Bytes(Vec<Vec<u8>>),
    /// Row-major floats of `rows` rows of shape `row_shape`.
    Floats { values: Vec<f32>, rows: usize, row_shape: Vec<usize> },
}

impl Column {
    pub fn rows(&self) -> usize {
        match self {
            Column::Bytes(b) => b.len(),
            Column::Floats { rows, .. } => *rows,
        }
    }

    /// Whether two columns can be run as one batch (same kind, same row shape).
    pub fn joins(&self, other: &Column) -> bool {
        match (self, other) {
            (Column::Bytes(_), Column::Bytes(_)) => true,
            (Column::Floats { row_shape: a, .. }, Column::Floats { row_shape: b, .. }) => a == b,
            _ => false,
        }
    }

    /// This column with its last row repeated until it has `rows` rows (unchanged if it has them).
    pub fn padded(self, rows: usize) -> Column {
        let have = self.rows();
        if rows <= have || have == 0 {
            return self;
        }
        match self {
            Column::Bytes(mut b) => {
                let last = b[have - 1].clone();
                b.resize(rows, last);
                Column::Bytes(b)
            }
            Column::Floats { mut values, row_shape, .. } => {
                let per_row = values.len() / have;
                let last = values[values.len() - per_row..].to_vec();
                (have..rows).for_each(|_| values.extend_from_slice(&last));
                Column::Floats { values, rows, row_shape }
            }
        }
    }

    /// The rows of several columns that [`Column::joins`], one after the other.
    pub fn concat(parts: &[&Column]) -> Column {
        match parts[0] {
            Column::Bytes(_) => Column::Bytes(parts.iter().flat_map(|c| if let Column::Bytes(b) = c { b.clone() } else { vec![] }).collect()),
            Column::Floats { row_shape, .. } => {
                let mut values = vec![];
                for c in parts {
                    if let Column::Floats { values: v, .. } = c {
                        values.extend_from_slice(v);
                    }
                }
                Column::Floats { values, rows: parts.iter().map(|c| c.rows()).sum(), row_shape: row_shape.clone() }
            }
        }
    }
}

/// The values of one fetched output.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
    Str(Vec<Vec<u8>>),
}

/// One output of a session run: its signature key, dimensions (rows first) and values.
#[derive(Clone, Debug, PartialEq)]
pub struct Fetched {
    pub key: String,
    pub dims: Vec<usize>,
    pub values: Values,
}

impl Fetched {
    /// Rows `start..end` of this output.
    pub fn rows(&self, start: usize, end: usize) -> Fetched {
        let per_row: usize = self.dims[1..].iter().product();
        let (a, b) = (start * per_row, end * per_row);
        let values = match &self.values {
            Values::F32(v) => Values::F32(v[a..b].to_vec()),
            Values::I64(v) => Values::I64(v[a..b].to_vec()),
            Values::Str(v) => Values::Str(v[a..b].to_vec()),
        };
        let mut dims = self.dims.clone();
        dims[0] = end - start;
        Fetched { key: self.key.clone(), dims, values }
    }
}

/// One layer's output for one image: its name and [1, H, W, C] (or [1, width]) values.
pub type Activation = (&'static str, ArrayD<f32>);

/// A SavedModel version, loaded and ready to run.
pub struct LoadedModel {
    /// The model's name (TF Serving's model_name), for metrics.
    pub name: String,
    pub version: u64,
    pub dir: PathBuf,
    session: Session,
    pub signatures: BTreeMap<String, Signature>,
    /// (layer, output) for the activation pictures.
    layers: Vec<(&'static str, Output)>,
    /// The decoded batch between the image signature's decoding and the network, when the graph
    /// exposes it (the `predict_tensor` input that `alexnet export` writes: a
    /// PlaceholderWithDefault of the decoded images, see [`crate::serve::inference`]).
    decoded: Option<Output>,
    /// The class names `alexnet export` stores in the graph (a `class_names` constant), by id.
    pub class_names: Option<Vec<String>>,
}

impl LoadedModel {
    /// Loads `dir` (tag `serve`); it must have a `serving_default` signature.
    pub fn load(dir: &Path, version: u64, name: &str) -> Result<LoadedModel> {
        let started = std::time::Instant::now();
        ensure!(dir.join("saved_model.pb").is_file(), "{} is not a SavedModel (no saved_model.pb)", dir.display());
        let mut graph = Graph::new();
        let bundle = SavedModelBundle::load(&SessionOptions::new(), [SERVE_TAG], &mut graph, dir)
            .with_context(|| format!("cannot load the SavedModel in {} (tag '{SERVE_TAG}')", dir.display()))?;
        let mut signatures = BTreeMap::new();
        for (name, def) in bundle.meta_graph_def().signatures() {
            // A signature of another shape (several inputs) is left out, not fatal.
            if let Ok(sig) = signature(&graph, name, def) {
                signatures.insert(name.clone(), sig);
            }
        }
        ensure!(signatures.contains_key(SERVING_SIGNATURE), "{} has no single-input '{SERVING_SIGNATURE}' signature", dir.display());
        let layers = LAYER_OPS
            .iter()
            .filter_map(|(layer, op)| graph.operation_by_name(op).ok().flatten().map(|o| (*layer, Output { operation: o, index: 0 })))
            .collect();
        let class_names = constant_strings(&graph, &bundle.session, "class_names");
        let decoded = signatures
            .get(TENSOR_SIGNATURE)
            .map(|s| s.input.output.clone())
            .filter(|o| o.operation.op_type().is_ok_and(|t| t == "PlaceholderWithDefault") && signatures[SERVING_SIGNATURE].input.dtype == DataType::String);
        metrics::count(metrics::LOAD_LATENCY, vec![("model_path", dir.display().to_string())], metrics::micros(started.elapsed()));
        Ok(LoadedModel { name: name.to_string(), version, dir: dir.to_path_buf(), session: bundle.session, signatures, layers, decoded, class_names })
    }

    /// Runs `signature` on `input`: every output of the signature, rows first.
    pub fn run(&self, signature: &str, input: &Column) -> Result<Vec<Fetched>> {
        let sig = self.signatures.get(signature).with_context(|| format!("no signature '{signature}'"))?;
        let outputs: Vec<(String, Output, DataType)> = sig.outputs.iter().map(|o| (o.key.clone(), o.output.clone(), o.dtype)).collect();
        if let (Column::Bytes(images), Some(decoded)) = (input, &self.decoded)
            && images.len() > 1
            && signature == SERVING_SIGNATURE
        {
            let pixels = self.decode_each(&sig.input.output, decoded, images)?;
            return self.run_outputs(decoded, &pixels, &outputs);
        }
        self.run_outputs(&sig.input.output, input, &outputs)
    }

    /// The graph's own decoding of each image, on every core: the graph decodes a batch in a
    /// functional While loop, one image after the other, which would leave a batch's decoding on
    /// one core while unbatched requests decode side by side.
    fn decode_each(&self, images_in: &Output, decoded: &Output, images: &[Vec<u8>]) -> Result<Column> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(images.len());
        let fetch = [("input".to_string(), decoded.clone(), DataType::Float)];
        let decode_one = |img: &Vec<u8>| self.run_outputs(images_in, &Column::Bytes(vec![img.clone()]), &fetch).map(|mut f| f.remove(0));
        let each: Vec<Result<Fetched>> = map_each(images.iter().collect(), threads, decode_one);
        let mut values = vec![];
        let mut row_shape = vec![];
        for f in each.into_iter().collect::<Result<Vec<_>>>()? {
            row_shape = f.dims[1..].to_vec();
            if let Values::F32(v) = f.values {
                values.extend(v);
            }
        }
        Ok(Column::Floats { values, rows: images.len(), row_shape })
    }

    /// The `serving_default` probabilities of one encoded image, and every layer's activation.
    pub fn activations(&self, image: &[u8]) -> Result<(Vec<Fetched>, Vec<Activation>)> {
        let sig = &self.signatures[SERVING_SIGNATURE];
        let mut outputs: Vec<(String, Output, DataType)> = sig.outputs.iter().map(|o| (o.key.clone(), o.output.clone(), o.dtype)).collect();
        let n = outputs.len();
        outputs.extend(self.layers.iter().map(|(l, o)| (l.to_string(), o.clone(), DataType::Float)));
        let mut fetched = self.run_outputs(&sig.input.output, &Column::Bytes(vec![image.to_vec()]), &outputs)?;
        let layers = fetched.split_off(n);
        let arrays = layers
            .into_iter()
            .zip(&self.layers)
            .map(|(f, (layer, _))| match f.values {
                Values::F32(v) => Ok((*layer, ArrayD::from_shape_vec(IxDyn(&f.dims), v)?)),
                _ => bail!("layer {layer} is not float32"),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((fetched, arrays))
    }

    /// Whether this model has the `serving_default` input the page feeds (encoded images).
    pub fn takes_images(&self) -> bool {
        self.signatures[SERVING_SIGNATURE].input.dtype == DataType::String
    }

    fn run_outputs(&self, input: &Output, column: &Column, outputs: &[(String, Output, DataType)]) -> Result<Vec<Fetched>> {
        let (strings, floats);
        let mut args = SessionRunArgs::new();
        match column {
            Column::Bytes(b) => {
                strings = bytes::tensor(b);
                args.add_feed(&input.operation, input.index, &strings);
            }
            Column::Floats { values, rows, row_shape } => {
                let dims: Vec<u64> = std::iter::once(*rows).chain(row_shape.iter().copied()).map(|d| d as u64).collect();
                floats = Tensor::<f32>::new(&dims).with_values(values)?;
                args.add_feed(&input.operation, input.index, &floats);
            }
        }
        let tokens: Vec<_> = outputs.iter().map(|(_, o, _)| args.request_fetch(&o.operation, o.index)).collect();
        self.session.run(&mut args)?;
        outputs
            .iter()
            .zip(tokens)
            .map(|((key, _, dtype), t)| {
                let (dims, values) = match dtype {
                    DataType::Float => fetch(&mut args, t, |v: Vec<f32>| Values::F32(v))?,
                    DataType::Int64 => fetch(&mut args, t, |v: Vec<i64>| Values::I64(v))?,
                    DataType::String => fetch(&mut args, t, |v: Vec<Bytes>| Values::Str(v.into_iter().map(|b| b.0).collect()))?,
                    other => bail!("output '{key}' is {other}: alexnet serve returns float32, int64 and string outputs"),
                };
                ensure!(dims.first() == Some(&column.rows()), "output '{key}' has shape {dims:?} for {} rows", column.rows());
                Ok(Fetched { key: key.clone(), dims, values })
            })
            .collect()
    }
}

fn fetch<T: TensorType + Clone>(args: &mut SessionRunArgs, token: tensorflow::FetchToken, wrap: impl Fn(Vec<T>) -> Values) -> Result<(Vec<usize>, Values)> {
    let t: Tensor<T> = args.fetch(token)?;
    Ok((t.dims().iter().map(|&d| d as usize).collect(), wrap(t.to_vec())))
}

/// The value of a string constant of the graph, if it has one named `op`.
fn constant_strings(graph: &Graph, session: &Session, op: &str) -> Option<Vec<String>> {
    let op = graph.operation_by_name(op).ok()??;
    let mut args = SessionRunArgs::new();
    let token = args.request_fetch(&op, 0);
    session.run(&mut args).ok()?;
    args.fetch::<String>(token).ok().map(|t| t.to_vec())
}

/// The signature `name` of the loaded graph, if it takes one input.
fn signature(graph: &Graph, name: &str, def: &tensorflow::SignatureDef) -> Result<Signature> {
    ensure!(def.inputs().len() == 1, "signature '{name}' takes {} inputs", def.inputs().len());
    let spec = |key: &str, info: &tensorflow::TensorInfo| -> Result<TensorSpec> {
        let op = graph.operation_by_name_required(&info.name().name)?;
        let shape = info.shape().dims().map(|n| (0..n).map(|i| info.shape()[i]).collect());
        Ok(TensorSpec { key: key.to_string(), output: Output { operation: op, index: info.name().index }, dtype: info.dtype(), shape })
    };
    let (key, info) = def.inputs().iter().next().unwrap();
    let input = spec(key, info)?;
    ensure!(matches!(input.dtype, DataType::String | DataType::Float), "signature '{name}' takes {}", input.dtype);
    let mut outputs = def.outputs().iter().map(|(k, i)| spec(k, i)).collect::<Result<Vec<_>>>()?;
    // The signature's map has no order: probabilities first, then by name, for stable answers.
    outputs.sort_by_key(|o| (o.key != PROBABILITIES, o.key.clone()));
    Ok(Signature { name: name.to_string(), method_name: def.method_name().to_string(), input, outputs })
}
