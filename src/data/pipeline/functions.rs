//! The two functions the pipeline maps over its elements, each built in a graph of its own and
//! turned into a TensorFlow function: `decode` (once per file: read, decode, resize to the cached
//! uint8 size) and `finish` (every epoch: the crop and flip of the augmentation, float, mean,
//! BGR). Random choices come from stateless ops keyed by (run seed, epoch, example index): the
//! same run draws the same crops, and a resumed run those of the uninterrupted one.
//! (random-resized-crop's training split has its own pair, in `resized_crop`.)

use anyhow::Result;
use tensorflow::{DataType, Output, Scope, Shape, ops};

use crate::data::images::Preprocess;
use crate::data::pipeline::Augment;
use crate::data::pipeline::raw::{self, Signature, add_function, arg};

/// The short side an augmented image is cached at (the AlexNet paper's 256).
pub const SHORT_SIDE: i32 = 256;

/// A function's name (for the map op's `f` attribute) and its output signature.
pub struct MapFn {
    pub name: String,
    pub output: Signature,
}

/// The element the decoded cache holds: uint8 pixels, label, index.
pub fn decode_signature(augment: Augment, side: i64) -> Signature {
    let pixels = match augment {
        Augment::None => Shape::from(Some(vec![Some(side), Some(side), Some(3)])),
        Augment::CropFlip | Augment::RandomResizedCrop => Shape::from(Some(vec![None, None, Some(3)])),
    };
    Signature { types: vec![DataType::UInt8, DataType::Int32, DataType::Int32], shapes: vec![pixels, scalar(), scalar()] }
}

fn scalar() -> Shape {
    Shape::from(Some(vec![]))
}

/// (path, label, index) -> (uint8 pixels, label, index): 227 x 227 without augmentation, short
/// side 256 with it. `from_bytes`: the first argument is the encoded image itself (a record's),
/// not a file's path.
pub fn decode(graph: &mut tensorflow::Graph, name: &str, p: &Preprocess, augment: Augment, from_bytes: bool) -> Result<MapFn> {
    let mut s = Scope::new_root_scope();
    let path = arg(&mut s, if from_bytes { "image" } else { "path" }, DataType::String, Some(vec![]))?;
    let label = arg(&mut s, "label", DataType::Int32, Some(vec![]))?;
    let index = arg(&mut s, "index", DataType::Int32, Some(vec![]))?;
    let bytes: Output = if from_bytes { path.clone() } else { ops::read_file(path.clone(), &mut s)?.into() };
    let pixels: Output = ops::DecodeImage::new().channels(3).expand_animations(false).dtype(DataType::UInt8).build(bytes, &mut s)?.into();
    let size: Output = match augment {
        Augment::None => ops::constant(&[p.size as i32, p.size as i32][..], &mut s)?.into(),
        Augment::CropFlip | Augment::RandomResizedCrop => short_side_size(&mut s, pixels.clone(), p.size as i32)?,
    };
    let zero = ops::constant(0i32, &mut s)?;
    let batched = ops::expand_dims(pixels, zero.clone(), &mut s)?;
    // TensorFlow 1 semantics, as the rest of the project's preprocessing.
    let resized = ops::ResizeBilinear::new().align_corners(false).half_pixel_centers(false).build(batched, size, &mut s)?;
    let rounded = ops::round(ops::squeeze(resized, &mut s)?, &mut s)?;
    let cached: Output = ops::Cast::new().DstT(DataType::UInt8).build(rounded, &mut s)?.into();
    let sig = decode_signature(augment, p.size as i64);
    let cached = ensure_shape(&mut s, cached, &sig.shapes[0])?;
    let label_out = ops::identity(label.clone(), &mut s)?.into();
    let index_out = ops::identity(index.clone(), &mut s)?.into();
    let name = add_function(graph, &s.graph(), name, &[path, label, index], &[cached, label_out, index_out])?;
    Ok(MapFn { name, output: sig })
}

/// [h', w'] with the shorter side `SHORT_SIDE` (and neither below `min`), aspect kept.
fn short_side_size(s: &mut Scope, pixels: Output, min: i32) -> Result<Output> {
    let shape = ops::shape(pixels, s)?;
    let hw = ops::slice(shape, ops::constant(&[0i32][..], s)?, ops::constant(&[2i32][..], s)?, s)?;
    let hw_f = ops::Cast::new().DstT(DataType::Float).build(hw, s)?;
    let axis = ops::constant(0i32, s)?;
    let short = ops::min(hw_f.clone(), axis, s)?;
    let scale = ops::div(ops::constant(SHORT_SIDE as f32, s)?, short, s)?;
    let scaled = ops::round(ops::mul(hw_f, scale, s)?, s)?;
    let size = ops::Cast::new().DstT(DataType::Int32).build(scaled, s)?;
    Ok(ops::maximum(size, ops::constant(min, s)?, s)?.into())
}

