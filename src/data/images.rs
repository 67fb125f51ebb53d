//! Image folders and the input pipeline.
//!
//! A data set is `train/<class>/*` and `val/<class>/*`; classes are the sorted subfolders of
//! `train/` (a folder of `<class>/` folders split by `--val-split` is [`crate::data::split`]'s). Images are decoded by TensorFlow's own ops (ReadFile -> DecodeJpeg/DecodeImage ->
//! ResizeBilinear -> minus mean -> ReverseV2), once, up front, into one float tensor.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use super::encoded::{check_whole, image_format};
use crate::util::parallel::map_each;
use tensorflow::{DataType, Output, Scope, Session, SessionOptions, SessionRunArgs, Shape, Tensor, ops};

/// File name extensions taken as images.
pub const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "gif", "bmp"];

#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub path: PathBuf,
    pub label: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub classes: Vec<String>,
    pub train: Vec<Example>,
    pub val: Vec<Example>,
    /// Files in class folders that are not taken: hidden, or without an image extension.
    pub ignored: Vec<PathBuf>,
    /// A folder of TFRecord shards: its shards (the examples are its records).
    pub records: Option<std::sync::Arc<crate::data::records::RecordSet>>,
}

/// Reads the folder structure (no decoding).
pub fn scan(images: &Path) -> Result<Dataset> {
    ensure!(
        images.is_dir(),
        "image folder {} does not exist (fill it with scripts/fetch-data, or point --images at a folder with train/ and val/)",
        images.display()
    );
    let train_dir = images.join("train");
    let classes = class_folders(&train_dir)?;
    ensure!(!classes.is_empty(), "{} has no class subfolders (expected train/<class>/<image>)", train_dir.display());
    ensure!(classes.len() >= 2, "{} has a single class ({}): a classifier needs at least two", train_dir.display(), classes[0]);
    let val_dir = images.join("val");
    let val_classes = class_folders(&val_dir)?;
    if val_classes != classes {
        bail!("{} has classes [{}] but {} has [{}]: they must be the same", val_dir.display(), val_classes.join(", "), train_dir.display(), classes.join(", "));
    }
    let mut ignored = vec![];
    let train = examples(&train_dir, &classes, &mut ignored)?;
    let val = examples(&val_dir, &classes, &mut ignored)?;
    Ok(Dataset { classes, train, val, ignored, records: None })
}

/// The sorted visible subfolders of `dir`.
pub fn class_folders(dir: &Path) -> Result<Vec<String>> {
    ensure!(dir.is_dir(), "{} does not exist (expected train/ and val/ with one subfolder per class)", dir.display());
    let mut classes = vec![];
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().is_dir() {
            classes.push(name);
        }
    }
    classes.sort();
    Ok(classes)
}

/// True for a visible file with an image extension.
pub fn is_image_file(path: &Path) -> bool {
    let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
    !hidden && IMAGE_EXTENSIONS.contains(&ext.as_str())
}

/// The image files of `split_dir/<class>/` for every class, labelled by class index, sorted;
/// other files go to `ignored`. An empty class folder is an error.
pub fn examples(split_dir: &Path, classes: &[String], ignored: &mut Vec<PathBuf>) -> Result<Vec<Example>> {
    let mut out = vec![];
    for (label, class) in classes.iter().enumerate() {
        let dir = split_dir.join(class);
        let (mut files, skipped): (Vec<PathBuf>, Vec<PathBuf>) = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .partition(|p| is_image_file(p));
        ignored.extend(skipped);
        ensure!(!files.is_empty(), "class folder {} has no images ({})", dir.display(), IMAGE_EXTENSIONS.join(", "));
        files.sort();
        out.extend(files.into_iter().map(|path| Example { path, label }));
    }
    Ok(out)
}

/// How an image becomes a network input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Output side (227).
    pub size: usize,
    /// Subtracted after resizing, before the channel reversal: one value, or one per RGB channel.
    pub pixel_mean: Vec<f32>,
    /// Reverse RGB to BGR, as the Caffe-trained weights expect.
    pub bgr: bool,
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess { size: crate::graph::model::INPUT_SIZE, pixel_mean: vec![0.0], bgr: true }
    }
}

/// Which decode op to use for one encoded image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decode {
    /// DecodeJpeg, as the Swift original.
    Jpeg,
    /// DecodeImage: PNG, GIF, BMP (and JPEG).
    Any,
}

/// Adds the preprocessing of one encoded image (a scalar string) to the graph: [1, S, S, 3] float.
pub fn preprocess_graph(scope: &mut Scope, encoded: Output, decode: Decode, p: &Preprocess) -> Result<Output> {
    let pixels = decode_op(scope, encoded, decode)?;
    // ResizeBilinear takes the uint8 pixels directly and returns float32: no float copy of a
    // large photo is ever made.
    let batch_axis = ops::constant(0i32, scope)?;
    let batched = ops::expand_dims(pixels, batch_axis, scope)?;
    preprocess_pixels(scope, batched.into(), p)
}

