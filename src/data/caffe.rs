//! Caffe models: reads a binary `.caffemodel` (Caffe's `NetParameter` protobuf, in the current
//! `layer` format or the legacy V1 `layers` one) and writes the project's weight files.
//!
//! The layers with weights are mapped to conv1..conv5 and fc6..fc8 by position and kind, and
//! checked against the project's table ([`model::param_specs`]). Grouped convolutions (the BVLC
//! AlexNet has `group: 2` on conv2, conv4 and conv5) are expanded into the equivalent ungrouped
//! filter, zeros between the groups, so the graph stays one plain Conv2D per layer. Files are
//! written in the layout of [`crate::data::weights`], with a `model.json` that records what was found.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use byteorder::{ByteOrder, LittleEndian};
use serde::{Deserialize, Serialize};

use crate::data::weights;
use crate::graph::model::{self, Layer, LrnProfile, ModelConfig, Padding, ParamSpec};
use crate::util::fsutil;

/// Caffe's messages, generated from `proto/caffe.proto` (see [`crate::proto`]).
pub use crate::proto::caffe as proto;

/// A parameter array of a layer: its shape as the file gives it, and its values.
#[derive(Clone, Debug, PartialEq)]
pub struct Blob {
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

/// One layer of the file, whichever format it came in.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CaffeLayer {
    pub name: String,
    /// The type as Caffe spells it now ("Convolution", "InnerProduct", ...); V1 enum values are
    /// translated.
    pub kind: String,
    pub blobs: Vec<Blob>,
    pub conv: Option<proto::ConvolutionParameter>,
    pub inner_product: Option<proto::InnerProductParameter>,
    pub lrn: Option<proto::LrnParameter>,
    pub pooling: Option<proto::PoolingParameter>,
}

/// Which of Caffe's two layer lists the file used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    /// `NetParameter.layer` (LayerParameter), Caffe since 2015.
    #[serde(rename = "layer")]
    Layer,
    /// `NetParameter.layers` (V1LayerParameter), the legacy format of the 2014 BVLC models.
    #[serde(rename = "layers (V1)")]
    V1,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CaffeNet {
    pub name: Option<String>,
    pub format: Format,
    pub layers: Vec<CaffeLayer>,
}

/// One layer of either format: `V1LayerParameter` (the legacy `layers`) and `LayerParameter` are
/// different messages with the same fields for what the importer reads.
macro_rules! caffe_layer {
    ($i:expr, $l:ident, $kind:expr) => {{
        let kind = $kind;
        let name = $l.name.unwrap_or_else(|| format!("#{}", $i));
        let blobs = blobs(&name, $l.blobs)?;
        Ok(CaffeLayer { kind, name, blobs, conv: $l.convolution_param, inner_product: $l.inner_product_param, lrn: $l.lrn_param, pooling: $l.pooling_param })
    }};
}

/// Reads and decodes a `.caffemodel`.
pub fn read_net(path: &Path) -> Result<CaffeNet> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read Caffe model {}", path.display()))?;
    decode_net(&bytes).with_context(|| format!("cannot import {}", path.display()))
}

