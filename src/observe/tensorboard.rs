//! TensorBoard event files written by TensorFlow's own summary ops, in the training graph (the
//! ops themselves are added by `crate::train::summaries`; this module holds the folder, the
//! schedule of image summaries and the generic graph helpers they use).
//!
//! `<run-dir>/tensorboard/` gets one event file per invocation of `train` (a resumed run adds
//! one; steps are epochs, so its curves continue). Per epoch: `loss`, `accuracy/train`,
//! `accuracy/val` (where measured) and `learning_rate`, fed through placeholders into
//! WriteScalarSummary. Once per invocation: the graph (its GraphDef through WriteGraphSummary,
//! for the Graphs tab). Every `image_summary_every` epochs, and at the first and last epoch of
//! each invocation: conv1's 96 filters as one RGB grid, conv1's 96 activation maps of the first
//! validation image as one grayscale mosaic, and that image itself, all tiled and scaled to
//! 0..255 in the graph (each filter and map on its own scale, so weak ones stay visible) for
//! WriteImageSummary.
//! The writer is flushed after every epoch, so a crash loses nothing already trained.
//!
//! A resumed run restarts at its last checkpoint, which may be older than the last epoch the
//! crashed invocation logged. TensorBoard drops such orphaned epochs in two ways, so both are
//! served: its Python loader purges every step at or after a SessionLog START that is not the
//! run's first (each invocation writes one), and its fast loader (the default) drops the steps
//! of a time series at or after a step that goes back, so the first epoch of an invocation
//! writes images as well as scalars.

use anyhow::Result;
use tensorflow::{DataType, Operation, Output, Scope, Shape, Tensor, ops};

/// The folder of a run that holds the event files.
pub const DIR: &str = "tensorboard";

/// Whether epoch `epoch` gets image summaries: every `every` epochs (0: never) and at the
/// `ends` (first and last) of an invocation.
pub fn images_due(every: usize, epoch: usize, ends: bool) -> bool {
    every > 0 && (epoch.is_multiple_of(every) || ends)
}

/// `tiles` [n, h, w, c] -> one uint8 image [1, H, W, c]: each tile scaled to 0..255 on its
/// own, laid out in rows of `cols` with 1-pixel white lines, enlarged `zoom` times.
pub fn tile_grid(s: &mut Scope, tiles: Output, [n, h, w, c]: [i64; 4], zoom: i64) -> Result<Output> {
    let cols = grid_columns(n as usize) as i64;
    let rows = n / cols;
    let x = normalise_tiles(s, tiles)?;
    let white = ops::constant(255.0f32, s)?;
    let pad_after = ops::constant(Tensor::<i32>::new(&[4, 2]).with_values(&[0, 0, 0, 1, 0, 1, 0, 0])?, s)?;
    let x = ops::pad_v2(x, pad_after, white.clone(), s)?;
    let (h, w) = (h + 1, w + 1);
    let x = reshape(s, x.into(), &[rows, cols, h, w, c])?;
    let x = transpose(s, x, &[0, 2, 1, 3, 4])?;
    let x = reshape(s, x, &[1, rows * h, cols * w, c])?;
    let pad_before = ops::constant(Tensor::<i32>::new(&[4, 2]).with_values(&[0, 0, 1, 0, 1, 0, 0, 0])?, s)?;
    let mut x: Output = ops::pad_v2(x, pad_before, white, s)?.into();
    if zoom > 1 {
        let size = ops::constant(&[((rows * h + 1) * zoom) as i32, ((cols * w + 1) * zoom) as i32][..], s)?;
        x = ops::resize_nearest_neighbor(x, size, s)?.into();
    }
    to_uint8(s, x)
}

/// Scales each tile of [n, ...] to 0..255 (a constant tile becomes 0).
pub fn normalise_tiles(s: &mut Scope, x: Output) -> Result<Output> {
    let axes = ops::constant(&[1i32, 2, 3][..], s)?;
    let lo = ops::Min::new().keep_dims(true).build(x.clone(), axes.clone(), s)?;
    let hi = ops::Max::new().keep_dims(true).build(x.clone(), axes, s)?;
    let range = ops::sub(hi, lo.clone(), s)?;
    let eps = ops::constant(1e-12f32, s)?;
    let range = ops::maximum(range, eps, s)?;
    let full = ops::constant(255.0f32, s)?;
    let scale = ops::div(full, range, s)?;
    let shifted = ops::sub(x, lo, s)?;
    Ok(ops::mul(shifted, scale, s)?.into())
}

pub fn to_uint8(s: &mut Scope, x: Output) -> Result<Output> {
    let x = ops::round(x, s)?;
    Ok(ops::Cast::new().DstT(DataType::UInt8).build(x, s)?.into())
}

/// The smallest divisor of `n` at least its square root: 96 tiles -> 8 rows of 12.
pub fn grid_columns(n: usize) -> usize {
    (1..=n.max(1)).find(|c| c * c >= n && n.is_multiple_of(*c)).unwrap_or(n.max(1))
}

pub fn transpose(s: &mut Scope, x: Output, perm: &[i32]) -> Result<Output> {
    let perm = ops::constant(perm, s)?;
    Ok(ops::transpose(x, perm, s)?.into())
}

pub fn reshape(s: &mut Scope, x: Output, dims: &[i64]) -> Result<Output> {
    let dims = ops::constant(dims, s)?;
    Ok(ops::reshape(x, dims, s)?.into())
}

pub fn placeholder(s: &mut Scope, name: &str, dtype: DataType) -> Result<Output> {
    Ok(ops::Placeholder::new().dtype(dtype).shape(Shape::from(Some(vec![]))).build(&mut s.with_op_name(name))?.into())
}

pub fn string(s: &mut Scope, text: &str) -> Result<Operation> {
    Ok(ops::constant(Tensor::<String>::from(text.to_string()), s)?)
}

pub fn group(s: &mut Scope, name: &str, ops_: impl IntoIterator<Item = Operation>) -> Result<Operation> {
    let mut g = ops::NoOp::new();
    for op in ops_ {
        g = g.add_control_input(op);
    }
    Ok(g.build(&mut s.with_op_name(name))?)
}

/// RFC 4648 base64 with the URL-safe alphabet, unpadded: what DecodeBase64 reads.
pub fn base64_web_safe(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let v = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(v >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_web_safe_matches_rfc4648_vectors() {
        for (raw, enc) in [("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"), ("fooba", "Zm9vYmE"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64_web_safe(raw.as_bytes()), enc);
        }
        assert_eq!(base64_web_safe(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn grid_and_schedule() {
        assert_eq!(grid_columns(96), 12);
        assert_eq!(grid_columns(1), 1);
        assert_eq!(grid_columns(7), 7);
        assert!(images_due(10, 0, false) && images_due(10, 20, false) && !images_due(10, 5, false));
        assert!(images_due(10, 5, true) && !images_due(0, 0, true));
    }
}