/// The decode op for one encoded image: uint8 [H, W, 3].
fn decode_op(scope: &mut Scope, encoded: Output, decode: Decode) -> Result<Output> {
    Ok(match decode {
        Decode::Jpeg => ops::DecodeJpeg::new().channels(3).build(encoded, scope)?.into(),
        Decode::Any => ops::DecodeImage::new().channels(3).expand_animations(false).dtype(DataType::UInt8).build(encoded, scope)?.into(),
    })
}

/// Resize, mean and channel order for a [N, H, W, 3] batch of decoded pixels (uint8 or float).
pub fn preprocess_pixels(scope: &mut Scope, pixels: Output, p: &Preprocess) -> Result<Output> {
    let size = ops::constant(&[p.size as i32, p.size as i32][..], scope)?;
    // TensorFlow 1 semantics, as the Swift original: no corner alignment, no half-pixel centres.
    let resized = ops::ResizeBilinear::new().align_corners(false).half_pixel_centers(false).build(pixels, size, scope)?;
    let mean = ops::constant(&p.pixel_mean[..], scope)?;
    let centred = ops::sub(resized, mean, scope)?;
    if !p.bgr {
        return Ok(centred.into());
    }
    let channel_axis = ops::constant(&[-1i32][..], scope)?;
    Ok(ops::reverse_v2(centred, channel_axis, scope)?.into())
}

/// Sniffs the format from the first bytes.
pub fn decode_kind(bytes: &[u8]) -> Decode {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) { Decode::Jpeg } else { Decode::Any }
}

/// A small graph and session that turn image files into network inputs, several files at once
/// (Session::run is thread-safe; DecodeJpeg itself uses one thread per image).
pub struct Decoder {
    session: Session,
    path: Output,
    jpeg: Output,
    any: Output,
    size: usize,
    threads: usize,
}

impl Decoder {
    pub fn new(p: &Preprocess) -> Result<Self> {
        let scope = Scope::new_root_scope();
        let path: Output = ops::Placeholder::new().dtype(DataType::String).shape(Shape::from(Some(vec![]))).build(&mut scope.with_op_name("path"))?.into();
        let encoded: Output = ops::read_file(path.clone(), &mut scope.with_op_name("ReadFile"))?.into();
        let jpeg = preprocess_graph(&mut scope.new_sub_scope("jpeg"), encoded.clone(), Decode::Jpeg, p)?;
        let any = preprocess_graph(&mut scope.new_sub_scope("image"), encoded, Decode::Any, p)?;
        let session = Session::new(&SessionOptions::new(), &scope.graph())?;
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Ok(Decoder { session, path, jpeg, any, size: p.size, threads })
    }

    /// Files decoded at once (default: one per core).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Decodes one image file into `out` (S * S * 3 floats).
    pub fn decode_file(&self, path: &Path, out: &mut [f32]) -> Result<()> {
        let mut magic = [0u8; 3];
        let n = std::io::Read::read(&mut std::fs::File::open(path)?, &mut magic)?;
        let target = match decode_kind(&magic[..n]) {
            Decode::Jpeg => &self.jpeg,
            Decode::Any => &self.any,
        };
        let name = path.to_str().with_context(|| format!("path {} is not valid UTF-8", path.display()))?;
        let input = Tensor::<String>::from(name.to_string());
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.path.operation, self.path.index, &input);
        let fetch = args.request_fetch(&target.operation, target.index);
        self.session.run(&mut args)?;
        let t: Tensor<f32> = args.fetch(fetch)?;
        ensure!(t.len() == out.len(), "decoded {} values, expected {}", t.len(), out.len());
        out.copy_from_slice(&t);
        Ok(())
    }

    /// Decodes every file into one [N, S, S, 3] tensor; the first bad file is an error.
    pub fn decode_files(&self, paths: &[&Path]) -> Result<Tensor<f32>> {
        let (tensor, bad) = self.decode_checked(paths);
        match bad.first() {
            Some(b) => bail!("cannot use image {}: {}", b.path.display(), b.reason),
            None => Ok(tensor),
        }
    }

    /// Decodes every file it can; returns the good ones in order and every bad one with why.
    pub fn decode_checked(&self, paths: &[&Path]) -> (Tensor<f32>, Vec<BadImage>) {
        let per_image = self.size * self.size * 3;
        let side = self.size as u64;
        // Decoded straight into the tensor that is fed: no second copy of the data set.
        let mut tensor = Tensor::<f32>::new(&[paths.len() as u64, side, side, 3]);
        let errors = self.decode_into(paths, &mut tensor);
        let bad: Vec<BadImage> =
            paths.iter().zip(&errors).filter_map(|(p, e)| e.as_ref().map(|reason| BadImage { path: p.to_path_buf(), reason: reason.clone() })).collect();
        if bad.is_empty() {
            return (tensor, bad);
        }
        let good: Vec<usize> = (0..paths.len()).filter(|&i| errors[i].is_none()).collect();
        let mut kept = Tensor::<f32>::new(&[good.len() as u64, side, side, 3]);
        for (slot, &i) in kept.chunks_mut(per_image).zip(&good) {
            slot.copy_from_slice(&tensor[i * per_image..(i + 1) * per_image]);
        }
        (kept, bad)
    }

    /// Decode-checks every file without keeping the pixels (for data sets streamed from disk).
    pub fn check(&self, paths: &[&Path]) -> Vec<BadImage> {
        let chunk = 16 * self.threads;
        let mut buffer = vec![0f32; chunk.min(paths.len()) * self.size * self.size * 3];
        let mut bad = vec![];
        for part in paths.chunks(chunk) {
            let errors = self.decode_into(part, &mut buffer);
            for (p, e) in part.iter().zip(errors) {
                if let Some(reason) = e {
                    bad.push(BadImage { path: p.to_path_buf(), reason });
                }
            }
        }
        bad
    }

    /// Decodes `paths[i]` into the i-th image of `out`, `threads` files at a time; returns each
    /// file's error.
    fn decode_into(&self, paths: &[&Path], out: &mut [f32]) -> Vec<Option<String>> {
        let per_image = self.size * self.size * 3;
        let work: Vec<(&Path, &mut [f32])> = paths.iter().copied().zip(out.chunks_mut(per_image)).collect();
        map_each(work, self.threads, |(path, slot)| check_file(path).and_then(|()| self.decode_file(path, slot)).err().map(|e| first_line(&format!("{e:#}"))))
    }
}