/// Decodes a serialised `NetParameter`.
pub fn decode_net(bytes: &[u8]) -> Result<CaffeNet> {
    if bytes.starts_with(b"\x89HDF\r\n\x1a\n") {
        bail!("this is an HDF5 model (.caffemodel.h5); save it as a binary .caffemodel with Caffe first");
    }
    let net = <proto::NetParameter as prost::Message>::decode(bytes)
        .context("not a binary Caffe NetParameter (give the trained .caffemodel; a .prototxt net definition holds no weights)")?;
    let (layer, layers) = (net.layer, net.layers);
    ensure!(layer.is_empty() || layers.is_empty(), "the file has layers in both the current `layer` and the legacy `layers` field; Caffe refuses that too");
    let (format, layers) = if !layers.is_empty() {
        let convert = |(i, l): (usize, proto::V1LayerParameter)| {
            ensure!(l.layer.is_none(), "layer {i} is in Caffe's V0 format (before 2014); upgrade the file with Caffe's upgrade_net_proto_binary first");
            caffe_layer!(i, l, v1_type_name(l.r#type.unwrap_or(0)))
        };
        (Format::V1, layers.into_iter().enumerate().map(convert).collect::<Result<Vec<_>>>()?)
    } else {
        let convert = |(i, l): (usize, proto::LayerParameter)| caffe_layer!(i, l, l.r#type.clone().unwrap_or_default());
        (Format::Layer, layer.into_iter().enumerate().map(convert).collect::<Result<Vec<_>>>()?)
    };
    ensure!(!layers.is_empty(), "the file holds no layers: is it a .caffemodel?");
    Ok(CaffeNet { name: net.name, format, layers })
}

fn blobs(layer: &str, protos: Vec<proto::BlobProto>) -> Result<Vec<Blob>> {
    protos
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let dims: Vec<i64> = match &b.shape {
                Some(s) => s.dim.clone(),
                // Legacy blobs are 4-D: num x channels x height x width.
                None => [b.num, b.channels, b.height, b.width].iter().map(|d| d.unwrap_or(0) as i64).collect(),
            };
            ensure!(dims.iter().all(|&d| d >= 0), "layer '{layer}': blob {i} has a negative dimension {dims:?}");
            let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
            let data = if b.data.is_empty() { b.double_data.iter().map(|&v| v as f32).collect() } else { b.data };
            let count: usize = dims.iter().product();
            ensure!(data.len() == count, "layer '{layer}': blob {i} has {} values but its shape {dims:?} holds {count}", data.len());
            Ok(Blob { dims, data })
        })
        .collect()
}

/// The current type string of a V1LayerParameter.LayerType, as Caffe's own upgrade names it.
pub fn v1_type_name(t: i32) -> String {
    let name = match t {
        35 => "AbsVal",
        1 => "Accuracy",
        30 => "ArgMax",
        2 => "BNLL",
        3 => "Concat",
        37 => "ContrastiveLoss",
        4 => "Convolution",
        5 => "Data",
        39 => "Deconvolution",
        6 => "Dropout",
        32 => "DummyData",
        7 => "EuclideanLoss",
        25 => "Eltwise",
        38 => "Exp",
        8 => "Flatten",
        9 => "HDF5Data",
        10 => "HDF5Output",
        28 => "HingeLoss",
        11 => "Im2col",
        12 => "ImageData",
        13 => "InfogainLoss",
        14 => "InnerProduct",
        15 => "LRN",
        29 => "MemoryData",
        16 => "MultinomialLogisticLoss",
        34 => "MVN",
        17 => "Pooling",
        26 => "Power",
        18 => "ReLU",
        19 => "Sigmoid",
        27 => "SigmoidCrossEntropyLoss",
        36 => "Silence",
        20 => "Softmax",
        21 => "SoftmaxWithLoss",
        22 => "Split",
        33 => "Slice",
        23 => "TanH",
        24 => "WindowData",
        31 => "Threshold",
        _ => return format!("V1 layer type {t}"),
    };
    name.to_string()
}

/// Expands a grouped convolution filter, Caffe layout [out][in / groups][kh][kw], into the
/// equivalent ungrouped one, [out][in][kh][kw]: output channel o belongs to group
/// g = o / (out / groups) and sees only input channels g * in_g .. (g + 1) * in_g, so its weights
/// on every other input channel are zero.
pub fn expand_groups(weights: Vec<f32>, out: usize, in_per_group: usize, kernel_area: usize, groups: usize) -> Vec<f32> {
    assert!(groups >= 1 && out.is_multiple_of(groups), "{out} output channels do not split into {groups} groups");
    let block = in_per_group * kernel_area;
    assert_eq!(weights.len(), out * block, "grouped filter size");
    if groups == 1 {
        return weights;
    }
    let out_per_group = out / groups;
    let mut full = vec![0f32; out * groups * block];
    for (o, filter) in weights.chunks_exact(block).enumerate() {
        // Row o of the full filter holds `groups` blocks of in_g input channels; fill block g.
        let start = (o * groups + o / out_per_group) * block;
        full[start..start + block].copy_from_slice(filter);
    }
    full
}

/// Drops leading 1s until `dims` has `rank` axes (legacy blobs are always 4-D: fc weights
/// 1 x 1 x out x in, biases 1 x 1 x 1 x out).
fn squeeze(dims: &[usize], rank: usize) -> Option<Vec<usize>> {
    if dims.len() < rank {
        return None;
    }
    let (lead, rest) = dims.split_at(dims.len() - rank);
    lead.iter().all(|&d| d == 1).then(|| rest.to_vec())
}

/// A layer with weights, ready to write: Caffe layout, groups expanded.
#[derive(Clone, Debug, PartialEq)]
pub struct Imported {
    /// conv1..conv5, fc6..fc8.
    pub layer: &'static str,
    pub caffe_name: String,
    /// [out][in][kh][kw] or [out][in] (fc6's inputs C x H x W, as Caffe flattens).
    pub weights: Vec<f32>,
    pub biases: Vec<f32>,
}

/// What the import found; written as `model.json` next to the weight files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub source: PathBuf,
    pub format: Format,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_name: Option<String>,
    /// Every layer of the file, in order.
    pub layers: Vec<LayerInfo>,
    /// fc6's width, for `alexnet train --fc-width`; None without fc layers.
    pub fc_width: Option<usize>,
    /// fc8's outputs; None without fc8.
    pub classes: Option<usize>,
    /// The `--lrn` profile equal to the file's LRN layers; None if none is.
    pub lrn: Option<LrnProfile>,
    /// Differences between the Caffe net and the project's graph that the weights survive.
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The project layer the weights went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_as: Option<String>,
    /// Weight shape in the file: conv [out, in / groups, kh, kw], fc [out, in].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<usize>,
    /// Weight shape of the file written: groups expanded, [out, in, kh, kw] or [out, in].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_shape: Option<Vec<usize>>,
    /// False when the layer has no bias term (zero biases are written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias_term: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad: Option<usize>,
}

