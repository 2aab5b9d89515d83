// LayerNorm and RMSNorm over the last dim of contiguous f32 rows, forward and backward.
//
// Forward: one block per row. Backward: `gridDim.x` blocks share the rows (block b takes rows
// b, b + gridDim.x, ...), write their dx rows, and add their rows' weight (and bias) gradient
// terms into their own row of `partial`; `column_sums` then adds the partial rows. No atomics,
// so the result does not depend on scheduling. Each thread owns the columns j ≡ tid (mod
// blockDim.x) of its block's partial row, so those read-modify-writes need no barrier.
#include "reduce.cuh"

// (mean, 1/sqrt(var + eps)) of a row; the variance from centred values, as the composite does.
__device__ __forceinline__ float2 row_moments(const float* x, int cols, float eps, float* scratch) {
    float sum = 0.f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) sum += x[j];
    const float mean = block_sum(sum, scratch) / cols;
    float sq = 0.f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float c = x[j] - mean;
        sq += c * c;
    }
    const float var = block_sum(sq, scratch) / cols;
    return make_float2(mean, 1.f / sqrtf(var + eps));
}

__device__ __forceinline__ float row_rstd(const float* x, int cols, float eps, float* scratch) {
    float sq = 0.f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) sq += x[j] * x[j];
    return 1.f / sqrtf(block_sum(sq, scratch) / cols + eps);
}

extern "C" __global__ void layer_norm_fwd(const float* __restrict__ x, const float* __restrict__ w,
                                          const float* __restrict__ b, float* __restrict__ y,
                                          int cols, float eps) {
    __shared__ float scratch[32];
    const size_t row = blockIdx.x;
    const float* xr = x + row * cols;
    float* yr = y + row * cols;
    const float2 m = row_moments(xr, cols, eps, scratch);
    for (int j = threadIdx.x; j < cols; j += blockDim.x) yr[j] = (xr[j] - m.x) * m.y * w[j] + b[j];
}

// dx = rstd · (g·w − mean(g·w) − x̂ · mean(g·w·x̂)); partial row = [Σ g·x̂ (cols), Σ g (cols)].
extern "C" __global__ void layer_norm_bwd(const float* __restrict__ x, const float* __restrict__ w,
                                          const float* __restrict__ g, float* __restrict__ dx,
                                          float* __restrict__ partial, int rows, int cols,
                                          float eps) {
    __shared__ float scratch[32];
    float* dw = partial + (size_t)blockIdx.x * 2 * cols;
    float* db = dw + cols;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) dw[j] = db[j] = 0.f;
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + (size_t)r * cols;
        const float* gr = g + (size_t)r * cols;
        float* dxr = dx + (size_t)r * cols;
        const float2 m = row_moments(xr, cols, eps, scratch);
        float gw_sum = 0.f, gwx_sum = 0.f;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            const float gw = gr[j] * w[j];
            gw_sum += gw;
            gwx_sum += gw * (xr[j] - m.x) * m.y;
        }
        const float gw_mean = block_sum(gw_sum, scratch) / cols;
        const float gwx_mean = block_sum(gwx_sum, scratch) / cols;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            const float xhat = (xr[j] - m.x) * m.y;
            dxr[j] = m.y * (gr[j] * w[j] - gw_mean - xhat * gwx_mean);
            dw[j] += gr[j] * xhat;
            db[j] += gr[j];
        }
    }
}

extern "C" __global__ void rms_norm_fwd(const float* __restrict__ x, const float* __restrict__ w,
                                        float* __restrict__ y, int cols, float eps) {
    __shared__ float scratch[32];
    const size_t row = blockIdx.x;
    const float* xr = x + row * cols;
    float* yr = y + row * cols;
    const float rstd = row_rstd(xr, cols, eps, scratch);
    for (int j = threadIdx.x; j < cols; j += blockDim.x) yr[j] = xr[j] * rstd * w[j];
}

// dx = rstd · (g·w − x̂ · mean(g·w·x̂)), x̂ = x·rstd; partial row = Σ g·x̂ (cols).
extern "C" __global__ void rms_norm_bwd(const float* __restrict__ x, const float* __restrict__ w,
                                        const float* __restrict__ g, float* __restrict__ dx,
                                        float* __restrict__ partial, int rows, int cols,
                                        float eps) {
    __shared__ float scratch[32];
    float* dw = partial + (size_t)blockIdx.x * cols;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) dw[j] = 0.f;
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + (size_t)r * cols;
        const float* gr = g + (size_t)r * cols;
        float* dxr = dx + (size_t)r * cols;
        const float rstd = row_rstd(xr, cols, eps, scratch);
        float gwx_sum = 0.f;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) gwx_sum += gr[j] * w[j] * xr[j] * rstd;
        const float gwx_mean = block_sum(gwx_sum, scratch) / cols;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            const float xhat = xr[j] * rstd;
            dxr[j] = rstd * (gr[j] * w[j] - xhat * gwx_mean);
            dw[j] += gr[j] * xhat;
        }
    }
}

// out[j] = Σ_b partial[b, j] over `blocks` rows of `width`: one thread per column, coalesced.
extern "C" __global__ void column_sums(const float* __restrict__ partial, float* __restrict__ out,
                                       int blocks, int width) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= width) return;
    float sum = 0.f;
    for (int b = 0; b < blocks; ++b) sum += partial[(size_t)b * width + j];
    out[j] = sum;
}
