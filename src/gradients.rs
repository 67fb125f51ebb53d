//! Gradients of the loss with respect to the network's variables: `Graph::add_gradients`
//! (TF_AddGradients) above the top LRN, explicit gradient ops below it.
//!
//! TensorFlow's C++ gradient for LRN (`LRNGradHelper` in cc/gradients/nn_grad.cc) builds its
//! LRNGrad op with the default attributes (depth_radius 5, bias 1, alpha 1, beta 0.5) instead of
//! the forward op's. With the Swift profile's alpha 1e-4 that gradient is simply wrong (the
//! finite-difference check in tests/gradient_check.rs fails on conv1 and conv2). So the backward
//! pass is built in segments split at each LRN: add_gradients from the loss down to the top
//! LRN's output, our own LRNGrad with the right attributes across each LRN, and below it the
//! few gradient ops of its conv and pool layers, written out (ReluGrad, BiasAddGrad,
//! Conv2DBackpropFilter/Input, MaxPoolGrad, and a Cast back across every Cast of a bf16 graph).
//!
//! Writing them out (instead of seeding add_gradients again below the LRN) costs no seed ops
//! (a product and sum over the LRN input, then a broadcast and product back, ~2% of a step), and
//! lets ReluGrad read ReLU's output rather than its input (the same mask): the C++ gradient reads
//! the input, which keeps the BiasAdd output alive and stops grappler fusing Conv2D + BiasAdd +
//! ReLU into one oneDNN kernel.

use anyhow::{Context, Result, bail, ensure};
use tensorflow::{DataType, Operation, Output, Scope, ops};

use crate::model::{Layer, LrnTap, Network, layers};

/// Gradients in the order of `net.variables()`.
pub fn gradients(scope: &mut Scope, net: &Network, loss: Output) -> Result<Vec<Output>> {
    let table = layers(&net.config);
    let lrn = net.config.lrn.params();
    let variables = net.variables();
    let mut grads: Vec<Option<Output>> = vec![None; variables.len()];

    // Segment boundaries: the index in `table` of every LRN layer.
    let lrn_positions: Vec<usize> = table.iter().enumerate().filter(|(_, l)| matches!(l, Layer::Lrn { .. })).map(|(i, _)| i).collect();
    let tap = |i: usize| -> Result<&LrnTap> {
        let name = table[i].name();
        net.lrns.iter().find(|t| t.layer == name).with_context(|| format!("LRN {name} not in the network"))
    };

    // Above the top LRN: add_gradients from the loss, to the variables and to that LRN's output.
    let top = lrn_positions.last().map_or(0, |&p| p + 1);
    let mut xs = vec![];
    let mut slots = vec![];
    for layer in &table[top..] {
        if let Some(pos) = net.vars.iter().position(|v| v.layer == layer.name()) {
            xs.push(variables[2 * pos].output().clone());
            xs.push(variables[2 * pos + 1].output().clone());
            slots.extend([2 * pos, 2 * pos + 1]);
        }
    }
    if let Some(&p) = lrn_positions.last() {
        xs.push(tap(p)?.output.clone());
    }
    let out = scope.graph_mut().add_gradients(Some(&format!("gradients_{}", table[top].name())), &[loss], &xs, None)?;
    for (slot, g) in slots.iter().zip(&out) {
        grads[*slot] = g.clone();
    }
    let mut d_out = match lrn_positions.last() {
        Some(&p) => Some(out.last().cloned().flatten().with_context(|| format!("no gradient reaches {}", table[p].name()))?),
        None => None,
    };

    // Down across each LRN, then through the layers between it and the next LRN (or the input).
    for (k, &p) in lrn_positions.iter().enumerate().rev() {
        let t = tap(p)?;
        // Float32 in either precision (bf16 graphs cast around LRN).
        let d_in: Output = ops::LRNGrad::new()
            .depth_radius(lrn.depth_radius)
            .bias(lrn.bias)
            .alpha(lrn.alpha)
            .beta(lrn.beta)
            .build(d_out.take().unwrap(), t.input.clone(), t.output.clone(), &mut scope.with_op_name(&format!("gradients_{}_LRNGrad", t.layer)))?
            .into();
        let start = if k == 0 { 0 } else { lrn_positions[k - 1] + 1 };
        let below = backprop_layers(scope, net, &table[start..p], t.input.clone(), d_in, &mut grads, k > 0)?;
        if k > 0 {
            let (y, dy) = below.context("no gradient below")?;
            let lower = tap(start - 1)?;
            ensure!(same(&y, &lower.output), "the gradient below {} does not reach {}'s output", t.layer, lower.layer);
            d_out = Some(dy);
        }
    }
    variables
        .iter()
        .zip(grads)
        .map(|(v, g)| g.with_context(|| format!("no gradient for {}", v.name())))
        .collect()
}

