//! Pretrained weights in the Swift original's format, and the Swift original's initialisation.
//!
//! Files are raw little-endian float32 in Caffe's layout: `convN.weights` [out][in][kh][kw],
//! `fcN.weights` [out][in] (fc6's inputs flattened C x H x W), `<layer>.biases` [out]. TensorFlow
//! wants conv filters as [kh][kw][in][out] and fc weights as [in][out] with fc6's inputs in
//! H x W x C order, so every array is reordered on load. An fc8 made for another number of
//! classes (an imported 1000-class ImageNet model, fine-tuned on a data set of its own) is
//! re-initialised with a warning; every other size mismatch is an error.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use byteorder::{ByteOrder, LittleEndian};
use ndarray::{Array1, Array2, Array4, ArrayD, Axis, IxDyn};

use crate::graph::model::ParamSpec;
use crate::graph::params::LayerParams;
use crate::util::rng::Rng;

/// Where one file's worth of parameters came from.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    File(PathBuf),
    /// Initialised as the Swift original did; the string says how.
    Initialised(&'static str),
}

/// What [`load`] did, file by file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    pub entries: Vec<(String, Origin)>,
    /// Files present but not used, and why.
    pub warnings: Vec<String>,
}

impl LoadReport {
    pub fn loaded(&self) -> Vec<&str> {
        self.entries.iter().filter(|(_, o)| matches!(o, Origin::File(_))).map(|(n, _)| n.as_str()).collect()
    }
    pub fn initialised(&self) -> Vec<&str> {
        self.entries.iter().filter(|(_, o)| matches!(o, Origin::Initialised(_))).map(|(n, _)| n.as_str()).collect()
    }
}

impl fmt::Display for LoadReport {
    /// One line: `weights: loaded conv1.weights, ...; initialised conv4.weights (glorot-uniform), ...`
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let loaded = self.loaded();
        let init: Vec<String> = self
            .entries
            .iter()
            .filter_map(|(n, o)| match o {
                Origin::Initialised(how) => Some(format!("{n} ({how})")),
                Origin::File(_) => None,
            })
            .collect();
        let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        let loaded: Vec<String> = loaded.iter().map(|s| s.to_string()).collect();
        write!(f, "weights: loaded {}; initialised {}", list(&loaded), list(&init))?;
        self.warnings.iter().try_for_each(|w| write!(f, "\nwarning: {w}"))
    }
}

/// How to fill what the files don't provide.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// A missing file is an error instead of an initialised layer.
    pub strict: bool,
    /// Seed for the initialisation of missing layers.
    pub seed: u64,
}

/// Loads every layer of `specs` from `dir` (None: initialise everything).
pub fn load(dir: Option<&Path>, specs: &[ParamSpec], opts: &LoadOptions) -> Result<(Vec<LayerParams>, LoadReport)> {
    if let Some(dir) = dir
        && !dir.is_dir()
    {
        bail!(
            "weights directory {} does not exist or is not a directory (fill it with scripts/fetch-data, or leave out --weights to initialise every layer)",
            dir.display()
        );
    }
    let mut report = LoadReport::default();
    let mut layers = vec![];
    for (index, spec) in specs.iter().enumerate() {
        let mut rng = Rng::new(opts.seed, index as u64 + 1);
        let (w_init, b_init) = initialisation(spec);
        let mut dir = dir;
        if let Some(found) = dir.and_then(|d| other_class_count(d, spec)) {
            // Fine-tuning a 1000-class ImageNet model on a data set of its own is the point of
            // importing one: only the classifier starts over.
            if opts.strict {
                bail!(
                    "fc8.weights and fc8.biases in {} are for {found} classes but the data set has {}; --strict-weights refuses to re-initialise fc8 (drop it to fine-tune with a new fc8)",
                    dir.unwrap().display(),
                    spec.biases
                );
            }
            report.warnings.push(format!(
                "fc8.weights and fc8.biases in {} are for {found} classes but the data set has {}: fc8 is re-initialised",
                dir.unwrap().display(),
                spec.biases
            ));
            dir = None;
        }
        let weights_name = format!("{}.weights", spec.layer);
        let weights = match file_if_present(dir, &weights_name, opts.strict)? {
            Some(path) => {
                let caffe = read_f32_file(&path, caffe_shape(spec).iter().product()).map_err(|e| match fc_width_hint(&path, spec) {
                    Some(hint) => e.context(hint),
                    None => e,
                })?;
                report.entries.push((weights_name, Origin::File(path)));
                caffe_to_tf(spec, caffe)
            }
            None => {
                report.entries.push((weights_name, Origin::Initialised(w_init.describe())));
                w_init.sample(&spec.weights, &mut rng)
            }
        };
        let biases_name = format!("{}.biases", spec.layer);
        let biases = match file_if_present(dir, &biases_name, opts.strict)? {
            Some(path) => {
                let b = read_f32_file(&path, spec.biases)?;
                report.entries.push((biases_name, Origin::File(path)));
                Array1::from(b)
            }
            None => {
                report.entries.push((biases_name, Origin::Initialised(b_init.describe())));
                Array1::from_elem(spec.biases, b_init.constant())
            }
        };
        layers.push(LayerParams { layer: spec.layer, weights, biases });
    }
    Ok((layers, report))
}

