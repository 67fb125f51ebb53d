//! The client side of `scripts/load-test`: N threads on loopback posting TensorFlow Serving
//! `:predict` requests (one image each, `{"instances": [{"b64": ...}]}`, cycling through the given
//! images) for T seconds after a warm-up, then one JSON line: requests/s, images/s, p50 and p99
//! latency, errors.
//!
//!     cargo run --release --example load_client -- URL CLIENTS SECONDS IMAGE...
//!
//! A `grpc://HOST:PORT` URL sends the same images as TensorFlow Serving's gRPC Predict instead
//! (a DT_STRING tensor of one encoded image, signature serving_default), one HTTP/2 connection
//! per client, through the tonic client generated from TF Serving's protos.

use std::time::{Duration, Instant};

use base64::Engine;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    assert!(args.len() >= 4, "usage: load_client URL CLIENTS SECONDS IMAGE...");
    let (url, clients, seconds) = (&args[0], args[1].parse::<usize>().unwrap(), args[2].parse::<f64>().unwrap());
    let bodies: Vec<Vec<u8>> = args[3..]
        .iter()
        .map(|p| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).unwrap());
            format!("{{\"instances\": [{{\"b64\": \"{b64}\"}}]}}").into_bytes()
        })
        .collect();
    let images: Vec<Vec<u8>> = args[3..].iter().map(|p| std::fs::read(p).unwrap()).collect();
    let load = |secs: f64| match url.strip_prefix("grpc://") {
        Some(addr) => run_grpc(addr, clients, secs, &images),
        None => run(url, clients, secs, &bodies),
    };
    // Warm-up: the first session runs are slow (allocations, kernel choices).
    load(3.0);
    let start = Instant::now();
    let results = load(seconds);
    let elapsed = start.elapsed().as_secs_f64();
    let mut ok: Vec<f64> = results.iter().filter(|r| r.0).map(|r| r.1).collect();
    ok.sort_by(f64::total_cmp);
    let pct = |q: f64| if ok.is_empty() { f64::NAN } else { ok[((ok.len() as f64 * q) as usize).min(ok.len() - 1)] * 1000.0 };
    let errors = results.len() - ok.len();
    println!(
        "{{\"clients\": {clients}, \"seconds\": {elapsed:.1}, \"requests\": {}, \"errors\": {errors}, \"requests_per_s\": {:.2}, \"images_per_s\": {:.2}, \"p50_ms\": {:.1}, \"p99_ms\": {:.1}}}",
        results.len(),
        ok.len() as f64 / elapsed,
        ok.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99)
    );
}

/// (succeeded, seconds) of every request the clients sent in `seconds`.
fn run(url: &str, clients: usize, seconds: f64, bodies: &[Vec<u8>]) -> Vec<(bool, f64)> {
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..clients)
            .map(|c| {
                s.spawn(move || {
                    let agent: ureq::Agent =
                        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(60))).build().into();
                    let mut out = vec![];
                    let mut i = c;
                    while Instant::now() < end {
                        let t = Instant::now();
                        let r = agent.post(url).content_type("application/json").send(&bodies[i % bodies.len()][..]);
                        let ok = r.is_ok_and(|mut r| r.status() == 200 && r.body_mut().read_to_string().is_ok_and(|b| b.contains("predictions")));
                        out.push((ok, t.elapsed().as_secs_f64()));
                        i += clients;
                    }
                    out
                })
            })
            .collect();
        threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
    })
}

/// The same over gRPC: (succeeded, seconds) of every Predict the clients sent in `seconds`.
fn run_grpc(addr: &str, clients: usize, seconds: f64, images: &[Vec<u8>]) -> Vec<(bool, f64)> {
    use alexnet::proto::tensorflow::serving::{ModelSpec, PredictRequest, prediction_service_client::PredictionServiceClient};
    use alexnet::proto::tensorflow::{DataType, TensorProto, TensorShapeProto};
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let request = |image: &Vec<u8>| PredictRequest {
        model_spec: Some(ModelSpec { name: "alexnet".into(), signature_name: "serving_default".into(), ..Default::default() }),
        inputs: [(
            "images".to_string(),
            TensorProto {
                dtype: DataType::DtString as i32,
                tensor_shape: Some(TensorShapeProto::of(&[1])),
                string_val: vec![image.clone()],
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    };
    let requests: Vec<PredictRequest> = images.iter().map(request).collect();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (requests, url) = (requests.clone(), format!("http://{addr}"));
                tokio::spawn(async move {
                    let mut client = PredictionServiceClient::connect(url).await.expect("connect to the gRPC server");
                    let mut out = vec![];
                    let mut i = c;
                    while Instant::now() < end {
                        let t = Instant::now();
                        let r = client.predict(requests[i % requests.len()].clone()).await;
                        let ok = r.is_ok_and(|r| r.get_ref().outputs.contains_key("probabilities"));
                        out.push((ok, t.elapsed().as_secs_f64()));
                        i += clients;
                    }
                    out
                })
            })
            .collect();
        let mut all = vec![];
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    })
}
