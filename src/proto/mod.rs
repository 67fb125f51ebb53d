//! TensorFlow's and Caffe's protobuf messages, generated at build time by prost-build
//! (build.rs) from the schemas vendored in `proto/`: [`tensorflow`] from TensorFlow 2.21's own
//! descriptors (`proto/tensorflow-2.21.pb`, taken from the pinned wheel by
//! `scripts/vendor-protos`), [`caffe`] from `proto/caffe.proto`. Every field of those schemas
//! is there, so decoding and re-encoding a message drops nothing.
//!
//! Maps are `BTreeMap`s (sorted keys: deterministic bytes and text), enums are `i32` fields
//! with a generated Rust enum beside them (`DataType::DtFloat as i32`), oneofs are `Option`s of
//! a generated enum (`attr_value::Value`). [`text_format`] prints messages as TensorFlow does.

pub mod text_format;

pub use text_format::to_text;

// The generated code is not ours to lint.
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/tensorflow_include.rs"));
    include!(concat!(env!("OUT_DIR"), "/caffe_include.rs"));
}

pub use generated::{caffe, tensorflow};

/// The method name of a Predict signature (TensorFlow Serving's `:predict`).
pub const PREDICT_METHOD_NAME: &str = "tensorflow/serving/predict";

impl tensorflow::TensorShapeProto {
    /// A shape of known rank; -1 for an unknown size.
    pub fn of(dims: &[i64]) -> tensorflow::TensorShapeProto {
        tensorflow::TensorShapeProto {
            dim: dims.iter().map(|&size| tensorflow::tensor_shape_proto::Dim { size, name: String::new() }).collect(),
            unknown_rank: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tensorflow::{SaverDef, saver_def::CheckpointFormatVersion};
    use prost::Message;

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
            version: CheckpointFormatVersion::V2 as i32,
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
}
