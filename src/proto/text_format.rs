//! Protobuf text format, as TensorFlow writes `.pbtxt` files (`tf.io.write_graph(...,
//! as_text=True)`, Python's `text_format.MessageToString`): fields in field-number order, proto3
//! defaults left out, map entries sorted by key, strings C-escaped, floats in their shortest form.
//!
//! Why this exists: prost-build generates binary encoding only, no text format, and
//! `graphs/alexnet.pbtxt` (with the test that rebuilds it) must match Python's output byte for
//! byte. So the messages a GraphDef holds get a hand-written [`TextFormat`] impl here, on the
//! generated types of [`crate::proto::tensorflow`]. Parts of a GraphDef this project never
//! makes (function libraries, debug info, resource handles, variants) are refused with an
//! error rather than printed half or skipped; to support one, print it in its message's impl.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Result, bail};

use super::tensorflow::{
    AttrValue, DataType, FullTypeDef, FullTypeId, FunctionDefLibrary, GraphDef, NameAttrList, NodeDef, TensorProto, TensorShapeProto, VersionDef, attr_value,
    full_type_def, tensor_shape_proto,
};

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
        self.enumeration(name, value, DataType::try_from(value).ok().map(|t| t.as_str_name()))
    }

    /// An enum value by its .proto name (`known`: the generated enum's `as_str_name()`), else
    /// as its number.
    pub fn enumeration(&mut self, name: &str, value: i32, known: Option<&str>) {
        match known {
            Some(v) => self.line(format_args!("{name}: {v}")),
            None => self.scalar(name, value),
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
        bail!("the message has a {what}, which src/proto/text_format.rs does not print yet (add it there)");
    }
    Ok(())
}

// GraphDef.version is deprecated (for `versions`), but printed like any field when set.
#[allow(deprecated)]
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
            w.enumeration("type_id", self.type_id, FullTypeId::try_from(self.type_id).ok().map(|t| t.as_str_name()));
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
        attr.insert("T".to_string(), AttrValue { value: Some(attr_value::Value::Type(DataType::DtFloat as i32)) });
        attr.insert(
            "strides".to_string(),
            AttrValue { value: Some(attr_value::Value::List(attr_value::ListValue { i: vec![1, 4, 4, 1], ..Default::default() })) },
        );
        attr.insert("padding".to_string(), AttrValue { value: Some(attr_value::Value::S(b"VALID".to_vec())) });
        let node =
            NodeDef { name: "conv1/Conv2D".into(), op: "Conv2D".into(), input: vec!["input".into(), "conv1/weights".into()], attr, ..Default::default() };
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
    fn unprinted_fields_are_refused_not_dropped() {
        let library = FunctionDefLibrary { function: vec![Default::default()], ..Default::default() };
        let graph = GraphDef { library: Some(library), ..Default::default() };
        let err = to_text(&graph).unwrap_err().to_string();
        assert!(err.contains("library"), "{err}");
    }
}
