//! TensorFlow's protobuf messages, hand-written for prost, and their text format.
//!
//! Only the messages (and fields) this project reads or writes are declared; field numbers are
//! those of `tensorflow/core/framework/*.proto` (checked against TensorFlow 2.21's descriptors).
//! Fields the project has no use for but that a graph could carry (function definitions, debug
//! info, resource handles) are kept as opaque bytes, so they are never dropped silently:
//! [`to_text`] refuses a message that has them. To support one, declare its message here and
//! print it in the message's [`TextFormat`] impl.
//!
//! The text format is the one TensorFlow writes (`tf.io.write_graph(..., as_text=True)`): fields
//! in field-number order, proto3 defaults left out, map entries sorted by key, strings C-escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Result, bail};

/// tensorflow.GraphDef (graph.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphDef {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeDef>,
    /// TensorFlow writes an empty one for graphs without functions.
    #[prost(message, optional, tag = "2")]
    pub library: Option<FunctionDefLibrary>,
    /// Deprecated in favour of `versions`.
    #[prost(int32, tag = "3")]
    pub version: i32,
    #[prost(message, optional, tag = "4")]
    pub versions: Option<VersionDef>,
    /// GraphDebugInfo, not declared: opaque.
    #[prost(bytes = "vec", optional, tag = "5")]
    pub debug_info: Option<Vec<u8>>,
}

/// tensorflow.NodeDef (node_def.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeDef {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub op: String,
    #[prost(string, repeated, tag = "3")]
    pub input: Vec<String>,
    #[prost(string, tag = "4")]
    pub device: String,
    /// A BTreeMap: sorted keys, so printing is deterministic.
    #[prost(btree_map = "string, message", tag = "5")]
    pub attr: BTreeMap<String, AttrValue>,
    /// NodeDef.ExperimentalDebugInfo, not declared: opaque.
    #[prost(bytes = "vec", optional, tag = "6")]
    pub experimental_debug_info: Option<Vec<u8>>,
    /// Set by TensorFlow on some ops (Shape: a product of shape tensors).
    #[prost(message, optional, tag = "7")]
    pub experimental_type: Option<FullTypeDef>,
}

/// tensorflow.FunctionDefLibrary (function.proto). Its messages are not declared: opaque.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FunctionDefLibrary {
    /// FunctionDef.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub function: Vec<Vec<u8>>,
    /// GradientDef.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub gradient: Vec<Vec<u8>>,
    /// RegisteredGradient.
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub registered_gradients: Vec<Vec<u8>>,
}

/// tensorflow.FullTypeDef (full_type.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct FullTypeDef {
    #[prost(enumeration = "FullTypeId", tag = "1")]
    pub type_id: i32,
    #[prost(message, repeated, tag = "2")]
    pub args: Vec<FullTypeDef>,
    #[prost(oneof = "full_type_def::Attr", tags = "3, 4")]
    pub attr: Option<full_type_def::Attr>,
}

pub mod full_type_def {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Attr {
        #[prost(string, tag = "3")]
        S(String),
        #[prost(int64, tag = "4")]
        I(i64),
    }
}

/// tensorflow.FullTypeId (full_type.proto), all values of TensorFlow 2.21.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
#[allow(non_camel_case_types)]
pub enum FullTypeId {
    TFT_UNSET = 0,
    TFT_VAR = 1,
    TFT_ANY = 2,
    TFT_PRODUCT = 3,
    TFT_NAMED = 4,
    TFT_FOR_EACH = 20,
    TFT_CALLABLE = 100,
    TFT_BOOL = 200,
    TFT_UINT8 = 201,
    TFT_UINT16 = 202,
    TFT_UINT32 = 203,
    TFT_UINT64 = 204,
    TFT_INT8 = 205,
    TFT_INT16 = 206,
    TFT_INT32 = 207,
    TFT_INT64 = 208,
    TFT_HALF = 209,
    TFT_FLOAT = 210,
    TFT_DOUBLE = 211,
    TFT_COMPLEX64 = 212,
    TFT_COMPLEX128 = 213,
    TFT_STRING = 214,
    TFT_BFLOAT16 = 215,
    TFT_TENSOR = 1000,
    TFT_ARRAY = 1001,
    TFT_OPTIONAL = 1002,
    TFT_LITERAL = 1003,
    TFT_ENCODED = 1004,
    TFT_SHAPE_TENSOR = 1005,
    TFT_DATASET = 10102,
    TFT_RAGGED = 10103,
    TFT_ITERATOR = 10104,
    TFT_MUTEX_LOCK = 10202,
    TFT_LEGACY_VARIANT = 10203,
}

