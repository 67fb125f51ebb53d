//! Inception's augmentation, `random-resized-crop`, as the pipeline's two training functions:
//! `read` (once per file: the encoded bytes, which the cache holds) and `crop` (every epoch: a
//! window of 8-100% of the image's area and aspect ratio 3/4 to 4/3 from
//! StatelessSampleDistortedBoundingBox, resized to the model's side, flipped left-right half the
//! time). The window is drawn from the JPEG's header (ExtractJpegShape) and only it is decoded
//! (DecodeAndCropJpeg): that is why the cache keeps the files' bytes, not decoded images. A set
//! with any PNG, GIF or BMP file takes the other path for all its files: decoded whole, the same
//! window drawn from the decoded shape and cut out by Slice. Random choices are stateless, keyed
//! by (run seed, epoch, example index) as crop-flip's are.

use anyhow::Result;
use tensorflow::{DataType, Output, Scope, Shape, Tensor, ops};

use crate::data::images::Preprocess;
use crate::data::pipeline::functions::{MapFn, example_seed, normalise};
use crate::data::pipeline::raw::{In, Signature, add_function, arg, raw_op};

/// The area of the window, as a fraction of the image's (torchvision's and the range).
pub const AREA_RANGE: [f32; 2] = [0.08, 1.0];
/// The window's width over its height.
pub const ASPECT_RANGE: [f32; 2] = [3.0 / 4.0, 4.0 / 3.0];
/// Windows tried before the whole image is taken (TensorFlow's default, as Inception's).
const MAX_ATTEMPTS: i64 = 100;

/// (path, label, index) -> (bytes, label, index).
pub fn read(graph: &mut tensorflow::Graph, name: &str) -> Result<MapFn> {
    let mut s = Scope::new_root_scope();
    let path = arg(&mut s, "path", DataType::String, Some(vec![]))?;
    let label = arg(&mut s, "label", DataType::Int32, Some(vec![]))?;
    let index = arg(&mut s, "index", DataType::Int32, Some(vec![]))?;
    let bytes = ops::read_file(path.clone(), &mut s)?.into();
    let label_out = ops::identity(label.clone(), &mut s)?.into();
    let index_out = ops::identity(index.clone(), &mut s)?.into();
    let name = add_function(graph, &s.graph(), name, &[path, label, index], &[bytes, label_out, index_out])?;
    Ok(MapFn { name, output: Signature::string_label_index() })
}

/// (bytes, label, index, run seed, epoch) -> (float [S, S, 3], label, index): the random window,
/// resized and flipped, then float, mean and channel order as every other path. `jpeg_only`: the
/// window alone is decoded (DecodeAndCropJpeg); otherwise the image is decoded whole and sliced.
pub fn crop(graph: &mut tensorflow::Graph, name: &str, p: &Preprocess, jpeg_only: bool) -> Result<MapFn> {
    let mut s = Scope::new_root_scope();
    let bytes = arg(&mut s, "bytes", DataType::String, Some(vec![]))?;
    let label = arg(&mut s, "label", DataType::Int32, Some(vec![]))?;
    let index = arg(&mut s, "index", DataType::Int32, Some(vec![]))?;
    let run_seed = arg(&mut s, "run_seed", DataType::Int64, Some(vec![]))?;
    let epoch = arg(&mut s, "epoch", DataType::Int64, Some(vec![]))?;
    let box_seed = example_seed(&mut s, &run_seed, &epoch, &index, false)?;
    let window = if jpeg_only {
        let shape = ops::ExtractJpegShape::new().output_type(DataType::Int32).build(bytes.clone(), &mut s)?;
        let (begin, size) = sample_window(&mut s, shape.into(), box_seed)?;
        let two = ops::constant(&[2i32][..], &mut s)?;
        let zero = ops::constant(&[0i32][..], &mut s)?;
        let yx = ops::slice(begin, zero.clone(), two.clone(), &mut s)?;
        let hw = ops::slice(size, zero, two, &mut s)?;
        let axis = ops::constant(0i32, &mut s)?;
        let crop_window = raw_op(&mut s, "ConcatV2", vec![In::List(vec![yx.into(), hw.into()]), In::One(axis.into())], |nd| {
            nd.set_attr_int("N", 2)?;
            nd.set_attr_type("T", DataType::Int32)?;
            nd.set_attr_type("Tidx", DataType::Int32)?;
            Ok(())
        })?;
        ops::DecodeAndCropJpeg::new().channels(3).build(bytes.clone(), crop_window.output(0), &mut s)?.into()
    } else {
        let pixels: Output = ops::DecodeImage::new().channels(3).expand_animations(false).dtype(DataType::UInt8).build(bytes.clone(), &mut s)?.into();
        let shape = ops::shape(pixels.clone(), &mut s)?;
        let (begin, size) = sample_window(&mut s, shape.into(), box_seed)?;
        ops::slice(pixels, begin, size, &mut s)?.into()
    };
    let resized = resize_flip(&mut s, window, p.size as i32, &run_seed, &epoch, &index)?;
    let (out, shape) = normalise(&mut s, resized, p)?;
    let label_out = ops::identity(label.clone(), &mut s)?.into();
    let index_out = ops::identity(index.clone(), &mut s)?.into();
    let name = add_function(graph, &s.graph(), name, &[bytes, label, index, run_seed, epoch], &[out, label_out, index_out])?;
    let scalar = Shape::from(Some(vec![]));
    Ok(MapFn { name, output: Signature { types: vec![DataType::Float, DataType::Int32, DataType::Int32], shapes: vec![shape, scalar.clone(), scalar] } })
}