fn same(a: &Output, b: &Output) -> bool {
    a.index == b.index && a.operation.name().ok() == b.operation.name().ok()
}

fn input_of(op: &Operation, i: usize) -> Output {
    let (operation, index) = op.input(i);
    Output { operation, index: index as i32 }
}

fn expect_op(op: &Operation, ty: &str, layer: &str) -> Result<()> {
    let found = op.op_type()?;
    ensure!(found == ty, "{layer}: expected a {ty} op in the graph, found {found} ({})", op.name()?);
    Ok(())
}

/// (y, dL/dy) moved back across any Cast ops that produced y.
fn through_casts(scope: &mut Scope, mut y: Output, mut dy: Output) -> Result<(Output, Output)> {
    while y.operation.op_type()? == "Cast" {
        let src = input_of(&y.operation, 0);
        let dtype = src.operation.output_type(src.index as usize);
        dy = ops::Cast::new().DstT(dtype).build(dy, scope)?.into();
        y = src;
    }
    Ok((y, dy))
}

/// A parameter's gradient in the variable's type (float32): across the Cast of a bf16 graph.
fn to_variable(scope: &mut Scope, used: &Output, grad: Output) -> Result<Output> {
    match used.operation.op_type()?.as_str() {
        "Cast" => Ok(ops::Cast::new().DstT(DataType::Float).build(grad, scope)?.into()),
        _ => Ok(grad),
    }
}

/// Backward through `layers` (conv and pool only), given dL/dy for `y`, the last one's output.
/// Fills the layers' entries of `grads`; returns the first layer's input and its gradient
/// (None when `need_input` is false and the first layer is a conv: nothing is below it).
fn backprop_layers(
    scope: &mut Scope,
    net: &Network,
    layers: &[Layer],
    y: Output,
    dy: Output,
    grads: &mut [Option<Output>],
    need_input: bool,
) -> Result<Option<(Output, Output)>> {
    let (mut y, mut dy) = (y, dy);
    for (i, layer) in layers.iter().enumerate().rev() {
        let name = layer.name();
        let s = &mut scope.new_sub_scope(&format!("gradients_{name}"));
        (y, dy) = through_casts(s, y, dy)?;
        let x = match layer {
            Layer::Conv { .. } => {
                let relu = y.operation.clone();
                expect_op(&relu, "Relu", name)?;
                let bias_add = input_of(&relu, 0).operation;
                expect_op(&bias_add, "BiasAdd", name)?;
                let conv = input_of(&bias_add, 0).operation;
                expect_op(&conv, "Conv2D", name)?;
                let (x, w, b) = (input_of(&conv, 0), input_of(&conv, 1), input_of(&bias_add, 1));
                let strides = conv.get_attr_int_list("strides")?;
                let padding = conv.get_attr_string("padding")?;
                // ReLU's output masks like its input (both are > 0 at the same places).
                let d_pre: Output = ops::ReluGrad::new().build(dy, y.clone(), s)?.into();
                let d_b: Output = ops::BiasAddGrad::new().build(d_pre.clone(), s)?.into();
                let w_shape = ops::shape(w.clone(), s)?;
                let d_w: Output =
                    ops::Conv2DBackpropFilter::new().strides(strides.clone()).padding(padding.clone()).build(x.clone(), w_shape, d_pre.clone(), s)?.into();
                let pos = net.vars.iter().position(|v| v.layer == name).with_context(|| format!("{name} has no variables"))?;
                grads[2 * pos] = Some(to_variable(s, &w, d_w)?);
                grads[2 * pos + 1] = Some(to_variable(s, &b, d_b)?);
                if i == 0 && !need_input {
                    return Ok(None);
                }
                let x_shape = ops::shape(x.clone(), s)?;
                dy = ops::Conv2DBackpropInput::new().strides(strides).padding(padding).build(x_shape, w, d_pre, s)?.into();
                x
            }
            Layer::MaxPool { .. } => {
                let pool = y.operation.clone();
                expect_op(&pool, "MaxPool", name)?;
                let x = input_of(&pool, 0);
                dy = ops::MaxPoolGrad::new()
                    .ksize(pool.get_attr_int_list("ksize")?)
                    .strides(pool.get_attr_int_list("strides")?)
                    .padding(pool.get_attr_string("padding")?)
                    .build(x.clone(), y.clone(), dy, s)?
                    .into();
                x
            }
            _ => bail!("no explicit gradient for layer {name} (only conv and pool layers may sit below an LRN)"),
        };
        y = x;
    }
    let s = &mut scope.new_sub_scope("gradients_casts");
    Ok(Some(through_casts(s, y, dy)?))
}
