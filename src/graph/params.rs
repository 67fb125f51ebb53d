//! A network's parameters: their host values ([`LayerParams`]) and, in a session, initialising its variables from host values, and
//! reading them back.

use anyhow::{Context, Result, ensure};
use ndarray::{Array1, ArrayD};
use tensorflow::{Session, SessionRunArgs, Tensor};

use crate::graph::model::Network;

/// One layer's parameters on the host, in TensorFlow's layout.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerParams {
    pub layer: &'static str,
    pub weights: ArrayD<f32>,
    pub biases: Array1<f32>,
}

/// Runs every layer's initialiser with the given values.
pub fn init_params(session: &Session, net: &Network, params: &[LayerParams]) -> Result<()> {
    let mut tensors = vec![];
    for (vars, p) in net.vars.iter().zip(params) {
        ensure!(vars.layer == p.layer, "parameters for {} given for layer {}", p.layer, vars.layer);
        let w_dims: Vec<u64> = p.weights.shape().iter().map(|&d| d as u64).collect();
        let w = Tensor::<f32>::new(&w_dims).with_values(p.weights.as_standard_layout().as_slice().unwrap())?;
        let b = Tensor::<f32>::new(&[p.biases.len() as u64]).with_values(p.biases.as_slice().unwrap())?;
        tensors.push((w, b));
    }
    let mut args = SessionRunArgs::new();
    for (vars, (w, b)) in net.vars.iter().zip(&tensors) {
        args.add_feed(&vars.weights_init, 0, w);
        args.add_feed(&vars.biases_init, 0, b);
        args.add_target(vars.weights.initializer());
        args.add_target(vars.biases.initializer());
    }
    session.run(&mut args).context("cannot initialise the model's variables")?;
    Ok(())
}

/// Reads every layer's parameters back to the host.
pub fn read_params(session: &Session, net: &Network) -> Result<Vec<LayerParams>> {
    let mut args = SessionRunArgs::new();
    let fetches: Vec<_> = net
        .vars
        .iter()
        .map(|v| {
            let w = args.request_fetch(&v.weights.output().operation, 0);
            let b = args.request_fetch(&v.biases.output().operation, 0);
            (w, b)
        })
        .collect();
    session.run(&mut args)?;
    let mut out = vec![];
    for (v, (w, b)) in net.vars.iter().zip(fetches) {
        let w: Tensor<f32> = args.fetch(w)?;
        let b: Tensor<f32> = args.fetch(b)?;
        let dims: Vec<usize> = w.dims().iter().map(|&d| d as usize).collect();
        out.push(LayerParams { layer: v.layer, weights: ndarray::ArrayD::from_shape_vec(dims, w.to_vec())?, biases: ndarray::Array1::from(b.to_vec()) });
    }
    Ok(out)
}
