//! Subcommands that use a trained model or the TensorFlow runtime as they are: `eval`, `export`,
//! `predict`, `serve` (TensorFlow Serving's REST API), `devices` and `server`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alexnet::distributed::cluster;
use alexnet::graph::model::LrnProfile;
use alexnet::graph::runtime;
use alexnet::observe::confusion as confusion_png;
use alexnet::run::config::TrainConfig;
use alexnet::serve::eval as evaluation;
use alexnet::serve::export as exporting;
use alexnet::serve::predict::{self as prediction, Predictor};
use alexnet::server::batching::BatchOptions;
use alexnet::server::batching_params;
use alexnet::server::metrics;
use alexnet::server::request::Limits;
use alexnet::server::{self, ServeOptions};
use anyhow::{Result, bail};

use super::common::{ClusterArgs, InputArgs};

/// `alexnet server`: this task's TensorFlow server, until SIGINT or SIGTERM.
pub(crate) fn server(cluster: &ClusterArgs) -> Result<()> {
    match cluster.config()? {
        Some(c) => cluster::serve(&c),
        None => bail!("alexnet server needs the cluster: --cluster FILE --job NAME --task N, or the TF_CONFIG environment variable"),
    }
}

/// `alexnet eval`: accuracy, per-class accuracy and confusion matrix per split (or one JSON
/// object), and the val confusion matrix drawn into `confusion` (default RUN_DIR/confusion.png).
pub(crate) fn eval(run_dir: &Path, images: Option<PathBuf>, checkpoint: &str, confusion: Option<PathBuf>, json: bool) -> Result<()> {
    let images = match images {
        Some(i) => i,
        None => TrainConfig::read(run_dir)?.images,
    };
    let report = evaluation::report(run_dir, &images, checkpoint)?;
    let png = confusion.unwrap_or_else(|| run_dir.join("confusion.png"));
    if let Some(val) = report.splits.iter().find(|e| e.split == "val") {
        let title = format!("{}: val, {checkpoint} checkpoint (epoch {})", run_dir.display(), report.epoch);
        confusion_png::write_png(&report.classes, &val.confusion, &title, &png)?;
    }
    if json {
        println!("{}", serde_json::json!({ "epoch": report.epoch, "classes": report.classes, "splits": report.splits, "confusion_png": png }));
        return Ok(());
    }
    let classes = &report.classes;
    let width = classes.iter().map(|c| c.len()).max().unwrap_or(0).max(8);
    for e in &report.splits {
        println!("{}: accuracy {:.2}%", e.split, e.accuracy);
        println!("  per class:");
        for (i, (c, acc)) in classes.iter().zip(e.per_class()).enumerate() {
            let acc = acc.map(|a| format!("{a:6.2}%")).unwrap_or_else(|| "      -".into());
            println!("  {c:>width$} {acc} ({} of {})", e.confusion[i][i], e.confusion[i].iter().sum::<usize>());
        }
        println!("  confusion (rows: true class, columns: predicted)");
        // Each column as wide as its class name, so long names do not run together.
        let cols: Vec<usize> = classes.iter().map(|c| c.len().max(7) + 1).collect();
        println!("  {:>width$} {}", "", classes.iter().zip(&cols).map(|(c, w)| format!("{c:>w$}")).collect::<String>());
        for (c, row) in classes.iter().zip(&e.confusion) {
            println!("  {c:>width$} {}", row.iter().zip(&cols).map(|(n, w)| format!("{n:>w$}")).collect::<String>());
        }
    }
    println!("confusion matrix (val): {}", png.display());
    Ok(())
}

/// `alexnet export`: the run's checkpoint `which` (latest, best, epoch-N) as a SavedModel.
pub(crate) fn export(run_dir: &Path, which: &str, out: &Path, force: bool) -> Result<()> {
    let e = exporting::export_at(run_dir, which, out, force)?;
    println!(
        "exported {} (epoch {}, classes [{}]) to {}",
        e.checkpoint.parent().unwrap_or(&e.checkpoint).display(),
        e.epoch,
        e.classes.join(", "),
        e.dir.display()
    );
    Ok(())
}

/// The predictor of `alexnet predict`, from whichever of a run (and the checkpoint named, if
/// any: its epoch is said on stderr), a SavedModel or weight files is given.
pub(crate) fn predictor(
    run: Option<(PathBuf, Option<String>)>,
    saved_model: Option<PathBuf>,
    weights: Option<PathBuf>,
    labels: Option<&Path>,
    lrn: LrnProfile,
    input: &InputArgs,
) -> Result<Predictor> {
    let labels = labels.map(prediction::read_labels).transpose()?;
    Ok(match (run, saved_model, weights) {
        (Some((run, None)), _, _) => Predictor::from_run(&run)?,
        (Some((run, Some(which))), _, _) => {
            let (p, epoch) = Predictor::from_run_at(&run, &which)?;
            eprintln!("predict: {} checkpoint {which} (epoch {epoch})", run.display());
            p
        }
        (None, Some(dir), _) => Predictor::from_saved_model(&dir, labels)?,
        (None, None, Some(dir)) => Predictor::from_weights(&dir, labels, lrn, &input.preprocess()?)?,
        (None, None, None) => bail!("give --run-dir, --saved-model or --weights"),
    })
}

