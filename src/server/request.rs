//! TensorFlow Serving's predict JSON, read and written
//! (<https://www.tensorflow.org/tfx/serving/api_rest>): a request names a `signature_name`
//! (default `serving_default`) and gives its input either as `instances` (row format: one value
//! per instance, or `{"input_name": value}`) or as `inputs` (columnar: the whole batch at once).
//! Binary strings are `{"b64": "..."}` objects. The answer mirrors the request: `predictions` (one
//! entry per instance; an object of outputs when the signature has several) or `outputs`.
//!
//! Every check that needs no model run happens here, so a bad request is refused before it
//! reaches a session, with a message that names the instance and the problem.

use base64::Engine;
use serde_json::{Map, Value};
use tensorflow::DataType;

use crate::data::encoded;
use crate::serve::export::SERVING_SIGNATURE;
use crate::server::error::ApiError;
use crate::server::model::{Column, Fetched, LoadedModel, Signature, TensorSpec, Values};

/// What a request may ask for.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Instances (rows) in one request.
    pub max_instances: usize,
    /// Width x height of an image, read from its header before any decoding.
    pub max_pixels: u64,
}

/// A parsed predict request.
#[derive(Debug)]
pub struct Predict {
    pub signature: String,
    pub input: Column,
    /// `inputs` given (answer with `outputs`) rather than `instances` (answer with `predictions`).
    pub columnar: bool,
}

pub fn parse_predict(body: &[u8], model: &LoadedModel, limits: &Limits) -> Result<Predict, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(ApiError::bad_request("the request must be a JSON object with \"instances\" or \"inputs\""));
    };
    let sig = signature(&obj, model)?;
    let (rows, columnar) = match (obj.remove("instances"), obj.remove("inputs")) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give either \"instances\" (row format) or \"inputs\" (columnar), not both")),
        (None, None) => return Err(ApiError::bad_request("missing \"instances\" or \"inputs\" in the request")),
        (Some(instances), None) => (instance_rows(instances, &sig.input, limits)?, false),
        (None, Some(inputs)) => (columnar_rows(inputs, &sig.input, limits)?, true),
    };
    let input = column(&rows, &sig.input, limits)?;
    Ok(Predict { signature: sig.name.clone(), input, columnar })
}

/// A classify request (`{"examples": [...]}`, each example an object of named inputs, or the
/// input's value) read as the predict request of the same rows in row format.
pub fn parse_classify(body: &[u8], model: &LoadedModel, limits: &Limits) -> Result<Predict, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(ApiError::bad_request("the request must be a JSON object with \"examples\""));
    };
    let examples = obj.remove("examples").ok_or_else(|| ApiError::bad_request("missing \"examples\" in the classify request"))?;
    let sig = signature(&obj, model)?;
    let rows = instance_rows(examples, &sig.input, limits)?;
    Ok(Predict { signature: sig.name.clone(), input: column(&rows, &sig.input, limits)?, columnar: false })
}

/// Classify's answer: `{"result": [[[class, score], ...], ...]}`, every class of every example,
/// from the `probabilities` output and the model's class names ("class N" without them).
pub fn classify_answer(outputs: &[Fetched], names: Option<&[String]>) -> Result<Value, ApiError> {
    let probs = outputs
        .iter()
        .find(|o| o.key == crate::serve::inference::PROBABILITIES && o.dims.len() == 2)
        .ok_or_else(|| ApiError::bad_request("this signature has no [N, classes] 'probabilities' output to classify with"))?;
    let Values::F32(p) = &probs.values else { return Err(ApiError::internal("probabilities are not float32")) };
    let k = probs.dims[1];
    let name = |i: usize| names.and_then(|n| n.get(i).cloned()).unwrap_or_else(|| format!("class {i}"));
    let result: Vec<Value> =
        p.chunks(k.max(1)).map(|row| Value::Array(row.iter().enumerate().map(|(i, &x)| serde_json::json!([name(i), float(x)])).collect())).collect();
    Ok(serde_json::json!({ "result": result }))
}

