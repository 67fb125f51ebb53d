//! An independent forward pass of the network in plain Rust (ndarray, no TensorFlow): the oracle
//! the TensorFlow graph's activations are checked against.
//!
//! Each op is written from TensorFlow's documented semantics, not from its kernels: TF1 bilinear
//! resize, Conv2D with TF's SAME/VALID padding, LRN, 3x3/2 VALID max-pool, fully connected layers
//! with fc6's inputs flattened in H x W x C order. Activations are [H, W, C] (batch 1) inside and
//! returned as [1, H, W, C] or [1, width], like the graph's. What it shares with the graph is the
//! layer table (`model::layers`, itself checked against the Swift original by `compare-graph`)
//! and the parameters (`weights::load`, whose reordering has its own tests).

use anyhow::{Result, ensure};
use ndarray::{Array2, Array3, ArrayD, ArrayView2, ArrayView3, Axis, s};

use crate::data::images::Preprocess;
use crate::graph::model::{self, Layer, LrnParams, ModelConfig, Padding};
use crate::graph::params::LayerParams;

const POOL_WINDOW: usize = 3;
const POOL_STRIDE: usize = 2;

/// TensorFlow 1's ResizeBilinear (align_corners false, half_pixel_centers false) of [H, W, C]
/// pixels to `out_h` x `out_w`: source coordinate = dst * in / out, its floor and ceil as the
/// neighbours (clamped to the image), computed in float32 as TensorFlow does.
pub fn resize_bilinear_tf1(pixels: ArrayView3<f32>, out_h: usize, out_w: usize) -> Array3<f32> {
    let (in_h, in_w, c) = pixels.dim();
    // One axis: (low index, high index, fraction) per output coordinate.
    let axis = |in_size: usize, out_size: usize| -> Vec<(usize, usize, f32)> {
        let scale = in_size as f32 / out_size as f32;
        (0..out_size)
            .map(|o| {
                let src = o as f32 * scale;
                let low = src.floor();
                let lo = (low as usize).min(in_size - 1);
                let hi = (src.ceil() as usize).min(in_size - 1);
                (lo, hi, src - low)
            })
            .collect()
    };
    let ys = axis(in_h, out_h);
    let xs = axis(in_w, out_w);
    let mut out = Array3::<f32>::zeros((out_h, out_w, c));
    for (oy, &(y0, y1, fy)) in ys.iter().enumerate() {
        for (ox, &(x0, x1, fx)) in xs.iter().enumerate() {
            for ch in 0..c {
                let (tl, tr) = (pixels[[y0, x0, ch]], pixels[[y0, x1, ch]]);
                let (bl, br) = (pixels[[y1, x0, ch]], pixels[[y1, x1, ch]]);
                let top = tl + (tr - tl) * fx;
                let bottom = bl + (br - bl) * fx;
                out[[oy, ox, ch]] = top + (bottom - top) * fy;
            }
        }
    }
    out
}

/// Decoded RGB pixels -> network input [S, S, 3]: resize, minus the mean, RGB -> BGR if asked.
pub fn preprocess(pixels: ArrayView3<u8>, p: &Preprocess) -> Result<Array3<f32>> {
    ensure!(pixels.dim().2 == 3, "expected 3 colour channels, got {}", pixels.dim().2);
    ensure!(p.pixel_mean.len() == 1 || p.pixel_mean.len() == 3, "pixel mean must have 1 or 3 values");
    let mut x = resize_bilinear_tf1(pixels.mapv(|v| v as f32).view(), p.size, p.size);
    for (ch, mut plane) in x.axis_iter_mut(Axis(2)).enumerate() {
        let mean = if p.pixel_mean.len() == 3 { p.pixel_mean[ch] } else { p.pixel_mean[0] };
        plane.mapv_inplace(|v| v - mean);
    }
    if p.bgr {
        x.invert_axis(Axis(2));
        x = x.as_standard_layout().into_owned();
    }
    Ok(x)
}

