// Warp and block reductions for the row kernels (norms, cross-entropy): one block per row.
// Blocks are a multiple of 32 threads; every thread receives the reduced value.
#pragma once

#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(FULL_MASK, x, offset);
    return x;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1)
        x = fmaxf(x, __shfl_xor_sync(FULL_MASK, x, offset));
    return x;
}

// `scratch` holds 32 floats. The leading barrier lets one scratch serve consecutive reductions:
// no warp overwrites it while another still reads the previous result.
__device__ __forceinline__ float block_sum(float x, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    x = warp_sum(x);
    __syncthreads();
    if (lane == 0) scratch[warp] = x;
    __syncthreads();
    return warp_sum(lane < warps ? scratch[lane] : 0.f);
}

// A running softmax denominator: `sum` is Σ exp(x − max) over the values seen.
struct MaxSum {
    float max;
    float sum;
};

__device__ __forceinline__ MaxSum max_sum_merge(MaxSum a, MaxSum b) {
    const float max = fmaxf(a.max, b.max);
    // Both empty: exp(−inf − (−inf)) would be NaN.
    if (max == -INFINITY) return a;
    return {max, a.sum * expf(a.max - max) + b.sum * expf(b.max - max)};
}

__device__ __forceinline__ MaxSum warp_max_sum(MaxSum x) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        const MaxSum other = {__shfl_xor_sync(FULL_MASK, x.max, offset),
                              __shfl_xor_sync(FULL_MASK, x.sum, offset)};
        x = max_sum_merge(x, other);
    }
    return x;
}

// `scratch` holds 64 floats.
__device__ __forceinline__ MaxSum block_max_sum(MaxSum x, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    x = warp_max_sum(x);
    __syncthreads();
    if (lane == 0) {
        scratch[warp] = x.max;
        scratch[32 + warp] = x.sum;
    }
    __syncthreads();
    const MaxSum mine = lane < warps ? MaxSum{scratch[lane], scratch[32 + lane]}
                                     : MaxSum{-INFINITY, 0.f};
    return warp_max_sum(mine);
}