/// The window's begin [y, x, 0] and size [h, w, -1] in an image of `shape` [H, W, C] (int32).
fn sample_window(s: &mut Scope, shape: Output, seed: Output) -> Result<(Output, Output)> {
    // The whole image as the one "object": the area range alone bounds the window.
    let whole = ops::constant(Tensor::<f32>::new(&[1, 1, 4]).with_values(&[0.0, 0.0, 1.0, 1.0])?, s)?;
    let covered = ops::constant(0.0f32, s)?;
    let sample = raw_op(s, "StatelessSampleDistortedBoundingBox", vec![In::One(shape), In::One(whole.into()), In::One(covered.into()), In::One(seed)], |nd| {
        nd.set_attr_type("T", DataType::Int32)?;
        nd.set_attr_type("Tseed", DataType::Int64)?;
        nd.set_attr_float_list("aspect_ratio_range", &ASPECT_RANGE)?;
        nd.set_attr_float_list("area_range", &AREA_RANGE)?;
        nd.set_attr_int("max_attempts", MAX_ATTEMPTS)?;
        nd.set_attr_bool("use_image_if_no_bounding_boxes", true)?;
        Ok(())
    })?;
    Ok((sample.output(0), sample.output(1)))
}

/// The window resized to `side` x `side` (as the project's other resizes: TensorFlow 1's
/// bilinear, rounded to uint8 values) and flipped left-right half the time.
fn resize_flip(s: &mut Scope, window: Output, side: i32, run_seed: &Output, epoch: &Output, index: &Output) -> Result<Output> {
    let batched = ops::expand_dims(window, ops::constant(0i32, s)?, s)?;
    let size = ops::constant(&[side, side][..], s)?;
    let resized = ops::ResizeBilinear::new().align_corners(false).half_pixel_centers(false).build(batched, size, s)?;
    let image = ops::round(ops::squeeze(resized, s)?, s)?;
    let image: Output = ops::Cast::new().DstT(DataType::UInt8).build(image, s)?.into();
    // Another seed than the window's: both ops would draw the same first numbers from one seed.
    let flip_seed = example_seed(s, run_seed, epoch, index, true)?;
    let u = ops::StatelessRandomUniform::new().dtype(DataType::Float).build(ops::constant(&[0i32; 0][..], s)?, flip_seed, s)?;
    let flipped = ops::reverse_v2(image.clone(), ops::constant(&[1i32][..], s)?, s)?;
    let flip = ops::less(u, ops::constant(0.5f32, s)?, s)?;
    Ok(ops::select_v2(flip, flipped, image, s)?.into())
}