/// Output side and padding before, along one axis, as TensorFlow computes them.
pub fn out_and_pad(input: usize, kernel: usize, stride: usize, padding: Padding) -> (usize, usize) {
    match padding {
        Padding::Valid => ((input - kernel) / stride + 1, 0),
        Padding::Same => {
            let out = input.div_ceil(stride);
            let total = ((out - 1) * stride + kernel).saturating_sub(input);
            (out, total / 2)
        }
    }
}

/// Conv2D (HWIO filter) + bias, without activation: im2col, then one matrix product.
pub fn conv2d(x: ArrayView3<f32>, filter: &ArrayD<f32>, bias: &[f32], stride: usize, padding: Padding) -> Result<Array3<f32>> {
    let (h, w, c) = x.dim();
    let &[kh, kw, fin, fout] = filter.shape() else { anyhow::bail!("conv filter must be 4-D, got {:?}", filter.shape()) };
    ensure!(fin == c, "filter takes {fin} channels, input has {c}");
    ensure!(bias.len() == fout, "{} biases for {fout} filters", bias.len());
    let (oh, pad_top) = out_and_pad(h, kh, stride, padding);
    let (ow, pad_left) = out_and_pad(w, kw, stride, padding);
    let x = x.as_standard_layout();
    let xs = x.as_slice().unwrap();
    // Row (oy, ox) of the patch matrix is the input window in (ky, kx, c) order, matching the
    // HWIO filter flattened to [kh * kw * c, out]; outside the image it is zero.
    let k = kh * kw * c;
    let mut patches = vec![0f32; oh * ow * k];
    for oy in 0..oh {
        for ox in 0..ow {
            let row = &mut patches[(oy * ow + ox) * k..][..k];
            for ky in 0..kh {
                let iy = (oy * stride + ky) as isize - pad_top as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                for kx in 0..kw {
                    let ix = (ox * stride + kx) as isize - pad_left as isize;
                    if ix < 0 || ix >= w as isize {
                        continue;
                    }
                    let src = (iy as usize * w + ix as usize) * c;
                    row[(ky * kw + kx) * c..][..c].copy_from_slice(&xs[src..src + c]);
                }
            }
        }
    }
    let patches = ArrayView2::from_shape((oh * ow, k), &patches)?;
    let filter = filter.as_standard_layout();
    let weights = filter.view().into_shape_with_order((k, fout))?;
    let mut y = patches.dot(&weights);
    y += &ArrayView2::from_shape((1, fout), bias)?;
    Ok(y.into_shape_with_order((oh, ow, fout))?)
}

/// TensorFlow's LRN: out = in / (bias + alpha * sum of squares over channels [c - r, c + r]) ^ beta.
pub fn lrn(x: ArrayView3<f32>, p: LrnParams) -> Array3<f32> {
    let (h, w, c) = x.dim();
    let r = p.depth_radius as usize;
    let mut out = Array3::<f32>::zeros((h, w, c));
    let mut squares = vec![0f64; c + 1];
    for y in 0..h {
        for xx in 0..w {
            let v = x.slice(s![y, xx, ..]);
            // Prefix sums of squares, in double so the window sums are exact enough.
            for (i, &a) in v.iter().enumerate() {
                squares[i + 1] = squares[i] + (a as f64) * (a as f64);
            }
            for ch in 0..c {
                let lo = ch.saturating_sub(r);
                let hi = (ch + r).min(c - 1);
                let sum = squares[hi + 1] - squares[lo];
                let denom = (p.bias as f64 + p.alpha as f64 * sum).powf(p.beta as f64);
                out[[y, xx, ch]] = (v[ch] as f64 / denom) as f32;
            }
        }
    }
    out
}