impl ModelInfo {
    pub fn read(dir: &Path) -> Result<ModelInfo> {
        let path = dir.join("model.json");
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {} (was the folder written by alexnet import-caffe?)", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a valid import record", path.display()))
    }

    /// What was imported, for the terminal.
    pub fn summary(&self, out: &Path) -> String {
        let format = match self.format {
            Format::Layer => "current `layer` format",
            Format::V1 => "legacy V1 `layers` format",
        };
        let name = self.net_name.as_deref().map(|n| format!(", net \"{n}\"")).unwrap_or_default();
        let mut s = format!("{} ({format}{name}):\n", self.source.display());
        for l in self.layers.iter().filter(|l| l.imported_as.is_some()) {
            let dims = |d: &Option<Vec<usize>>| d.as_deref().unwrap_or(&[]).iter().map(|v| v.to_string()).collect::<Vec<_>>().join("x");
            let groups = match l.groups {
                Some(g) if g > 1 => format!(", group {g} expanded to {}", dims(&l.written_shape)),
                _ => String::new(),
            };
            s += &format!("  {:<6} <- {:<16} {}{groups}\n", l.imported_as.as_deref().unwrap(), format!("'{}'", l.name), dims(&l.shape));
        }
        let classes = self.classes.map(|c| format!(", {c} classes")).unwrap_or_default();
        if let Some(w) = self.fc_width {
            s += &format!("fc width {w}{classes}\n");
        }
        s += &format!("wrote the weight files and model.json to {}\n", out.display());
        let mut cmd = format!("alexnet train --weights {}", out.display());
        if let Some(w) = self.fc_width {
            cmd += &format!(" --fc-width {w}");
        }
        if self.lrn == Some(LrnProfile::Caffe) {
            cmd += " --lrn caffe";
        }
        s += &format!("train with: {cmd} ...\n");
        s
    }
}

