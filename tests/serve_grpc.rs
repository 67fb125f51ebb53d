//! `alexnet serve` over gRPC, as TensorFlow Serving's own Python client
//! (`tensorflow-serving-api==2.21.0`, installed by scripts/python-env) sees it. A small run is
//! trained for one epoch and exported; `tests/support/grpc_client.py` then calls Predict with
//! `tf.make_tensor_proto` of JPEG bytes (serving_default) and of a float batch (predict_tensor),
//! GetModelMetadata, ModelService.GetModelStatus, the gRPC health service, and requests that
//! must fail. The answers must equal `alexnet predict`'s (within 1e-6) and the REST API's.

mod common;
#[path = "common/http.rs"]
mod http;
#[path = "common/served.rs"]
mod served;

use std::path::{Path, PathBuf};
use std::process::Command;

use http::{Server, max_diff};
use serde_json::{Value, json};

const TOLERANCE: f32 = 1e-6;

/// What `tests/support/grpc_client.py` heard from the server on `port`.
fn official_client(port: u16, floats: &Path, images: &[PathBuf]) -> Value {
    let script = common::repo().join("tests/support/grpc_client.py");
    let out = Command::new(common::python())
        .arg(script)
        .arg(port.to_string())
        .arg("alexnet")
        .arg(floats)
        .args(images)
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the official client failed:\n{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout:.300}"))
}

fn matrix(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v:.200}"))
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect()
}

/// A signature tensor: (inputs/KEY or outputs/KEY, graph name, dtype, sizes).
type Tensor = (String, String, String, Vec<String>);

/// (signature, method name, tensors) of each signature, from REST's snake_case metadata or
/// protobuf's camelCase JSON of the same SignatureDefMap.
fn signatures(sigs: &Value, camel: bool) -> Vec<(String, String, Vec<Tensor>)> {
    let key = |snake: &'static str, camel_case: &'static str| if camel { camel_case } else { snake };
    let mut out = vec![];
    for (name, sig) in sigs.as_object().unwrap_or_else(|| panic!("no signatures in {sigs}")) {
        let mut tensors = vec![];
        for side in ["inputs", "outputs"] {
            for (k, t) in sig[side].as_object().unwrap() {
                let dims = t[key("tensor_shape", "tensorShape")]["dim"].as_array().unwrap().iter().map(|d| d["size"].as_str().unwrap().to_string()).collect();
                tensors.push((format!("{side}/{k}"), t["name"].as_str().unwrap().to_string(), t["dtype"].as_str().unwrap().to_string(), dims));
            }
        }
        tensors.sort();
        out.push((name.clone(), sig[key("method_name", "methodName")].as_str().unwrap().to_string(), tensors));
    }
    out.sort();
    out
}

#[test]
fn the_official_client_gets_the_answers_of_predict_and_rest() {
    let m = served::one_version("serve-grpc");
    let server = Server::start(&m.base, &[]);
    let floats = m.tmp.path().join("floats.json");
    let heard = official_client(server.grpc_port, &floats, &m.images);

    // serving_default on JPEG bytes: alexnet predict's probabilities, its argmax as class_ids.
    let probs = matrix(&heard["default"]["probabilities"]);
    assert!(max_diff(&probs, &m.probabilities) <= TOLERANCE, "gRPC {probs:?} vs alexnet predict {:?}", m.probabilities);
    let argmax: Vec<i64> = m.probabilities.iter().map(|p| if p[0] >= p[1] { 0 } else { 1 }).collect();
    let ids: Vec<i64> = heard["default"]["class_ids"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
    assert_eq!(ids, argmax);
    let names: Vec<&str> = argmax.iter().map(|&i| ["cat", "dog"][i as usize]).collect();
    assert_eq!(heard["default"]["classes"], json!(names));
    assert_eq!(heard["default_spec"], json!({"name": "alexnet", "version": "1", "signatureName": "serving_default"}));

    // predict_tensor on a float batch: the REST API's answer to the same numbers.
    let batch: Value = serde_json::from_str(&std::fs::read_to_string(&floats).unwrap()).unwrap();
    let rest = server.post_json("/v1/models/alexnet:predict", &json!({"signature_name": "predict_tensor", "inputs": batch}));
    assert_eq!(rest.status, 200, "{}", rest.json);
    for out in ["probabilities", "logits"] {
        let (grpc, rest) = (matrix(&heard["tensor"][out]), matrix(&rest.json["outputs"][out]));
        assert_eq!(grpc.len(), 2);
        assert!(max_diff(&grpc, &rest) <= TOLERANCE, "predict_tensor {out}: gRPC {grpc:?} vs REST {rest:?}");
    }

    // GetModelMetadata: the REST metadata's signatures, tensor by tensor.
    let rest = server.get("/v1/models/alexnet/metadata").json;
    let want = signatures(&rest["metadata"]["signature_def"]["signature_def"], false);
    assert_eq!(want.len(), 2, "{rest}");
    assert_eq!(signatures(&heard["metadata"]["signatureDef"], true), want);
    assert_eq!(heard["metadata_spec"]["version"], "1");

    // GetModelStatus: the REST status, line by line.
    let rest = server.get("/v1/models/alexnet").json;
    let lines = |v: &Value, code: &str| -> Vec<(String, String, String)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| (l["version"].as_str().unwrap().into(), l["state"].as_str().unwrap().into(), l["status"][code].as_str().unwrap_or("OK").into()))
            .collect()
    };
    assert_eq!(lines(&heard["status"], "errorCode"), lines(&rest["model_version_status"], "error_code"));
    assert_eq!(lines(&heard["status"], "errorCode"), [("1".to_string(), "AVAILABLE".to_string(), "OK".to_string())]);

    // grpc.health.v1: SERVING (field 1 = 1).
    assert_eq!(heard["health"], json!([8, 1]));

    // Requests that must fail, with TF Serving's codes and a message that says why.
    let errors = &heard["errors"];
    let starts = |k: &str, prefix: &str| {
        let e = errors[k].as_str().unwrap();
        assert!(e.starts_with(prefix), "{k}: expected {prefix}..., got {e}");
    };
    starts("classify", "UNIMPLEMENTED: Classify needs a signature that takes serialized tf.Example");
    starts("unknown_model", "NOT_FOUND: Servable not found for request: Latest(resnet)");
    starts("unknown_version", "NOT_FOUND: Servable not found for request: Specific(alexnet, 99)");
    starts("not_an_image", "INVALID_ARGUMENT: instance 0:");
    starts("float_for_images", "INVALID_ARGUMENT: input 'images' must be DT_STRING but is DT_FLOAT");
    // The server still answers after them.
    assert_eq!(server.get("/v1/models/alexnet").status, 200);
}
