// Softmax cross-entropy per row of f32 logits (rows, cols): one block per row, since a row is a
// whole vocabulary (151,936 for Qwen2.5). Each thread keeps a running (max, Σ exp) over its
// strided columns, one exp per logit and one pass over the row; the block then merges them.
// A target outside 0..cols gives a NaN loss (and NaN gradients): the kernel cannot raise an
// error, and NaN cannot go unnoticed.
#include "reduce.cuh"

// log Σ_j exp(x_j) of a row.
__device__ __forceinline__ float row_log_sum_exp(const float* x, int cols, float* scratch) {
    MaxSum mine = {-INFINITY, 0.f};
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float v = x[j];
        if (v > mine.max) {
            mine.sum = mine.sum * expf(mine.max - v) + 1.f;
            mine.max = v;
        } else {
            mine.sum += expf(v - mine.max);
        }
    }
    const MaxSum row = block_max_sum(mine, scratch);
    return row.max + logf(row.sum);
}

extern "C" __global__ void cross_entropy_fwd(const float* __restrict__ logits,
                                             const unsigned int* __restrict__ targets,
                                             float* __restrict__ loss, int cols) {
    __shared__ float scratch[64];
    const size_t row = blockIdx.x;
    const float* x = logits + row * cols;
    const float lse = row_log_sum_exp(x, cols, scratch);
    if (threadIdx.x == 0) {
        const unsigned int t = targets[row];
        loss[row] = t < (unsigned int)cols ? lse - x[t] : NAN;
    }
}

// dlogits = grad[row] · (softmax(x) − onehot(target)), the softmax recomputed from the logits.
extern "C" __global__ void cross_entropy_bwd(const float* __restrict__ logits,
                                             const unsigned int* __restrict__ targets,
                                             const float* __restrict__ grad,
                                             float* __restrict__ dlogits, int cols) {
    __shared__ float scratch[64];
    const size_t row = blockIdx.x;
    const float* x = logits + row * cols;
    float* dx = dlogits + row * cols;
    const float lse = row_log_sum_exp(x, cols, scratch);
    const unsigned int t = targets[row];
    const float g = t < (unsigned int)cols ? grad[row] : NAN;
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
        dx[j] = g * expf(x[j] - lse) - (j == (int)t ? g : 0.f);
}
