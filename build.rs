//! Two build steps:
//!
//! - Embeds an rpath to the libtensorflow that pkg-config found, so `alexnet` runs without
//!   LD_LIBRARY_PATH. (tensorflow-sys links the library, but a dependency's link args never
//!   reach our binaries.)
//! - Generates the protobuf messages (`crate::proto`) with prost-build, without `protoc`:
//!   TensorFlow's from `proto/tensorflow-2.21.pb`, a FileDescriptorSet taken from the pinned
//!   wheel by `scripts/vendor-protos`; Caffe's from `proto/caffe.proto`, compiled by protox.
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
    const CAFFE: &str = "proto/caffe.proto";
    println!("cargo:rerun-if-changed={TF}");
    println!("cargo:rerun-if-changed={CAFFE}");
    let tf = <prost_types::FileDescriptorSet as prost::Message>::decode(&std::fs::read(TF)?[..])?;
    config("tensorflow_include.rs").compile_fds(tf)?;
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