/// The signature the request names, or `serving_default`.
fn signature<'m>(obj: &Map<String, Value>, model: &'m LoadedModel) -> Result<&'m Signature, ApiError> {
    let name = match obj.get("signature_name") {
        None => SERVING_SIGNATURE,
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(ApiError::bad_request("\"signature_name\" must be a string")),
    };
    model.signatures.get(name).ok_or_else(|| {
        let have: Vec<&str> = model.signatures.keys().map(|s| s.as_str()).collect();
        ApiError::bad_request(format!("the model has no signature \"{name}\" (it has {})", have.join(", ")))
    })
}

/// The rows of `instances`: each instance is the input's value, or an object naming the input.
fn instance_rows(instances: Value, input: &TensorSpec, limits: &Limits) -> Result<Vec<Value>, ApiError> {
    let Value::Array(list) = instances else {
        return Err(ApiError::bad_request("\"instances\" must be a list, one entry per instance"));
    };
    check_count(list.len(), limits)?;
    list.into_iter().enumerate().map(|(i, inst)| named_input(inst, input, &format!("instance {i}"))).collect()
}

/// The rows of `inputs`: the input's whole batch, or an object naming the input.
fn columnar_rows(inputs: Value, input: &TensorSpec, limits: &Limits) -> Result<Vec<Value>, ApiError> {
    match named_input(inputs, input, "\"inputs\"")? {
        Value::Array(list) => {
            check_count(list.len(), limits)?;
            Ok(list)
        }
        _ => Err(ApiError::bad_request(format!("\"inputs\" must hold a list of values for input '{}', one per instance", input.key))),
    }
}

pub fn check_count(n: usize, limits: &Limits) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::bad_request("the request has no instances"));
    }
    if n > limits.max_instances {
        return Err(ApiError::bad_request(format!("{n} instances in one request, more than the limit of {} (--max-instances)", limits.max_instances)));
    }
    Ok(())
}

/// `value` itself, or its member named after the input when it is an object of named inputs
/// (a `{"b64": ...}` object is a value).
fn named_input(value: Value, input: &TensorSpec, what: &str) -> Result<Value, ApiError> {
    let Value::Object(mut obj) = value else { return Ok(value) };
    if obj.len() == 1 && obj.contains_key("b64") {
        return Ok(Value::Object(obj));
    }
    let others: Vec<String> = obj.keys().filter(|k| **k != input.key).map(|k| format!("'{k}'")).collect();
    if !others.is_empty() {
        return Err(ApiError::bad_request(format!("{what} names input {} that the signature does not have (its input is '{}')", others.join(", "), input.key)));
    }
    obj.remove(&input.key).ok_or_else(|| ApiError::bad_request(format!("{what} has no input '{}'", input.key)))
}

/// The rows as the input's tensor.
fn column(rows: &[Value], input: &TensorSpec, limits: &Limits) -> Result<Column, ApiError> {
    match input.dtype {
        DataType::String => rows.iter().enumerate().map(|(i, v)| image_bytes(v, i, limits)).collect::<Result<_, _>>().map(Column::Bytes),
        _ => float_rows(rows, input),
    }
}

/// One encoded image: base64-decoded, recognised from its header and within the pixel limit.
fn image_bytes(v: &Value, i: usize, limits: &Limits) -> Result<Vec<u8>, ApiError> {
    let bad = |m: String| ApiError::bad_request(format!("instance {i}: {m}"));
    let bytes = match v {
        Value::Object(o) => match o.get("b64") {
            Some(Value::String(s)) => base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| bad(format!("\"b64\" is not valid base64 ({e})")))?,
            _ => return Err(bad("binary input must be {\"b64\": \"<base64 string>\"}".into())),
        },
        Value::String(s) => s.as_bytes().to_vec(),
        _ => return Err(bad("expected an encoded image as {\"b64\": \"...\"}".into())),
    };
    check_image(&bytes, i, limits)?;
    Ok(bytes)
}