/// The class count of fc8 files made for another number of classes (weights [classes][in] and
/// biases [classes] that agree with each other), if that is the only way they differ.
fn other_class_count(dir: &Path, spec: &ParamSpec) -> Option<usize> {
    if spec.layer != "fc8" {
        return None;
    }
    let size = |name: &str| std::fs::metadata(dir.join(name)).ok().map(|m| m.len() as usize);
    let (weights, biases) = (size("fc8.weights")?, size("fc8.biases")?);
    let classes = biases / 4;
    let inputs = spec.weights[0];
    (biases % 4 == 0 && classes > 0 && classes != spec.biases && weights == classes * inputs * 4).then_some(classes)
}

/// For an fc6 file of another width, the likely mistake: an imported model trained without its
/// --fc-width.
fn fc_width_hint(path: &Path, spec: &ParamSpec) -> Option<String> {
    let elements = std::fs::metadata(path).ok()?.len() as usize / 4;
    let (inputs, width) = (spec.weights[0], elements / spec.weights[0]);
    (spec.layer == "fc6" && elements.is_multiple_of(inputs) && width != spec.biases)
        .then(|| format!("{} is for an fc width of {width}, not {}: add --fc-width {width}", path.display(), spec.biases))
}

fn file_if_present(dir: Option<&Path>, name: &str, strict: bool) -> Result<Option<PathBuf>> {
    let Some(dir) = dir else { return Ok(None) };
    let path = dir.join(name);
    if path.exists() {
        Ok(Some(path))
    } else if strict {
        bail!("{} is missing (--strict-weights asks for every layer's file)", path.display())
    } else {
        Ok(None)
    }
}

/// Reads `expected` little-endian float32 values, refusing files of another size or with
/// non-finite values.
pub fn read_f32_file(path: &Path, expected: usize) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read weight file {}", path.display()))?;
    if bytes.len() != expected * 4 {
        let found = if bytes.len() % 4 == 0 {
            format!("{} elements", bytes.len() / 4)
        } else {
            format!("{} bytes, not a whole number of float32 values (truncated?)", bytes.len())
        };
        bail!("{}: expected {expected} float32 elements ({} bytes), found {found}", path.display(), expected * 4);
    }
    let mut values = vec![0f32; expected];
    LittleEndian::read_f32_into(&bytes, &mut values);
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        let bad = values.iter().filter(|v| !v.is_finite()).count();
        bail!("{}: {bad} non-finite values (first at element {i}: {})", path.display(), values[i]);
    }
    Ok(values)
}

/// The layer's weight shape in the file: conv [out, in, kh, kw], fc [out, in].
pub fn caffe_shape(spec: &ParamSpec) -> Vec<usize> {
    match spec.weights[..] {
        [kh, kw, i, o] => vec![o, i, kh, kw],
        [i, o] => vec![o, i],
        _ => unreachable!("weights are 2-D or 4-D"),
    }
}

/// Reorders a Caffe-layout array into TensorFlow's layout for `spec`.
pub fn caffe_to_tf(spec: &ParamSpec, values: Vec<f32>) -> ArrayD<f32> {
    let shape = caffe_shape(spec);
    match (&shape[..], spec.flattened_from) {
        (&[o, i, kh, kw], _) => {
            // (o, i, y, x) -> (y, x, i, o)
            let a = Array4::from_shape_vec((o, i, kh, kw), values).unwrap();
            a.permuted_axes([2, 3, 1, 0]).as_standard_layout().into_owned().into_dyn()
        }
        (&[o, _], Some([h, w, c])) => {
            // [out][c][y][x] -> [y][x][c][out] -> [(y, x, c)][out]
            let a = Array4::from_shape_vec((o, c, h, w), values).unwrap();
            let hwco = a.permuted_axes([2, 3, 1, 0]).as_standard_layout().into_owned();
            hwco.into_shape_with_order(IxDyn(&[h * w * c, o])).unwrap()
        }
        (&[o, i], None) => Array2::from_shape_vec((o, i), values).unwrap().reversed_axes().as_standard_layout().into_owned().into_dyn(),
        _ => unreachable!(),
    }
}