/// tensorflow.VersionDef (versions.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionDef {
    #[prost(int32, tag = "1")]
    pub producer: i32,
    #[prost(int32, tag = "2")]
    pub min_consumer: i32,
    #[prost(int32, repeated, tag = "3")]
    pub bad_consumers: Vec<i32>,
}

/// tensorflow.AttrValue (attr_value.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttrValue {
    #[prost(oneof = "attr_value::Value", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10")]
    pub value: Option<attr_value::Value>,
}

pub mod attr_value {
    use super::{NameAttrList, TensorProto, TensorShapeProto};

    // Variants as in the .proto; a NodeDef has a handful of attrs, so their size does not matter.
    #[allow(clippy::large_enum_variant)]
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(message, tag = "1")]
        List(ListValue),
        #[prost(bytes = "vec", tag = "2")]
        S(Vec<u8>),
        #[prost(int64, tag = "3")]
        I(i64),
        #[prost(float, tag = "4")]
        F(f32),
        #[prost(bool, tag = "5")]
        B(bool),
        #[prost(enumeration = "super::DataType", tag = "6")]
        Type(i32),
        #[prost(message, tag = "7")]
        Shape(TensorShapeProto),
        #[prost(message, tag = "8")]
        Tensor(TensorProto),
        #[prost(string, tag = "9")]
        Placeholder(String),
        #[prost(message, tag = "10")]
        Func(NameAttrList),
    }

    /// AttrValue.ListValue.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListValue {
        #[prost(bytes = "vec", repeated, tag = "2")]
        pub s: Vec<Vec<u8>>,
        #[prost(int64, repeated, tag = "3")]
        pub i: Vec<i64>,
        #[prost(float, repeated, tag = "4")]
        pub f: Vec<f32>,
        #[prost(bool, repeated, tag = "5")]
        pub b: Vec<bool>,
        #[prost(enumeration = "super::DataType", repeated, tag = "6")]
        pub r#type: Vec<i32>,
        #[prost(message, repeated, tag = "7")]
        pub shape: Vec<TensorShapeProto>,
        #[prost(message, repeated, tag = "8")]
        pub tensor: Vec<TensorProto>,
        #[prost(message, repeated, tag = "9")]
        pub func: Vec<NameAttrList>,
    }
}

/// tensorflow.NameAttrList (attr_value.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NameAttrList {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(btree_map = "string, message", tag = "2")]
    pub attr: BTreeMap<String, AttrValue>,
}

/// tensorflow.TensorShapeProto (tensor_shape.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<tensor_shape_proto::Dim>,
    #[prost(bool, tag = "3")]
    pub unknown_rank: bool,
}

pub mod tensor_shape_proto {
    /// TensorShapeProto.Dim; size -1 is unknown.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dim {
        #[prost(int64, tag = "1")]
        pub size: i64,
        #[prost(string, tag = "2")]
        pub name: String,
    }
}

