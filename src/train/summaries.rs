//! The TensorBoard summary ops of a training graph and what they are fed: per epoch the loss,
//! accuracies and learning rate; once per invocation the graph; and, when due, conv1's filters
//! and activations of the first validation image (see [`crate::observe::tensorboard`] for the
//! event files and how a resumed run's orphaned epochs are dropped).

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tensorflow::{DataType, Graph, Operation, Output, Scope, Session, SessionRunArgs, Tensor, ops};

use crate::graph::model;
use crate::observe::events::Event;
use crate::observe::tensorboard::{DIR, base64_web_safe, group, images_due, normalise_tiles, placeholder, string, tile_grid, to_uint8, transpose};
use crate::run::config::TrainConfig;
use crate::run::metrics::Row;
use crate::train::feeds::Batch;
use crate::train::graph::TrainGraph;

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
    /// The rate of one step, at the run's step number (the other scalars are per epoch).
    step_rate: Output,
    step_rate_scalar: Operation,
    val_accuracy: Output,
    val_top5: Output,
    epoch_scalars: Operation,
    val_scalar: Operation,
    top5_scalar: Operation,
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
        let (step_rate, step_rate_scalar) = scalar(s, "learning_rate/step")?;
        let (val_accuracy, val_scalar) = scalar(s, "accuracy/val")?;
        let (val_top5, top5_scalar) = scalar(s, "accuracy/val_top5")?;
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
            step_rate,
            step_rate_scalar,
            val_accuracy,
            val_top5,
            epoch_scalars,
            val_scalar,
            top5_scalar,
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

    /// Whether `epoch` gets image summaries (written by [`Self::images`] at the epoch's end,
    /// with its own weights).
    pub fn images_due(&self, epoch: usize, last: bool) -> bool {
        images_due(self.image_every, epoch, last || epoch == self.start_epoch.get())
    }

    /// Writes conv1's filters and activations of `example` (a one-image batch) for `epoch`, from
    /// the weights as they are: called right after the epoch's steps, so that its row may wait
    /// for the next epoch's step (the lookahead) without the images seeing that step's update.
    pub fn images(&self, session: &Session, tg: &TrainGraph, example: &Batch, epoch: usize) -> Result<()> {
        let t0 = Instant::now();
        let step = Tensor::<i64>::from(epoch as i64);
        let mut args = SessionRunArgs::new();
        feed(&mut args, &self.step, &step);
        tg.feed_batch(&mut args, example);
        args.add_target(&self.images);
        session.run(&mut args).context("cannot write the epoch's TensorBoard images")?;
        self.spent.set(self.spent.get() + t0.elapsed());
        Ok(())
    }

    /// Writes one epoch's scalars, then flushes.
    pub fn epoch(&self, session: &Session, row: &Row, learning_rate: f32) -> Result<()> {
        let t0 = Instant::now();
        let step = Tensor::<i64>::from(row.epoch as i64);
        let loss = Tensor::<f32>::from(row.loss as f32);
        let train = Tensor::<f32>::from(row.train_accuracy as f32);
        let lr = Tensor::<f32>::from(learning_rate);
        let val = Tensor::<f32>::from(row.val_accuracy.unwrap_or(0.0) as f32);
        let top5 = Tensor::<f32>::from(row.val_top5.unwrap_or(0.0) as f32);
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
        if row.val_top5.is_some() {
            feed(&mut args, &self.val_top5, &top5);
            args.add_target(&self.top5_scalar);
        }
        session.run(&mut args).context("cannot write the epoch's TensorBoard summaries")?;
        self.run_target(session, &self.flush)?;
        self.spent.set(self.spent.get() + t0.elapsed());
        self.epochs_written.set(self.epochs_written.get() + 1);
        Ok(())
    }

    /// The learning rate of each step of an epoch (`rates`, from the run's step `first_step`),
    /// as the scalar `learning_rate/step` over step numbers: warmup and decay within an epoch.
    pub fn step_rates(&self, session: &Session, first_step: usize, rates: &[f32]) -> Result<()> {
        for (b, &rate) in rates.iter().enumerate() {
            let step = Tensor::<i64>::from((first_step + b) as i64);
            let value = Tensor::<f32>::from(rate);
            let mut args = SessionRunArgs::new();
            feed(&mut args, &self.step, &step);
            feed(&mut args, &self.step_rate, &value);
            args.add_target(&self.step_rate_scalar);
            session.run(&mut args).context("cannot write the steps' learning rates to TensorBoard")?;
        }
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