/// The inverse of [`caffe_to_tf`]: TensorFlow layout back to the file's order.
pub fn tf_to_caffe(spec: &ParamSpec, weights: &ArrayD<f32>) -> Vec<f32> {
    let reordered = match (&spec.weights[..], spec.flattened_from) {
        ([_, _, _, _], _) => weights.view().permuted_axes(IxDyn(&[3, 2, 0, 1])).to_owned(),
        ([_, o], Some([h, w, c])) => {
            let hwco = weights.view().into_shape_with_order(IxDyn(&[h, w, c, *o])).unwrap();
            hwco.permuted_axes(IxDyn(&[3, 2, 0, 1])).to_owned()
        }
        _ => weights.view().reversed_axes().to_owned(),
    };
    reordered.as_standard_layout().iter().copied().collect()
}

/// The Swift original's initialisers.
#[derive(Clone, Copy, Debug)]
enum Init {
    GlorotUniform,
    Normal(f64),
    Constant(f32),
}

impl Init {
    fn describe(self) -> &'static str {
        match self {
            Init::GlorotUniform => "glorot-uniform",
            Init::Normal(0.005) => "normal(0, 0.005)",
            Init::Normal(_) => "normal(0, 0.01)",
            Init::Constant(0.1) => "0.1",
            Init::Constant(_) => "zeros",
        }
    }

    fn constant(self) -> f32 {
        match self {
            Init::Constant(c) => c,
            _ => unreachable!("biases are constant-initialised"),
        }
    }

    fn sample(self, shape: &[usize], rng: &mut Rng) -> ArrayD<f32> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = match self {
            Init::GlorotUniform => {
                let receptive: usize = shape[..shape.len() - 2].iter().product();
                let fan_in = receptive * shape[shape.len() - 2];
                let fan_out = receptive * shape[shape.len() - 1];
                let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
                (0..n).map(|_| ((rng.uniform() * 2.0 - 1.0) * limit) as f32).collect()
            }
            Init::Normal(std) => (0..n).map(|_| (rng.normal() * std) as f32).collect(),
            Init::Constant(c) => vec![c; n],
        };
        ArrayD::from_shape_vec(IxDyn(shape), values).unwrap()
    }
}

/// (weights, biases) initialisers of a layer without files.
fn initialisation(spec: &ParamSpec) -> (Init, Init) {
    match spec.layer {
        "fc6" | "fc7" => (Init::Normal(0.005), Init::Constant(0.1)),
        "fc8" => (Init::Normal(0.01), Init::Constant(0.0)),
        _ => (Init::GlorotUniform, Init::Constant(0.0)),
    }
}

/// Writes one layer back in the file format (used by tests and tools that produce weight files).
pub fn write_layer(dir: &Path, spec: &ParamSpec, params: &LayerParams) -> Result<()> {
    let write = |name: String, values: &[f32]| -> Result<()> {
        let mut bytes = vec![0u8; values.len() * 4];
        LittleEndian::write_f32_into(values, &mut bytes);
        crate::util::fsutil::write_atomic(&dir.join(name), &bytes)
    };
    write(format!("{}.weights", spec.layer), &tf_to_caffe(spec, &params.weights))?;
    write(format!("{}.biases", spec.layer), params.biases.as_slice().unwrap())
}

