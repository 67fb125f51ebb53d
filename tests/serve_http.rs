//! `alexnet serve` over HTTP, as a TensorFlow Serving client sees it. One small run (4 images per
//! class and split) is trained for one epoch and exported as version 1, then resumed for a
//! second epoch and exported as version 2 (other weights). The tests check: requests in the
//! shapes of TF Serving's REST documentation answer `alexnet predict`'s probabilities within 1e-6;
//! version 2 is swapped in while clients hammer the server, without a failed request; each kind
//! of bad request gets a 4xx naming the problem and the server keeps serving; SIGTERM lets the
//! requests in flight finish and exits 0.

mod common;
#[path = "common/http.rs"]
mod http;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Server, b64, instances, max_diff, probabilities};
use serde_json::json;

const TOLERANCE: f32 = 1e-6;

/// Two exported versions of one run and `alexnet predict`'s answers for the test images.
struct Models {
    _tmp: tempfile::TempDir,
    v1: PathBuf,
    v2: PathBuf,
    images: Vec<PathBuf>,
    p1: Vec<Vec<f32>>,
    p2: Vec<Vec<f32>>,
}

fn models() -> &'static Models {
    static MODELS: OnceLock<Models> = OnceLock::new();
    MODELS.get_or_init(|| {
        let tmp = common::temp_dir("serve-http");
        let images = common::small_dataset(tmp.path(), 4);
        let run = tmp.path().join("run");
        let train = |epochs: &str, resume: bool| {
            let mut c = common::train_command(&images, Some(&common::weights()), &run);
            c.args(["--quiet", "--epochs", epochs]);
            if resume {
                c.arg("--resume");
            }
            ok(&mut c);
        };
        let export = |out: &Path| ok(common::alexnet().args(["export", "--run-dir"]).arg(&run).arg("--out").arg(out));
        let (v1, v2) = (tmp.path().join("exports/v1"), tmp.path().join("exports/v2"));
        train("1", false);
        export(&v1);
        train("2", true);
        export(&v2);
        let val = |class: &str| -> Vec<PathBuf> {
            let mut f: Vec<PathBuf> = std::fs::read_dir(images.join("val").join(class)).unwrap().map(|e| e.unwrap().path()).collect();
            f.sort();
            f
        };
        let files: Vec<PathBuf> = val("cat").into_iter().take(2).chain(val("dog").into_iter().take(2)).collect();
        let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
        let (p1, p2) = (http::cli_probabilities(&v1, &refs), http::cli_probabilities(&v2, &refs));
        assert!(max_diff(&p1, &p2) > 1e-4, "versions 1 and 2 answer alike: the swap test would say nothing");
        Models { _tmp: tmp, v1, v2, images: files, p1, p2 }
    })
}

