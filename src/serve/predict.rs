//! `alexnet predict`: class probabilities of image files, from a run's checkpoint (latest, best or epoch-N), an
//! exported SavedModel, or a complete folder of weight files (an imported Caffe model). Both feed the file bytes to the same [`InferenceGraph`], so for the
//! same model they give the same numbers.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;
use tensorflow::{DataType, Graph, Output, SavedModelBundle, Session, SessionOptions, SessionRunArgs, Tensor};

use crate::data::encoded;
use crate::data::images::{self, BadImage, Preprocess};
use crate::graph::model::{LrnProfile, ModelConfig};
use crate::graph::params;
use crate::graph::scoring::argmax;
use crate::run::trained;
use crate::serve::export::{SERVE_TAG, SERVING_SIGNATURE};
use crate::serve::inference::{self, InferenceGraph};

/// Images per session run.
const BATCH: usize = 16;

/// One image's prediction; also the `--json` line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    pub path: PathBuf,
    pub class: String,
    pub class_id: usize,
    pub probability: f32,
    /// Indexed by class id.
    pub probabilities: Vec<f32>,
}

/// A loaded model: a session and the tensors to feed and fetch.
pub struct Predictor {
    session: Session,
    /// Operations keep their graph alive: no need to hold it.
    images: Output,
    probabilities: Output,
    /// Where class names come from.
    names: Names,
}

enum Names {
    /// Every class's name, by id.
    All(Vec<String>),
    /// The model's own per-image output of the top class's name.
    Output(Output),
    /// Unknown: "class N".
    None,
}

impl Predictor {
    /// The run's inference graph with the parameters of its latest checkpoint.
    pub fn from_run(run_dir: &Path) -> Result<Predictor> {
        Ok(Self::from_run_at(run_dir, "latest")?.0)
    }

    /// The same from the checkpoint `which` names (`latest`, `best`, `epoch-N`); also that
    /// checkpoint's epoch.
    pub fn from_run_at(run_dir: &Path, which: &str) -> Result<(Predictor, usize)> {
        let run = trained::load_trained_at(run_dir, which)?;
        let cfg = &run.config;
        let g = InferenceGraph::build(&cfg.model, &cfg.preprocess, &cfg.classes)?;
        let session = Session::new(&SessionOptions::new(), &g.scope.graph())?;
        params::init_params(&session, &g.net, &run.params)?;
        let predictor = Predictor { session, images: g.images.clone(), probabilities: g.probabilities.clone(), names: Names::All(cfg.classes.clone()) };
        Ok((predictor, run.epoch))
    }

    /// A folder of weight files with every layer present (e.g. an imported Caffe model), used as
    /// it is. The class count and fc width come from fc8's and fc7's bias files; class names from
    /// `labels` (its length must match), else "class N".
    pub fn from_weights(dir: &Path, labels: Option<Vec<String>>, lrn: LrnProfile, preprocess: &Preprocess) -> Result<Predictor> {
        let count = |name: &str| -> Result<usize> {
            let path = dir.join(name);
            let len = std::fs::metadata(&path)
                .with_context(|| {
                    format!("{} is missing: predicting from --weights needs all eight layers (import a full model with alexnet import-caffe)", path.display())
                })?
                .len();
            Ok(len as usize / 4)
        };
        let classes = count("fc8.biases")?;
        let mut model = ModelConfig::new(classes);
        model.fc_width = count("fc7.biases")?;
        model.lrn = lrn;
        let names = match labels {
            Some(l) => {
                ensure!(l.len() == classes, "--labels gives {} class names, the weights in {} are for {classes} classes", l.len(), dir.display());
                l
            }
            None => (0..classes).map(|i| format!("class {i}")).collect(),
        };
        let specs = crate::graph::model::param_specs(&model);
        let (params, _) = crate::data::weights::load(Some(dir), &specs, &crate::data::weights::LoadOptions { strict: true, seed: 0 })?;
        let g = InferenceGraph::build(&model, preprocess, &names)?;
        let session = Session::new(&SessionOptions::new(), &g.scope.graph())?;
        params::init_params(&session, &g.net, &params)?;
        Ok(Predictor { session, images: g.images.clone(), probabilities: g.probabilities.clone(), names: Names::All(names) })
    }

