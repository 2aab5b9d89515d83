// The tile arithmetic the attention kernels share, on f32 tiles in shared memory.
//
// A block of 256 threads is a 32 × 8 grid: ty = tid / 8 owns R consecutive rows of the block's
// own tile (ROWS = 32·R rows), tx = tid % 8 owns the columns tx, tx + 8, ... of each streamed
// tile (COLS = 8·CJ rows, e.g. keys). The 8 lanes sharing ty are 8 consecutive lanes of one
// warp, so a score row reduces with three shuffles. Plain f32 FMAs, no tensor cores.
//
// Shared-memory tiles are row-major with D + 4 floats per row (LD): 16-byte reads stay aligned,
// and as LD ≡ 4 (mod 32) the 8 lanes of a quarter warp reading 8 different rows touch 8
// different 16-byte bank groups. Score tiles (ROWS × COLS) use COLS + 4 (SLD).
#pragma once
#include <cuda_bf16.h>

#define FULL_MASK 0xffffffffu
constexpr int THREADS = 256;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
    return __float2bfloat16(x);
}

template <int D, int R, int CJ>
struct Tiles {
    static constexpr int LD = D + 4;
    static constexpr int ROWS = 32 * R;
    static constexpr int COLS = 8 * CJ;
    static constexpr int SLD = COLS + 4;
    // float4 groups of output columns per thread: columns 4·tx + 32·c, c < C4.
    static constexpr int C4 = D / 32;
};

__device__ __forceinline__ int tile_row() { return threadIdx.x >> 3; }
__device__ __forceinline__ int tile_col() { return threadIdx.x & 7; }

// Over the 8 lanes that share a tile row.
__device__ __forceinline__ float group_max(float x) {
#pragma unroll
    for (int offset = 1; offset < 8; offset <<= 1)
        x = fmaxf(x, __shfl_xor_sync(FULL_MASK, x, offset));
    return x;
}

__device__ __forceinline__ float group_sum(float x) {
#pragma unroll
    for (int offset = 1; offset < 8; offset <<= 1) x += __shfl_xor_sync(FULL_MASK, x, offset);
    return x;
}

__device__ __forceinline__ float component(const float4& v, int k) {
    return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w;
}

// `rows` rows of D values, from row `first` of a matrix with row stride `stride`, into a
// shared tile as f32. Rows at or past `valid` become zeros: finite, so they add nothing.
template <int D, typename T>
__device__ __forceinline__ void load_rows(float* dst, const T* __restrict__ src, size_t stride,
                                          int first, int rows, int valid) {
    constexpr int LD = D + 4;
    for (int e = threadIdx.x; e < rows * D; e += THREADS) {
        const int r = e / D, c = e % D, row = first + r;
        dst[r * LD + c] = row < valid ? to_float(src[(size_t)row * stride + c]) : 0.f;
    }
}

// `count` values from `first` on of a per-row vector (LSE, delta), zeros at or past `valid`.
__device__ __forceinline__ void load_vector(float* dst, const float* __restrict__ src, int first,
                                            int count, int valid) {
    for (int i = threadIdx.x; i < count; i += THREADS)
        dst[i] = first + i < valid ? src[first + i] : 0.f;
}

// s[i][j] = a[ty·R + i] · b[tx + 8·j], dot products over D.
template <int D, int R, int CJ>
__device__ __forceinline__ void tile_dots(const float* a, const float* b, float (&s)[R][CJ]) {
    constexpr int LD = D + 4;
    const int ty = tile_row(), tx = tile_col();
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
        for (int j = 0; j < CJ; ++j) s[i][j] = 0.f;
// 8, not 4: at 4 ptxas spilled in the D = 32 forward.
#pragma unroll 8
    for (int c = 0; c < D; c += 4) {
        float4 av[R], bv[CJ];
#pragma unroll
        for (int i = 0; i < R; ++i)
            av[i] = *reinterpret_cast<const float4*>(a + (ty * R + i) * LD + c);
#pragma unroll
        for (int j = 0; j < CJ; ++j)
            bv[j] = *reinterpret_cast<const float4*>(b + (tx + 8 * j) * LD + c);
#pragma unroll
        for (int i = 0; i < R; ++i)
#pragma unroll
            for (int j = 0; j < CJ; ++j) {
                float acc = s[i][j];
                acc = fmaf(av[i].x, bv[j].x, acc);
                acc = fmaf(av[i].y, bv[j].y, acc);
                acc = fmaf(av[i].z, bv[j].z, acc);
                s[i][j] = fmaf(av[i].w, bv[j].w, acc);
            }
    }
}

// acc[i][c] += Σ_j p[ty·R + i][j] · b[j][4·tx + 32·c ..+4], j over the COLS rows of b.
template <int D, int R, int CJ>
__device__ __forceinline__ void tile_accumulate(const float* p, const float* b,
                                                float4 (&acc)[R][D / 32]) {
    using G = Tiles<D, R, CJ>;
    const int ty = tile_row(), tx = tile_col();
#pragma unroll 2
    for (int j = 0; j < G::COLS; j += 4) {
        float4 pv[R];
#pragma unroll
        for (int i = 0; i < R; ++i)
            pv[i] = *reinterpret_cast<const float4*>(p + (ty * R + i) * G::SLD + j);
#pragma unroll
        for (int jj = 0; jj < 4; ++jj)
#pragma unroll
            for (int c = 0; c < G::C4; ++c) {
                const float4 bv =
                    *reinterpret_cast<const float4*>(b + (j + jj) * G::LD + 4 * tx + 32 * c);
#pragma unroll
                for (int i = 0; i < R; ++i) {
                    const float w = component(pv[i], jj);
                    acc[i][c].x = fmaf(w, bv.x, acc[i][c].x);
                    acc[i][c].y = fmaf(w, bv.y, acc[i][c].y);
                    acc[i][c].z = fmaf(w, bv.z, acc[i][c].z);
                    acc[i][c].w = fmaf(w, bv.w, acc[i][c].w);
                }
            }
    }
}

template <int R, int C4>
__device__ __forceinline__ void zero(float4 (&acc)[R][C4]) {
#pragma unroll
    for (int i = 0; i < R; ++i)
#pragma unroll
        for (int c = 0; c < C4; ++c) acc[i][c] = make_float4(0.f, 0.f, 0.f, 0.f);
}

// acc[c] · factor into a row starting at `dst`, at its columns 4·tx + 32·c ..+4.
template <typename T, int C4>
__device__ __forceinline__ void store_row(T* __restrict__ dst, const float4 (&acc)[C4],
                                          float factor) {
    const int tx = tile_col();
#pragma unroll
    for (int c = 0; c < C4; ++c) {
        T* o = dst + 4 * tx + 32 * c;
        o[0] = from_float<T>(acc[c].x * factor);
        o[1] = from_float<T>(acc[c].y * factor);
        o[2] = from_float<T>(acc[c].z * factor);
        o[3] = from_float<T>(acc[c].w * factor);
    }
}

// The additive mask at (query, key), `m` already at its sample; strides are 0 where broadcast.
__device__ __forceinline__ float mask_value(const float* __restrict__ m, long long sq,
                                            long long sk, int query, int key) {
    return m ? m[query * sq + key * sk] : 0.f;
}
