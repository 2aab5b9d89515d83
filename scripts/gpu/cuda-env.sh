# Source this to build vlmflow's `cuda` feature on a machine with no CUDA toolkit and no GPU.
#
#   source scripts/gpu/cuda-env.sh          # the compiler wheels: enough for `cargo check`
#   source scripts/gpu/cuda-env.sh link     # also the libraries and a libcuda stub: enough to link
#
# It installs NVIDIA's CUDA 13.0 wheels from PyPI into a cached venv, all pinned: unpinned, pip pulls
# a newer crt/nvvm whose PTX a CUDA 13.0 driver may refuse (CANDLE-NOTES.md, "CUDA"). The build
# goes to its own target folder, so switching between CPU and CUDA builds rebuilds neither.

vlmflow_cuda_env() {
    local want=${1:-check}
    local repo venv py site cu13
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    venv=${VLMFLOW_CUDA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/vlmflow/cuda-13.0}
    local compiler=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
        nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88)
    local libraries=(nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88)
    local wheels=("${compiler[@]}")
    [ "$want" = link ] && wheels+=("${libraries[@]}")

    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv" || { echo "cuda-env: cannot make a venv at $venv (is python3-venv installed?)" >&2; return 1; }
    fi
    py="$venv/bin/python"
    # pip is quick when everything is already there; the stamp skips even that.
    local stamp="$venv/.vlmflow-$want-$(echo "${wheels[*]}" | cksum | cut -d' ' -f1)"
    if [ ! -e "$stamp" ]; then
        "$py" -m pip install -q --disable-pip-version-check "${wheels[@]}" \
            || { echo "cuda-env: installing the CUDA wheels into $venv failed" >&2; return 1; }
        touch "$stamp"
    fi
    site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    cu13="$site/nvidia/cu13"

    export CUDA_ROOT="$cu13" CUDA_PATH="$cu13" CUDA_HOME="$cu13"
    export PATH="$cu13/bin:$PATH"
    # No GPU here to ask: build sm_90a code, for the H100/H200.
    export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
    export CARGO_TARGET_DIR=${VLMFLOW_CUDA_TARGET:-$repo/target/cuda}

    if [ "$want" = link ]; then
        # The linker wants unversioned names; the wheels ship only the versioned ones.
        local lib
        for lib in cublas.so.13 cublasLt.so.13 curand.so.10 cudart.so.13 nvrtc.so.13; do
            ln -sf "lib$lib" "$cu13/lib/lib${lib%.so.*}.so"
        done
        # PyPI has no libcuda (the driver ships it): link against a stub whose soname is the
        # driver's, so the binary loads the real libcuda.so.1 wherever it runs. cudarc's build
        # searches `$CUDA_ROOT/lib/stubs`, where CUDA toolkits keep theirs.
        mkdir -p "$cu13/lib/stubs"
        "$repo/scripts/gpu/make-libcuda-stub" "$cu13/lib/stubs" || return 1
        export VLMFLOW_CUDA_LIBS="$cu13/lib"
    fi
}

vlmflow_cuda_env "$@"
