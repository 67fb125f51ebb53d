//! Prometheus metrics under TensorFlow Serving's names, at `/monitoring/prometheus/metrics` (TF
//! Serving's path; `--monitoring_config_file` may move or turn it off). TF Serving names its
//! metrics `/tensorflow/serving/...` and writes them for Prometheus with `/` as `:`:
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `:tensorflow:serving:request_count` | counter | model_name, status (OK or the gRPC code's name) |
//! | `:tensorflow:serving:request_latency` | histogram, microseconds | model_name, API, entrypoint (REST, GRPC) |
//! | `:tensorflow:serving:runtime_latency` | histogram, microseconds | model_name, API, runtime |
//! | `:tensorflow:serving:batching_session:input_batch_size` | histogram | model_name |
//! | `:tensorflow:serving:batching_session:processed_batch_size` | histogram | model_name |
//! | `:tensorflow:serving:batching_session:queuing_latency` | histogram, microseconds | model_name |
//! | `:tensorflow:cc:saved_model:load_latency` | counter, microseconds | model_path |
//!
//! One registry for the process ([`global`]), as Prometheus client libraries keep one: the
//! session runs, the batcher and the loader record into it without being handed it. The text
//! exposition is written by hand (a few counters and histograms need no crate).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

pub const REQUEST_COUNT: &str = ":tensorflow:serving:request_count";
pub const REQUEST_LATENCY: &str = ":tensorflow:serving:request_latency";
pub const RUNTIME_LATENCY: &str = ":tensorflow:serving:runtime_latency";
pub const INPUT_BATCH_SIZE: &str = ":tensorflow:serving:batching_session:input_batch_size";
pub const PROCESSED_BATCH_SIZE: &str = ":tensorflow:serving:batching_session:processed_batch_size";
pub const QUEUING_LATENCY: &str = ":tensorflow:serving:batching_session:queuing_latency";
pub const LOAD_LATENCY: &str = ":tensorflow:cc:saved_model:load_latency";

/// Label pairs, in the order printed.
type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Histogram {
    /// Counts per bucket of [`Registry::bounds`], not cumulative; the last is +Inf.
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Registry {
    counters: BTreeMap<&'static str, BTreeMap<Labels, f64>>,
    histograms: BTreeMap<&'static str, BTreeMap<Labels, Histogram>>,
}

/// TF Serving's latency buckets (exponential, 10 us x 1.8^i, 33 of them); batch sizes get powers of 2.
fn bounds(metric: &str) -> Vec<f64> {
    if metric.ends_with("batch_size") { (0..12).map(|i| f64::from(1u32 << i)).collect() } else { (0..33).map(|i| 10.0 * 1.8f64.powi(i)).collect() }
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

/// Adds `by` to a counter.
pub fn count(metric: &'static str, labels: Labels, by: f64) {
    let mut r = registry().lock().unwrap();
    *r.counters.entry(metric).or_default().entry(labels).or_default() += by;
}

/// Records one observation in a histogram.
pub fn observe(metric: &'static str, labels: Labels, value: f64) {
    let b = bounds(metric);
    let mut r = registry().lock().unwrap();
    let h = r.histograms.entry(metric).or_default().entry(labels).or_default();
    if h.buckets.is_empty() {
        h.buckets = vec![0; b.len() + 1];
    }
    h.buckets[b.iter().position(|&le| value <= le).unwrap_or(b.len())] += 1;
    h.sum += value;
    h.count += 1;
}

pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One answered request: its count by status, and its latency by API and entrypoint.
pub fn request(model: &str, api: &str, entrypoint: &str, status: &str, took: Duration) {
    count(REQUEST_COUNT, vec![("model_name", model.into()), ("status", status.into())], 1.0);
    observe(REQUEST_LATENCY, vec![("model_name", model.into()), ("API", api.into()), ("entrypoint", entrypoint.into())], micros(took));
}

/// Every metric in Prometheus' text exposition format (version 0.0.4).
pub fn exposition() -> String {
    let r = registry().lock().unwrap();
    let mut out = String::new();
    for (name, series) in &r.counters {
        let _ = writeln!(out, "# TYPE {name} counter");
        for (labels, v) in series {
            let _ = writeln!(out, "{name}{} {v}", label_text(labels, None));
        }
    }
    for (name, series) in &r.histograms {
        let _ = writeln!(out, "# TYPE {name} histogram");
        let b = bounds(name);
        for (labels, h) in series {
            let mut cumulative = 0;
            for (i, n) in h.buckets.iter().enumerate() {
                cumulative += n;
                let le = b.get(i).map_or("+Inf".to_string(), |x| format!("{x}"));
                let _ = writeln!(out, "{name}_bucket{} {cumulative}", label_text(labels, Some(&le)));
            }
            let _ = writeln!(out, "{name}_sum{} {}", label_text(labels, None), h.sum);
            let _ = writeln!(out, "{name}_count{} {}", label_text(labels, None), h.count);
        }
    }
    out
}

fn label_text(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// TF Serving's default path of the metrics page.
pub const DEFAULT_PATH: &str = "/monitoring/prometheus/metrics";

/// Where `--monitoring_config_file` puts the metrics page: TF Serving's MonitoringConfig in text
/// format, `prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }`; None when
/// it says `enable: false`. (The message is in TF Serving's server code, not the API wheel, so its
/// two fields are read by hand.)
pub fn read_monitoring_config(file: &std::path::Path) -> anyhow::Result<Option<String>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read the monitoring config {}", file.display()))?;
    let text: String = text.lines().map(|l| l.split('#').next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let after = |key: &str| -> Option<String> {
        let at = text.find(key)? + key.len();
        let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest.split(|c: char| c.is_whitespace() || c == ',' || c == '}').next().unwrap_or("").trim_matches('"').to_string())
    };
    anyhow::ensure!(text.contains("prometheus_config"), "{}: no prometheus_config {{ enable: true, path: \"...\" }} in it", file.display());
    match after("enable").as_deref() {
        Some("true") => {}
        Some("false") | None => return Ok(None),
        Some(other) => anyhow::bail!("{}: prometheus_config.enable must be true or false, not '{other}'", file.display()),
    }
    let path = after("path").filter(|p| !p.is_empty()).unwrap_or_else(|| DEFAULT_PATH.to_string());
    anyhow::ensure!(path.starts_with('/'), "{}: prometheus_config.path must start with '/' (got '{path}')", file.display());
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitoring_config_as_tf_serving_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let read = |text: &str| {
            let f = dir.path().join("monitoring.config");
            std::fs::write(&f, text).unwrap();
            read_monitoring_config(&f).map_err(|e| format!("{e:#}"))
        };
        assert_eq!(read("prometheus_config {\n  enable: true,\n  path: \"/metrics\"\n}\n").unwrap().as_deref(), Some("/metrics"));
        assert_eq!(read("prometheus_config { enable: true }").unwrap().as_deref(), Some(DEFAULT_PATH));
        assert_eq!(read("prometheus_config { enable: false, path: \"/metrics\" }").unwrap(), None);
        assert!(read("prometheus_config { enable: yes }").unwrap_err().contains("must be true or false"));
        assert!(read("enable: true").unwrap_err().contains("no prometheus_config"));
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        observe(":test:latency", vec![("model_name", "m\"x".into())], 15.0);
        observe(":test:latency", vec![("model_name", "m\"x".into())], 1e9);
        let text = exposition();
        assert!(text.contains("# TYPE :test:latency histogram"));
        assert!(text.contains(":test:latency_bucket{model_name=\"m\\\"x\",le=\"10\"} 0\n"));
        assert!(text.contains(":test:latency_bucket{model_name=\"m\\\"x\",le=\"18\"} 1\n"));
        assert!(text.contains(":test:latency_bucket{model_name=\"m\\\"x\",le=\"+Inf\"} 2\n"));
        assert!(text.contains(":test:latency_count{model_name=\"m\\\"x\"} 2\n"));
    }
}
