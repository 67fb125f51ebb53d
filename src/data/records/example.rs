//! `tf.train.Example`s, the records of image shards, with the generated TensorFlow messages
//! (`crate::proto::tensorflow`): built for `make-records`, read back by the host's scan of a
//! shard (its label and class name; the training graph parses the same records with
//! `ParseExampleV2`).

use std::collections::BTreeMap;

use prost::Message;

use crate::proto::tensorflow::{BytesList, Example, Feature, Features, Int64List, feature::Kind};

/// One feature's value.
pub enum Value {
    Bytes(Vec<u8>),
    Int(i64),
}

/// An Example of `features`, serialized.
pub fn build(features: Vec<(&str, Value)>) -> Vec<u8> {
    let feature: BTreeMap<String, Feature> = features
        .into_iter()
        .map(|(k, v)| {
            let kind = match v {
                Value::Bytes(b) => Kind::BytesList(BytesList { value: vec![b] }),
                Value::Int(i) => Kind::Int64List(Int64List { value: vec![i] }),
            };
            (k.to_string(), Feature { kind: Some(kind) })
        })
        .collect();
    Example { features: Some(Features { feature }) }.encode_to_vec()
}

/// A parsed Example's features by key.
pub struct Parsed(BTreeMap<String, Feature>);

impl Parsed {
    /// Parses a record; Err says why it is not an Example.
    pub fn from_record(record: &[u8]) -> Result<Parsed, String> {
        let e = Example::decode(record).map_err(|e| format!("not a tf.train.Example ({e})"))?;
        Ok(Parsed(e.features.map(|f| f.feature).unwrap_or_default()))
    }

    /// The single int64 of `key`.
    pub fn int(&self, key: &str) -> Result<i64, String> {
        match self.0.get(key).and_then(|f| f.kind.as_ref()) {
            Some(Kind::Int64List(l)) if l.value.len() == 1 => Ok(l.value[0]),
            Some(Kind::Int64List(l)) => Err(format!("feature '{key}' holds {} integers, not one", l.value.len())),
            Some(_) => Err(format!("feature '{key}' is not an int64 list")),
            None => Err(self.missing(key)),
        }
    }

    /// The single byte string of `key`.
    pub fn bytes(&self, key: &str) -> Result<&[u8], String> {
        match self.0.get(key).and_then(|f| f.kind.as_ref()) {
            Some(Kind::BytesList(l)) if l.value.len() == 1 => Ok(&l.value[0]),
            Some(Kind::BytesList(l)) => Err(format!("feature '{key}' holds {} byte strings, not one", l.value.len())),
            Some(_) => Err(format!("feature '{key}' is not a bytes list")),
            None => Err(self.missing(key)),
        }
    }

    /// The byte string of `key` as text, if it is there.
    pub fn text(&self, key: &str) -> Option<String> {
        self.bytes(key).ok().map(|b| String::from_utf8_lossy(b).into_owned())
    }

    fn missing(&self, key: &str) -> String {
        let keys: Vec<&str> = self.0.keys().map(String::as_str).collect();
        format!("no feature '{key}' (the record has: {})", keys.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_examples_read_back() {
        let bytes = build(vec![("image/encoded", Value::Bytes(vec![0xff, 0xd8, 0])), ("image/class/label", Value::Int(3))]);
        let p = Parsed::from_record(&bytes).unwrap();
        assert_eq!(p.bytes("image/encoded").unwrap(), &[0xff, 0xd8, 0]);
        assert_eq!(p.int("image/class/label").unwrap(), 3);
        assert!(p.int("label").unwrap_err().contains("no feature 'label' (the record has: image/class/label, image/encoded)"));
        assert!(p.int("image/encoded").unwrap_err().contains("not an int64 list"));
        assert!(Parsed::from_record(&[0xff, 0xff, 0xff]).is_err());
    }
}
