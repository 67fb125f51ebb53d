//! Two build steps:
//!
//! - Embeds an rpath to the libtensorflow that pkg-config found, so `alexnet` runs without
//!   LD_LIBRARY_PATH. (tensorflow-sys links the library, but a dependency's link args never
//!   reach our binaries.)
//! - Generates the protobuf messages (`crate::proto`) with prost-build, without `protoc`:
//!   TensorFlow's from `proto/tensorflow-2.21.pb`, a FileDescriptorSet taken from the pinned
//!   wheel by `scripts/vendor-protos`; Caffe's from `proto/caffe.proto`, compiled by protox.
//!   TensorFlow Serving's (`proto/tensorflow-serving-2.21.pb`, from the pinned
//!   tensorflow-serving-api wheel) go into the same generation as TensorFlow's, since they share
//!   the `tensorflow` package (two runs would each write `tensorflow.rs`); tonic-build adds the
//!   gRPC servers and clients of its services.
use std::path::PathBuf;

fn main() {
    link_libtensorflow();
    if let Err(e) = generate_protos() {
        panic!("cannot generate the protobuf messages: {e}");
    }
}

fn link_libtensorflow() {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-changed=libtensorflow/current");
    match pkg_config::Config::new().cargo_metadata(false).probe("tensorflow") {
        Ok(lib) => {
            // The CUDA install (scripts/install-libtensorflow --gpu) puts the NVIDIA runtime next to the library.
            let cuda = lib.link_paths.iter().any(|d| d.join("../nvidia/cuda_runtime/lib/libcudart.so.12").exists());
            println!("cargo:rustc-env=ALEXNET_TF_CUDA={}", cuda as u8);
            for dir in lib.link_paths {
                println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
            }
        }
        Err(e) => println!("cargo:warning=libtensorflow not found through pkg-config ({e}); run scripts/install-libtensorflow"),
    }
}

/// Writes `tensorflow.rs` and `caffe.rs` (plus their `*_include.rs` module trees) to OUT_DIR.
fn generate_protos() -> Result<(), Box<dyn std::error::Error>> {
    const TF: &str = "proto/tensorflow-2.21.pb";
    const SERVING: &str = "proto/tensorflow-serving-2.21.pb";
    const CAFFE: &str = "proto/caffe.proto";
    for f in [TF, SERVING, CAFFE] {
        println!("cargo:rerun-if-changed={f}");
    }
    let read = |path: &str| -> Result<prost_types::FileDescriptorSet, Box<dyn std::error::Error>> {
        let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e} (scripts/vendor-protos writes it)"))?;
        Ok(<prost_types::FileDescriptorSet as prost::Message>::decode(&bytes[..])?)
    };
    let mut tf = read(TF)?;
    // The serving set carries the TensorFlow schemas it imports: those already in TF's are the same files.
    for file in read(SERVING)?.file {
        if !tf.file.iter().any(|f| f.name == file.name) {
            tf.file.push(file);
        }
    }
    // Protobuf's well-known types the schemas import (Any, wrappers) are prost-types', but
    // prost-build still reads their descriptors (whether a message can derive Copy): protox has them.
    let imported: Vec<String> = tf.file.iter().flat_map(|f| f.dependency.clone()).filter(|d| d.starts_with("google/protobuf/")).collect();
    let mut known = protox::compile(&imported, ["."])?.file;
    known.retain(|k| !tf.file.iter().any(|f| f.name == k.name));
    tf.file.splice(0..0, known);
    let mut c = config("tensorflow_include.rs");
    c.service_generator(tonic_build::configure().build_server(true).build_client(true).service_generator());
    c.compile_fds(tf)?;
    let caffe = protox::compile([CAFFE], ["."])?;
    config("caffe_include.rs").compile_fds(caffe)?;
    Ok(())
}

fn config(include_file: &str) -> prost_build::Config {
    let mut c = prost_build::Config::new();
    // Sorted maps: NodeDef.attr prints (text format) and encodes in key order, as TensorFlow's.
    c.btree_map(["."]);
    c.include_file(include_file);
    c.out_dir(PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")));
    c
}
