//! TensorBoard event files written by TensorFlow's own summary ops, in the training graph.
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

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tensorflow::{DataType, Graph, Operation, Output, Scope, Session, SessionRunArgs, Shape, Tensor, ops};

use crate::observe::events::Event;
use crate::run::metrics::Row;
use crate::graph::model;
use crate::train::{Batch, TrainConfig, TrainGraph};

/// The folder of a run that holds the event files.
pub const DIR: &str = "tensorboard";

/// Filters are 11x11: shown 4 times larger.
const FILTER_ZOOM: i64 = 4;

/// The summary ops of a training graph, and what they are fed.
pub struct Summaries {
    logdir: Output,
    create: Operation,
    step: Output,
    loss: Output,
    train_accuracy: Output,
    learning_rate: Output,
    val_accuracy: Output,
    epoch_scalars: Operation,
    val_scalar: Operation,
    /// Web-safe base64 of a proto (the crate's string tensors must be UTF-8).
    proto_b64: Output,
    graph: Operation,
    import_event: Operation,
    images: Operation,
    flush: Operation,
    close: Operation,
    image_every: usize,
    start_epoch: Cell<usize>,
    spent: Cell<Duration>,
    epochs_written: Cell<usize>,
}

impl Summaries {
    /// Adds the summary ops to `tg`'s graph.
    pub fn build(tg: &TrainGraph, cfg: &TrainConfig) -> Result<Summaries> {
        let s = &mut tg.scope.new_sub_scope("tensorboard");
        let writer = ops::SummaryWriter::new().shared_name("alexnet_tensorboard").build(&mut s.with_op_name("writer"))?;
        let logdir = placeholder(s, "logdir", DataType::String)?;
        let max_queue = ops::constant(100i32, s)?;
        let flush_millis = ops::constant(60_000i32, s)?;
        let suffix = ops::constant(Tensor::<String>::from(".v2".to_string()), s)?;
        let create = ops::create_summary_file_writer(writer.clone(), logdir.clone(), max_queue, flush_millis, suffix, s)?;

        let step = placeholder(s, "step", DataType::Int64)?;
        let scalar = |s: &mut Scope, tag: &str| -> Result<(Output, Operation)> {
            let value = placeholder(s, &tag.replace('/', "_"), DataType::Float)?;
            let op = ops::write_scalar_summary(writer.clone(), step.clone(), string(s, tag)?, value.clone(), s)?;
            Ok((value, op))
        };
        let (loss, w_loss) = scalar(s, "loss")?;
        let (train_accuracy, w_train) = scalar(s, "accuracy/train")?;
        let (learning_rate, w_lr) = scalar(s, "learning_rate")?;
        let (val_accuracy, val_scalar) = scalar(s, "accuracy/val")?;
        let epoch_scalars = group(s, "epoch_scalars", [w_loss, w_train, w_lr])?;

        let proto_b64 = placeholder(s, "proto_b64", DataType::String)?;
        let proto = ops::decode_base64(proto_b64.clone(), s)?;
        let graph = ops::write_graph_summary(writer.clone(), step.clone(), proto.clone(), s)?;
        let import_event = ops::import_event(writer.clone(), proto, s)?;

        let images = image_summaries(s, tg, cfg, writer.clone(), step.clone())?;
        let flush = ops::flush_summary_writer(writer.clone(), s)?;
        let close = ops::close_summary_writer(writer, s)?;
        Ok(Summaries {
            logdir,
            create,
            step,
            loss,
            train_accuracy,
            learning_rate,
            val_accuracy,
            epoch_scalars,
            val_scalar,
            proto_b64,
            graph,
            import_event,
            images,
            flush,
            close,
            image_every: cfg.image_summary_every,
            start_epoch: Cell::new(0),
            spent: Cell::new(Duration::ZERO),
            epochs_written: Cell::new(0),
        })
    }

    /// Starts a new event file in `run_dir/tensorboard`, marks the (re)start at `start_epoch`
    /// and writes `graph`.
    pub fn open(&self, session: &Session, graph: &Graph, run_dir: &Path, start_epoch: usize) -> Result<PathBuf> {
        let t0 = Instant::now();
        let dir = run_dir.join(DIR);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dir_str = dir.to_str().with_context(|| format!("path {} is not valid UTF-8", dir.display()))?;
        let logdir = Tensor::<String>::from(dir_str.to_string());
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.logdir.operation, self.logdir.index, &logdir);
        args.add_target(&self.create);
        session.run(&mut args).with_context(|| format!("cannot start a TensorBoard event file in {}", dir.display()))?;