/// `alexnet predict`: one line per image (or JSON object); an error when any image failed.
pub(crate) fn predict(images: &[PathBuf], predictor: Predictor, json: bool) -> Result<()> {
    let outcomes = predictor.predict_each(images)?;
    let failed = outcomes.iter().filter(|o| o.is_err()).count();
    for o in outcomes {
        match (o, json) {
            (Ok(p), true) => println!("{}", serde_json::to_string(&p)?),
            (Ok(p), false) => println!("{}\t{}\t{:.4}", p.path.display(), p.class, p.probability),
            (Err(b), true) => println!("{}", serde_json::json!({ "path": b.path, "error": b.reason })),
            (Err(b), false) => eprintln!("cannot classify {}: {}", b.path.display(), b.reason),
        }
    }
    if failed > 0 {
        bail!("{failed} of {} files could not be classified", images.len());
    }
    Ok(())
}

/// `alexnet devices`: the TensorFlow library and the devices it sees.
pub(crate) fn devices() -> Result<()> {
    runtime::describe_devices()?.iter().for_each(|l| println!("{l}"));
    Ok(())
}

/// The help heading of the flags a TensorFlow Serving command line uses, spelled as TF Serving
/// spells them (`--model_base_path=DIR`); the others are this server's own.
const TF_SERVING: &str = "TensorFlow Serving's flags (as tensorflow_model_server takes them)";

/// `alexnet serve`: TensorFlow Serving's flags under TF Serving's names (with underscores; the
/// hyphenated spellings of earlier versions still work), then this server's own.
#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// The folder of numbered SavedModel versions (exports/alexnet holding 1/, 2/, ...); the highest is served.
    #[arg(long = "model_base_path", alias = "model-base-path", help_heading = TF_SERVING)]
    model_base_path: PathBuf,
    /// The NAME in /v1/models/NAME and in a gRPC ModelSpec.
    #[arg(long = "model_name", alias = "model-name", default_value = "alexnet", help_heading = TF_SERVING)]
    model_name: String,
    /// TCP port of the gRPC API (PredictionService, ModelService, health; 0: any free port, printed on start).
    #[arg(long, default_value_t = 8500, help_heading = TF_SERVING)]
    port: u16,
    /// TCP port of the REST API: 0 turns REST off, as in TF Serving; `any` takes any free port
    /// (printed on start; not TF Serving's).
    #[arg(long = "rest_api_port", alias = "rest-api-port", default_value = "8501", value_parser = rest_port, help_heading = TF_SERVING)]
    rest_api_port: RestPort,
    /// Join concurrent requests into one session run (`--enable_batching` or `--enable_batching=true`).
    #[arg(long = "enable_batching", alias = "enable-batching", num_args = 0..=1, default_missing_value = "true",
          default_value = "false", value_parser = clap::builder::BoolishValueParser::new(), help_heading = TF_SERVING)]
    enable_batching: bool,
    /// With batching: TF Serving's BatchingParameters in text format (max_batch_size,
    /// batch_timeout_micros, num_batch_threads, max_enqueued_batches, allowed_batch_sizes); its
    /// fields override --max-batch-size, --batch-window-ms, --batch-threads, --max-enqueued-batches.
    #[arg(long = "batching_parameters_file", help_heading = TF_SERVING)]
    batching_parameters_file: Option<PathBuf>,
    /// TF Serving's MonitoringConfig in text format (`prometheus_config { enable: true, path: "/metrics" }`):
    /// where the Prometheus metrics are served, or `enable: false` for nowhere. Without it they are
    /// at /monitoring/prometheus/metrics (TF Serving serves none without it).
    #[arg(long = "monitoring_config_file", help_heading = TF_SERVING)]
    monitoring_config_file: Option<PathBuf>,
    /// Seconds between checks of the base path for a newer version: 0 checks once (at start),
    /// as in TF Serving. Overrides --poll-secs.
    #[arg(long = "file_system_poll_wait_seconds", help_heading = TF_SERVING)]
    file_system_poll_wait_seconds: Option<i64>,
    /// Milliseconds a REST request (reading its body included) may take: 504 beyond (408 when
    /// its body has not arrived by then). Overrides --request-timeout-secs.
    #[arg(long = "rest_api_timeout_in_ms", help_heading = TF_SERVING)]
    rest_api_timeout_in_ms: Option<u64>,
    /// Address to listen on (not TF Serving's, which listens on every interface: give 0.0.0.0 for that).
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// With batching: how long a batch waits for more requests, in milliseconds.
    #[arg(long, default_value_t = 5)]
    batch_window_ms: u64,
    /// With batching: images in one session run at most.
    #[arg(long, default_value_t = 32)]
    max_batch_size: usize,
    /// With batching: batches running at once.
    #[arg(long, default_value_t = 2)]
    batch_threads: usize,
    /// With batching: full batches waiting at most; a request beyond them gets 503 / UNAVAILABLE at once.
    #[arg(long, default_value_t = 100)]
    max_enqueued_batches: usize,
    /// Seconds between checks of the base path for a newer version.
    #[arg(long, default_value_t = 1.0)]
    poll_secs: f64,
    /// Instances in one request at most.
    #[arg(long, default_value_t = 64)]
    max_instances: usize,
    /// Pixels (width x height, from the image's header) of one image at most.
    #[arg(long, default_value_t = 25_000_000)]
    max_pixels: u64,
    /// Bytes of one REST request body or gRPC message at most (413 / INVALID_ARGUMENT beyond).
    #[arg(long, default_value_t = 32 << 20)]
    max_body_bytes: usize,
    /// Seconds a REST request (reading its body included) may take: 504 beyond (408 when its
    /// body has not arrived by then).
    #[arg(long, default_value_t = 30.0)]
    request_timeout_secs: f64,
}