/// The project's convolution table rows, conv1..conv5.
fn conv_rows(cfg: &ModelConfig) -> Vec<(usize, usize, Padding)> {
    model::layers(cfg)
        .into_iter()
        .filter_map(|l| match l {
            Layer::Conv { kernel, stride, padding, .. } => Some((kernel, stride, padding)),
            _ => None,
        })
        .collect()
}

/// Caffe's symmetric pad that equals TensorFlow's `padding` for this kernel and stride.
fn caffe_pad(padding: Padding, kernel: usize, stride: usize) -> Option<usize> {
    match padding {
        Padding::Valid => Some(0),
        Padding::Same if stride == 1 && kernel % 2 == 1 => Some((kernel - 1) / 2),
        Padding::Same => None,
    }
}

/// One value of a 2-D conv setting, given either once (`list`) or as separate h and w fields.
fn conv_setting(name: &str, setting: &str, list: &[u32], h: Option<u32>, w: Option<u32>, default: u32) -> Result<usize> {
    let (vh, vw) = match (h, w, list) {
        (Some(h), Some(w), _) => (h, w),
        (_, _, []) => (default, default),
        (_, _, [v]) => (*v, *v),
        (_, _, [h, w]) => (*h, *w),
        _ => bail!("layer '{name}': {} {setting} values for a 2-D convolution", list.len()),
    };
    ensure!(vh == vw, "layer '{name}': {setting} {vh} x {vw} is not square; the project's convolutions are");
    Ok(vh as usize)
}

/// Maps the file's layers onto the project's AlexNet and converts their weights.
pub fn convert(net: CaffeNet, source: &Path) -> Result<(Vec<Imported>, ModelInfo)> {
    let mut layers = net.layers;
    let mut convs: Vec<usize> = vec![];
    let mut fcs: Vec<usize> = vec![];
    for (i, l) in layers.iter().enumerate() {
        let weighted = matches!(l.kind.as_str(), "Convolution" | "InnerProduct");
        if l.blobs.is_empty() {
            ensure!(!weighted, "layer '{}' ({}) has no weights: is this a net definition rather than a trained .caffemodel?", l.name, l.kind);
            continue;
        }
        match l.kind.as_str() {
            "Convolution" => {
                if let Some(&f) = fcs.first() {
                    bail!(
                        "layer '{}' is a convolution after the fully connected layer '{}'; the project's AlexNet has all its convolutions first",
                        l.name,
                        layers[f].name
                    );
                }
                convs.push(i)
            }
            "InnerProduct" => fcs.push(i),
            other => bail!(
                "layer '{}' is a {other} layer with weights ({} blobs); the project's AlexNet has weights only in convolutions (conv1..conv5) and fully connected layers (fc6..fc8), so this model cannot be imported",
                l.name,
                l.blobs.len()
            ),
        }
    }
    let names = |idx: &[usize]| idx.iter().map(|&i| format!("'{}'", layers[i].name)).collect::<Vec<_>>().join(", ");
    ensure!(convs.len() == 5, "the model has {} convolution layers with weights ({}); the project's AlexNet has 5 (conv1..conv5)", convs.len(), names(&convs));
    if fcs.len() > 3 {
        bail!(
            "the model has {} fully connected layers ({}); the project's AlexNet has 3 (fc6..fc8), so layer '{}' has no counterpart",
            fcs.len(),
            names(&fcs),
            layers[fcs[3]].name
        );
    }

    // The fc width and class count the file implies (fc weights are [out][in], or [in][out] with
    // `transpose`); a placeholder where the file has no such layer, as only fc specs depend on it.
    let fc_out = |l: &CaffeLayer| -> Option<usize> {
        let dims = squeeze(&l.blobs[0].dims, 2)?;
        Some(if l.inner_product.as_ref().and_then(|p| p.transpose).unwrap_or(false) { dims[1] } else { dims[0] })
    };
    let fc_width = fcs.first().and_then(|&i| fc_out(&layers[i]));
    let classes = fcs.get(2).and_then(|&i| fc_out(&layers[i]));
    let cfg = ModelConfig { classes: classes.unwrap_or(1), fc_width: fc_width.unwrap_or(256), lrn: LrnProfile::Caffe, input_size: model::INPUT_SIZE };
    let specs = model::param_specs(&cfg);
    let rows = conv_rows(&cfg);

    let mut infos: Vec<LayerInfo> = layers.iter().map(|l| LayerInfo { name: l.name.clone(), kind: l.kind.clone(), ..Default::default() }).collect();
    let mut imported = vec![];
    for (k, &i) in convs.iter().enumerate() {
        let (out, info) = convert_conv(&mut layers[i], &specs[k], rows[k])?;
        infos[i] = LayerInfo { name: infos[i].name.clone(), kind: infos[i].kind.clone(), ..info };
        imported.push(out);
    }
    for (k, &i) in fcs.iter().enumerate() {
        let (out, info) = convert_fc(&mut layers[i], &specs[5 + k], &cfg)?;
        infos[i] = LayerInfo { name: infos[i].name.clone(), kind: infos[i].kind.clone(), ..info };
        imported.push(out);
    }

    let (lrn, warnings) = check_structure(&layers, &cfg, &imported);
    let info = ModelInfo { source: source.to_path_buf(), format: net.format, net_name: net.name, layers: infos, fc_width, classes, lrn, warnings };
    Ok((imported, info))
}

