//! TensorProtos in and out: a Predict request's input becomes the [`Column`] the REST API would
//! make from the same rows (strings are encoded images, checked as REST checks them; floats come
//! from `float_val` or the little-endian `tensor_content` that `tf.make_tensor_proto` writes), and
//! each [`Fetched`] output goes back in the typed value fields, as TF Serving answers by default.

use std::collections::BTreeMap;

use tensorflow::DataType;

use crate::proto::tensorflow::{self as tf, TensorProto, TensorShapeProto};
use crate::server::error::ApiError;
use crate::server::model::{Column, Fetched, Signature, TensorSpec, Values};
use crate::server::request::{self, Limits};

/// The signature's one input from a Predict request's `inputs`, checked and ready to run.
pub fn column(inputs: &BTreeMap<String, TensorProto>, sig: &Signature, limits: &Limits) -> Result<Column, ApiError> {
    let spec = &sig.input;
    if let Some(other) = inputs.keys().find(|k| **k != spec.key) {
        return Err(ApiError::bad_request(format!(
            "input tensor alias not found in signature: {other}. Inputs expected to be in the set {{{}}} (signature '{}')",
            spec.key, sig.name
        )));
    }
    let t = inputs.get(&spec.key).ok_or_else(|| ApiError::bad_request(format!("the request has no input '{}' (signature '{}')", spec.key, sig.name)))?;
    let want = proto_dtype(spec.dtype)?;
    if t.dtype != want {
        return Err(ApiError::bad_request(format!("input '{}' must be {} but is {}", spec.key, dtype_name(want), dtype_name(t.dtype))));
    }
    let dims = shape(t, spec)?;
    let rows = dims[0];
    request::check_count(rows, limits)?;
    match spec.dtype {
        DataType::String => {
            if dims.len() != 1 || t.string_val.len() != rows {
                return Err(ApiError::bad_request(format!(
                    "input '{}' must be a list of encoded images of shape [N]: shape {dims:?} with {} strings",
                    spec.key,
                    t.string_val.len()
                )));
            }
            t.string_val.iter().enumerate().try_for_each(|(i, b)| request::check_image(b, i, limits))?;
            Ok(Column::Bytes(t.string_val.clone()))
        }
        _ => Ok(Column::Floats { values: floats(t, &dims, &spec.key)?, rows, row_shape: dims[1..].to_vec() }),
    }
}

/// The tensor's dimensions, rows first, checked against the signature's known sizes.
fn shape(t: &TensorProto, spec: &TensorSpec) -> Result<Vec<usize>, ApiError> {
    let given = t.tensor_shape.as_ref().ok_or_else(|| ApiError::bad_request(format!("input '{}' has no tensor_shape", spec.key)))?;
    let dims: Vec<usize> = given.dim.iter().map(|d| usize::try_from(d.size)).collect::<Result<_, _>>().map_err(|_| {
        ApiError::bad_request(format!("input '{}' has a negative size in its shape {:?}", spec.key, given.dim.iter().map(|d| d.size).collect::<Vec<_>>()))
    })?;
    let fits = match &spec.shape {
        Some(want) => want.len() == dims.len() && want.iter().zip(&dims).all(|(w, d)| w.is_none_or(|w| w as usize == *d)),
        None => !dims.is_empty(),
    };
    if !fits || dims.is_empty() {
        let want = spec.shape.as_ref().map(|s| s.iter().map(|d| d.map_or("N".to_string(), |d| d.to_string())).collect::<Vec<_>>().join(", "));
        return Err(ApiError::bad_request(format!("input '{}' has shape {dims:?}; the signature takes [{}]", spec.key, want.unwrap_or_default())));
    }
    Ok(dims)
}

/// The float values of `t`, from `tensor_content` (packed little-endian, as numpy arrays are sent)
/// or `float_val`.
fn floats(t: &TensorProto, dims: &[usize], key: &str) -> Result<Vec<f32>, ApiError> {
    let n: usize = dims.iter().product();
    let values: Vec<f32> = if t.tensor_content.is_empty() {
        t.float_val.clone()
    } else {
        t.tensor_content.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    };
    if values.len() != n || (!t.tensor_content.is_empty() && t.tensor_content.len() != 4 * n) {
        return Err(ApiError::bad_request(format!("input '{key}' of shape {dims:?} needs {n} floats, the tensor holds {}", values.len())));
    }
    Ok(values)
}

/// One output as the TensorProto TF Serving answers: dtype, shape and the typed value field.
pub fn proto(f: &Fetched) -> TensorProto {
    let mut t = TensorProto { tensor_shape: Some(TensorShapeProto::of(&f.dims.iter().map(|&d| d as i64).collect::<Vec<_>>())), ..Default::default() };
    match &f.values {
        Values::F32(v) => {
            t.dtype = tf::DataType::DtFloat as i32;
            t.float_val = v.clone();
        }
        Values::I64(v) => {
            t.dtype = tf::DataType::DtInt64 as i32;
            t.int64_val = v.clone();
        }
        Values::Str(v) => {
            t.dtype = tf::DataType::DtString as i32;
            t.string_val = v.clone();
        }
    }
    t
}

/// A signature tensor as GetModelMetadata lists it (TensorInfo: name, dtype, shape).
pub fn tensor_info(t: &TensorSpec) -> tf::TensorInfo {
    let tensor_shape = match &t.shape {
        Some(dims) => TensorShapeProto::of(&dims.iter().map(|d| d.unwrap_or(-1)).collect::<Vec<_>>()),
        None => TensorShapeProto { dim: vec![], unknown_rank: true },
    };
    let name = format!("{}:{}", t.output.operation.name().unwrap_or_default(), t.output.index);
    tf::TensorInfo {
        encoding: Some(tf::tensor_info::Encoding::Name(name)),
        dtype: proto_dtype(t.dtype).unwrap_or(tf::DataType::DtInvalid as i32),
        tensor_shape: Some(tensor_shape),
    }
}

/// The protobuf DataType of the types a served signature can have.
fn proto_dtype(d: DataType) -> Result<i32, ApiError> {
    Ok(match d {
        DataType::Float => tf::DataType::DtFloat,
        DataType::Int64 => tf::DataType::DtInt64,
        DataType::String => tf::DataType::DtString,
        other => return Err(ApiError::internal(format!("the signature's input type {other} is not served over gRPC"))),
    } as i32)
}

fn dtype_name(d: i32) -> String {
    tf::DataType::try_from(d).map_or_else(|_| format!("data type {d}"), |t| t.as_str_name().to_string())
}
