//! The inference graph, shared by `export` (which saves it) and `predict` (which runs it): a
//! batch of encoded images in, class probabilities, ids and names out.
//!
//! ```text
//! images [N] string ─ While(decode + preprocess one image) ─ input [N,S,S,3] ─ AlexNet ─ logits
//!                                                             (feedable)          ├ probabilities
//!                                                                                 ├ class_ids
//!                                                                                 └ classes
//! ```
//! `input` is a PlaceholderWithDefault of the decoded batch, so feeding it runs the network on
//! already-preprocessed tensors and skips the decoding. The decoding is the trainer's own
//! ([`data::preprocess_graph`]), inside a functional While loop because the decode ops take
//! one image at a time.

use anyhow::{Context, Result, ensure};
use tensorflow::{DataType, Function, FunctionOptions, Graph, Operation, Output, Scope, Shape, Tensor, ops};

use crate::data::images::{self as data, Decode, Preprocess};
use crate::graph::bytes::{self, Bytes};
use crate::graph::model::{self, ModelConfig, Network};

/// Names of the graph's inputs and outputs; the exported signatures use the same keys.
pub const IMAGES: &str = "images";
pub const INPUT: &str = "input";
pub const LOGITS: &str = "logits";
pub const PROBABILITIES: &str = "probabilities";
pub const CLASS_IDS: &str = "class_ids";
pub const CLASSES: &str = "classes";

const LOOP_COND: &str = "decode_images_cond";
const LOOP_BODY: &str = "decode_images_body";

pub struct InferenceGraph {
    /// Owns the graph.
    pub scope: Scope,
    pub net: Network,
    /// string [N]: encoded JPEG, PNG, GIF or BMP files.
    pub images: Output,
    /// float32 [N, S, S, 3]: the preprocessed batch.
    pub input: Output,
    pub logits: Output,
    /// float32 [N, classes]: softmax of the logits.
    pub probabilities: Output,
    /// int64 [N]: arg-max of the logits.
    pub class_ids: Output,
    /// string [N]: the names of class_ids.
    pub classes: Output,
    pub side: usize,
}

impl InferenceGraph {
    /// The graph for a model, its preprocessing and its class names (stored as a constant).
    pub fn build(model_cfg: &ModelConfig, p: &Preprocess, class_names: &[String]) -> Result<InferenceGraph> {
        ensure!(class_names.len() == model_cfg.classes, "{} class names for a model of {} classes", class_names.len(), model_cfg.classes);
        ensure!(p.size == model_cfg.input_size, "the preprocessing makes {0}x{0} images, the model takes {1}x{1}", p.size, model_cfg.input_size);
        let mut scope = Scope::new_root_scope();
        let s = &mut scope;
        let side = p.size as i64;
        let images: Output = ops::Placeholder::new().dtype(DataType::String).shape(Shape::from(Some(vec![None]))).build(&mut s.with_op_name(IMAGES))?.into();
        let decoded = decode_batch(s, images.clone(), p)?;
        let input: Output = ops::PlaceholderWithDefault::new()
            .dtype(DataType::Float)
            .shape(Shape::from(Some(vec![None, Some(side), Some(side), Some(3)])))
            .build(decoded, &mut s.with_op_name(INPUT))?
            .into();
        // Rate 0 by default: dropout is off unless someone feeds it.
        let dropout = model::dropout_inputs(s)?;
        let net = model::build(s, model_cfg, input.clone(), &dropout)?;
        let logits: Output = ops::identity(net.logits.clone(), &mut s.with_op_name(LOGITS))?.into();
        let probabilities: Output = ops::softmax(logits.clone(), &mut s.with_op_name(PROBABILITIES))?.into();
        let class_axis = ops::constant(1i32, s)?;
        let class_ids: Output = ops::ArgMax::new().output_type(DataType::Int64).build(logits.clone(), class_axis, &mut s.with_op_name(CLASS_IDS))?.into();
        let names = Tensor::<String>::new(&[class_names.len() as u64]).with_values(class_names)?;
        let names = ops::constant(names, &mut s.with_op_name("class_names"))?;
        let batch_axis = ops::constant(0i32, s)?;
        let classes: Output = ops::gather_v2(names, class_ids.clone(), batch_axis, &mut s.with_op_name(CLASSES))?.into();
        Ok(InferenceGraph { scope, net, images, input, logits, probabilities, class_ids, classes, side: p.size })
    }
}

/// A string tensor [N] of encoded images, to feed to `images`.
pub fn encoded_batch(encoded: &[Vec<u8>]) -> Tensor<Bytes> {
    bytes::tensor(encoded)
}

