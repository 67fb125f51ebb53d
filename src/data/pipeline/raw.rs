//! Raw-op helpers for tf.data: the crate's generated builders add list inputs (a dataset's
//! `components`, a map's `other_arguments`) as single inputs and set the `f` attribute as a
//! string, which TensorFlow refuses; here every dataset op is built from `new_operation` with
//! its inputs and attributes spelled out, and a map function is made by `Graph::to_function` and
//! copied into the graph with `Graph::copy_function`.

use anyhow::Result;
use tensorflow::{DataType, FunctionOptions, Graph, Operation, OperationDescription, Output, Scope, Shape};

/// One input of an op: a tensor, or a list of them (an op's list argument).
pub enum In {
    One(Output),
    List(Vec<Output>),
}

/// The element signature of a dataset: its components' types and shapes.
#[derive(Clone, Debug)]
pub struct Signature {
    pub types: Vec<DataType>,
    pub shapes: Vec<Shape>,
}

impl Signature {
    /// A string (a file's path, or its bytes), its label and its index, all scalars: the
    /// elements of the file list and of the encoded cache.
    pub fn string_label_index() -> Signature {
        let scalar = Shape::from(Some(vec![]));
        Signature { types: vec![DataType::String, DataType::Int32, DataType::Int32], shapes: vec![scalar.clone(), scalar.clone(), scalar] }
    }

    /// Each component's shape with a leading batch dimension of unknown size.
    pub fn batched(&self) -> Signature {
        let shapes = self
            .shapes
            .iter()
            .map(|s| {
                let mut dims = vec![None];
                dims.extend((0..s.dims().unwrap_or(0)).map(|i| s[i]));
                Shape::from(Some(dims))
            })
            .collect();
        Signature { types: self.types.clone(), shapes }
    }
}

/// A dataset op `op_type` on `device` ("": unplaced) with `inputs`, the element signature `sig`
/// (as `output_types` and `output_shapes`), and any further attributes set by `attrs`; returns its
/// variant output.
pub fn dataset_op(
    scope: &mut Scope,
    device: &str,
    op_type: &str,
    inputs: Vec<In>,
    sig: &Signature,
    attrs: impl FnOnce(&mut OperationDescription) -> Result<()>,
) -> Result<Output> {
    let op = raw_op_on(scope, device, op_type, inputs, |nd| {
        nd.set_attr_type_list("output_types", &sig.types)?;
        nd.set_attr_shape_list("output_shapes", &sig.shapes)?;
        attrs(nd)
    })?;
    Ok(op.output(0))
}

/// Any op built from its type name, inputs and attributes.
pub fn raw_op(scope: &mut Scope, op_type: &str, inputs: Vec<In>, attrs: impl FnOnce(&mut OperationDescription) -> Result<()>) -> Result<Operation> {
    raw_op_on(scope, "", op_type, inputs, attrs)
}

/// [`raw_op`] on `device` (the crate's Scope keeps its device to itself: a cluster's pipeline
/// names it here).
pub fn raw_op_on(
    scope: &mut Scope,
    device: &str,
    op_type: &str,
    inputs: Vec<In>,
    attrs: impl FnOnce(&mut OperationDescription) -> Result<()>,
) -> Result<Operation> {
    let name = scope.get_unique_name_for_op(op_type);
    let mut graph = scope.graph_mut();
    let mut nd = graph.new_operation(op_type, &name)?;
    nd.set_device(device)?;
    for input in inputs {
        match input {
            In::One(o) => nd.add_input(o),
            In::List(l) => nd.add_input_list(&l),
        }
    }
    attrs(&mut nd)?;
    Ok(nd.finish()?)
}

/// A function made of `body`'s graph (every op but the inputs' placeholders), named `name`,
/// copied into `graph`; its name is what an op's `f` attribute takes.
pub fn add_function(graph: &mut Graph, body: &Graph, name: &str, inputs: &[Output], outputs: &[Output]) -> Result<String> {
    let f = body.to_function::<&str>(name, false, None, inputs, outputs, None, &FunctionOptions::new(), None)?;
    graph.copy_function(&f, None)?;
    Ok(name.to_string())
}

/// A scalar placeholder of `dtype` named `name` in a function body.
pub fn arg(scope: &mut Scope, name: &str, dtype: DataType, dims: Option<Vec<Option<i64>>>) -> Result<Output> {
    Ok(tensorflow::ops::Placeholder::new().dtype(dtype).shape(Shape::from(dims)).build(&mut scope.with_op_name(name))?.into())
}