fn convert_conv(l: &mut CaffeLayer, spec: &ParamSpec, (kernel, stride, padding): (usize, usize, Padding)) -> Result<(Imported, LayerInfo)> {
    let (name, to) = (l.name.clone(), spec.layer);
    let p = l.conv.clone().unwrap_or_default();
    ensure!(l.blobs.len() <= 2, "layer '{name}' (imported as {to}) has {} blobs; a convolution has weights and biases", l.blobs.len());
    let w = std::mem::replace(&mut l.blobs[0], Blob { dims: vec![], data: vec![] });
    let Some(&[o, in_g, kh, kw]) = squeeze(&w.dims, 4).as_deref() else {
        bail!("layer '{name}' (imported as {to}): weights of shape {:?}, expected [out, in / groups, kh, kw]", w.dims)
    };
    let groups = p.group.unwrap_or(1) as usize;
    ensure!(groups >= 1 && o.is_multiple_of(groups), "layer '{name}': {o} filters do not split into {groups} groups");
    if let Some(n) = p.num_output {
        ensure!(n as usize == o, "layer '{name}': num_output {n} but {o} filters in its weights");
    }
    ensure!(kh == kw, "layer '{name}' (imported as {to}): a {kh}x{kw} kernel; the project's convolutions are square");
    let s = conv_setting(&name, "stride", &p.stride, p.stride_h, p.stride_w, 1)?;
    let pad = conv_setting(&name, "pad", &p.pad, p.pad_h, p.pad_w, 0)?;
    let dilation = conv_setting(&name, "dilation", &p.dilation, None, None, 1)?;
    let want_pad = caffe_pad(padding, kernel, stride).expect("the table's paddings have Caffe equivalents");
    ensure!(
        kh == kernel && s == stride && pad == want_pad && dilation == 1,
        "layer '{name}' (imported as {to}) is a {kh}x{kh} convolution with stride {s}, pad {pad}{}; the project's {to} is {kernel}x{kernel}, stride {stride}, pad {want_pad}, which its graph cannot change",
        if dilation == 1 { String::new() } else { format!(", dilation {dilation}") }
    );
    let shape = vec![o, in_g * groups, kh, kw];
    let want = weights::caffe_shape(spec);
    ensure!(
        shape == want,
        "layer '{name}' (imported as {to}) has {o} filters over {} input channels{}; the project's {to} has {} over {}",
        in_g * groups,
        if groups > 1 { format!(" ({groups} groups of {in_g})") } else { String::new() },
        want[0],
        want[1]
    );
    let bias_term = l.blobs.len() == 2;
    let biases = if bias_term { take_biases(l, o, to)? } else { vec![0.0; o] };
    let info = LayerInfo {
        imported_as: Some(to.into()),
        shape: Some(vec![o, in_g, kh, kw]),
        groups: Some(groups),
        written_shape: Some(shape),
        bias_term: Some(bias_term),
        kernel: Some(kh),
        stride: Some(s),
        pad: Some(pad),
        ..Default::default()
    };
    let weights = expand_groups(w.data, o, in_g, kh * kw, groups);
    Ok((Imported { layer: to, caffe_name: name, weights, biases }, info))
}