/// Instance `i`'s encoded image, recognised from its header and within the pixel limit: the
/// checks every image gets before it reaches a session, whichever API it came through.
pub fn check_image(bytes: &[u8], i: usize, limits: &Limits) -> Result<(), ApiError> {
    let bad = |m: String| ApiError::bad_request(format!("instance {i}: {m}"));
    if let Some((w, h)) = encoded::image_dimensions(bytes)
        && w as u64 * h as u64 > limits.max_pixels
    {
        return Err(bad(format!("the image is {w} x {h} pixels, over the limit of {} pixels (--max-pixels)", limits.max_pixels)));
    }
    encoded::check_whole(bytes).map_err(bad)
}

/// Nested lists of numbers, each row of the input's shape (after the batch dimension).
fn float_rows(rows: &[Value], input: &TensorSpec) -> Result<Column, ApiError> {
    let row_shape: Vec<usize> = match &input.shape {
        Some(dims) if dims.len() > 1 && dims[1..].iter().all(|d| d.is_some_and(|d| d > 0)) => dims[1..].iter().map(|d| d.unwrap() as usize).collect(),
        _ => nested_shape(&rows[0]),
    };
    let mut values = Vec::with_capacity(rows.len() * row_shape.iter().product::<usize>());
    for (i, row) in rows.iter().enumerate() {
        flatten(row, &row_shape, &mut values).map_err(|m| ApiError::bad_request(format!("instance {i} of input '{}': {m}", input.key)))?;
    }
    Ok(Column::Floats { values, rows: rows.len(), row_shape })
}

fn nested_shape(v: &Value) -> Vec<usize> {
    match v {
        Value::Array(a) => std::iter::once(a.len()).chain(a.first().map(nested_shape).unwrap_or_default()).collect(),
        _ => vec![],
    }
}

fn flatten(v: &Value, shape: &[usize], out: &mut Vec<f32>) -> Result<(), String> {
    match (v, shape) {
        (Value::Number(n), []) => {
            out.push(n.as_f64().unwrap_or(f64::NAN) as f32);
            Ok(())
        }
        (Value::Array(a), [n, rest @ ..]) if a.len() == *n => a.iter().try_for_each(|x| flatten(x, rest, out)),
        (Value::Array(a), [n, ..]) => Err(format!("a list of {} where the shape {shape:?} needs {n}", a.len())),
        (_, []) => Err(format!("expected a number, got {}", kind(v))),
        (_, _) => Err(format!("expected a list of shape {shape:?}, got {}", kind(v))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The answer: `{"predictions": [...]}` for row format, `{"outputs": ...}` for columnar; a
/// signature with one output gives its values, one with several an object of them.
pub fn answer(outputs: &[Fetched], columnar: bool) -> Value {
    if columnar {
        let value = match outputs {
            [one] => tensor_json(one),
            _ => Value::Object(outputs.iter().map(|o| (o.key.clone(), tensor_json(o))).collect()),
        };
        return serde_json::json!({ "outputs": value });
    }
    let rows = outputs.first().map_or(0, |o| o.dims[0]);
    let predictions: Vec<Value> = (0..rows)
        .map(|i| match outputs {
            [one] => row_json(one, i),
            _ => Value::Object(outputs.iter().map(|o| (o.key.clone(), row_json(o, i))).collect()),
        })
        .collect();
    serde_json::json!({ "predictions": predictions })
}

fn row_json(o: &Fetched, i: usize) -> Value {
    let row = o.rows(i, i + 1);
    nested(&row.values, &row.dims[1..], &mut 0)
}

fn tensor_json(o: &Fetched) -> Value {
    nested(&o.values, &o.dims, &mut 0)
}

/// Values from `*next` on, nested by `dims` (a scalar when `dims` is empty).
fn nested(values: &Values, dims: &[usize], next: &mut usize) -> Value {
    if let [n, rest @ ..] = dims {
        return Value::Array((0..*n).map(|_| nested(values, rest, next)).collect());
    }
    let i = *next;
    *next += 1;
    match values {
        Values::F32(v) => float(v[i]),
        Values::I64(v) => Value::from(v[i]),
        Values::Str(v) => Value::String(String::from_utf8_lossy(&v[i]).into_owned()),
    }
}

/// The shortest decimal that reads back as the same float32 (0.93, not 0.9300000071525574).
fn float(x: f32) -> Value {
    x.to_string().parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number)
}
