//! Gradients of the loss with respect to the network's variables: `Graph::add_gradients`
//! (TF_AddGradients) for the classifier, explicit gradient ops for the convolutional trunk.
//!
//! TensorFlow's C++ gradient for LRN (`LRNGradHelper` in cc/gradients/nn_grad.cc) builds its
//! LRNGrad op with the default attributes (depth_radius 5, bias 1, alpha 1, beta 0.5) instead of
//! the forward op's. With the Swift profile's alpha 1e-4 that gradient is simply wrong (the
//! finite-difference check in tests/gradient_check.rs fails on conv1 and conv2). So the backward
//! pass is built in two parts: add_gradients from the loss through the fc layers (dropout,
//! flatten) to the trunk's output (pool5), then the trunk's few gradient ops written out, layer
//! by layer: LRNGrad with the forward op's own attributes, MaxPoolGrad, and per conv layer
//! ReluGrad, BiasAddGrad and Conv2DBackpropFilter/Input (with a Cast back across every Cast of
//! a bf16 graph).
//!
//! Written out, ReluGrad reads ReLU's output rather than its input (the same mask): the C++
//! gradient reads the input, which keeps the BiasAdd output alive and stops grappler fusing
//! Conv2D + BiasAdd + ReLU into one oneDNN kernel. (An earlier version split add_gradients at
//! each LRN and seeded the part below with sum(y * StopGradient(dy)), since the crate (0.21)
//! frees add_gradients' dx array before TensorFlow reads it; those seed ops cost ~2% of a step.)

use anyhow::{Context, Result, bail, ensure};
use tensorflow::{DataType, Operation, Output, Scope, ops};

use crate::graph::model::{Layer, Network, layers};

/// Gradients in the order of `net.variables()`.
pub fn gradients(scope: &mut Scope, net: &Network, loss: Output) -> Result<Vec<Output>> {
    gradients_named(scope, net, loss, "", &[])
}

/// As `gradients`, with `name_prefix` ("replica_1/") before the names of the ops add_gradients
/// creates (their names are absolute, not relative to `scope`): one backward pass per replica.
/// The layers in `frozen` get no gradient: the result holds those of
/// `net.trained_variables(frozen)`, and the backward pass stops at the lowest trained layer, so
/// that a step with the convolutions frozen costs little more than the forward pass.
pub fn gradients_named(scope: &mut Scope, net: &Network, loss: Output, name_prefix: &str, frozen: &[&str]) -> Result<Vec<Output>> {
    let table = layers(&net.config);
    let variables = net.variables();
    let mut grads: Vec<Option<Output>> = vec![None; variables.len()];
    let trained = |layer: &str| !frozen.contains(&layer);

    // The classifier: add_gradients from the loss to the trained fc variables and (when a conv
    // layer trains) to the trunk's output.
    let first_fc = table.iter().position(|l| matches!(l, Layer::Fc { .. })).context("the network has no fc layer")?;
    ensure!(first_fc > 0, "the network has no convolutional trunk");
    let trunk_output = net.activations[first_fc].1.clone(); // activations[0] is the input
    let mut xs = vec![];
    let mut slots = vec![];
    for layer in table[first_fc..].iter().filter(|l| trained(l.name())) {
        let pos = net.vars.iter().position(|v| v.layer == layer.name()).with_context(|| format!("{} has no variables", layer.name()))?;
        xs.push(variables[2 * pos].output().clone());
        xs.push(variables[2 * pos + 1].output().clone());
        slots.extend([2 * pos, 2 * pos + 1]);
    }
    let trunk = &table[..first_fc];
    let lowest = trunk.iter().position(|l| matches!(l, Layer::Conv { .. }) && trained(l.name()));
    if lowest.is_some() {
        xs.push(trunk_output.clone());
    }
    ensure!(!xs.is_empty(), "every layer is frozen: nothing to train");
    let out = scope.graph_mut().add_gradients(Some(&format!("{name_prefix}gradients")), &[loss], &xs, None)?;
    for (slot, g) in slots.iter().zip(&out) {
        grads[*slot] = g.clone();
    }
    if let Some(lowest) = lowest {
        let d_trunk = out.last().cloned().flatten().context("no gradient reaches the convolutional layers")?;
        // The trunk, top to bottom, down to its lowest trained layer.
        backprop_layers(scope, net, &trunk[lowest..], trunk_output, d_trunk, &trained, &mut grads)?;
    }
    let frozen_var = |v: &tensorflow::Variable| !trained(v.name().split('/').next().unwrap_or_default());
    variables.iter().zip(grads).filter(|(v, _)| !frozen_var(v)).map(|(v, g)| g.with_context(|| format!("no gradient for {}", v.name()))).collect()
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

/// Backward through `layers` (conv, LRN and pool), given dL/dy for `y`, the last one's output.
/// Fills the entries of `grads` of the trained layers among them; stops at the first layer's
/// input (the image batch, or a frozen layer's output).
fn backprop_layers(
    scope: &mut Scope,
    net: &Network,
    layers: &[Layer],
    y: Output,
    dy: Output,
    trained: &dyn Fn(&str) -> bool,
    grads: &mut [Option<Output>],
) -> Result<()> {
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
                if trained(name) {
                    let d_b: Output = ops::BiasAddGrad::new().build(d_pre.clone(), s)?.into();
                    let w_shape = ops::shape(w.clone(), s)?;
                    let d_w: Output =
                        ops::Conv2DBackpropFilter::new().strides(strides.clone()).padding(padding.clone()).build(x.clone(), w_shape, d_pre.clone(), s)?.into();
                    let pos = net.vars.iter().position(|v| v.layer == name).with_context(|| format!("{name} has no variables"))?;
                    grads[2 * pos] = Some(to_variable(s, &w, d_w)?);
                    grads[2 * pos + 1] = Some(to_variable(s, &b, d_b)?);
                }
                if i == 0 {
                    return Ok(()); // nothing below wants the gradient of this layer's input
                }
                let x_shape = ops::shape(x.clone(), s)?;
                dy = ops::Conv2DBackpropInput::new().strides(strides).padding(padding).build(x_shape, w, d_pre, s)?.into();
                x
            }
            Layer::Lrn { .. } => {
                // The forward op's own attributes: the repair this module exists for.
                let lrn = y.operation.clone();
                expect_op(&lrn, "LRN", name)?;
                let x = input_of(&lrn, 0);
                dy = ops::LRNGrad::new()
                    .depth_radius(lrn.get_attr_int("depth_radius")?)
                    .bias(lrn.get_attr_float("bias")?)
                    .alpha(lrn.get_attr_float("alpha")?)
                    .beta(lrn.get_attr_float("beta")?)
                    .build(dy, x.clone(), y.clone(), s)?
                    .into();
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
            Layer::Fc { .. } => bail!("fc layer {name} inside the convolutional trunk"),
        };
        y = x;
    }
    Ok(())
}