/// tensorflow.TensorProto (tensor.proto).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    #[prost(enumeration = "DataType", tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    #[prost(int32, tag = "3")]
    pub version_number: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub tensor_content: Vec<u8>,
    #[prost(float, repeated, tag = "5")]
    pub float_val: Vec<f32>,
    #[prost(double, repeated, tag = "6")]
    pub double_val: Vec<f64>,
    #[prost(int32, repeated, tag = "7")]
    pub int_val: Vec<i32>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
    #[prost(float, repeated, tag = "9")]
    pub scomplex_val: Vec<f32>,
    #[prost(int64, repeated, tag = "10")]
    pub int64_val: Vec<i64>,
    #[prost(bool, repeated, tag = "11")]
    pub bool_val: Vec<bool>,
    #[prost(double, repeated, tag = "12")]
    pub dcomplex_val: Vec<f64>,
    #[prost(int32, repeated, tag = "13")]
    pub half_val: Vec<i32>,
    /// ResourceHandleProto, not declared: opaque.
    #[prost(bytes = "vec", repeated, tag = "14")]
    pub resource_handle_val: Vec<Vec<u8>>,
    /// VariantTensorDataProto, not declared: opaque.
    #[prost(bytes = "vec", repeated, tag = "15")]
    pub variant_val: Vec<Vec<u8>>,
    #[prost(uint32, repeated, tag = "16")]
    pub uint32_val: Vec<u32>,
    #[prost(uint64, repeated, tag = "17")]
    pub uint64_val: Vec<u64>,
    #[prost(bytes = "vec", tag = "18")]
    pub float8_val: Vec<u8>,
}

/// tensorflow.DataType (types.proto), all values of TensorFlow 2.21.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
#[allow(non_camel_case_types)]
pub enum DataType {
    DT_INVALID = 0,
    DT_FLOAT = 1,
    DT_DOUBLE = 2,
    DT_INT32 = 3,
    DT_UINT8 = 4,
    DT_INT16 = 5,
    DT_INT8 = 6,
    DT_STRING = 7,
    DT_COMPLEX64 = 8,
    DT_INT64 = 9,
    DT_BOOL = 10,
    DT_QINT8 = 11,
    DT_QUINT8 = 12,
    DT_QINT32 = 13,
    DT_BFLOAT16 = 14,
    DT_QINT16 = 15,
    DT_QUINT16 = 16,
    DT_UINT16 = 17,
    DT_COMPLEX128 = 18,
    DT_HALF = 19,
    DT_RESOURCE = 20,
    DT_VARIANT = 21,
    DT_UINT32 = 22,
    DT_UINT64 = 23,
    DT_FLOAT8_E5M2 = 24,
    DT_FLOAT8_E4M3FN = 25,
    DT_FLOAT8_E4M3FNUZ = 26,
    DT_FLOAT8_E4M3B11FNUZ = 27,
    DT_FLOAT8_E5M2FNUZ = 28,
    DT_INT4 = 29,
    DT_UINT4 = 30,
    DT_INT2 = 31,
    DT_UINT2 = 32,
    DT_FLOAT4_E2M1FN = 33,
    DT_FLOAT_REF = 101,
    DT_DOUBLE_REF = 102,
    DT_INT32_REF = 103,
    DT_UINT8_REF = 104,
    DT_INT16_REF = 105,
    DT_INT8_REF = 106,
    DT_STRING_REF = 107,
    DT_COMPLEX64_REF = 108,
    DT_INT64_REF = 109,
    DT_BOOL_REF = 110,
    DT_QINT8_REF = 111,
    DT_QUINT8_REF = 112,
    DT_QINT32_REF = 113,
    DT_BFLOAT16_REF = 114,
    DT_QINT16_REF = 115,
    DT_QUINT16_REF = 116,
    DT_UINT16_REF = 117,
    DT_COMPLEX128_REF = 118,
    DT_HALF_REF = 119,
    DT_RESOURCE_REF = 120,
    DT_VARIANT_REF = 121,
    DT_UINT32_REF = 122,
    DT_UINT64_REF = 123,
    DT_FLOAT8_E5M2_REF = 124,
    DT_FLOAT8_E4M3FN_REF = 125,
    DT_FLOAT8_E4M3FNUZ_REF = 126,
    DT_FLOAT8_E4M3B11FNUZ_REF = 127,
    DT_FLOAT8_E5M2FNUZ_REF = 128,
    DT_INT4_REF = 129,
    DT_UINT4_REF = 130,
    DT_INT2_REF = 131,
    DT_UINT2_REF = 132,
    DT_FLOAT4_E2M1FN_REF = 133,
}

