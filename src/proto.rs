//! Hand-written TensorFlow protocol buffer messages (prost), only the messages and fields this
//! project writes. Field numbers are those of TensorFlow's .proto files (checked against the
//! descriptors of the tensorflow 2.21 Python package).

// ---------------------------------------------------------------------------------------------
// SavedModel (tensorflow/core/protobuf/{saved_model,meta_graph,saver}.proto,
// tensorflow/core/framework/tensor_shape.proto), written by `export`.
//
// Why not the `tensorflow` crate's SavedModelBuilder: its SaverDef has no save_tensor_name and
// its "variables" collection holds VariableDefs with empty names, so Python TensorFlow 2.x
// cannot load what it writes. These messages let `export` write what TF1's Saver and
// SavedModelBuilder write.
// ---------------------------------------------------------------------------------------------

use std::collections::BTreeMap;

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

/// tensorflow.TensorShapeProto
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<tensor_shape_proto::Dim>,
    #[prost(bool, tag = "3")]
    pub unknown_rank: bool,
}

pub mod tensor_shape_proto {
    /// tensorflow.TensorShapeProto.Dim; size -1 is an unknown size.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dim {
        #[prost(int64, tag = "1")]
        pub size: i64,
        #[prost(string, tag = "2")]
        pub name: String,
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

#[cfg(test)]
mod tests {
    use super::*;
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