/// EnsureShape: the static shape the map op's `output_shapes` promises.
fn ensure_shape(s: &mut Scope, x: Output, shape: &Shape) -> Result<Output> {
    Ok(ops::EnsureShape::new().shape(shape.clone()).build(x, s)?.into())
}

/// (uint8 pixels, label, index, run seed, epoch) -> (float [S, S, 3], label, index): the
/// augmentation's crop and flip (`train`), or the centre crop (evaluation), then float, mean and
/// channel order as [`crate::data::images::preprocess_pixels`].
pub fn finish(graph: &mut tensorflow::Graph, name: &str, p: &Preprocess, augment: Augment, train: bool) -> Result<MapFn> {
    let mut s = Scope::new_root_scope();
    let side = p.size as i64;
    let cached = decode_signature(augment, side);
    let pixels = arg(&mut s, "pixels", DataType::UInt8, cached.shapes[0].dims().map(|n| (0..n).map(|i| cached.shapes[0][i]).collect()))?;
    let label = arg(&mut s, "label", DataType::Int32, Some(vec![]))?;
    let index = arg(&mut s, "index", DataType::Int32, Some(vec![]))?;
    let run_seed = arg(&mut s, "run_seed", DataType::Int64, Some(vec![]))?;
    let epoch = arg(&mut s, "epoch", DataType::Int64, Some(vec![]))?;
    let cropped = match (augment, train) {
        (Augment::None, _) => pixels.clone(),
        (Augment::CropFlip, true) => random_crop_flip(&mut s, pixels.clone(), p.size as i32, &run_seed, &epoch, &index)?,
        // random-resized-crop trains from the files' bytes (`resized_crop`); its evaluation is
        // crop-flip's, as torchvision's (resize to 256, centre crop).
        (Augment::CropFlip | Augment::RandomResizedCrop, false) => centre_crop(&mut s, pixels.clone(), p.size as i32)?,
        (Augment::RandomResizedCrop, true) => anyhow::bail!("random-resized-crop's training function is resized_crop::crop"),
    };
    let (out, shape) = normalise(&mut s, cropped, p)?;
    let label_out = ops::identity(label.clone(), &mut s)?.into();
    let index_out = ops::identity(index.clone(), &mut s)?.into();
    let name = add_function(graph, &s.graph(), name, &[pixels, label, index, run_seed, epoch], &[out, label_out, index_out])?;
    let output = Signature { types: vec![DataType::Float, DataType::Int32, DataType::Int32], shapes: vec![shape, scalar(), scalar()] };
    Ok(MapFn { name, output })
}

/// uint8 [S, S, 3] -> the model's input: float, mean subtracted, channel order as
/// [`crate::data::images::preprocess_pixels`]; with its static shape. The same numbers as that
/// (channels reversed before the cast, against the mean reversed alike; no subtraction of a zero
/// mean), in fewer passes over the image: every float pass costs the cached pipeline's rate.
pub fn normalise(s: &mut Scope, pixels: Output, p: &Preprocess) -> Result<(Output, Shape)> {
    let side = p.size as i64;
    let mut mean = p.pixel_mean.clone();
    let mut pixels = pixels;
    if p.bgr {
        let channel_axis = ops::constant(&[-1i32][..], s)?;
        pixels = ops::reverse_v2(pixels, channel_axis, s)?.into();
        mean.reverse();
    }
    let mut out: Output = ops::Cast::new().DstT(DataType::Float).build(pixels, s)?.into();
    if mean.iter().any(|&m| m != 0.0) {
        let mean = ops::constant(&mean[..], s)?;
        out = ops::sub(out, mean, s)?.into();
    }
    let shape = Shape::from(Some(vec![Some(side), Some(side), Some(3)]));
    Ok((ensure_shape(s, out, &shape)?, shape))
}