// ---- text format ----

/// A message that can print itself in protobuf text format.
pub trait TextFormat {
    /// Writes the set fields, in field-number order.
    fn write_fields(&self, w: &mut TextWriter) -> Result<()>;
}

/// The message in text format, as TensorFlow writes `.pbtxt` files.
pub fn to_text<M: TextFormat>(message: &M) -> Result<String> {
    let mut w = TextWriter { out: String::new(), indent: 0 };
    message.write_fields(&mut w)?;
    Ok(w.out)
}

/// Accumulates text-format lines at the current nesting depth.
pub struct TextWriter {
    out: String,
    indent: usize,
}

impl TextWriter {
    fn line(&mut self, text: std::fmt::Arguments) {
        for _ in 0..self.indent {
            self.out.push_str("  ");
        }
        self.out.write_fmt(text).unwrap();
        self.out.push('\n');
    }

    /// `name: value` for integers and booleans.
    pub fn scalar(&mut self, name: &str, value: impl std::fmt::Display) {
        self.line(format_args!("{name}: {value}"));
    }

    pub fn float32(&mut self, name: &str, value: f32) {
        self.line(format_args!("{name}: {}", float_text(value as f64, value)));
    }

    pub fn float64(&mut self, name: &str, value: f64) {
        self.line(format_args!("{name}: {}", float_text(value, value)));
    }

    /// `name: "..."`, C-escaped (strings and bytes alike).
    pub fn bytes(&mut self, name: &str, value: &[u8]) {
        self.line(format_args!("{name}: \"{}\"", c_escape(value)));
    }

    /// `name: DT_FLOAT`; a value this build does not know is printed as its number.
    pub fn data_type(&mut self, name: &str, value: i32) {
        self.enumeration::<DataType>(name, value)
    }

    /// An enum value by name (the variants are named as in the .proto), else as its number.
    pub fn enumeration<E: TryFrom<i32> + std::fmt::Debug>(&mut self, name: &str, value: i32) {
        match E::try_from(value) {
            Ok(v) => self.line(format_args!("{name}: {v:?}")),
            Err(_) => self.scalar(name, value),
        }
    }

    /// `name { ... }`.
    pub fn message(&mut self, name: &str, m: &dyn TextFormat) -> Result<()> {
        self.line(format_args!("{name} {{"));
        self.indent += 1;
        m.write_fields(self)?;
        self.indent -= 1;
        self.line(format_args!("}}"));
        Ok(())
    }

    /// A map<string, AttrValue>: one `name { key: ... value { ... } }` per entry, sorted by key.
    pub fn attr_map(&mut self, name: &str, map: &BTreeMap<String, AttrValue>) -> Result<()> {
        for (key, value) in map {
            self.message(name, &MapEntry { key, value })?;
        }
        Ok(())
    }
}

struct MapEntry<'a> {
    key: &'a str,
    value: &'a AttrValue,
}

impl TextFormat for MapEntry<'_> {
    fn write_fields(&self, w: &mut TextWriter) -> Result<()> {
        w.bytes("key", self.key.as_bytes());
        w.message("value", self.value)
    }
}

/// The shortest text that reads back as the same value (Rust's `{:?}`: 0.0001, 1.0, 2e-5), and
/// text format's spelling of the non-finite.
fn float_text(v: f64, shortest: impl std::fmt::Debug) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{shortest:?}")
    }
}