    /// A SavedModel's `serving_default` signature: one string input of encoded images and a
    /// `probabilities` output; class names from `labels`, else its `classes` output if any.
    pub fn from_saved_model(dir: &Path, labels: Option<Vec<String>>) -> Result<Predictor> {
        ensure!(dir.join("saved_model.pb").is_file(), "{} is not a SavedModel (no saved_model.pb); export one with alexnet export", dir.display());
        let mut graph = Graph::new();
        let bundle = SavedModelBundle::load(&SessionOptions::new(), [SERVE_TAG], &mut graph, dir)
            .with_context(|| format!("cannot load the SavedModel in {} (tag '{SERVE_TAG}')", dir.display()))?;
        let sig =
            bundle.meta_graph_def().get_signature(SERVING_SIGNATURE).with_context(|| format!("{} has no '{SERVING_SIGNATURE}' signature", dir.display()))?;
        ensure!(
            sig.inputs().len() == 1,
            "the '{SERVING_SIGNATURE}' signature of {} takes {} inputs ([{}]); predict needs one, of encoded images",
            dir.display(),
            sig.inputs().len(),
            sig.inputs().keys().cloned().collect::<Vec<_>>().join(", ")
        );
        let (input_key, input) = sig.inputs().iter().next().unwrap();
        ensure!(
            input.dtype() == DataType::String,
            "the '{SERVING_SIGNATURE}' input '{input_key}' of {} is {}, not a string of encoded images",
            dir.display(),
            input.dtype()
        );
        let output = |key: &str| -> Result<Option<Output>> {
            let Ok(info) = sig.get_output(key) else { return Ok(None) };
            let op = graph.operation_by_name_required(&info.name().name)?;
            Ok(Some(Output { operation: op, index: info.name().index }))
        };
        let probabilities = output(inference::PROBABILITIES)?.with_context(|| {
            format!(
                "the '{SERVING_SIGNATURE}' signature of {} has no '{}' output (it has [{}])",
                dir.display(),
                inference::PROBABILITIES,
                sig.outputs().keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        // The class count, when the signature states it: a wrong --labels fails before any image.
        let classes = sig.get_output(inference::PROBABILITIES).ok().and_then(|i| if i.shape().dims() == Some(2) { i.shape()[1] } else { None });
        if let (Some(l), Some(k)) = (&labels, classes) {
            ensure!(l.len() == k as usize, "--labels gives {} class names, the model in {} has {k} classes", l.len(), dir.display());
        }
        let names = match (labels, output(inference::CLASSES)?) {
            (Some(l), _) => Names::All(l),
            (None, Some(o)) => Names::Output(o),
            (None, None) => Names::None,
        };
        let images = Output { operation: graph.operation_by_name_required(&input.name().name)?, index: input.name().index };
        Ok(Predictor { session: bundle.session, images, probabilities, names })
    }

    /// Predictions for image files, in order.
    pub fn predict_files(&self, paths: &[PathBuf]) -> Result<Vec<Prediction>> {
        let mut out = vec![];
        for chunk in paths.chunks(BATCH) {
            let bytes = chunk.iter().map(|p| std::fs::read(p).with_context(|| format!("cannot read image {}", p.display()))).collect::<Result<Vec<_>>>()?;
            let (probs, names) = match self.run(&bytes) {
                Ok(r) => r,
                // Name the file that spoils the batch.
                Err(e) if chunk.len() > 1 => {
                    for (p, b) in chunk.iter().zip(&bytes) {
                        self.run(std::slice::from_ref(b)).with_context(|| format!("cannot classify {}", p.display()))?;
                    }
                    return Err(e);
                }
                Err(e) => return Err(e.context(format!("cannot classify {}", chunk[0].display()))),
            };
            for ((path, p), name) in chunk.iter().zip(probs).zip(names) {
                let class_id = argmax(&p);
                out.push(Prediction { path: path.clone(), class: name, class_id, probability: p[class_id], probabilities: p });
            }
        }
        Ok(out)
    }

    /// Every file's prediction or why it has none, in order: a file that can't be read or isn't
    /// an image is named with the reason in plain words, and the others are still classified
    /// (in batches, as [`Predictor::predict_files`]). Errors of the model itself stop it.
    pub fn predict_each(&self, paths: &[PathBuf]) -> Result<Vec<std::result::Result<Prediction, BadImage>>> {
        let bad = |path: &PathBuf, reason: String| Some(Err(BadImage { path: path.clone(), reason }));
        let mut out: Vec<Option<std::result::Result<Prediction, BadImage>>> = vec![None; paths.len()];
        let mut good = vec![];
        for (i, path) in paths.iter().enumerate() {
            match std::fs::read(path) {
                Err(e) => {
                    let e = e.to_string();
                    out[i] = bad(path, format!("cannot read: {}", e.split(" (os error").next().unwrap_or(&e)));
                }
                Ok(bytes) => match encoded::check_whole(&bytes) {
                    Err(reason) => out[i] = bad(path, reason),
                    Ok(()) => good.push((i, bytes)),
                },
            }
        }
        for chunk in good.chunks(BATCH) {
            let bytes: Vec<Vec<u8>> = chunk.iter().map(|(_, b)| b.clone()).collect();
            let results: Vec<Result<(Vec<f32>, String)>> = match self.run(&bytes) {
                Ok((probs, names)) => probs.into_iter().zip(names).map(Ok).collect(),
                // A file that passed the header checks but fails to decode spoils the batch:
                // one at a time finds it, and the others still get their prediction.
                Err(e) if !is_decode_error(&e) => return Err(e),
                Err(_) => bytes.iter().map(|b| self.run(std::slice::from_ref(b)).map(|(mut p, mut n)| (p.remove(0), n.remove(0)))).collect(),
            };
            for ((i, b), r) in chunk.iter().zip(results) {
                out[*i] = match r {
                    Ok((p, class)) => {
                        let class_id = argmax(&p);
                        Some(Ok(Prediction { path: paths[*i].clone(), class, class_id, probability: p[class_id], probabilities: p }))
                    }
                    Err(e) if is_decode_error(&e) => bad(&paths[*i], images::plain_decode_error(b, &format!("{e:#}"))),
                    Err(e) => return Err(e.context(format!("cannot classify {}", paths[*i].display()))),
                };
            }
        }
        Ok(out.into_iter().map(|r| r.expect("every file has an outcome")).collect())
    }

    /// Probabilities and top class names of a batch of encoded images.
    fn run(&self, encoded: &[Vec<u8>]) -> Result<(Vec<Vec<f32>>, Vec<String>)> {
        let batch = inference::encoded_batch(encoded);
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.images.operation, self.images.index, &batch);
        let pf = args.request_fetch(&self.probabilities.operation, self.probabilities.index);
        let nf = match &self.names {
            Names::Output(o) => Some(args.request_fetch(&o.operation, o.index)),
            _ => None,
        };
        self.session.run(&mut args)?;
        let t: Tensor<f32> = args.fetch(pf)?;
        ensure!(t.dims().len() == 2 && t.dims()[0] == encoded.len() as u64, "probabilities of shape {:?} for {} images", t.dims(), encoded.len());
        let k = t.dims()[1] as usize;
        let probs: Vec<Vec<f32>> = t.chunks(k.max(1)).map(|c| c.to_vec()).collect();
        let names = match (&self.names, nf) {
            (Names::All(all), _) => {
                if all.len() != k {
                    bail!("{} class names (--labels) for a model of {k} classes", all.len());
                }
                probs.iter().map(|p| all[argmax(p)].clone()).collect()
            }
            (Names::Output(_), Some(f)) => args.fetch::<String>(f)?.to_vec(),
            _ => probs.iter().map(|p| format!("class {}", argmax(p))).collect(),
        };
        Ok((probs, names))
    }
}

/// Whether a session run failed on its input (TensorFlow's InvalidArgument, which the decode ops
/// return for data they can't decode) rather than in the model.
fn is_decode_error(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tensorflow::Status>().is_some_and(|s| s.code() == tensorflow::Code::InvalidArgument)
}

/// Class names from a file, one per line (trailing blank lines ignored).
pub fn read_labels(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read labels file {}", path.display()))?;
    let mut labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    while labels.last().is_some_and(|l| l.is_empty()) {
        labels.pop();
    }
    ensure!(!labels.is_empty(), "labels file {} is empty (expected one class name per line)", path.display());
    Ok(labels)
}