/// Max-pool 3 x 3, stride 2, VALID.
pub fn max_pool(x: ArrayView3<f32>) -> Array3<f32> {
    let (h, w, c) = x.dim();
    let (oh, _) = out_and_pad(h, POOL_WINDOW, POOL_STRIDE, Padding::Valid);
    let (ow, _) = out_and_pad(w, POOL_WINDOW, POOL_STRIDE, Padding::Valid);
    let mut out = Array3::<f32>::from_elem((oh, ow, c), f32::NEG_INFINITY);
    for oy in 0..oh {
        for ox in 0..ow {
            let mut m = out.slice_mut(s![oy, ox, ..]);
            for ky in 0..POOL_WINDOW {
                for kx in 0..POOL_WINDOW {
                    let v = x.slice(s![oy * POOL_STRIDE + ky, ox * POOL_STRIDE + kx, ..]);
                    m.zip_mut_with(&v, |a, &b| *a = a.max(b));
                }
            }
        }
    }
    out
}

/// x [1, in] times weights [in, out] plus bias.
pub fn fully_connected(x: ArrayView2<f32>, weights: &ArrayD<f32>, bias: &[f32]) -> Result<Array2<f32>> {
    let w = weights.view().into_dimensionality::<ndarray::Ix2>()?;
    ensure!(w.dim().0 == x.dim().1, "fc weights take {} inputs, got {}", w.dim().0, x.dim().1);
    let mut y = x.dot(&w);
    y += &ArrayView2::from_shape((1, bias.len()), bias)?;
    Ok(y)
}

fn relu<D: ndarray::Dimension>(mut a: ndarray::Array<f32, D>) -> ndarray::Array<f32, D> {
    a.mapv_inplace(|v| v.max(0.0));
    a
}

fn batched(a: Array3<f32>) -> ArrayD<f32> {
    a.insert_axis(Axis(0)).into_dyn()
}