fn ok(c: &mut Command) {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// A model base path with `versions` (1 and/or 2) copied in.
fn base_with(tmp: &Path, versions: &[u64]) -> PathBuf {
    let base = tmp.join("models/alexnet");
    std::fs::create_dir_all(&base).unwrap();
    for v in versions {
        let from = if *v == 1 { &models().v1 } else { &models().v2 };
        ok(Command::new("cp").arg("-r").arg(from).arg(base.join(v.to_string())));
    }
    base
}

fn image_refs(m: &Models) -> Vec<&Path> {
    m.images.iter().map(|p| p.as_path()).collect()
}

#[test]
fn tf_serving_requests_answer_predicts_probabilities() {
    let m = models();
    let tmp = common::temp_dir("serve-shapes");
    let server = Server::start(&base_with(tmp.path(), &[1]), &[]);

    let status = server.get("/v1/models/alexnet");
    assert_eq!(status.status, 200);
    assert_eq!(status.json, json!({"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}));
    let meta = server.get("/v1/models/alexnet/metadata").json;
    assert_eq!(meta["model_spec"]["version"], "1");
    let sigs = &meta["metadata"]["signature_def"]["signature_def"];
    assert_eq!(sigs["serving_default"]["inputs"]["images"]["dtype"], "DT_STRING");
    assert_eq!(sigs["predict_tensor"]["inputs"]["input"]["tensor_shape"]["dim"][1]["size"], "227");

    // Row format, as in TF Serving's docs: {"instances": [{"b64": "..."}, ...]}.
    let row = server.post_json("/v1/models/alexnet:predict", &instances(&image_refs(m)));
    assert_eq!(row.status, 200, "{}", row.json);
    assert_eq!(row.version, Some(1));
    let d = max_diff(&probabilities(&row), &m.p1);
    assert!(d <= TOLERANCE, "row format differs from alexnet predict by {d}");
    assert_eq!(row.json["predictions"][0]["classes"], if m.p1[0][0] >= m.p1[0][1] { "cat" } else { "dog" });

    // Named instances on a specific version, and columnar {"inputs": {"images": [...]}}.
    let named = json!({"instances": [{"images": {"b64": b64(&std::fs::read(&m.images[2]).unwrap())}}]});
    let v = server.post_json("/v1/models/alexnet/versions/1:predict", &named);
    assert!(max_diff(&probabilities(&v), &m.p1[2..3]) <= TOLERANCE, "{}", v.json);
    let columnar = json!({"inputs": {"images": instances(&image_refs(m))["instances"]}});
    let c = server.post_json("/v1/models/alexnet:predict", &columnar);
    assert_eq!(c.status, 200, "{}", c.json);
    let cols: Vec<Vec<f32>> = serde_json::from_value(c.json["outputs"]["probabilities"].clone()).unwrap();
    assert!(max_diff(&cols, &m.p1) <= TOLERANCE);
    assert_eq!(c.json["outputs"]["class_ids"].as_array().unwrap().len(), m.images.len());

    // :classify, as TF Serving answers it: [[class, score], ...] per example.
    let ex = json!({"examples": [{"images": {"b64": b64(&std::fs::read(&m.images[0]).unwrap())}}]});
    let cl = server.post_json("/v1/models/alexnet:classify", &ex);
    assert_eq!(cl.status, 200, "{}", cl.json);
    assert_eq!(cl.json["result"][0][1][0], "dog");
    assert!((cl.json["result"][0][0][1].as_f64().unwrap() as f32 - m.p1[0][0]).abs() <= TOLERANCE, "{}", cl.json);

    // predict_tensor on pixels: a single image of 227 x 227 x 3 zeros (the pixel mean).
    let zeros = json!({"signature_name": "predict_tensor", "instances": [vec![vec![[0.0f32; 3]; 227]; 227]]});
    let t = server.post_json("/v1/models/alexnet:predict", &zeros);
    assert_eq!(t.status, 200, "{}", t.json);
    let p: Vec<f32> = serde_json::from_value(t.json["predictions"][0]["probabilities"].clone()).unwrap();
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5 && t.json["predictions"][0]["logits"].as_array().unwrap().len() == 2);

    // The page and its activation pictures.
    let act = server.post_json("/v1/models/alexnet:activations", &instances(&image_refs(m)[..1]));
    assert_eq!(act.status, 200, "{}", act.json);
    let layers: Vec<&str> = act.json["layers"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(layers[..3], ["conv1", "norm1", "pool1"]);
    assert!(layers.contains(&"conv5") && layers.contains(&"fc8"));
    assert_eq!(act.json["class_names"], json!(["cat", "dog"]));
    assert!(max_diff(&probabilities(&act), &m.p1[..1]) <= TOLERANCE);
}

/// One answer a client saw: status, version header, probabilities.
type Seen = (u16, Option<u64>, Vec<Vec<f32>>);

#[test]
fn version_two_is_swapped_in_under_load() {
    let m = models();
    let tmp = common::temp_dir("serve-swap");
    let base = base_with(tmp.path(), &[1]);
    let server = Server::start(&base, &["--enable-batching", "--batch-window-ms", "5", "--poll-secs", "0.2"]);
    let stop = AtomicBool::new(false);
    let body = instances(&image_refs(m)[..1]);
    let answers: Vec<Vec<Seen>> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut seen = vec![];
                    // Until this client has had a few answers from version 2 (or 90 s).
                    let start = std::time::Instant::now();
                    while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(90) {
                        let a = server.post_json("/v1/models/alexnet:predict", &body);
                        let probs = if a.status == 200 { probabilities(&a) } else { vec![] };
                        seen.push((a.status, a.version, probs));
                        if seen.iter().filter(|x| x.1 == Some(2)).count() >= 3 {
                            break;
                        }
                    }
                    seen
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(800));
        // A broken folder first (reported, not served), then version 2, written as export writes
        // it: complete in a temporary folder, renamed into place.
        // Renamed into place whole, so the poller never sees the folder before its file (it would
        // report "no saved_model.pb" instead, and the retry would come after the check below).
        let broken = tmp.path().join("v3.partial");
        std::fs::create_dir_all(&broken).unwrap();
        std::fs::write(broken.join("saved_model.pb"), b"not a SavedModel").unwrap();
        std::fs::rename(&broken, base.join("3")).unwrap();
        assert!(common::poll_until(Duration::from_secs(30), Duration::from_millis(100), || server
            .get("/v1/models/alexnet/versions/3")
            .json
            .to_string()
            .contains("END")));
        std::fs::remove_dir_all(base.join("3")).unwrap();
        ok(Command::new("cp").arg("-r").arg(&m.v2).arg(tmp.path().join("v2.partial")));
        std::fs::rename(tmp.path().join("v2.partial"), base.join("2")).unwrap();
        let seen = clients.into_iter().map(|c| c.join().unwrap()).collect();
        stop.store(true, Ordering::Relaxed);
        seen
    });
    for (i, seen) in answers.iter().enumerate() {
        let failed: Vec<_> = seen.iter().filter(|a| a.0 != 200).collect();
        assert!(failed.is_empty(), "client {i}: {} of {} requests failed: {failed:?}", failed.len(), seen.len());
        let first_v2 = seen.iter().position(|a| a.1 == Some(2)).unwrap_or_else(|| panic!("client {i} never got an answer from version 2"));
        assert!(seen[first_v2..].iter().all(|a| a.1 == Some(2)), "client {i}: version 1 answered after version 2");
        for (_, v, probs) in seen {
            let want = if *v == Some(1) { &m.p1[..1] } else { &m.p2[..1] };
            assert!(max_diff(probs, want) <= TOLERANCE, "client {i}: the answer of version {v:?} is not that version's");
        }
    }
    // Every version seen, newest first: 3 failed (and says why), 2 served, 1 replaced.
    let status = server.get("/v1/models/alexnet").json;
    let lines: Vec<(&str, &str)> =
        status["model_version_status"].as_array().unwrap().iter().map(|l| (l["version"].as_str().unwrap(), l["state"].as_str().unwrap())).collect();
    assert_eq!(lines, [("3", "END"), ("2", "AVAILABLE"), ("1", "END")]);
    assert!(status["model_version_status"][0]["status"]["error_message"].as_str().unwrap().contains("cannot load the SavedModel"));
}

#[test]
fn bad_requests_get_4xx_and_the_server_keeps_serving() {
    let m = models();
    let tmp = common::temp_dir("serve-bad");
    let args = ["--max-instances", "4", "--max-body-bytes", "1000000", "--max-pixels", "4000000", "--enable-batching"];
    let server = Server::start(&base_with(tmp.path(), &[1]), &args);
    let predict = "/v1/models/alexnet:predict";
    let jpeg = std::fs::read(&m.images[0]).unwrap();
    // A PNG header of 5000 x 5000 pixels: refused before any decoding.
    let mut huge_png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    huge_png.extend(5000u32.to_be_bytes());
    huge_png.extend(5000u32.to_be_bytes());
    huge_png.extend([8, 2, 0, 0, 0, 0, 0, 0, 0]);
    let one = |bytes: &[u8]| json!({"instances": [{"b64": b64(bytes)}]}).to_string().into_bytes();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("malformed JSON", b"{\"instances\": [".to_vec(), 400, "malformed JSON"),
        ("not an object", b"[1, 2]".to_vec(), 400, "JSON object"),
        ("neither instances nor inputs", b"{\"examples\": []}".to_vec(), 400, "missing \"instances\" or \"inputs\""),
        ("wrong input name", json!({"instances": [{"image": {"b64": b64(&jpeg)}}]}).to_string().into_bytes(), 400, "'image'"),
        ("missing input", b"{\"instances\": [{}]}".to_vec(), 400, "has no input 'images'"),
        ("unknown signature", json!({"signature_name": "classify", "instances": [1]}).to_string().into_bytes(), 400, "no signature \"classify\""),
        ("not base64", b"{\"instances\": [{\"b64\": \"%%%\"}]}".to_vec(), 400, "not valid base64"),
        ("not an image", one(b"hello, world"), 400, "not a JPEG, PNG, GIF or BMP image"),
        ("image over the pixel limit", one(&huge_png), 400, "5000 x 5000 pixels, over the limit"),
        ("truncated JPEG", one(&jpeg[..jpeg.len() / 3]), 400, "truncated JPEG file"),
        ("too many instances", json!({"instances": vec![json!({"b64": "aGk="}); 5]}).to_string().into_bytes(), 400, "5 instances"),
        ("body over the limit", vec![b' '; 1_200_000], 413, "over the limit of 1000000 bytes"),
        ("pixels of the wrong shape", json!({"signature_name": "predict_tensor", "instances": [[[1.0, 2.0]]]}).to_string().into_bytes(), 400, "instance 0"),
    ];
    for (what, body, status, message) in &cases {
        let a = server.post(predict, body);
        assert_eq!(a.status, *status, "{what}: {}", a.json);
        let error = a.json["error"].as_str().unwrap_or_else(|| panic!("{what}: no error message in {}", a.json));
        assert!(error.contains(message), "{what}: the error {error:?} does not say {message:?}");
    }
    assert_eq!(server.post_json("/v1/models/resnet:predict", &instances(&[&m.images[0]])).status, 404);
    assert_eq!(server.post_json("/v1/models/alexnet/versions/7:predict", &instances(&[&m.images[0]])).status, 404);
    assert_eq!(server.get("/v1/models/alexnet/versions/7").status, 404);

    let good = server.post_json(predict, &instances(&image_refs(m)));
    assert_eq!(good.status, 200, "{}", good.json);
    assert!(max_diff(&probabilities(&good), &m.p1) <= TOLERANCE);

    // A client that promises a body and sends half of it is answered 408 and let go (a server
    // of its own: a 1 s timeout would also cut short a good request on a busy machine).
    let slow_tmp = common::temp_dir("serve-slow");
    let server = Server::start(&base_with(slow_tmp.path(), &[1]), &["--request-timeout-secs", "1"]);
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(slow, "POST {predict} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{{\"instances\"")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reply = String::new();
    let _ = slow.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 408") && reply.contains("--request-timeout-secs"), "slow client got {reply:?}");
    // One that never finishes its headers is disconnected.
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(silent, "POST {predict} HTTP/1.1\r\nHost: x\r\n").unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut rest = vec![];
    let closed = silent.read_to_end(&mut rest);
    assert!(
        closed.is_ok() || closed.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "a client stuck in its headers was not let go: {closed:?}"
    );
}

#[test]
fn sigterm_answers_the_requests_in_flight_and_exits_0() {
    let m = models();
    let tmp = common::temp_dir("serve-term");
    // A long batch window keeps the requests in flight when the signal comes.
    let mut server = Server::start(&base_with(tmp.path(), &[1]), &["--enable-batching", "--batch-window-ms", "1500"]);
    let body = instances(&image_refs(m)[..1]);
    let answers: Vec<u16> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..3).map(|_| s.spawn(|| server.post_json("/v1/models/alexnet:predict", &body).status)).collect();
        std::thread::sleep(Duration::from_millis(500));
        ok(Command::new("kill").args(["-TERM", &server.child.id().to_string()]));
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert_eq!(answers, [200, 200, 200], "requests in flight at SIGTERM were not answered");
    let mut exited = None;
    assert!(common::poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        exited = server.child.try_wait().unwrap();
        exited.is_some()
    }));
    assert_eq!(exited.unwrap().code(), Some(0), "alexnet serve exited with {exited:?}");
    assert!(common::poll_until(Duration::from_secs(5), Duration::from_millis(50), || server.stdout().contains("stopped")));
}
