//! `alexnet serve` as TensorFlow Serving is run and operated: started by a TF Serving command line
//! (`--flag=value`, underscores, a batching parameters file), a full batching queue answering 503
//! at once, and deadlines answering 504 (REST) and DEADLINE_EXCEEDED (gRPC, from the official
//! client's `timeout=`), the Prometheus metrics page read by `prometheus_client`'s parser, and
//! warmup from `assets.extra/tf_serving_warmup_requests` written by Python TF.

mod common;
#[path = "common/http.rs"]
mod http;
#[path = "common/served.rs"]
mod served;

use std::process::Command;
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use http::{Server, instances, max_diff, probabilities};

fn model() -> &'static served::Model {
    static MODEL: OnceLock<served::Model> = OnceLock::new();
    MODEL.get_or_init(|| served::one_version("serve-ops"))
}

/// A batching parameters file in TF Serving's text format, in the model's scratch folder.
fn batching_file(name: &str, text: &str) -> String {
    let path = model().tmp.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn a_tf_serving_command_line_starts_it() {
    let m = model();
    let params = batching_file("batching.txt", "max_batch_size { value: 4 }\nbatch_timeout_micros { value: 2000 }\nnum_batch_threads { value: 2 }\n");
    let mut c = common::alexnet();
    // As tensorflow_model_server is run, but on free ports (tests run side by side).
    c.arg("serve").args([
        "--port=0",
        "--rest_api_port=any",
        "--model_name=alexnet",
        &format!("--model_base_path={}", m.base.display()),
        "--enable_batching=true",
        &format!("--batching_parameters_file={params}"),
        "--file_system_poll_wait_seconds=0",
        "--rest_api_timeout_in_ms=60000",
    ]);
    let server = Server::spawn(c);
    let files: Vec<&std::path::Path> = m.images.iter().map(|p| p.as_path()).collect();
    let a = server.post_json("/v1/models/alexnet:predict", &instances(&files));
    assert_eq!(a.status, 200, "{}", a.json);
    assert!(max_diff(&probabilities(&a), &m.probabilities) <= 1e-6);
    // max_batch_size 4 from the file: a request of 5 images is refused, as TF Serving refuses it.
    let five: Vec<&std::path::Path> = files.iter().cycle().take(5).copied().collect();
    let a = server.post_json("/v1/models/alexnet:predict", &instances(&five));
    assert_eq!(a.status, 400);
    assert!(a.json["error"].as_str().unwrap().contains("more than the batch size of 4 (max_batch_size)"), "{}", a.json);
    // A misspelt parameter stops the server with the file and the name.
    let bad = batching_file("bad.txt", "max_batch_size { value: 4 }\nbatch_timout_micros { value: 0 }\n");
    let out = common::alexnet()
        .args(["serve", "--port=0", "--rest_api_port=0", "--enable_batching", "--model_base_path"])
        .arg(&m.base)
        .arg(format!("--batching_parameters_file={bad}"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.txt") && err.contains("line 2: unknown batching parameter 'batch_timout_micros'"), "{err}");
}

#[test]
fn a_full_queue_answers_503_at_once() {
    let m = model();
    // One batch of one image at a time, and room for one more waiting.
    let params = batching_file(
        "one.txt",
        "max_batch_size { value: 1 }\nbatch_timeout_micros { value: 0 }\nnum_batch_threads { value: 1 }\nmax_enqueued_batches { value: 1 }\n",
    );
    let server = Server::start(&m.base, &["--enable_batching", "--batching_parameters_file", &params]);
    let body = instances(&[m.images[0].as_path()]);
    let clients = 12;
    let start = Barrier::new(clients);
    let answers: Vec<(u16, Duration, String)> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    let t = Instant::now();
                    let a = server.post_json("/v1/models/alexnet:predict", &body);
                    (a.status, t.elapsed(), a.json["error"].as_str().unwrap_or("").to_string())
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let full: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    let served: Vec<_> = answers.iter().filter(|a| a.0 == 200).collect();
    assert_eq!(full.len() + served.len(), clients, "only 200 and 503 expected: {answers:?}");
    assert!(!full.is_empty() && served.len() >= 2, "12 requests at once on a queue of 1 must overflow it: {answers:?}");
    assert!(full.iter().all(|a| a.2.contains("the batching queue is full")), "{full:?}");
    // At once: each refusal came before the last image was served (they did not wait their turn).
    let slowest = served.iter().map(|a| a.1).max().unwrap();
    assert!(full.iter().all(|a| a.1 < slowest), "503s waited: {answers:?}");
    // And the server goes on serving.
    assert_eq!(server.post_json("/v1/models/alexnet:predict", &body).status, 200);
}

#[test]
fn a_deadline_answers_504_and_deadline_exceeded() {
    let m = model();
    let server = Server::start(&m.base, &["--rest_api_timeout_in_ms", "150"]);
    // 24 full-size photos take seconds to decode and run: far past 150 ms.
    let many: Vec<&std::path::Path> = m.images.iter().cycle().take(24).map(|p| p.as_path()).collect();
    let a = server.post_json("/v1/models/alexnet:predict", &instances(&many));
    assert_eq!(a.status, 504, "{}", a.json);
    assert!(a.json["error"].as_str().unwrap().starts_with("Deadline exceeded"), "{}", a.json);
    assert_eq!(server.get("/v1/models/alexnet").status, 200);
    let page = server.get_text("/monitoring/prometheus/metrics");
    assert!(page.contains(":tensorflow:serving:request_count{model_name=\"alexnet\",status=\"DEADLINE_EXCEEDED\"} 1\n"), "{page}");

    // gRPC: the official client's timeout; the server's own answer (its message), not the client's.
    let script = format!(
        "import grpc, tensorflow as tf\n\
         from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc as s\n\
         channel = grpc.insecure_channel('127.0.0.1:{}')\n\
         grpc.channel_ready_future(channel).result(timeout=30)\n\
         stub = s.PredictionServiceStub(channel)\n\
         r = predict_pb2.PredictRequest()\n\
         r.model_spec.name = 'alexnet'\n\
         r.inputs['images'].CopyFrom(tf.make_tensor_proto([open(p, 'rb').read() for p in {:?}]))\n\
         try:\n    stub.Predict(r, timeout=0.5)\n    print('OK')\n\
         except grpc.RpcError as e:\n    print(e.code().name, e.details())\n",
        server.grpc_port,
        many.iter().map(|p| p.display().to_string()).collect::<Vec<_>>()
    );
    let out = Command::new(common::python()).args(["-c", &script]).env("TF_CPP_MIN_LOG_LEVEL", "3").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("DEADLINE_EXCEEDED Deadline exceeded: the call's deadline passed"), "{said}\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The value of the sample `name` whose labels include `want`, from prometheus_check.py's lines.
fn sample(samples: &[serde_json::Value], name: &str, want: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = samples.iter().filter(|s| s[0] == name && want.iter().all(|(k, v)| s[1][*k] == *v)).map(|s| s[2].as_f64().unwrap()).collect();
    assert!(found.len() == 1, "{} samples {name} {want:?} (expected one) in:\n{samples:#?}", found.len());
    found[0]
}

#[test]
fn metrics_parse_with_prometheus_client_and_count_the_requests_sent() {
    let m = model();
    let server = Server::start(&m.base, &["--enable_batching"]);
    let one = instances(&[m.images[0].as_path()]);
    for _ in 0..3 {
        assert_eq!(server.post_json("/v1/models/alexnet:predict", &one).status, 200);
    }
    let bad = serde_json::json!({"instances": [{"b64": "not base64!"}]});
    assert_eq!(server.post_json("/v1/models/alexnet:predict", &bad).status, 400);
    assert_eq!(server.post_json("/v1/models/alexnet/versions/7:predict", &one).status, 404);
    // 2 gRPC Predicts that succeed, 1 NOT_FOUND, then the page through Prometheus' parser.
    let script = common::repo().join("tests/support/prometheus_check.py");
    let out = Command::new(common::python())
        .arg(script)
        .args([server.port.to_string(), server.grpc_port.to_string()])
        .arg(&m.images[0])
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .unwrap();
    assert!(out.status.success(), "prometheus_check.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let samples: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // The page writes counters as TF Serving does (no `_total`); the parser names their samples `_total`.
    let count = ":tensorflow:serving:request_count_total";
    assert_eq!(sample(&samples, count, &[("model_name", "alexnet"), ("status", "OK")]), 5.0);
    assert_eq!(sample(&samples, count, &[("model_name", "alexnet"), ("status", "INVALID_ARGUMENT")]), 1.0);
    assert_eq!(sample(&samples, count, &[("model_name", "alexnet"), ("status", "NOT_FOUND")]), 2.0);
    let latency = ":tensorflow:serving:request_latency_count";
    assert_eq!(sample(&samples, latency, &[("API", "predict"), ("entrypoint", "REST")]), 5.0);
    assert_eq!(sample(&samples, latency, &[("API", "predict"), ("entrypoint", "GRPC")]), 3.0);
    // Batching: the batches held the 5 images that ran, one session run per batch.
    let batches = sample(&samples, ":tensorflow:serving:batching_session:input_batch_size_count", &[("model_name", "alexnet")]);
    assert_eq!(sample(&samples, ":tensorflow:serving:batching_session:input_batch_size_sum", &[("model_name", "alexnet")]), 5.0);
    assert_eq!(sample(&samples, ":tensorflow:serving:runtime_latency_count", &[("model_name", "alexnet")]), batches);
    assert!(sample(&samples, ":tensorflow:serving:batching_session:queuing_latency_count", &[("model_name", "alexnet")]) >= 5.0);
    let load = samples.iter().find(|s| s[0] == ":tensorflow:cc:saved_model:load_latency_total").expect("no load latency");
    assert!(load[1]["model_path"].as_str().unwrap().ends_with("alexnet/1") && load[2].as_f64().unwrap() > 0.0, "{load}");
}

/// Writes PredictionLogs (serving_default on one JPEG each, then predict_tensor on a zero image)
/// into `version`'s warmup file with Python TensorFlow and the official protos.
fn write_warmup(version: &std::path::Path, jpegs: &[&std::path::Path]) {
    let extra = version.join("assets.extra");
    std::fs::create_dir_all(&extra).unwrap();
    let script = common::repo().join("tests/support/write_warmup.py");
    served::ok(Command::new(common::python()).arg(script).arg(extra.join("tf_serving_warmup_requests")).args(jpegs).env("TF_CPP_MIN_LOG_LEVEL", "3"));
}

#[test]
fn warmup_records_run_before_the_version_is_available() {
    let m = model();
    let base = m.tmp.path().join("warm/alexnet");
    std::fs::create_dir_all(&base).unwrap();
    served::ok(Command::new("cp").arg("-r").arg(m.base.join("1")).arg(base.join("1")));
    write_warmup(&base.join("1"), &[m.images[0].as_path(), m.images[1].as_path()]);
    let server = Server::start(&base, &[]);
    // No request sent yet: the 3 session runs counted are the warmup's, done before the server
    // said it listens (and so before version 1 was AVAILABLE).
    let page = server.get_text("/monitoring/prometheus/metrics");
    let runs = page.lines().find(|l| l.starts_with(":tensorflow:serving:runtime_latency_count")).unwrap_or_else(|| panic!("no runtime latency:\n{page}"));
    assert!(runs.ends_with(" 3"), "{runs}");
    assert!(!page.contains(":tensorflow:serving:request_count"), "{page}");
    assert_eq!(server.get("/v1/models/alexnet").json["model_version_status"][0]["state"], "AVAILABLE");
    // A warmup file that is not TFRecords stops the load with the file's name.
    std::fs::write(base.join("1/assets.extra/tf_serving_warmup_requests"), b"not a TFRecord file at all").unwrap();
    let out = common::alexnet().args(["serve", "--port=0", "--rest_api_port=0", "--model_base_path"]).arg(&base).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("assets.extra/tf_serving_warmup_requests: length CRC mismatch"), "{err}");
}