/// Every layer's activation for one preprocessed image [S, S, 3], in table order, starting with
/// `input`. Dropout is off (inference).
pub fn forward(cfg: &ModelConfig, params: &[LayerParams], input: Array3<f32>) -> Result<Vec<(&'static str, ArrayD<f32>)>> {
    let param = |name: &str| params.iter().find(|p| p.layer == name).ok_or_else(|| anyhow::anyhow!("no parameters for layer {name}"));
    let mut out = vec![("input", batched(input.clone()))];
    let mut spatial = Some(input);
    let mut flat: Option<Array2<f32>> = None;
    for layer in model::layers(cfg) {
        let name = layer.name();
        let act = match layer {
            Layer::Conv { stride, padding, .. } => {
                let p = param(name)?;
                let x = spatial.as_ref().unwrap().view();
                let y = relu(conv2d(x, &p.weights, p.biases.as_slice().unwrap(), stride, padding)?);
                spatial = Some(y.clone());
                batched(y)
            }
            Layer::Lrn { .. } => {
                let y = lrn(spatial.as_ref().unwrap().view(), cfg.lrn.params());
                spatial = Some(y.clone());
                batched(y)
            }
            Layer::MaxPool { .. } => {
                let y = max_pool(spatial.as_ref().unwrap().view());
                spatial = Some(y.clone());
                batched(y)
            }
            Layer::Fc { relu_dropout, .. } => {
                let p = param(name)?;
                // Row-major [H, W, C] flattens in H x W x C order, as the graph's reshape of NHWC.
                let x = match (flat.take(), spatial.take()) {
                    (Some(f), _) => f,
                    (None, Some(s)) => {
                        let n = s.len();
                        s.as_standard_layout().into_owned().into_shape_with_order((1, n))?
                    }
                    (None, None) => unreachable!(),
                };
                let mut y = fully_connected(x.view(), &p.weights, p.biases.as_slice().unwrap())?;
                if relu_dropout {
                    y = relu(y);
                }
                flat = Some(y.clone());
                y.into_dyn()
            }
        };
        out.push((name, act));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array;

    fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
        let mut r = crate::util::rng::Rng::new(seed, 0);
        (0..n).map(|_| (r.uniform() * 2.0 - 1.0) as f32).collect()
    }

    #[test]
    fn padding_follows_tensorflow() {
        assert_eq!(out_and_pad(227, 11, 4, Padding::Valid), (55, 0));
        assert_eq!(out_and_pad(27, 5, 1, Padding::Same), (27, 2));
        assert_eq!(out_and_pad(13, 3, 1, Padding::Same), (13, 1));
        // Odd total padding: the extra row goes after, as in TensorFlow.
        assert_eq!(out_and_pad(5, 2, 2, Padding::Same), (3, 0));
        assert_eq!(out_and_pad(6, 4, 2, Padding::Same), (3, 1));
    }

    #[test]
    fn conv_matches_the_direct_sum() {
        let (h, w, c, kh, kw, o) = (7, 6, 3, 4, 3, 5);
        for (stride, padding) in [(1, Padding::Same), (2, Padding::Same), (2, Padding::Valid), (3, Padding::Same)] {
            let x = Array::from_shape_vec((h, w, c), pseudo_random(h * w * c, 1)).unwrap();
            let f = Array::from_shape_vec((kh, kw, c, o), pseudo_random(kh * kw * c * o, 2)).unwrap().into_dyn();
            let b = pseudo_random(o, 3);
            let y = conv2d(x.view(), &f, &b, stride, padding).unwrap();
            let (oh, pt) = out_and_pad(h, kh, stride, padding);
            let (ow, pl) = out_and_pad(w, kw, stride, padding);
            assert_eq!(y.dim(), (oh, ow, o));
            for oy in 0..oh {
                for ox in 0..ow {
                    for oc in 0..o {
                        let mut sum = b[oc] as f64;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let (iy, ix) = ((oy * stride + ky) as isize - pt as isize, (ox * stride + kx) as isize - pl as isize);
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                for ic in 0..c {
                                    sum += x[[iy as usize, ix as usize, ic]] as f64 * f[[ky, kx, ic, oc]] as f64;
                                }
                            }
                        }
                        assert!((y[[oy, ox, oc]] as f64 - sum).abs() < 1e-5, "stride {stride} {padding:?} at {oy},{ox},{oc}");
                    }
                }
            }
        }
    }

    #[test]
    fn lrn_sums_a_clamped_window() {
        let x = Array::from_shape_vec((1, 1, 4), vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let p = LrnParams { depth_radius: 1, bias: 2.0, alpha: 0.5, beta: 0.75 };
        let y = lrn(x.view(), p);
        let expect = |v: f64, sum: f64| v / (2.0 + 0.5 * sum).powf(0.75);
        let want = [expect(1.0, 1.0 + 4.0), expect(2.0, 1.0 + 4.0 + 9.0), expect(3.0, 4.0 + 9.0 + 16.0), expect(4.0, 9.0 + 16.0)];
        for (a, b) in y.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6);
        }
    }

    #[test]
    fn max_pool_takes_3x3_windows_every_2() {
        let x = Array::from_shape_fn((5, 5, 1), |(y, x, _)| (y * 5 + x) as f32);
        let y = max_pool(x.view());
        assert_eq!(y.into_raw_vec_and_offset().0, vec![12.0, 14.0, 22.0, 24.0]);
    }

    #[test]
    fn resize_is_tf1_bilinear() {
        // 2 -> 4 along x: sources 0, 0.5, 1, 1.5 (clamped to 1).
        let x = Array::from_shape_vec((1, 2, 1), vec![10.0f32, 20.0]).unwrap();
        let y = resize_bilinear_tf1(x.view(), 1, 4);
        assert_eq!(y.into_raw_vec_and_offset().0, vec![10.0, 15.0, 20.0, 20.0]);
        // 4 -> 2: sources 0 and 2, no averaging.
        let x = Array::from_shape_vec((1, 4, 1), vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(resize_bilinear_tf1(x.view(), 1, 2).into_raw_vec_and_offset().0, vec![1.0, 3.0]);
    }

    #[test]
    fn preprocess_subtracts_then_reverses() {
        let px = Array::from_shape_vec((1, 1, 3), vec![10u8, 20, 30]).unwrap();
        let p = Preprocess { size: 2, pixel_mean: vec![1.0, 2.0, 3.0], bgr: true };
        let x = preprocess(px.view(), &p).unwrap();
        assert_eq!(x.slice(s![0, 0, ..]).to_vec(), vec![27.0, 18.0, 9.0]);
    }
}
