//! Image folders and the input pipeline.
//!
//! A data set is `train/<class>/*` and `val/<class>/*`; classes are the sorted subfolders of
//! `train/` (a folder of `<class>/` folders split by `--val-split` is [`crate::data::split`]'s). Images are decoded by TensorFlow's own ops (ReadFile -> DecodeJpeg/DecodeImage ->
//! ResizeBilinear -> minus mean -> ReverseV2), once, up front, into one float tensor.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
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
    Ok(Dataset { classes, train, val, ignored })
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

    /// Decodes `paths[i]` into the i-th image of `out`, `threads` files at a time, taking the next
    /// file as each finishes (sizes vary); returns each file's error.
    fn decode_into(&self, paths: &[&Path], out: &mut [f32]) -> Vec<Option<String>> {
        use std::sync::Mutex;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let per_image = self.size * self.size * 3;
        let slots: Vec<Mutex<&mut [f32]>> = out.chunks_mut(per_image).take(paths.len()).map(Mutex::new).collect();
        let errors: Vec<Mutex<Option<String>>> = paths.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let work = || {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(i) else { break };
                let mut slot = slots[i].lock().unwrap();
                if let Err(e) = check_file(path).and_then(|()| self.decode_file(path, &mut slot)) {
                    *errors[i].lock().unwrap() = Some(first_line(&format!("{e:#}")));
                }
            }
        };
        std::thread::scope(|s| {
            for _ in 1..self.threads.min(paths.len()) {
                s.spawn(work);
            }
            work();
        });
        errors.into_iter().map(|e| e.into_inner().unwrap()).collect()
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

/// Images larger than this are refused before decoding (3 bytes a pixel while decoding: 750 MB).
pub const MAX_PIXELS: u64 = 250_000_000;

/// Cheap checks before TensorFlow sees the file: empty, unreadable, absurdly large.
fn check_file(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).context("cannot read the file")?;
    ensure!(!bytes.is_empty(), "empty file (0 bytes)");
    if let Some((w, h)) = image_dimensions(&bytes) {
        let pixels = w as u64 * h as u64;
        ensure!(
            pixels <= MAX_PIXELS,
            "{w} x {h} pixels ({} megapixels) is more than the {} megapixels this trainer decodes; downscale it first",
            pixels / 1_000_000,
            MAX_PIXELS / 1_000_000
        );
    }
    Ok(())
}

/// Width and height from a JPEG, PNG, GIF or BMP header, when the header is readable.
pub fn image_dimensions(b: &[u8]) -> Option<(u32, u32)> {
    let be16 = |i: usize| Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]) as u32);
    let le16 = |i: usize| Some(u16::from_le_bytes([*b.get(i)?, *b.get(i + 1)?]) as u32);
    let be32 = |i: usize| Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?));
    let le32 = |i: usize| Some(i32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?).unsigned_abs());
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some((be32(16)?, be32(20)?));
    }
    if b.starts_with(b"GIF8") {
        return Some((le16(6)?, le16(8)?));
    }
    if b.starts_with(b"BM") {
        return Some((le32(18)?, le32(22)?));
    }
    if b.starts_with(&[0xFF, 0xD8]) {
        // Walk the markers to the first start-of-frame (SOF0..SOF15 but DHT, JPG, DAC).
        let mut i = 2;
        while i + 9 < b.len() {
            if b[i] != 0xFF {
                return None;
            }
            let marker = b[i + 1];
            if marker == 0xFF {
                i += 1;
                continue;
            }
            let len = be16(i + 2)? as usize;
            if (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker) {
                return Some((be16(i + 7)?, be16(i + 5)?));
            }
            i += 2 + len;
        }
    }
    None
}

/// The format TensorFlow's DecodeImage would take the bytes for (it sniffs the same signatures),
/// or None for anything it refuses.
pub fn image_format(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("JPEG")
    } else if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("PNG")
    } else if b.starts_with(b"GIF") {
        Some("GIF")
    } else if b.starts_with(b"BM") {
        Some("BMP")
    } else {
        None
    }
}

/// [`check_encoded`] on a whole file, and its end: a file cut short before its end marker is
/// refused too.
pub fn check_whole(bytes: &[u8]) -> std::result::Result<(), String> {
    check_encoded(bytes)?;
    match image_format(bytes) {
        Some(format) if !has_end_marker(bytes) => Err(format!("truncated {format} file (it stops before the image's end marker)")),
        _ => Ok(()),
    }
}

/// The checks of an encoded image's start that need no decoding, in plain words: empty, not a
/// format TensorFlow decodes, or a header giving more than [`MAX_PIXELS`].
pub fn check_encoded(bytes: &[u8]) -> std::result::Result<(), String> {
    if bytes.is_empty() {
        return Err("empty file (0 bytes)".into());
    }
    if image_format(bytes).is_none() {
        return Err("not a JPEG, PNG, GIF or BMP image".into());
    }
    if let Some((w, h)) = image_dimensions(bytes)
        && w as u64 * h as u64 > MAX_PIXELS
    {
        return Err(format!("{w} x {h} pixels is more than the {} megapixels this program decodes; downscale it first", MAX_PIXELS / 1_000_000));
    }
    Ok(())
}

/// Whether a JPEG reaches its end-of-image marker, or a PNG its IEND chunk. Caught here, a cut-off
/// file never reaches libjpeg, which would print its own warning on stderr. Bytes after the
/// marker are allowed (some cameras append data there); GIF and BMP are left to the decoder.
pub fn has_end_marker(bytes: &[u8]) -> bool {
    match image_format(bytes) {
        // Entropy-coded data escapes every 0xFF, so after the first start-of-scan the only FF D9
        // is the end marker (an EXIF thumbnail's own FF D9 comes before it, in APP1).
        Some("JPEG") => jpeg_scan_start(bytes).is_some_and(|sos| bytes[sos..].windows(2).any(|w| w == [0xFF, 0xD9])),
        Some("PNG") => bytes.windows(4).rev().take(1 << 16).any(|w| w == b"IEND"),
        _ => true,
    }
}

/// Offset of a JPEG's first start-of-scan marker, walking the segments before it by their lengths.
fn jpeg_scan_start(b: &[u8]) -> Option<usize> {
    let mut i = 2;
    while i + 4 <= b.len() {
        if b[i] != 0xFF {
            return None;
        }
        match b[i + 1] {
            0xFF => i += 1,
            0xDA => return Some(i),
            0xD0..=0xD7 | 0x01 => i += 2,
            _ => i += 2 + u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize,
        }
    }
    None
}

/// A TensorFlow decode error of an image that passed [`check_encoded`], in plain words: without
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
