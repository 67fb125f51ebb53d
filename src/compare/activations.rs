//! Every layer's activation for one image, from the TensorFlow graph or from the independent
//! reference in [`crate::compare::reference`], written as `<layer>.npy` (float32, NHWC batch 1, or
//! [1, width] for fc layers) and `<layer>.png` (see [`crate::compare::visualize`]).

use std::path::Path;

use anyhow::{Context, Result, ensure};
use ndarray::{ArrayD, IxDyn};
use tensorflow::{Session, SessionRunArgs, Tensor};

use crate::compare::reference;
use crate::compare::visualize;
use crate::data::images::{self as data, Decoder, Preprocess};
use crate::data::weights::{self, LoadOptions};
use crate::graph::model::{self, ModelConfig};
use crate::graph::network_graph::NetworkGraph;
use crate::graph::params;
use crate::graph::params::LayerParams;
use crate::run::trained;

/// Which implementation computes the activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// The TensorFlow graph the trainer uses.
    Tf,
    /// The plain-Rust forward pass in src/reference.rs.
    Reference,
}

/// A network and its parameters, ready to run.
pub struct Setup {
    pub model: ModelConfig,
    pub preprocess: Preprocess,
    pub params: Vec<LayerParams>,
    /// Where the parameters came from, for the log.
    pub origin: String,
}

/// `input` and every layer of the table, in order.
pub fn layer_names(cfg: &ModelConfig) -> Vec<&'static str> {
    std::iter::once("input").chain(model::layers(cfg).iter().map(|l| l.name())).collect()
}

impl Setup {
    /// Parameters from a folder of Caffe-layout files; layers without a file are initialised from `seed`.
    pub fn from_weights(model: ModelConfig, dir: &Path, seed: u64) -> Result<Setup> {
        let specs = model::param_specs(&model);
        let (params, report) = weights::load(Some(dir), &specs, &LoadOptions { strict: false, seed })?;
        Ok(Setup { model, preprocess: Preprocess::default(), params, origin: report.to_string() })
    }

    /// The model, preprocessing and parameters of a training run's latest checkpoint.
    pub fn from_run(run_dir: &Path) -> Result<Setup> {
        let run = trained::load_trained(run_dir)?;
        let origin = format!("weights: checkpoint {} (epoch {})", run.checkpoint.parent().unwrap_or(&run.checkpoint).display(), run.epoch);
        Ok(Setup { model: run.config.model, preprocess: run.config.preprocess, params: run.params, origin })
    }

    /// Every layer's activation for `image`, `input` first.
    pub fn activations(&self, image: &Path, engine: Engine) -> Result<Vec<(&'static str, ArrayD<f32>)>> {
        match engine {
            Engine::Tf => self.tf_activations(image),
            Engine::Reference => self.reference_activations(image),
        }
    }

    fn tf_activations(&self, image: &Path) -> Result<Vec<(&'static str, ArrayD<f32>)>> {
        ensure!(
            self.preprocess.size == self.model.input_size,
            "preprocessing makes {0}x{0} images, the model takes {1}x{1}",
            self.preprocess.size,
            self.model.input_size
        );
        let input = Decoder::new(&self.preprocess)?.decode_files(&[image])?;
        let graph = NetworkGraph::build(&self.model, Some(1))?;
        let session = Session::new(&tensorflow::SessionOptions::new(), &graph.scope.graph())?;
        params::init_params(&session, &graph.net, &self.params)?;
        let mut args = SessionRunArgs::new();
        args.add_feed(&graph.input.operation, graph.input.index, &input);
        // `input` is what is fed (TensorFlow refuses to fetch a fed tensor); the layers are fetched.
        let fetches: Vec<_> = graph.net.activations[1..].iter().map(|(n, o)| (*n, args.request_fetch(&o.operation, o.index))).collect();
        session.run(&mut args).context("cannot run the network")?;
        let mut out = vec![("input", to_array(&input)?)];
        for (name, f) in fetches {
            out.push((name, to_array(&args.fetch::<f32>(f)?)?));
        }
        Ok(out)
    }

    fn reference_activations(&self, image: &Path) -> Result<Vec<(&'static str, ArrayD<f32>)>> {
        // Decoded by TensorFlow's DecodeJpeg (decoders differ between libraries); resize, mean
        // and channel order are the reference's own.
        let pixels = data::decode_rgb(image)?;
        let input = reference::preprocess(pixels.view(), &self.preprocess)?;
        reference::forward(&self.model, &self.params, input)
    }
}

fn to_array(t: &Tensor<f32>) -> Result<ArrayD<f32>> {
    let dims: Vec<usize> = t.dims().iter().map(|&d| d as usize).collect();
    Ok(ArrayD::from_shape_vec(IxDyn(&dims), t.to_vec())?)
}

/// Minimum, maximum and mean of one activation.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    pub layer: &'static str,
    pub shape: Vec<usize>,
    pub min: f32,
    pub max: f32,
    pub mean: f64,
}

impl Stats {
    pub fn of(layer: &'static str, a: &ArrayD<f32>) -> Stats {
        let (min, max) = a.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len().max(1) as f64;
        Stats { layer, shape: a.shape().to_vec(), min, max, mean }
    }
}

/// Writes `<layer>.npy` and `<layer>.png` for every activation into `out` (created if needed).
pub fn write(out: &Path, activations: &[(&'static str, ArrayD<f32>)]) -> Result<Vec<Stats>> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut stats = vec![];
    for (layer, a) in activations {
        let npy = out.join(format!("{layer}.npy"));
        let mut bytes = vec![];
        ndarray_npy::WriteNpyExt::write_npy(a, &mut bytes).with_context(|| format!("cannot encode {}", npy.display()))?;
        crate::util::fsutil::write_atomic(&npy, &bytes)?;
        visualize::write_png(&out.join(format!("{layer}.png")), &visualize::picture(a.view())?)?;
        stats.push(Stats::of(layer, a));
    }
    Ok(stats)
}
