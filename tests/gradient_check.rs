//! add_gradients against finite differences, on a small input through the real graph builder
//! (every layer, LRN included): the directional derivative of the loss along a random direction,
//! one layer's weights or biases at a time.

use alexnet::data::weights::{self, LoadOptions};
use alexnet::graph::model::{self, LrnProfile, ModelConfig};
use alexnet::graph::{params, scoring};
use alexnet::util::rng::Rng;
use tensorflow::{DataType, Scope, Session, SessionOptions, SessionRunArgs, Shape, Tensor, ops};

fn check(lrn: LrnProfile) {
    let cfg = ModelConfig { classes: 3, fc_width: 16, lrn, input_size: 67 };
    let mut scope = Scope::new_root_scope();
    let s = &mut scope;
    let input = ops::Placeholder::new().dtype(DataType::Float).shape(Shape::from(None)).build(&mut s.with_op_name("input")).unwrap();
    let labels = ops::Placeholder::new().dtype(DataType::Int32).shape(Shape::from(None)).build(&mut s.with_op_name("labels")).unwrap();
    let dropout = model::dropout_inputs(s).unwrap();
    let net = model::build(s, &cfg, input.clone().into(), &dropout).unwrap();
    let loss = scoring::softmax_loss(s, net.logits.clone(), labels.clone().into(), cfg.classes, &Default::default()).unwrap();
    let vars = net.variables();
    let grads = alexnet::graph::gradients::gradients(s, &net, loss.clone()).unwrap();
    let session = Session::new(&SessionOptions::new(), &s.graph()).unwrap();

    // Weights large enough that every layer matters: the Swift initialisation, fc layers scaled up.
    let specs = model::param_specs(&cfg);
    let (mut params, _) = weights::load(None, &specs, &LoadOptions { strict: false, seed: 5 }).unwrap();
    for p in params.iter_mut().filter(|p| p.layer.starts_with("fc")) {
        p.weights.mapv_inplace(|v| v * 20.0);
    }
    params::init_params(&session, &net, &params).unwrap();

    let mut rng = Rng::new(11, 0);
    let n = 4;
    let x: Vec<f32> = (0..n * 67 * 67 * 3).map(|_| (rng.uniform() * 255.0 - 128.0) as f32).collect();
    let x = Tensor::<f32>::new(&[n as u64, 67, 67, 3]).with_values(&x).unwrap();
    let y = Tensor::<i32>::new(&[n as u64]).with_values(&[0, 1, 2, 1]).unwrap();

    let run = |fetch_grads: bool| -> (f64, Vec<Vec<f32>>) {
        let mut args = SessionRunArgs::new();
        args.add_feed(&input, 0, &x);
        args.add_feed(&labels, 0, &y);
        let l = args.request_fetch(&loss.operation, loss.index);
        let g: Vec<_> = if fetch_grads { grads.iter().map(|g| args.request_fetch(&g.operation, g.index)).collect() } else { vec![] };
        session.run(&mut args).unwrap();
        let lv = args.fetch::<f32>(l).unwrap()[0] as f64;
        (lv, g.into_iter().map(|t| args.fetch::<f32>(t).unwrap().to_vec()).collect())
    };
    let (_, g) = run(true);
    let mut failures = vec![];

    for (vi, var) in vars.iter().enumerate() {
        let layer = vi / 2;
        let is_weights = vi % 2 == 0;
        let base: Vec<f32> = if is_weights { params[layer].weights.iter().copied().collect() } else { params[layer].biases.to_vec() };
        // Direction: mostly along the gradient (largest signal per step, fewest ReLU and max-pool
        // kinks crossed), plus a random part so a gradient pointing the wrong way still shows.
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let gv: Vec<f64> = g[vi].iter().map(|&x| x as f64).collect();
        let rv: Vec<f64> = (0..base.len()).map(|_| rng.normal()).collect();
        let (gn, rn) = (norm(&gv).max(1e-12), norm(&rv));
        let mixed: Vec<f64> = gv.iter().zip(&rv).map(|(a, b)| a / gn + 0.5 * b / rn).collect();
        let mn = norm(&mixed);
        let dir: Vec<f32> = mixed.iter().map(|x| (x / mn) as f32).collect();
        let analytic: f64 = g[vi].iter().zip(&dir).map(|(a, b)| *a as f64 * *b as f64).sum();
        // A step that moves the loss by about 2e-4: well above float32 rounding of the loss
        // (~1e-7), small enough to stay on one linear piece.
        let eps = (2e-4 / analytic.abs().max(1e-6)) as f32;
        let at = |sign: f32| {
            let mut p = params.clone();
            let moved: Vec<f32> = base.iter().zip(&dir).map(|(b, d)| b + sign * eps * d).collect();
            if is_weights {
                p[layer].weights = ndarray::ArrayD::from_shape_vec(p[layer].weights.shape(), moved).unwrap();
            } else {
                p[layer].biases = ndarray::Array1::from(moved);
            }
            params::init_params(&session, &net, &p).unwrap();
            run(false).0
        };
        let (lp, lm) = (at(1.0), at(-1.0));
        let numeric = (lp - lm) / (2.0 * eps as f64);
        params::init_params(&session, &net, &params).unwrap();
        let rel = (numeric - analytic).abs() / analytic.abs().max(numeric.abs()).max(1e-6);
        eprintln!("{:<16} analytic {analytic:>12.6e} numeric {numeric:>12.6e} rel error {rel:.2e}", var.name());
        if rel >= 1e-2 {
            failures.push(format!("{}: add_gradients {analytic} vs finite differences {numeric} (relative error {rel})", var.name()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn gradients_match_finite_differences_swift_lrn() {
    check(LrnProfile::Swift);
}

#[test]
fn gradients_match_finite_differences_caffe_lrn() {
    check(LrnProfile::Caffe);
}