/// Sum of |x| per layer: a cheap fingerprint for logs and tests.
pub fn l1(params: &LayerParams) -> f64 {
    params.weights.iter().map(|v| v.abs() as f64).sum::<f64>() + params.biases.sum_axis(Axis(0)).into_scalar().abs() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::model::{ModelConfig, param_specs};

    #[test]
    fn conv_reorder_follows_the_index_formula() {
        let spec = ParamSpec { layer: "conv1", weights: vec![2, 3, 4, 5], biases: 5, flattened_from: None };
        let (o, i, kh, kw) = (5, 4, 2, 3);
        let values: Vec<f32> = (0..o * i * kh * kw).map(|v| v as f32).collect();
        let tf = caffe_to_tf(&spec, values.clone());
        assert_eq!(tf.shape(), &[2, 3, 4, 5]);
        for (oo, ii, y, x) in [(0, 0, 0, 0), (4, 3, 1, 2), (2, 1, 0, 2), (1, 3, 1, 0)] {
            let caffe_index = ((oo * i + ii) * kh + y) * kw + x;
            assert_eq!(tf[[y, x, ii, oo]], values[caffe_index]);
        }
        assert_eq!(tf_to_caffe(&spec, &tf), values);
    }

    #[test]
    fn fc6_reorder_moves_chw_inputs_to_hwc() {
        let (h, w, c, o) = (2, 3, 4, 5);
        let spec = ParamSpec { layer: "fc6", weights: vec![h * w * c, o], biases: o, flattened_from: Some([h, w, c]) };
        let values: Vec<f32> = (0..o * c * h * w).map(|v| v as f32).collect();
        let tf = caffe_to_tf(&spec, values.clone());
        for oo in 0..o {
            for cc in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        let caffe = values[oo * c * h * w + (cc * h + y) * w + x];
                        assert_eq!(tf[[(y * w + x) * c + cc, oo]], caffe);
                    }
                }
            }
        }
        assert_eq!(tf_to_caffe(&spec, &tf), values);
    }

    #[test]
    fn fc_reorder_is_a_transpose() {
        let spec = ParamSpec { layer: "fc7", weights: vec![3, 2], biases: 2, flattened_from: None };
        let tf = caffe_to_tf(&spec, vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(tf.into_dimensionality::<ndarray::Ix2>().unwrap(), ndarray::array![[1., 4.], [2., 5.], [3., 6.]]);
    }

    #[test]
    fn fc8_for_other_classes_is_reinitialised_unless_strict() {
        let dir = std::env::temp_dir().join(format!("alexnet-weights-fc8-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = ParamSpec { layer: "fc8", weights: vec![8, 2], biases: 2, flattened_from: None };
        let write = |name: &str, n: usize| {
            let mut bytes = vec![0u8; n * 4];
            LittleEndian::write_f32_into(&vec![0.5; n], &mut bytes);
            std::fs::write(dir.join(name), bytes).unwrap();
        };
        // A 5-class fc8 over the same 8 inputs.
        write("fc8.weights", 5 * 8);
        write("fc8.biases", 5);
        let lenient = LoadOptions { strict: false, seed: 0 };
        let (params, report) = load(Some(&dir), std::slice::from_ref(&spec), &lenient).unwrap();
        assert_eq!(params[0].weights.shape(), &[8, 2]);
        assert!(params[0].weights.iter().all(|&v| v != 0.5));
        assert_eq!(report.initialised(), ["fc8.weights", "fc8.biases"]);
        assert_eq!(report.warnings.len(), 1);
        assert!(report.to_string().contains("are for 5 classes but the data set has 2: fc8 is re-initialised"), "{report}");
        let strict = LoadOptions { strict: true, seed: 0 };
        let err = load(Some(&dir), std::slice::from_ref(&spec), &strict).unwrap_err().to_string();
        assert!(err.contains("for 5 classes") && err.contains("--strict-weights"), "{err}");

        // Any other mismatch stays an error: biases that disagree with the weights, another
        // layer, another input width.
        write("fc8.biases", 4);
        assert!(load(Some(&dir), std::slice::from_ref(&spec), &lenient).unwrap_err().to_string().contains("expected 16 float32 elements"));
        let fc7 = ParamSpec { layer: "fc7", weights: vec![8, 2], biases: 2, flattened_from: None };
        write("fc7.weights", 5 * 8);
        write("fc7.biases", 5);
        assert!(load(Some(&dir), &[fc7], &lenient).is_err());
        write("fc8.weights", 5 * 9);
        write("fc8.biases", 5);
        assert!(load(Some(&dir), &[spec], &lenient).is_err());
        // fc6 of another width says which --fc-width the files need.
        let fc6 = ParamSpec { layer: "fc6", weights: vec![6, 2], biases: 2, flattened_from: Some([1, 2, 3]) };
        write("fc6.weights", 6 * 4);
        let err = format!("{:#}", load(Some(&dir), &[fc6], &lenient).unwrap_err());
        assert!(err.contains("is for an fc width of 4, not 2: add --fc-width 4"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn initialisation_is_seeded_and_scaled() {
        let specs = param_specs(&ModelConfig::new(2));
        let opts = LoadOptions { strict: false, seed: 3 };
        let (a, report) = load(None, &specs, &opts).unwrap();
        let (b, _) = load(None, &specs, &opts).unwrap();
        assert_eq!(a, b);
        assert_eq!(report.initialised().len(), 16);
        let fc6 = &a[5];
        let std = (fc6.weights.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / fc6.weights.len() as f64).sqrt();
        assert!((std - 0.005).abs() < 1e-4, "fc6 std {std}");
        assert!(fc6.biases.iter().all(|&b| b == 0.1));
        let limit = (6.0f64 / (11.0 * 11.0 * 3.0 + 11.0 * 11.0 * 96.0)).sqrt() as f32;
        assert!(a[0].weights.iter().all(|v| v.abs() <= limit));
        assert!(a[0].weights.iter().any(|v| v.abs() > 0.9 * limit));
        let (c, _) = load(None, &specs, &LoadOptions { strict: false, seed: 4 }).unwrap();
        assert_ne!(a[0].weights, c[0].weights);
    }
}
