//! Layer-by-layer comparison of two activation dumps (`<layer>.npy` folders): ours against a
//! reference, which may come from Caffe or PyTorch in NCHW.

use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use ndarray::{ArrayD, Axis, IxDyn};

/// How the reference's arrays are laid out. Ours are always NHWC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    Nhwc,
    /// Caffe's and PyTorch's order; transposed to NHWC before comparing.
    Nchw,
}

/// The default tolerance: max |diff| / max |ref|.
pub const DEFAULT_TOLERANCE: f64 = 1e-4;

/// The numbers for one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerDiff {
    pub layer: String,
    pub shape: Vec<usize>,
    pub max_ref: f64,
    pub max_diff: f64,
    /// max |diff| / max |ref| (0 when both are 0).
    pub relative: f64,
    pub cosine: f64,
}

impl LayerDiff {
    /// False for NaN too: a NaN anywhere fails the layer.
    pub fn within(&self, tolerance: f64) -> bool {
        self.relative <= tolerance
    }
}

/// Differences of `ours` from `reference`, both NHWC (or [1, width]) of the same shape.
pub fn diff(layer: &str, reference: &ArrayD<f32>, ours: &ArrayD<f32>) -> Result<LayerDiff> {
    if reference.shape() != ours.shape() {
        bail!("{layer}: shape {:?} in the reference, {:?} in ours", reference.shape(), ours.shape());
    }
    let (mut max_ref, mut max_diff, mut dot, mut nr, mut no) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for (&r, &o) in reference.iter().zip(ours.iter()) {
        let (r, o) = (r as f64, o as f64);
        // f64::max ignores NaN: a NaN anywhere must make the layer fail, so it is kept explicitly.
        max_ref = if r.is_nan() { f64::NAN } else { max_ref.max(r.abs()) };
        let d = (r - o).abs();
        max_diff = if d.is_nan() || max_diff.is_nan() { f64::NAN } else { max_diff.max(d) };
        dot += r * o;
        nr += r * r;
        no += o * o;
    }
    let relative = if max_diff == 0.0 { 0.0 } else { max_diff / max_ref };
    let cosine = if nr == 0.0 && no == 0.0 { 1.0 } else { dot / (nr.sqrt() * no.sqrt()) };
    Ok(LayerDiff { layer: layer.to_string(), shape: ours.shape().to_vec(), max_ref, max_diff, relative, cosine })
}