/// Protobuf's C escaping: \n \r \t \" \' \\ by name, other bytes outside printable ASCII in octal.
pub fn c_escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            b'"' => s.push_str("\\\""),
            b'\'' => s.push_str("\\'"),
            b'\\' => s.push_str("\\\\"),
            32..=126 => s.push(b as char),
            _ => write!(s, "\\{b:03o}").unwrap(),
        }
    }
    s
}

fn refuse_opaque(what: &str, present: bool) -> Result<()> {
    if present {
        bail!("the message has a {what}, which src/proto.rs does not declare yet (add it there to print it)");
    }
    Ok(())
}

impl TextFormat for GraphDef {
    fn write_fields(&self, w: &mut TextWriter) -> Result<()> {
        for n in &self.node {
            w.message("node", n)?;
        }
        if let Some(l) = &self.library {
            w.message("library", l)?;
        }
        if self.version != 0 {
            w.scalar("version", self.version);
        }
        if let Some(v) = &self.versions {
            w.message("versions", v)?;
        }
        refuse_opaque("GraphDef.debug_info", self.debug_info.is_some())
    }
}

impl TextFormat for NodeDef {
    fn write_fields(&self, w: &mut TextWriter) -> Result<()> {
        if !self.name.is_empty() {
            w.bytes("name", self.name.as_bytes());
        }
        if !self.op.is_empty() {
            w.bytes("op", self.op.as_bytes());
        }
        for i in &self.input {
            w.bytes("input", i.as_bytes());
        }
        if !self.device.is_empty() {
            w.bytes("device", self.device.as_bytes());
        }
        w.attr_map("attr", &self.attr)?;
        refuse_opaque("NodeDef.experimental_debug_info", self.experimental_debug_info.is_some())?;
        if let Some(t) = &self.experimental_type {
            w.message("experimental_type", t)?;
        }
        Ok(())
    }
}

impl TextFormat for FunctionDefLibrary {
    fn write_fields(&self, _: &mut TextWriter) -> Result<()> {
        refuse_opaque("function library (FunctionDef)", !self.function.is_empty())?;
        refuse_opaque("function library (GradientDef)", !self.gradient.is_empty())?;
        refuse_opaque("function library (RegisteredGradient)", !self.registered_gradients.is_empty())
    }
}

impl TextFormat for FullTypeDef {
    fn write_fields(&self, w: &mut TextWriter) -> Result<()> {
        if self.type_id != 0 {
            w.enumeration::<FullTypeId>("type_id", self.type_id);
        }
        for a in &self.args {
            w.message("args", a)?;
        }
        match &self.attr {
            Some(full_type_def::Attr::S(s)) => w.bytes("s", s.as_bytes()),
            Some(full_type_def::Attr::I(i)) => w.scalar("i", i),
            None => {}
        }
        Ok(())
    }
}

impl TextFormat for VersionDef {
    fn write_fields(&self, w: &mut TextWriter) -> Result<()> {
        if self.producer != 0 {
            w.scalar("producer", self.producer);
        }
        if self.min_consumer != 0 {
            w.scalar("min_consumer", self.min_consumer);
        }
        for b in &self.bad_consumers {
            w.scalar("bad_consumers", b);
        }
        Ok(())
    }
}

impl TextFormat for AttrValue {
    fn write_fields(&self, w: &mut TextWriter) -> Result<()> {
        use attr_value::Value::*;
        match &self.value {
            None => {}
            Some(List(l)) => w.message("list", l)?,
            Some(S(s)) => w.bytes("s", s),
            Some(I(i)) => w.scalar("i", i),
            Some(F(f)) => w.float32("f", *f),
            Some(B(b)) => w.scalar("b", b),
            Some(Type(t)) => w.data_type("type", *t),
            Some(Shape(s)) => w.message("shape", s)?,
            Some(Tensor(t)) => w.message("tensor", t)?,
            Some(Placeholder(p)) => w.bytes("placeholder", p.as_bytes()),
            Some(Func(f)) => w.message("func", f)?,
        }
        Ok(())
    }
}

