//! `alexnet serve` for the HTTP tests: a server process on a free port, stopped on drop, and a
//! blocking JSON client that returns 4xx/5xx answers instead of failing on them.

#![allow(dead_code)]
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

pub struct Server {
    pub child: Child,
    /// The REST API's port.
    pub port: u16,
    /// The gRPC API's port.
    pub grpc_port: u16,
    /// The server's stdout after its first line (a thread drains it).
    stdout: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// `alexnet serve --model-base-path BASE --port 0 --rest_api_port any ARGS...`, once it listens.
    pub fn start(base: &Path, args: &[&str]) -> Server {
        let mut c = crate::common::alexnet();
        c.args(["serve", "--port", "0", "--rest_api_port", "any", "--model-base-path"]).arg(base).args(args);
        Server::spawn(c)
    }

    /// `alexnet serve ARGS...` as given (ports included), once it listens on both APIs.
    pub fn spawn(mut command: std::process::Command) -> Server {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start alexnet serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        // "alexnet serve: model 'alexnet' version 1 on http://127.0.0.1:PORT/ and grpc://127.0.0.1:PORT (...)"
        let after = |prefix: &str| line.split(prefix).nth(1).and_then(|r| r.split(['/', ' ']).next()).and_then(|p| p.parse().ok());
        let (Some(port), Some(grpc_port)) = (after("http://127.0.0.1:"), after("grpc://127.0.0.1:")) else {
            let _ = child.kill();
            panic!("alexnet serve did not start: {line:?}");
        };
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stdout.clone();
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = out.read_to_string(&mut rest);
            sink.lock().unwrap().push_str(&rest);
        });
        Server { child, port, grpc_port, stdout }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn get(&self, path: &str) -> Answer {
        send(agent().get(&self.url(path)).call())
    }

    /// The body of a GET that answers text (the metrics page).
    pub fn get_text(&self, path: &str) -> String {
        let mut r = agent().get(&self.url(path)).call().expect("the HTTP request failed");
        assert_eq!(r.status(), 200, "GET {path}");
        r.body_mut().read_to_string().unwrap()
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Answer {
        send(agent().post(&self.url(path)).content_type("application/json").send(body))
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.post(path, body.to_string().as_bytes())
    }

    /// What the server printed after its first line (complete once it has exited).
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status, the JSON body, and the `x-model-version` header.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub json: Value,
    pub version: Option<u64>,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(120))).build().into()
}

fn send(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    let mut r = r.expect("the HTTP request failed");
    let version = r.headers().get("x-model-version").and_then(|v| v.to_str().ok()?.parse().ok());
    let text = r.body_mut().with_config().limit(64 << 20).read_to_string().unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:.200}"));
    Answer { status: r.status().as_u16(), json, version }
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `{"instances": [{"b64": ...}, ...]}` of image files, as TF Serving's REST docs write it.
pub fn instances(files: &[&Path]) -> Value {
    json!({ "instances": files.iter().map(|f| json!({ "b64": b64(&std::fs::read(f).unwrap()) })).collect::<Vec<_>>() })
}

/// The `probabilities` of every prediction of a row-format answer.
pub fn probabilities(answer: &Answer) -> Vec<Vec<f32>> {
    let preds = answer.json["predictions"].as_array().unwrap_or_else(|| panic!("no predictions in {}", answer.json));
    preds.iter().map(|p| p["probabilities"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()).collect()
}

/// `alexnet predict --json --saved-model MODEL FILES...`: probabilities per file.
pub fn cli_probabilities(model: &Path, files: &[&Path]) -> Vec<Vec<f32>> {
    let out = crate::common::alexnet().args(["predict", "--json", "--saved-model"]).arg(model).args(files).output().unwrap();
    assert!(out.status.success(), "alexnet predict failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["probabilities"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect()
}

pub fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs())).fold(0.0, f32::max)
}