        let step = start_epoch as i64;
        self.start_epoch.set(start_epoch);
        let wall_time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
        let start = Event::start(wall_time, step);
        self.write_proto(session, &self.import_event, step, &prost::Message::encode_to_vec(&start))?;
        self.write_proto(session, &self.graph, step, &graph.graph_def()?)?;
        self.run_target(session, &self.flush)?;
        self.spent.set(self.spent.get() + t0.elapsed());
        Ok(dir)
    }

    /// Whether `epoch` gets image summaries (so its weights must be the epoch's own when
    /// `epoch` is called).
    pub fn images_due(&self, epoch: usize, last: bool) -> bool {
        images_due(self.image_every, epoch, last || epoch == self.start_epoch.get())
    }

    /// Writes one epoch's scalars (and, when due, the images of `example`, a one-image batch),
    /// then flushes.
    pub fn epoch(&self, session: &Session, tg: &TrainGraph, example: &Batch, row: &Row, learning_rate: f32, last: bool) -> Result<()> {
        let t0 = Instant::now();
        let step = Tensor::<i64>::from(row.epoch as i64);
        let loss = Tensor::<f32>::from(row.loss as f32);
        let train = Tensor::<f32>::from(row.train_accuracy as f32);
        let lr = Tensor::<f32>::from(learning_rate);
        let val = Tensor::<f32>::from(row.val_accuracy.unwrap_or(0.0) as f32);
        let mut args = SessionRunArgs::new();
        feed(&mut args, &self.step, &step);
        feed(&mut args, &self.loss, &loss);
        feed(&mut args, &self.train_accuracy, &train);
        feed(&mut args, &self.learning_rate, &lr);
        args.add_target(&self.epoch_scalars);
        if row.val_accuracy.is_some() {
            feed(&mut args, &self.val_accuracy, &val);
            args.add_target(&self.val_scalar);
        }
        if self.images_due(row.epoch, last) {
            tg.feed_batch(&mut args, example);
            args.add_target(&self.images);
        }
        session.run(&mut args).context("cannot write the epoch's TensorBoard summaries")?;
        self.run_target(session, &self.flush)?;
        self.spent.set(self.spent.get() + t0.elapsed());
        self.epochs_written.set(self.epochs_written.get() + 1);
        Ok(())
    }

    /// Flushes and closes the event file.
    pub fn close(&self, session: &Session) -> Result<()> {
        self.run_target(session, &self.close)
    }

    /// Time spent writing summaries per epoch so far (opening included).
    pub fn seconds_per_epoch(&self) -> f64 {
        self.spent.get().as_secs_f64() / self.epochs_written.get().max(1) as f64
    }

    fn write_proto(&self, session: &Session, op: &Operation, step: i64, proto: &[u8]) -> Result<()> {
        let b64 = Tensor::<String>::from(base64_web_safe(proto));
        let step = Tensor::<i64>::from(step);
        let mut args = SessionRunArgs::new();
        feed(&mut args, &self.proto_b64, &b64);
        feed(&mut args, &self.step, &step);
        args.add_target(op);
        Ok(session.run(&mut args)?)
    }

    fn run_target(&self, session: &Session, op: &Operation) -> Result<()> {
        let mut args = SessionRunArgs::new();
        args.add_target(op);
        Ok(session.run(&mut args)?)
    }
}

fn feed<'l, T: tensorflow::TensorType>(args: &mut SessionRunArgs<'l>, o: &Output, t: &'l Tensor<T>) {
    args.add_feed(&o.operation, o.index, t);
}

/// Whether epoch `epoch` gets image summaries: every `every` epochs (0: never) and at the
/// `ends` (first and last) of an invocation.
pub fn images_due(every: usize, epoch: usize, ends: bool) -> bool {
    every > 0 && (epoch % every == 0 || ends)
}