/// `alexnet serve`: TensorFlow Serving's REST and gRPC APIs and the web page, until SIGINT or SIGTERM.
pub(crate) fn serve_http(a: ServeArgs) -> Result<()> {
    let secs = |s: f64, flag: &str| -> Result<Duration> {
        anyhow::ensure!(s.is_finite() && s > 0.0, "--{flag} must be a positive number of seconds");
        Ok(Duration::from_secs_f64(s))
    };
    anyhow::ensure!(
        a.max_batch_size >= 1 && a.batch_threads >= 1 && a.max_instances >= 1 && a.max_enqueued_batches >= 1,
        "--max-batch-size, --batch-threads, --max-enqueued-batches and --max-instances must be at least 1"
    );
    let defaults = BatchOptions {
        window: Duration::from_millis(a.batch_window_ms),
        max_batch_size: a.max_batch_size,
        threads: a.batch_threads,
        max_enqueued_batches: a.max_enqueued_batches,
        allowed_batch_sizes: vec![],
    };
    let batching = match (a.enable_batching, &a.batching_parameters_file) {
        (true, Some(file)) => Some(batching_params::read(file, defaults)?),
        (true, None) => Some(defaults),
        (false, Some(file)) => bail!("--batching_parameters_file {} needs --enable_batching", file.display()),
        (false, None) => None,
    };
    let rest_addr = match a.rest_api_port {
        RestPort::Off => None,
        RestPort::Any => Some(std::net::SocketAddr::new(a.host, 0)),
        RestPort::Port(p) => Some(std::net::SocketAddr::new(a.host, p)),
    };
    // TF Serving's 0 (and below) means the base path is read once, at start.
    let poll = match a.file_system_poll_wait_seconds {
        Some(s) if s <= 0 => None,
        Some(s) => Some(Duration::from_secs(s as u64)),
        None => Some(secs(a.poll_secs, "poll-secs")?),
    };
    let request_timeout = match a.rest_api_timeout_in_ms {
        Some(0) => bail!("--rest_api_timeout_in_ms must be at least 1"),
        Some(ms) => Duration::from_millis(ms),
        None => secs(a.request_timeout_secs, "request-timeout-secs")?,
    };
    server::serve(ServeOptions {
        base_path: a.model_base_path,
        model_name: a.model_name,
        rest_addr,
        grpc_addr: std::net::SocketAddr::new(a.host, a.port),
        batching,
        poll,
        limits: Limits { max_instances: a.max_instances, max_pixels: a.max_pixels },
        max_body_bytes: a.max_body_bytes,
        request_timeout,
        metrics_path: match &a.monitoring_config_file {
            Some(file) => metrics::read_monitoring_config(file)?,
            None => Some(metrics::DEFAULT_PATH.to_string()),
        },
    })
}

/// `--rest_api_port`: TF Serving's 0 is "no REST API", so a free port is asked for by name.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RestPort {
    Off,
    Any,
    Port(u16),
}

fn rest_port(s: &str) -> Result<RestPort, String> {
    match s {
        "any" => Ok(RestPort::Any),
        "0" => Ok(RestPort::Off),
        _ => s.parse().map(RestPort::Port).map_err(|_| format!("'{s}' is not a port: give a number (0 turns REST off) or 'any'")),
    }
}