/// An image file that can't be used, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct BadImage {
    pub path: PathBuf,
    pub reason: String,
}

impl std::fmt::Display for BadImage {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// Cheap checks before TensorFlow sees the file: unreadable, empty, not an image, absurdly
/// large, cut short.
fn check_file(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).context("cannot read the file")?;
    check_whole(&bytes).map_err(anyhow::Error::msg)
}

/// A TensorFlow decode error of an image that passed [`check_encoded`](super::encoded::check_encoded), in plain words: without
/// the graph's node names, and "truncated or corrupt" where that is what the decoder means.
pub fn plain_decode_error(bytes: &[u8], tf_message: &str) -> String {
    let line = first_line(tf_message);
    let line = line.split(" [[").next().unwrap_or("").trim();
    // "InvalidArgument: jpeg::Uncompress failed. ..." -> "jpeg::Uncompress failed. ..."
    let line = line.split_once(": ").filter(|(code, _)| !code.contains(' ') && code.chars().all(|c| c.is_ascii_alphabetic())).map_or(line, |(_, rest)| rest);
    let format = image_format(bytes).unwrap_or("image");
    let lower = line.to_lowercase();
    if ["invalid jpeg data", "premature end", "invalid png data", "failed to decode", "truncated", "corrupt"].iter().any(|m| lower.contains(m)) {
        format!("truncated or corrupt {format} data")
    } else {
        format!("cannot decode this {format} file ({line})")
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// One image file decoded by TensorFlow's own DecodeJpeg (DecodeImage for other formats):
/// RGB pixels [H, W, 3] before any resize. JPEG decoders differ between libraries, so whatever
/// checks our pipeline against an independent one starts from the same decoded pixels.
pub fn decode_rgb(path: &Path) -> Result<ndarray::Array3<u8>> {
    let mut magic = [0u8; 3];
    let n = std::io::Read::read(&mut std::fs::File::open(path).with_context(|| format!("cannot open image {}", path.display()))?, &mut magic)?;
    let scope = Scope::new_root_scope();
    // The file is read by the graph: the crate's string tensors must be UTF-8, JPEG bytes are not.
    let name = path.to_str().with_context(|| format!("path {} is not valid UTF-8", path.display()))?;
    let path_t = ops::constant(Tensor::<String>::from(name.to_string()), &mut scope.with_op_name("path"))?;
    let encoded = ops::read_file(path_t, &mut scope.with_op_name("ReadFile"))?;
    let pixels = decode_op(&mut scope.with_op_name("decode"), encoded.into(), decode_kind(&magic[..n]))?;
    let session = Session::new(&SessionOptions::new(), &scope.graph())?;
    let mut args = SessionRunArgs::new();
    let fetch = args.request_fetch(&pixels.operation, pixels.index);
    session.run(&mut args).with_context(|| format!("cannot decode image {}", path.display()))?;
    let t: Tensor<u8> = args.fetch(fetch)?;
    let d: Vec<usize> = t.dims().iter().map(|&d| d as usize).collect();
    ensure!(d.len() == 3 && d[2] == 3, "{}: decoded to shape {d:?}, expected [H, W, 3]", path.display());
    Ok(ndarray::Array3::from_shape_vec((d[0], d[1], d[2]), t.to_vec())?)
}