impl TextFormat for attr_value::ListValue {
    fn write_fields(&self, w: &mut TextWriter) -> Result<()> {
        for s in &self.s {
            w.bytes("s", s);
        }
        for i in &self.i {
            w.scalar("i", i);
        }
        for f in &self.f {
            w.float32("f", *f);
        }
        for b in &self.b {
            w.scalar("b", b);
        }
        for t in &self.r#type {
            w.data_type("type", *t);
        }
        for s in &self.shape {
            w.message("shape", s)?;
        }
        for t in &self.tensor {
            w.message("tensor", t)?;
        }
        for f in &self.func {
            w.message("func", f)?;
        }
        Ok(())
    }
}

impl TextFormat for NameAttrList {
    fn write_fields(&self, w: &mut TextWriter) -> Result<()> {
        if !self.name.is_empty() {
            w.bytes("name", self.name.as_bytes());
        }
        w.attr_map("attr", &self.attr)
    }
}

impl TextFormat for TensorShapeProto {
    fn write_fields(&self, w: &mut TextWriter) -> Result<()> {
        for d in &self.dim {
            w.message("dim", d)?;
        }
        if self.unknown_rank {
            w.scalar("unknown_rank", true);
        }
        Ok(())
    }
}

impl TextFormat for tensor_shape_proto::Dim {
    fn write_fields(&self, w: &mut TextWriter) -> Result<()> {
        if self.size != 0 {
            w.scalar("size", self.size);
        }
        if !self.name.is_empty() {
            w.bytes("name", self.name.as_bytes());
        }
        Ok(())
    }
}

impl TextFormat for TensorProto {
    fn write_fields(&self, w: &mut TextWriter) -> Result<()> {
        if self.dtype != 0 {
            w.data_type("dtype", self.dtype);
        }
        if let Some(s) = &self.tensor_shape {
            w.message("tensor_shape", s)?;
        }
        if self.version_number != 0 {
            w.scalar("version_number", self.version_number);
        }
        if !self.tensor_content.is_empty() {
            w.bytes("tensor_content", &self.tensor_content);
        }
        for v in &self.float_val {
            w.float32("float_val", *v);
        }
        for v in &self.double_val {
            w.float64("double_val", *v);
        }
        for v in &self.int_val {
            w.scalar("int_val", v);
        }
        for v in &self.string_val {
            w.bytes("string_val", v);
        }
        for v in &self.scomplex_val {
            w.float32("scomplex_val", *v);
        }
        for v in &self.int64_val {
            w.scalar("int64_val", v);
        }
        for v in &self.bool_val {
            w.scalar("bool_val", v);
        }
        for v in &self.dcomplex_val {
            w.float64("dcomplex_val", *v);
        }
        for v in &self.half_val {
            w.scalar("half_val", v);
        }
        refuse_opaque("TensorProto.resource_handle_val", !self.resource_handle_val.is_empty())?;
        refuse_opaque("TensorProto.variant_val", !self.variant_val.is_empty())?;
        for v in &self.uint32_val {
            w.scalar("uint32_val", v);
        }
        for v in &self.uint64_val {
            w.scalar("uint64_val", v);
        }
        if !self.float8_val.is_empty() {
            w.bytes("float8_val", &self.float8_val);
        }
        Ok(())
    }
}