fn convert_fc(l: &mut CaffeLayer, spec: &ParamSpec, cfg: &ModelConfig) -> Result<(Imported, LayerInfo)> {
    let (name, to) = (l.name.clone(), spec.layer);
    let p = l.inner_product.unwrap_or_default();
    ensure!(l.blobs.len() <= 2, "layer '{name}' (imported as {to}) has {} blobs; a fully connected layer has weights and biases", l.blobs.len());
    let w = std::mem::replace(&mut l.blobs[0], Blob { dims: vec![], data: vec![] });
    let Some(&[a, b]) = squeeze(&w.dims, 2).as_deref() else { bail!("layer '{name}' (imported as {to}): weights of shape {:?}, expected [out, in]", w.dims) };
    let transpose = p.transpose.unwrap_or(false);
    let (o, i) = if transpose { (b, a) } else { (a, b) };
    let want = weights::caffe_shape(spec);
    if [o, i][..] != want[..] {
        let what = match to {
            "fc6" => format!("takes pool5's {} inputs (256 x 6 x 6 for a 227x227 image)", want[1]),
            "fc7" => format!("is {0}x{0}: the width of fc6 in and out", cfg.fc_width),
            _ => format!("takes fc7's {} outputs", want[1]),
        };
        bail!("layer '{name}' (imported as {to}) has {o}x{i} weights ([out][in]); the project's {to} {what}");
    }
    if let Some(n) = p.num_output {
        ensure!(n as usize == o, "layer '{name}': num_output {n} but {o} outputs in its weights");
    }
    let weights = if transpose { transpose2(&w.data, a, b) } else { w.data };
    let bias_term = l.blobs.len() == 2;
    let biases = if bias_term { take_biases(l, o, to)? } else { vec![0.0; o] };
    let info =
        LayerInfo { imported_as: Some(to.into()), shape: Some(vec![o, i]), written_shape: Some(vec![o, i]), bias_term: Some(bias_term), ..Default::default() };
    Ok((Imported { layer: to, caffe_name: name, weights, biases }, info))
}

fn take_biases(l: &mut CaffeLayer, out: usize, to: &str) -> Result<Vec<f32>> {
    let b = std::mem::replace(&mut l.blobs[1], Blob { dims: vec![], data: vec![] });
    ensure!(squeeze(&b.dims, 1).is_some() && b.data.len() == out, "layer '{}' (imported as {to}): biases of shape {:?}, expected [{out}]", l.name, b.dims);
    Ok(b.data)
}

/// [rows][cols] -> [cols][rows].
fn transpose2(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = v[r * cols + c];
        }
    }
    t
}

