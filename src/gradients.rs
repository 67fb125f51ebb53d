//! Gradients of the loss with respect to the network's variables, through `Graph::add_gradients`
//! (TF_AddGradients), with one repair and one workaround.
//!
//! TensorFlow's C++ gradient for LRN (`LRNGradHelper` in cc/gradients/nn_grad.cc) builds its
//! LRNGrad op with the default attributes (depth_radius 5, bias 1, alpha 1, beta 0.5) instead of
//! the forward op's. With the Swift profile's alpha 1e-4 that gradient is simply wrong (the
//! finite-difference check in tests/gradient_check.rs fails on conv1 and conv2). So the backward
//! pass is built in segments split at each LRN: add_gradients from the loss down to the LRN's
//! output, our own LRNGrad with the right attributes across it, then add_gradients again from the
//! LRN's input, seeded with that gradient.

use anyhow::{Context, Result};
use tensorflow::{Output, Scope, ops};

use crate::model::{Layer, Network, layers};

/// Gradients in the order of `net.variables()`.
pub fn gradients(scope: &mut Scope, net: &Network, loss: Output) -> Result<Vec<Output>> {
    let table = layers(&net.config);
    let lrn = net.config.lrn.params();
    let variables = net.variables();
    let mut grads: Vec<Option<Output>> = vec![None; variables.len()];

    // Segment boundaries: the index in `table` of every LRN layer.
    let lrn_positions: Vec<usize> = table.iter().enumerate().filter(|(_, l)| matches!(l, Layer::Lrn { .. })).map(|(i, _)| i).collect();
    let mut y = loss;
    let mut dy: Option<Output> = None;
    let mut end = table.len();
    for segment in (0..=lrn_positions.len()).rev() {
        let start = if segment == 0 { 0 } else { lrn_positions[segment - 1] + 1 };
        // Variables of the layers in [start, end).
        let mut xs = vec![];
        let mut slots = vec![];
        for layer in &table[start..end] {
            if let Some(pos) = net.vars.iter().position(|v| v.layer == layer.name()) {
                xs.push(variables[2 * pos].output().clone());
                xs.push(variables[2 * pos + 1].output().clone());
                slots.extend([2 * pos, 2 * pos + 1]);
            }
        }
        // And the output of the LRN below the segment, to carry the gradient across it.
        let lrn_below = match segment {
            0 => None,
            _ => {
                let name = table[start - 1].name();
                Some(net.lrns.iter().find(|t| t.layer == name).with_context(|| format!("LRN {name} not in the network"))?)
            }
        };
        if let Some(tap) = lrn_below {
            xs.push(tap.output.clone());
        }
        let prefix = format!("gradients_{}", table[start].name());
        // Seeding add_gradients with `dx` would be the direct route, but the crate (0.21) frees
        // the dx array before TensorFlow reads it. The same gradients come from the scalar
        // sum(y * StopGradient(dy)), whose derivative with respect to y is dy.
        let target: Output = match &dy {
            None => y.clone(),
            Some(d) => {
                let s = &mut scope.new_sub_scope(&format!("{prefix}_seed"));
                let fixed = ops::stop_gradient(d.clone(), s)?;
                let product = ops::mul(y.clone(), fixed, s)?;
                let axes = ops::constant(&[0i32, 1, 2, 3][..], s)?;
                ops::sum(product, axes, s)?.into()
            }
        };
        let out = scope.graph_mut().add_gradients(Some(&prefix), &[target], &xs, None)?;
        for (slot, g) in slots.iter().zip(&out) {
            grads[*slot] = g.clone();
        }
        if let Some(tap) = lrn_below {
            let name = tap.layer;
            let d_out = out.last().cloned().flatten().with_context(|| format!("no gradient reaches {name}"))?;
            // Float32 in either precision (bf16 graphs cast around LRN).
            let (lrn_input, lrn_output) = (tap.input.clone(), tap.output.clone());
            let d_in = ops::LRNGrad::new()
                .depth_radius(lrn.depth_radius)
                .bias(lrn.bias)
                .alpha(lrn.alpha)
                .beta(lrn.beta)
                .build(d_out, lrn_input.clone(), lrn_output, &mut scope.with_op_name(&format!("gradients_{name}_LRNGrad")))?;
            y = lrn_input;
            dy = Some(d_in.into());
            end = start - 1;
        }
    }
    variables
        .iter()
        .zip(grads)
        .map(|(v, g)| g.with_context(|| format!("no gradient for {}", v.name())))
        .collect()
}