/// Reads a `.npy` of float32 or float64 as float32.
pub fn read_npy(path: &Path) -> Result<ArrayD<f32>> {
    match ndarray_npy::read_npy::<_, ArrayD<f32>>(path) {
        Ok(a) => Ok(a),
        Err(ndarray_npy::ReadNpyError::WrongDescriptor(_)) => {
            let a: ArrayD<f64> = ndarray_npy::read_npy(path).with_context(|| format!("cannot read {} (expected float32 or float64)", path.display()))?;
            Ok(a.mapv(|v| v as f32))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// A reference array in NHWC with a batch axis of 1: NCHW is transposed, and a missing batch
/// axis ([C, H, W] / [H, W, C] or [width]) is added.
pub fn to_nhwc(a: ArrayD<f32>, layout: Layout) -> Result<ArrayD<f32>> {
    let a = match a.ndim() {
        1 | 3 => a.insert_axis(Axis(0)),
        2 | 4 => a,
        n => bail!("an activation has 1 to 4 axes, this one {n}"),
    };
    Ok(match (a.ndim(), layout) {
        (4, Layout::Nchw) => a.permuted_axes(IxDyn(&[0, 2, 3, 1])).as_standard_layout().into_owned(),
        _ => a,
    })
}

/// The comparison of two folders.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub tolerance: f64,
    pub layers: Vec<LayerDiff>,
    /// Layers that could not be compared, with the reason.
    pub problems: Vec<(String, String)>,
}

impl Report {
    pub fn failing_layers(&self) -> Vec<&str> {
        let over = self.layers.iter().filter(|l| !l.within(self.tolerance)).map(|l| l.layer.as_str());
        over.chain(self.problems.iter().map(|(l, _)| l.as_str())).collect()
    }

    /// An error naming every layer over the tolerance or not comparable.
    pub fn ensure_within_tolerance(&self) -> Result<()> {
        let bad = self.failing_layers();
        if !bad.is_empty() {
            bail!("{} over the tolerance {:e} (or not comparable): {}", bad.len(), self.tolerance, bad.join(", "));
        }
        Ok(())
    }
}

/// Compares every `<layer>.npy` of `layers` that the reference folder has with ours.
pub fn compare_dirs(reference: &Path, ours: &Path, layers: &[&str], layout: Layout, tolerance: f64) -> Result<Report> {
    for dir in [reference, ours] {
        if !dir.is_dir() {
            bail!("{} is not a folder (expected <layer>.npy files, as `alexnet activations` writes)", dir.display());
        }
    }
    let mut report = Report { tolerance, layers: vec![], problems: vec![] };
    for &layer in layers {
        let ref_path = reference.join(format!("{layer}.npy"));
        if !ref_path.exists() {
            continue;
        }
        let our_path = ours.join(format!("{layer}.npy"));
        if !our_path.exists() {
            report.problems.push((layer.into(), format!("{} is missing", our_path.display())));
            continue;
        }
        let r = to_nhwc(read_npy(&ref_path)?, layout).with_context(|| ref_path.display().to_string())?;
        match diff(layer, &r, &read_npy(&our_path)?) {
            Ok(d) => report.layers.push(d),
            Err(e) => report.problems.push((layer.into(), format!("{e:#}"))),
        }
    }
    if report.layers.is_empty() && report.problems.is_empty() {
        bail!("{} has none of {}.npy", reference.display(), layers.join(".npy, "));
    }
    Ok(report)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(f, "{:<6} {:<16} {:>11} {:>11} {:>11} {:>12}  result", "layer", "shape", "max|ref|", "max|diff|", "relative", "cosine")?;
        for l in &self.layers {
            let shape = l.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
            let result = if l.within(self.tolerance) { "ok" } else { "OVER" };
            writeln!(f, "{:<6} {:<16} {:>11.4e} {:>11.4e} {:>11.4e} {:>12.9}  {result}", l.layer, shape, l.max_ref, l.max_diff, l.relative, l.cosine)?;
        }
        for (layer, why) in &self.problems {
            writeln!(f, "{layer:<6} not compared: {why}")?;
        }
        let bad = self.failing_layers();
        if bad.is_empty() {
            writeln!(f, "every layer within {:e} of its max |ref|", self.tolerance)
        } else {
            writeln!(f, "over the tolerance {:e}: {}", self.tolerance, bad.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    #[test]
    fn diff_numbers() {
        let r = Array::from_shape_vec(IxDyn(&[1, 4]), vec![1.0f32, -2.0, 0.0, 4.0]).unwrap();
        let mut o = r.clone();
        o[[0, 1]] = -2.5;
        let d = diff("fc8", &r, &o).unwrap();
        assert_eq!((d.max_ref, d.max_diff, d.relative), (4.0, 0.5, 0.125));
        assert!(d.cosine > 0.99 && d.cosine < 1.0);
        o[[0, 2]] = f32::NAN;
        assert!(diff("fc8", &r, &o).unwrap().relative.is_nan());
        assert!(diff("fc8", &r, &Array::zeros(IxDyn(&[1, 5]))).is_err());
    }

    #[test]
    fn nchw_is_transposed() {
        let nchw = Array::from_shape_fn(IxDyn(&[1, 3, 2, 4]), |i| (i[1] * 100 + i[2] * 10 + i[3]) as f32);
        let nhwc = to_nhwc(nchw, Layout::Nchw).unwrap();
        assert_eq!(nhwc.shape(), &[1, 2, 4, 3]);
        assert_eq!(nhwc[[0, 1, 3, 2]], 213.0);
        let fc = to_nhwc(Array::zeros(IxDyn(&[7])), Layout::Nchw).unwrap();
        assert_eq!(fc.shape(), &[1, 7]);
    }
}