/// The layers without weights against the project's graph: the LRN profile they equal, and
/// warnings for what differs (the weights still import; the function computed differs until
/// fine-tuned).
fn check_structure(layers: &[CaffeLayer], cfg: &ModelConfig, imported: &[Imported]) -> (Option<LrnProfile>, Vec<String>) {
    let mut warnings = vec![];
    // The order of convolutions, LRNs, pools and fc layers, as in model::layers.
    let mut weighted = imported.iter();
    let found: Vec<(String, &str)> = layers
        .iter()
        .filter_map(|l| match l.kind.as_str() {
            "Convolution" | "InnerProduct" if !l.blobs.is_empty() => Some((l.name.clone(), weighted.next().map(|w| w.layer).unwrap_or("?"))),
            "LRN" => Some((l.name.clone(), "lrn")),
            "Pooling" => Some((l.name.clone(), "pool")),
            _ => None,
        })
        .collect();
    let kind = |name: &str| match name {
        "lrn" | "pool" => name.to_string(),
        n => n.trim_end_matches(char::is_numeric).to_string(),
    };
    let table = model::layers(cfg);
    let fc_count = imported.iter().filter(|l| l.layer.starts_with("fc")).count();
    let table = &table[..table.len() - (3 - fc_count)];
    let expected: Vec<String> = table
        .iter()
        .map(|l| match l {
            Layer::Conv { .. } => "conv",
            Layer::Lrn { .. } => "lrn",
            Layer::MaxPool { .. } => "pool",
            Layer::Fc { .. } => "fc",
        })
        .map(String::from)
        .collect();
    let found_kinds: Vec<String> = found.iter().map(|(_, k)| kind(k)).collect();
    if found_kinds != expected {
        warnings.push(format!(
            "the order of the file's layers ({}) differs from the project's graph ({}): the weights import, but the graph computes something else than the Caffe net",
            found.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(" "),
            table.iter().map(|l| l.name()).collect::<Vec<_>>().join(" ")
        ));
    }

    let mut lrn_matches = true;
    let mut any_lrn = false;
    for l in layers.iter().filter(|l| l.kind == "LRN") {
        any_lrn = true;
        let p = l.lrn.unwrap_or_default();
        let (size, alpha, beta, k, region) =
            (p.local_size.unwrap_or(5), p.alpha.unwrap_or(1.0), p.beta.unwrap_or(0.75), p.k.unwrap_or(1.0), p.norm_region.unwrap_or(0));
        // --lrn caffe is Caffe's local_size 5, alpha 1e-4, beta 0.75, k 1, across channels.
        if !(size == 5 && (alpha - 1e-4).abs() < 1e-9 && beta == 0.75 && k == 1.0 && region == 0) {
            lrn_matches = false;
            warnings.push(format!(
                "LRN layer '{}' (local_size {size}, alpha {alpha}, beta {beta}, k {k}{}) is not Caffe's AlexNet LRN (5, 1e-4, 0.75, 1): neither --lrn profile reproduces it",
                l.name,
                if region == 0 { "" } else { ", within channel" }
            ));
        }
    }
    for l in layers.iter().filter(|l| l.kind == "Pooling") {
        let p = l.pooling.unwrap_or_default();
        let kernel = p.kernel_h.or(p.kernel_size).unwrap_or(0);
        let stride = p.stride_h.or(p.stride).unwrap_or(1);
        // Caffe rounds a pool's output size up and TensorFlow's VALID down, but for a 227x227
        // input AlexNet's pools divide exactly (55, 27, 13 -> 27, 13, 6), so sizes agree.
        if p.pool.unwrap_or(0) != 0 || kernel != 3 || stride != 2 || p.pad.unwrap_or(0) != 0 || p.global_pooling.unwrap_or(false) {
            warnings.push(format!(
                "pooling layer '{}' is not a 3x3 stride-2 max pool like the project's: the weights import, but the graph pools differently",
                l.name
            ));
        }
    }
    ((any_lrn && lrn_matches).then_some(LrnProfile::Caffe), warnings)
}

/// Every file name the importer may write into a folder.
fn project_files() -> Vec<String> {
    let mut names: Vec<String> =
        model::param_specs(&ModelConfig::new(2)).iter().flat_map(|s| [format!("{}.weights", s.layer), format!("{}.biases", s.layer)]).collect();
    names.push("model.json".into());
    names
}