impl TensorShapeProto {
    /// A shape of known rank; -1 for an unknown size.
    pub fn of(dims: &[i64]) -> TensorShapeProto {
        TensorShapeProto {
            dim: dims.iter().map(|&size| tensor_shape_proto::Dim { size, name: String::new() }).collect(),
            unknown_rank: false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SavedModel (tensorflow/core/protobuf/{saved_model,meta_graph,saver}.proto,
// tensorflow/core/framework/tensor_shape.proto), written by `export`.
//
// Why not the `tensorflow` crate's SavedModelBuilder: its SaverDef has no save_tensor_name and
// its "variables" collection holds VariableDefs with empty names, so Python TensorFlow 2.x
// cannot load what it writes. These messages let `export` write what TF1's Saver and
// SavedModelBuilder write.
// ---------------------------------------------------------------------------------------------

/// tensorflow.SavedModel
#[derive(Clone, PartialEq, prost::Message)]
pub struct SavedModel {
    #[prost(int64, tag = "1")]
    pub saved_model_schema_version: i64,
    #[prost(message, repeated, tag = "2")]
    pub meta_graphs: Vec<MetaGraphDef>,
}

/// tensorflow.MetaGraphDef
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetaGraphDef {
    #[prost(message, optional, tag = "1")]
    pub meta_info_def: Option<MetaInfoDef>,
    /// A serialized tensorflow.GraphDef, embedded as it is (`Graph::graph_def()`), so nothing
    /// in it (function library, versions) is lost in a round trip. On the wire a length-
    /// delimited bytes field and an embedded message are the same.
    #[prost(bytes = "vec", tag = "2")]
    pub graph_def: Vec<u8>,
    #[prost(message, optional, tag = "3")]
    pub saver_def: Option<SaverDef>,
    // collection_def (4) is left out: see `export`.
    #[prost(btree_map = "string, message", tag = "5")]
    pub signature_def: BTreeMap<String, SignatureDef>,
}

/// tensorflow.MetaGraphDef.MetaInfoDef
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetaInfoDef {
    #[prost(string, tag = "1")]
    pub meta_graph_version: String,
    #[prost(string, repeated, tag = "4")]
    pub tags: Vec<String>,
    #[prost(string, tag = "5")]
    pub tensorflow_version: String,
    #[prost(string, tag = "6")]
    pub tensorflow_git_version: String,
}

/// tensorflow.SaverDef
#[derive(Clone, PartialEq, prost::Message)]
pub struct SaverDef {
    /// The string scalar fed with the checkpoint prefix when saving or restoring.
    #[prost(string, tag = "1")]
    pub filename_tensor_name: String,
    /// Fetched to save: the filename, after the save op has run.
    #[prost(string, tag = "2")]
    pub save_tensor_name: String,
    #[prost(string, tag = "3")]
    pub restore_op_name: String,
    #[prost(int32, tag = "4")]
    pub max_to_keep: i32,
    #[prost(bool, tag = "5")]
    pub sharded: bool,
    #[prost(float, tag = "6")]
    pub keep_checkpoint_every_n_hours: f32,
    /// tensorflow.SaverDef.CheckpointFormatVersion: LEGACY = 0, V1 = 1, V2 = 2.
    #[prost(int32, tag = "7")]
    pub version: i32,
}

/// SaverDef.CheckpointFormatVersion.V2: the format SaveV2/RestoreV2 read and write.
pub const CHECKPOINT_V2: i32 = 2;

/// tensorflow.SignatureDef
#[derive(Clone, PartialEq, prost::Message)]
pub struct SignatureDef {
    #[prost(btree_map = "string, message", tag = "1")]
    pub inputs: BTreeMap<String, TensorInfo>,
    #[prost(btree_map = "string, message", tag = "2")]
    pub outputs: BTreeMap<String, TensorInfo>,
    #[prost(string, tag = "3")]
    pub method_name: String,
}

/// The method name of a Predict signature (TensorFlow Serving's `:predict`).
pub const PREDICT_METHOD_NAME: &str = "tensorflow/serving/predict";

/// tensorflow.TensorInfo, a dense tensor (`name`, field 1 of the `encoding` oneof).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorInfo {
    /// "op:index".
    #[prost(string, tag = "1")]
    pub name: String,
    /// tensorflow.DataType (DT_FLOAT = 1, ...).
    #[prost(int32, tag = "2")]
    pub dtype: i32,
    #[prost(message, optional, tag = "3")]
    pub tensor_shape: Option<TensorShapeProto>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn escapes_like_protobuf() {
        assert_eq!(c_escape(b"a\"b'c\\d\n\x00\xff"), "a\\\"b\\'c\\\\d\\n\\000\\377");
    }

    #[test]
    fn floats_print_their_shortest_form() {
        let f = |v: f32| float_text(v as f64, v);
        assert_eq!(f(1e-4), "0.0001");
        assert_eq!(f(2e-5), "2e-5");
        assert_eq!(f(0.75), "0.75");
        assert_eq!(f(1.0), "1.0");
        assert_eq!(f(f32::NEG_INFINITY), "-inf");
    }

    #[test]
    fn node_round_trips_and_prints_sorted_attrs() {
        let mut attr = BTreeMap::new();
        attr.insert("T".to_string(), AttrValue { value: Some(attr_value::Value::Type(DataType::DT_FLOAT as i32)) });
        attr.insert(
            "strides".to_string(),
            AttrValue { value: Some(attr_value::Value::List(attr_value::ListValue { i: vec![1, 4, 4, 1], ..Default::default() })) },
        );
        attr.insert("padding".to_string(), AttrValue { value: Some(attr_value::Value::S(b"VALID".to_vec())) });
        let node = NodeDef { name: "conv1/Conv2D".into(), op: "Conv2D".into(), input: vec!["input".into(), "conv1/weights".into()], attr, ..Default::default() };
        let graph = GraphDef { node: vec![node], versions: Some(VersionDef { producer: 7, ..Default::default() }), ..Default::default() };
        assert_eq!(GraphDef::decode(&graph.encode_to_vec()[..]).unwrap(), graph);
        let text = to_text(&graph).unwrap();
        let expected = r#"node {
  name: "conv1/Conv2D"
  op: "Conv2D"
  input: "input"
  input: "conv1/weights"
  attr {
    key: "T"
    value {
      type: DT_FLOAT
    }
  }
  attr {
    key: "padding"
    value {
      s: "VALID"
    }
  }
  attr {
    key: "strides"
    value {
      list {
        i: 1
        i: 4
        i: 4
        i: 1
      }
    }
  }
}
versions {
  producer: 7
}
"#;
        assert_eq!(text, expected);
    }

    #[test]
    fn undeclared_fields_are_refused_not_dropped() {
        let library = FunctionDefLibrary { function: vec![vec![]], ..Default::default() };
        let graph = GraphDef { library: Some(library), ..Default::default() };
        let err = to_text(&graph).unwrap_err().to_string();
        assert!(err.contains("library"), "{err}");
    }

    #[test]
    fn saver_def_encodes_like_tensorflow() {
        // Bytes of the SaverDef a TF1 tf.compat.v1.train.Saver(sharded=False) writes.
        let def = SaverDef {
            filename_tensor_name: "save/Const:0".into(),
            save_tensor_name: "save/Identity:0".into(),
            restore_op_name: "save/restore_all".into(),
            max_to_keep: 5,
            sharded: false,
            keep_checkpoint_every_n_hours: 10000.0,
            version: CHECKPOINT_V2,
        };
        let mut expected: Vec<u8> = vec![];
        expected.extend(b"\n\x0csave/Const:0");
        expected.extend(b"\x12\x0fsave/Identity:0");
        expected.extend(b"\x1a\x10save/restore_all");
        expected.extend(b" \x05");
        expected.extend(b"5\x00@\x1cF");
        expected.extend(b"8\x02");
        assert_eq!(def.encode_to_vec(), expected);
    }

    #[test]
    fn graph_def_bytes_embed_as_a_message() {
        let mg = MetaGraphDef { graph_def: vec![0x0a, 0x00], ..Default::default() };
        assert_eq!(mg.encode_to_vec(), vec![0x12, 0x02, 0x0a, 0x00]);
    }
}