/// The three image summaries, grouped into one op.
fn image_summaries(s: &mut Scope, tg: &TrainGraph, cfg: &TrainConfig, writer: Operation, step: Output) -> Result<Operation> {
    let s = &mut s.new_sub_scope("images");
    let net = &tg.net;
    let shapes = model::output_shapes(&cfg.model);
    let conv1_shape = &shapes.iter().find(|(n, _)| *n == "conv1").context("the network has no conv1")?.1;
    let spec = model::param_specs(&cfg.model).into_iter().find(|p| p.layer == "conv1").context("conv1 has no parameters")?;
    let (k, in_c, n) = (spec.weights[0] as i64, spec.weights[2] as i64, spec.weights[3] as i64);
    ensure!(in_c == 3, "conv1 takes {in_c} channels; the filter image needs 3");
    // The graph's channels are BGR when the run feeds Caffe-order images: shown as RGB.
    let to_rgb = |s: &mut Scope, x: Output, axis: i32| -> Result<Output> {
        if !cfg.preprocess.bgr {
            return Ok(x);
        }
        let axis = ops::constant(&[axis][..], s)?;
        Ok(ops::reverse_v2(x, axis, s)?.into())
    };

    // Filters: [k, k, 3, n] (HWIO) -> n tiles [k, k, 3].
    let w = net.vars.iter().find(|v| v.layer == "conv1").context("conv1 has no variables")?.weights.output().clone();
    let tiles = transpose(s, w, &[3, 0, 1, 2])?;
    let tiles = to_rgb(s, tiles, 3)?;
    let filters = tile_grid(&mut s.new_sub_scope("filters"), tiles, [n, k, k, 3], FILTER_ZOOM)?;

    // Activations of one image: [1, h, h, n] -> n tiles [h, h, 1].
    let act = net.activation("conv1").context("no conv1 activation")?.clone();
    let act = cfg.precision.to_f32(&mut s.with_op_name("conv1_float"), act)?;
    let side = conv1_shape[0] as i64;
    let maps = transpose(s, act, &[3, 1, 2, 0])?;
    let mosaic = tile_grid(&mut s.new_sub_scope("activations"), maps, [conv1_shape[2] as i64, side, side, 1], 1)?;

    // The image itself, as the network sees it (after preprocessing).
    let input = net.activation("input").context("no input")?.clone();
    let input = to_rgb(s, input, 3)?;
    let input = normalise_tiles(s, input)?;
    let input = to_uint8(s, input)?;

    let bad_color = ops::constant(&[255u8, 0, 0, 255][..], s)?;
    let mut writes = vec![];
    for (tag, image) in [("conv1/filters", filters), ("conv1/activations", mosaic), ("input/val_image", input)] {
        let op = ops::WriteImageSummary::new().max_images(1i64).build(writer.clone(), step.clone(), string(s, tag)?, image, bad_color.clone(), s)?;
        writes.push(op);
    }
    group(s, "write", writes)
}

/// `tiles` [n, h, w, c] -> one uint8 image [1, H, W, c]: each tile scaled to 0..255 on its
/// own, laid out in rows of `cols` with 1-pixel white lines, enlarged `zoom` times.
fn tile_grid(s: &mut Scope, tiles: Output, [n, h, w, c]: [i64; 4], zoom: i64) -> Result<Output> {
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
fn normalise_tiles(s: &mut Scope, x: Output) -> Result<Output> {
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

fn to_uint8(s: &mut Scope, x: Output) -> Result<Output> {
    let x = ops::round(x, s)?;
    Ok(ops::Cast::new().DstT(DataType::UInt8).build(x, s)?.into())
}

/// The smallest divisor of `n` at least its square root: 96 tiles -> 8 rows of 12.
pub fn grid_columns(n: usize) -> usize {
    (1..=n.max(1)).find(|c| c * c >= n && n % c == 0).unwrap_or(n.max(1))
}

fn transpose(s: &mut Scope, x: Output, perm: &[i32]) -> Result<Output> {
    let perm = ops::constant(perm, s)?;
    Ok(ops::transpose(x, perm, s)?.into())
}

fn reshape(s: &mut Scope, x: Output, dims: &[i64]) -> Result<Output> {
    let dims = ops::constant(dims, s)?;
    Ok(ops::reshape(x, dims, s)?.into())
}

fn placeholder(s: &mut Scope, name: &str, dtype: DataType) -> Result<Output> {
    Ok(ops::Placeholder::new().dtype(dtype).shape(Shape::from(Some(vec![]))).build(&mut s.with_op_name(name))?.into())
}

fn string(s: &mut Scope, text: &str) -> Result<Operation> {
    Ok(ops::constant(Tensor::<String>::from(text.to_string()), s)?)
}

fn group(s: &mut Scope, name: &str, ops_: impl IntoIterator<Item = Operation>) -> Result<Operation> {
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
