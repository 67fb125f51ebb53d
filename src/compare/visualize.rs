//! Activation pictures, drawn as the Swift original drew them (../shared/swift-original.md):
//! one tile per channel, round(sqrt(C)) tiles across and ceil(C / across) down, each tile
//! followed by a 1-pixel black gap to the right and below; values normalised by the layer's
//! minimum and maximum and coloured with a 5-band heatmap. Fully connected layers, which the
//! Swift original did not draw, are one strip: one column per unit.

use std::path::Path;

use anyhow::{Result, bail};
use image::{ImageFormat, Rgb, RgbImage};
use ndarray::ArrayViewD;

/// Height in pixels of an fc layer's strip.
pub const STRIP_HEIGHT: usize = 16;

/// The heatmap's colours at 0, 20, 40, 60, 80 and 100% of the range: dark blue, blue, cyan,
/// green, yellow, red; linear in between.
const STOPS: [[f32; 3]; 6] = [[0.0, 0.0, 128.0], [0.0, 0.0, 255.0], [0.0, 255.0, 255.0], [0.0, 255.0, 0.0], [255.0, 255.0, 0.0], [255.0, 0.0, 0.0]];
const RED: Rgb<u8> = Rgb([255, 0, 0]);
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);

/// The colour of `t` in [0, 1] (clamped); a non-finite value is red.
pub fn heatmap(t: f32) -> Rgb<u8> {
    if !t.is_finite() {
        return RED;
    }
    let t = t.clamp(0.0, 1.0) * 5.0;
    let band = (t.floor() as usize).min(4);
    let f = t - band as f32;
    let (a, b) = (STOPS[band], STOPS[band + 1]);
    Rgb(std::array::from_fn(|i| (a[i] + (b[i] - a[i]) * f).round() as u8))
}

/// Tiles across and down for `channels` tiles.
pub fn grid(channels: usize) -> (usize, usize) {
    let across = ((channels as f64).sqrt().round() as usize).max(1);
    (across, channels.div_ceil(across))
}

/// The layer's minimum and maximum over its finite values (None if it has none).
pub fn finite_range(values: impl Iterator<Item = f32>) -> Option<(f32, f32)> {
    values.filter(|v| v.is_finite()).fold(None, |r, v| match r {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// The picture of one activation: [1, H, W, C] (NHWC, batch 1) or [1, width].
pub fn picture(activation: ArrayViewD<f32>) -> Result<RgbImage> {
    let (h, w, c) = match activation.shape() {
        [1, h, w, c] => (*h, *w, *c),
        [1, width] => (STRIP_HEIGHT, *width, 1),
        other => bail!("cannot draw an activation of shape {other:?} (expected [1, H, W, C] or [1, width])"),
    };
    let strip = activation.ndim() == 2;
    let (across, down) = grid(c);
    let mut img = RgbImage::new((across * (w + 1)) as u32, (down * (h + 1)) as u32);
    let range = finite_range(activation.iter().copied());
    let colour = |v: f32| match range {
        _ if !v.is_finite() => RED,
        Some((lo, hi)) if hi > lo => heatmap((v - lo) / (hi - lo)),
        _ => WHITE,
    };
    for ch in 0..c {
        let (tx, ty) = ((ch % across) * (w + 1), (ch / across) * (h + 1));
        for y in 0..h {
            for x in 0..w {
                let v = if strip { activation[[0, x]] } else { activation[[0, y, x, ch]] };
                img.put_pixel((tx + x) as u32, (ty + y) as u32, colour(v));
            }
        }
    }
    Ok(img)
}

/// Writes `img` as a PNG, atomically.
pub fn write_png(path: &Path, img: &RgbImage) -> Result<()> {
    let mut bytes = std::io::Cursor::new(vec![]);
    img.write_to(&mut bytes, ImageFormat::Png)?;
    crate::util::fsutil::write_atomic(path, &bytes.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, IxDyn};

    #[test]
    fn heatmap_bands() {
        assert_eq!(heatmap(0.0), Rgb([0, 0, 128]));
        assert_eq!(heatmap(0.2), Rgb([0, 0, 255]));
        assert_eq!(heatmap(0.4), Rgb([0, 255, 255]));
        assert_eq!(heatmap(0.5), Rgb([0, 255, 128]));
        assert_eq!(heatmap(0.6), Rgb([0, 255, 0]));
        assert_eq!(heatmap(0.8), Rgb([255, 255, 0]));
        assert_eq!(heatmap(1.0), Rgb([255, 0, 0]));
        assert_eq!(heatmap(f32::NAN), RED);
    }

    #[test]
    fn grids_follow_the_swift_layout() {
        assert_eq!(grid(3), (2, 2));
        assert_eq!(grid(96), (10, 10));
        assert_eq!(grid(256), (16, 16));
        assert_eq!(grid(384), (20, 20));
    }

    #[test]
    fn tiles_have_black_gaps_and_layer_normalisation() {
        // 3 channels of 2 x 2: channel c holds c everywhere; one NaN.
        let mut a = Array::from_shape_fn(IxDyn(&[1, 2, 2, 3]), |i| i[3] as f32);
        a[[0, 1, 1, 0]] = f32::NAN;
        let img = picture(a.view()).unwrap();
        assert_eq!(img.dimensions(), (6, 6));
        assert_eq!(*img.get_pixel(0, 0), heatmap(0.0));
        assert_eq!(*img.get_pixel(1, 1), RED);
        assert_eq!(*img.get_pixel(3, 0), heatmap(0.5));
        assert_eq!(*img.get_pixel(0, 3), heatmap(1.0));
        for (x, y) in [(2, 0), (2, 2), (0, 2), (5, 1), (4, 4), (3, 4)] {
            assert_eq!(*img.get_pixel(x, y), Rgb([0, 0, 0]), "gap or empty tile at {x},{y}");
        }
        let flat = Array::from_elem(IxDyn(&[1, 1, 1, 4]), 7.0f32);
        assert_eq!(*picture(flat.view()).unwrap().get_pixel(0, 0), WHITE);
    }

    #[test]
    fn fc_layers_are_one_strip() {
        let a = Array::from_shape_fn(IxDyn(&[1, 5]), |i| i[1] as f32);
        let img = picture(a.view()).unwrap();
        assert_eq!(img.dimensions(), (6, STRIP_HEIGHT as u32 + 1));
        assert_eq!(*img.get_pixel(4, STRIP_HEIGHT as u32 - 1), heatmap(1.0));
    }
}