/// The stateless seed of one example's draws in one epoch: [run seed, epoch * 2^24 + index]
/// (`other`: [run seed, -1 - that], a second stream that never meets the first).
pub fn example_seed(s: &mut Scope, run_seed: &Output, epoch: &Output, index: &Output, other: bool) -> Result<Output> {
    let index64 = ops::Cast::new().DstT(DataType::Int64).build(index.clone(), s)?;
    let mut stream: Output = ops::add(ops::mul(epoch.clone(), ops::constant(1i64 << 24, s)?, s)?, index64, s)?.into();
    if other {
        stream = ops::sub(ops::constant(-1i64, s)?, stream, s)?.into();
    }
    let seed = raw::raw_op(s, "Pack", vec![raw::In::List(vec![run_seed.clone(), stream])], |nd| {
        nd.set_attr_int("N", 2)?;
        nd.set_attr_type("T", DataType::Int64)?;
        Ok(())
    })?;
    Ok(seed.output(0))
}

/// Height and width of an [H, W, 3] image as int32 scalars.
fn height_width(s: &mut Scope, pixels: Output) -> Result<(Output, Output)> {
    let shape = ops::shape(pixels, s)?;
    let axis = ops::constant(0i32, s)?;
    let h = ops::gather_v2(shape.clone(), ops::constant(0i32, s)?, axis.clone(), s)?;
    let w = ops::gather_v2(shape, ops::constant(1i32, s)?, axis, s)?;
    Ok((h.into(), w.into()))
}

/// The `side` x `side` window at (y, x).
fn crop_at(s: &mut Scope, pixels: Output, y: Output, x: Output, side: i32) -> Result<Output> {
    let zero = ops::constant(0i32, s)?;
    let begin = raw::raw_op(s, "Pack", vec![raw::In::List(vec![y, x, zero.into()])], |nd| {
        nd.set_attr_int("N", 3)?;
        nd.set_attr_type("T", DataType::Int32)?;
        Ok(())
    })?;
    let size = ops::constant(&[side, side, 3][..], s)?;
    Ok(ops::slice(pixels, begin.output(0), size, s)?.into())
}

/// The centre `side` x `side` window.
fn centre_crop(s: &mut Scope, pixels: Output, side: i32) -> Result<Output> {
    let (h, w) = height_width(s, pixels.clone())?;
    let two = ops::constant(2i32, s)?;
    let side_t = ops::constant(side, s)?;
    let y = ops::floor_div(ops::sub(h, side_t.clone(), s)?, two.clone(), s)?;
    let x = ops::floor_div(ops::sub(w, side_t, s)?, two, s)?;
    crop_at(s, pixels, y.into(), x.into(), side)
}

/// A random `side` x `side` window, flipped left-right half the time: three uniform draws from
/// the stateless seed [run seed, epoch * 2^24 + index].
fn random_crop_flip(s: &mut Scope, pixels: Output, side: i32, run_seed: &Output, epoch: &Output, index: &Output) -> Result<Output> {
    let seed = example_seed(s, run_seed, epoch, index, false)?;
    let u = ops::StatelessRandomUniform::new().dtype(DataType::Float).build(ops::constant(&[3i32][..], s)?, seed, s)?;
    let pick = |s: &mut Scope, i: i32| -> Result<Output> {
        let axis = ops::constant(0i32, s)?;
        Ok(ops::gather_v2(u.clone(), ops::constant(i, s)?, axis, s)?.into())
    };
    let (h, w) = height_width(s, pixels.clone())?;
    let offset = |s: &mut Scope, extent: Output, draw: Output| -> Result<Output> {
        // floor(u * (extent - side + 1)): every window position equally likely.
        let room = ops::Cast::new().DstT(DataType::Float).build(ops::sub(extent, ops::constant(side - 1, s)?, s)?, s)?;
        let at = ops::floor(ops::mul(draw, room, s)?, s)?;
        Ok(ops::Cast::new().DstT(DataType::Int32).build(at, s)?.into())
    };
    let (uy, ux, uf) = (pick(s, 0)?, pick(s, 1)?, pick(s, 2)?);
    let y = offset(s, h, uy)?;
    let x = offset(s, w, ux)?;
    let crop = crop_at(s, pixels, y, x, side)?;
    // Flipped by reversing along the axes [1][..flip]: one pass (a flip computed and then
    // selected would take three).
    let flip = ops::Cast::new().DstT(DataType::Int32).build(ops::less(uf, ops::constant(0.5f32, s)?, s)?, s)?;
    let flip = ops::reshape(flip, ops::constant(&[1i32][..], s)?, s)?;
    let axes = ops::slice(ops::constant(&[1i32][..], s)?, ops::constant(&[0i32][..], s)?, flip, s)?;
    Ok(ops::reverse_v2(crop, axes, s)?.into())
}