/// [N] encoded images -> [N, S, S, 3] preprocessed, one image per iteration of a functional
/// While loop that writes into a TensorList; loop variables: (i, list, images).
fn decode_batch(scope: &mut Scope, images: Output, p: &Preprocess) -> Result<Output> {
    let (cond, body) = loop_functions(p)?;
    {
        let mut g = scope.graph_mut();
        g.copy_function(&cond, None)?;
        g.copy_function(&body, None)?;
    }
    let s = &mut scope.new_sub_scope("decode");
    let side = p.size as i32;
    let element_shape = ops::constant(&[side, side, 3][..], s)?;
    let n = ops::Size::new().out_type(DataType::Int32).build(images.clone(), s)?;
    let list = ops::TensorListReserve::new().element_dtype(DataType::Float).build(element_shape.clone(), n, s)?;
    let zero = ops::constant(0i32, s)?;
    let while_op = {
        let name = s.get_unique_name_for_op("While");
        let mut g = s.graph_mut();
        let mut nd = g.new_operation("While", &name)?;
        nd.add_input_list(&[zero.into(), list.into(), images]);
        nd.set_attr_type_list("T", &[DataType::Int32, DataType::Variant, DataType::String])?;
        nd.set_attr_func_name("cond", LOOP_COND)?;
        nd.set_attr_func_name("body", LOOP_BODY)?;
        nd.set_attr_shape_list("output_shapes", &[Shape::from(Some(vec![])), Shape::from(Some(vec![])), Shape::from(Some(vec![None]))])?;
        nd.set_attr_int("parallel_iterations", 10)?;
        nd.finish()?
    };
    let list = Output { operation: while_op, index: 1 };
    Ok(ops::TensorListStack::new().element_dtype(DataType::Float).build(list, element_shape, &mut s.with_op_name("stack"))?.into())
}

/// The loop's condition (i < size(images)) and body (decode images[i] into list[i]).
fn loop_functions(p: &Preprocess) -> Result<(Function, Function)> {
    let cond = {
        let mut scope = Scope::new_root_scope();
        let s = &mut scope;
        let (i, list, images) = loop_args(s)?;
        let n = ops::Size::new().out_type(DataType::Int32).build(images.clone(), s)?;
        let keep_going: Output = ops::less(i.clone(), n, s)?.into();
        to_function(&scope.graph(), LOOP_COND, &[i, list, images], &[keep_going], &["keep_going"])?
    };
    let body = {
        let mut scope = Scope::new_root_scope();
        let s = &mut scope;
        let (i, list, images) = loop_args(s)?;
        let axis = ops::constant(0i32, s)?;
        let encoded = ops::gather_v2(images.clone(), i.clone(), axis, s)?;
        // DecodeImage reads every format; on JPEG it is DecodeJpeg with the same defaults (the
        // export test checks this against the trainer's own decoding).
        let pixels = data::preprocess_graph(s, encoded.into(), Decode::Any, p)?;
        let image = ops::Squeeze::new().squeeze_dims(vec![0]).build(pixels, s)?;
        let list_next = ops::TensorListSetItem::new().element_dtype(DataType::Float).build(list.clone(), i.clone(), image, s)?;
        let one = ops::constant(1i32, s)?;
        let i_next = ops::add(i.clone(), one, s)?;
        let images_next = ops::identity(images.clone(), s)?;
        to_function(
            &scope.graph(),
            LOOP_BODY,
            &[i, list, images],
            &[i_next.into(), list_next.into(), images_next.into()],
            &["i_next", "list_next", "images_next"],
        )?
    };
    Ok((cond, body))
}

fn loop_args(s: &mut Scope) -> Result<(Output, Output, Output)> {
    let arg = |s: &mut Scope, name: &str, dtype: DataType, shape: Shape| -> Result<Output> {
        Ok(ops::Placeholder::new().dtype(dtype).shape(shape).build(&mut s.with_op_name(name))?.into())
    };
    let i = arg(s, "i", DataType::Int32, Shape::from(Some(vec![])))?;
    let list = arg(s, "list", DataType::Variant, Shape::from(Some(vec![])))?;
    let images = arg(s, "images", DataType::String, Shape::from(Some(vec![None])))?;
    Ok((i, list, images))
}

fn to_function(graph: &Graph, name: &str, inputs: &[Output], outputs: &[Output], output_names: &[&str]) -> Result<Function> {
    graph
        .to_function(name, false, None::<&[&Operation]>, inputs, outputs, Some(output_names), &FunctionOptions::new(), None)
        .with_context(|| format!("cannot turn the graph of {name} into a function"))
}
