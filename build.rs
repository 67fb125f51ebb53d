//! Embeds an rpath to the libtensorflow that pkg-config found, so `alexnet` runs without
//! LD_LIBRARY_PATH. (tensorflow-sys links the library, but a dependency's link args never reach
//! our binaries.)
fn main() {
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
        Err(e) => println!(
            "cargo:warning=libtensorflow not found through pkg-config ({e}); run scripts/install-libtensorflow"
        ),
    }
}