/// Writes the weight files and `model.json` into `out`. Refuses a folder that already holds weight
/// files unless `force`, which also removes files of layers this model lacks, so the folder
/// holds exactly the imported model.
pub fn write(out: &Path, imported: &[Imported], info: &ModelInfo, force: bool) -> Result<()> {
    let existing: Vec<String> = project_files().into_iter().filter(|n| out.join(n).exists()).collect();
    if !existing.is_empty() && !force {
        let more = if existing.len() > 2 { format!(" and {} more", existing.len() - 2) } else { String::new() };
        bail!(
            "{} already holds weight files ({}{more}): add --force to replace them, or choose another --out",
            out.display(),
            existing[..existing.len().min(2)].join(", ")
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create the output folder {}", out.display()))?;
    let write_f32 = |name: String, values: &[f32]| -> Result<String> {
        let mut bytes = vec![0u8; values.len() * 4];
        LittleEndian::write_f32_into(values, &mut bytes);
        fsutil::write_atomic(&out.join(&name), &bytes)?;
        Ok(name)
    };
    let mut written = vec![];
    for l in imported {
        written.push(write_f32(format!("{}.weights", l.layer), &l.weights)?);
        written.push(write_f32(format!("{}.biases", l.layer), &l.biases)?);
    }
    for stale in existing.iter().filter(|n| !written.contains(n) && n.as_str() != "model.json") {
        std::fs::remove_file(out.join(stale)).with_context(|| format!("cannot remove the stale {}", out.join(stale).display()))?;
    }
    // Last: a model.json means every file before it is complete.
    fsutil::write_atomic(&out.join("model.json"), serde_json::to_string_pretty(info)?.as_bytes())
}

/// `alexnet import-caffe`: reads `model`, converts it, writes the files into `out`.
pub fn import(model: &Path, out: &Path, force: bool) -> Result<ModelInfo> {
    let net = read_net(model)?;
    let (imported, info) = convert(net, model).with_context(|| format!("cannot import {}", model.display()))?;
    write(out, &imported, &info, force)?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_groups_puts_each_group_on_its_inputs() {
        // 4 filters in 2 groups over 2 input channels per group, 1x1 kernels.
        let grouped: Vec<f32> = (1..=8).map(|v| v as f32).collect();
        let full = expand_groups(grouped, 4, 2, 1, 2);
        #[rustfmt::skip]
        assert_eq!(full, vec![
            1., 2., 0., 0.,
            3., 4., 0., 0.,
            0., 0., 5., 6.,
            0., 0., 7., 8.,
        ]);
        assert_eq!(expand_groups(vec![1., 2.], 1, 2, 1, 1), vec![1., 2.]);
    }

    #[test]
    fn squeeze_drops_only_leading_ones() {
        assert_eq!(squeeze(&[1, 1, 10, 20], 2), Some(vec![10, 20]));
        assert_eq!(squeeze(&[1, 1, 1, 10], 1), Some(vec![10]));
        assert_eq!(squeeze(&[96, 3, 11, 11], 4), Some(vec![96, 3, 11, 11]));
        assert_eq!(squeeze(&[2, 1, 10, 20], 2), None);
        assert_eq!(squeeze(&[10], 2), None);
    }

    #[test]
    fn pads_that_equal_tensorflow_paddings() {
        assert_eq!(caffe_pad(Padding::Valid, 11, 4), Some(0));
        assert_eq!(caffe_pad(Padding::Same, 5, 1), Some(2));
        assert_eq!(caffe_pad(Padding::Same, 3, 1), Some(1));
        assert_eq!(caffe_pad(Padding::Same, 3, 2), None);
    }

    #[test]
    fn garbage_and_text_are_refused() {
        let err = decode_net(b"name: \"AlexNet\"\nlayer {\n").unwrap_err();
        assert!(format!("{err:#}").contains("not a binary Caffe NetParameter"), "{err:#}");
        let err = decode_net(b"\x89HDF\r\n\x1a\n....").unwrap_err();
        assert!(format!("{err:#}").contains("HDF5"), "{err:#}");
        assert!(format!("{:#}", decode_net(b"").unwrap_err()).contains("no layers"));
    }
}
