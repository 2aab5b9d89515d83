//! With the `cuda` feature: compiles each `src/kernels/cuda/*.cu` to PTX in `OUT_DIR`, where
//! `kernels::cuda` embeds it (`include_str!`). The driver JIT-compiles PTX for the GPU it runs
//! on at first use, as it does candle's own kernels. Without the feature: nothing.
//!
//! Cargo reruns this for a changed `.cu`/`.cuh` it was told about; after adding a new kernel
//! file, touch this one.

use std::path::{Path, PathBuf};
use std::process::Command;

const KERNELS: &str = "src/kernels/cuda";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // candle-kernels reads the same variable; 90 is the H100/H200.
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(KERNELS).expect("src/kernels/cuda exists") {
        let path = entry.expect("readable directory entry").path();
        match path.extension().and_then(|e| e.to_str()) {
            // Headers: a change recompiles every kernel (cargo reruns this script).
            Some("cuh") => println!("cargo:rerun-if-changed={}", path.display()),
            Some("cu") => sources.push(path),
            _ => {}
        }
    }
    sources.sort();
    for source in &sources {
        println!("cargo:rerun-if-changed={}", source.display());
        compile(source, &out_dir, &cap);
    }
}

fn compile(source: &Path, out_dir: &Path, cap: &str) {
    let stem = source.file_stem().expect("a .cu file has a name");
    let ptx = out_dir.join(stem).with_extension("ptx");
    let status = Command::new("nvcc")
        .args(["-ptx", "-O3", "-std=c++17", &format!("-arch=sm_{cap}")])
        .arg("-o")
        .arg(&ptx)
        .arg(source)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("nvcc failed ({s}) compiling {}", source.display()),
        Err(e) => panic!(
            "cannot run nvcc ({e}): the `cuda` feature needs the CUDA compiler on PATH; on a \
             machine without a CUDA toolkit, `source scripts/gpu/cuda-env.sh` first"
        ),
    }
}
