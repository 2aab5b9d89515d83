// Grouped-query attention without the Tq × Tk score matrix, flash-attention-2 style.
//
// q: (N, Tq, H·D), k and v: (N, Tk, KV·D), out: (N, Tq, H·D), all contiguous; query head h
// reads key/value head h / (H / KV). S = scale · q kᵀ + mask, P = softmax(S), O = P v. The
// mask is f32 at `mask` + n·sn + query·sq + key·sk (strides 0 where broadcast), or null.
// lse and delta are (N, H, Tq) f32. Loads may be f32 or bf16; everything else is f32.
//
// Forward: a block per (query tile, head, sample) streams key/value tiles with an online
// softmax and saves each row's log-sum-exp. Backward, with delta = rowsum(dO ∘ O):
//   dS = P ∘ (dO vᵀ − delta),  dQ = scale · dS k,  dK = scale · dSᵀ q,  dV = Pᵀ dO,
// P recomputed tile by tile from the saved LSE. grad_q: a block per query tile streams the
// keys. grad_kv: a block per (key tile, kv head, sample) streams the queries of every query
// head that reads its kv head, so dK and dV are summed in registers: no atomics, no per-head
// buffer, and the result does not depend on scheduling.
//
// Shared memory (floats, dynamic; the Rust side computes the same sizes):
//   fwd:     ROWS·LD (q) + 2·COLS·LD (k, v) + ROWS·SLD (P)
//   grad_q:  2·ROWS·LD (q, dO) + 2·COLS·LD (k, v) + ROWS·SLD (dS)
//   grad_kv: 2·ROWS·LD (k, v) + 2·COLS·LD (q, dO) + 2·ROWS·SLD (Pᵀ, dSᵀ) + 2·COLS (lse, delta)
#include "attention_tiles.cuh"

// The per-launch facts every kernel needs.
struct Problem {
    int tq, tk, heads, kv_heads;
    float scale;
    long long mask_sn, mask_sq, mask_sk;
};

template <typename T, int D, int R, int CJ>
__device__ __forceinline__ void attention_fwd(const T* __restrict__ q, const T* __restrict__ k,
                                              const T* __restrict__ v,
                                              const float* __restrict__ mask, T* __restrict__ out,
                                              float* __restrict__ lse, const Problem pb) {
    using G = Tiles<D, R, CJ>;
    extern __shared__ float4 smem[];
    float* qs = reinterpret_cast<float*>(smem);
    float* ks = qs + G::ROWS * G::LD;
    float* vs = ks + G::COLS * G::LD;
    float* ps = vs + G::COLS * G::LD;
    const int ty = tile_row(), tx = tile_col();
    const int n = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * G::ROWS;
    const int kvh = h / (pb.heads / pb.kv_heads);
    const size_t q_stride = (size_t)pb.heads * D, kv_stride = (size_t)pb.kv_heads * D;
    const T* qn = q + (size_t)n * pb.tq * q_stride + h * D;
    const T* kn = k + (size_t)n * pb.tk * kv_stride + kvh * D;
    const T* vn = v + (size_t)n * pb.tk * kv_stride + kvh * D;
    const float* mn = mask ? mask + n * pb.mask_sn : nullptr;

    load_rows<D>(qs, qn, q_stride, q0, G::ROWS, pb.tq);
    float4 acc[R][G::C4];
    zero(acc);
    float row_max[R], row_sum[R];
#pragma unroll
    for (int i = 0; i < R; ++i) row_max[i] = -INFINITY, row_sum[i] = 0.f;

    for (int k0 = 0; k0 < pb.tk; k0 += G::COLS) {
        __syncthreads();  // the previous tile's k, v and P are read
        load_rows<D>(ks, kn, kv_stride, k0, G::COLS, pb.tk);
        load_rows<D>(vs, vn, kv_stride, k0, G::COLS, pb.tk);
        __syncthreads();
        float s[R][CJ];
        tile_dots<D, R, CJ>(qs, ks, s);
#pragma unroll
        for (int i = 0; i < R; ++i) {
            // Rows past Tq are computed (and never stored); their mask reads stay in bounds.
            const int query = min(q0 + ty * R + i, pb.tq - 1);
            float tile_max = -INFINITY;
#pragma unroll
            for (int j = 0; j < CJ; ++j) {
                const int key = k0 + tx + 8 * j;
                s[i][j] = key < pb.tk
                              ? s[i][j] * pb.scale + mask_value(mn, pb.mask_sq, pb.mask_sk, query, key)
                              : -INFINITY;
                tile_max = fmaxf(tile_max, s[i][j]);
            }
            const float new_max = fmaxf(row_max[i], group_max(tile_max));
            // A row whose scores are all −inf so far: keep exp finite (it is 0 either way).
            const float base = new_max == -INFINITY ? 0.f : new_max;
            const float rescale = __expf(row_max[i] - base);
            float tile_sum = 0.f;
#pragma unroll
            for (int j = 0; j < CJ; ++j) {
                const float p = __expf(s[i][j] - base);
                ps[(ty * R + i) * G::SLD + tx + 8 * j] = p;
                tile_sum += p;
            }
            row_sum[i] = row_sum[i] * rescale + group_sum(tile_sum);
            row_max[i] = new_max;
#pragma unroll
            for (int c = 0; c < G::C4; ++c) {
                acc[i][c].x *= rescale;
                acc[i][c].y *= rescale;
                acc[i][c].z *= rescale;
                acc[i][c].w *= rescale;
            }
        }
        __syncthreads();
        tile_accumulate<D, R, CJ>(ps, vs, acc);
    }

#pragma unroll
    for (int i = 0; i < R; ++i) {
        const int query = q0 + ty * R + i;
        if (query >= pb.tq) continue;
        store_row<T, G::C4>(out + ((size_t)n * pb.tq + query) * q_stride + h * D, acc[i],
                            1.f / row_sum[i]);
        if (tx == 0)
            lse[((size_t)n * pb.heads + h) * pb.tq + query] = row_max[i] + logf(row_sum[i]);
    }
}

template <typename T, int D, int R, int CJ>
__device__ __forceinline__ void attention_grad_q(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const T* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
    const float* __restrict__ mask, T* __restrict__ dq, const Problem pb) {
    using G = Tiles<D, R, CJ>;
    extern __shared__ float4 smem[];
    float* qs = reinterpret_cast<float*>(smem);
    float* dos = qs + G::ROWS * G::LD;
    float* ks = dos + G::ROWS * G::LD;
    float* vs = ks + G::COLS * G::LD;
    float* dss = vs + G::COLS * G::LD;
    const int ty = tile_row(), tx = tile_col();
    const int n = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * G::ROWS;
    const int kvh = h / (pb.heads / pb.kv_heads);
    const size_t q_stride = (size_t)pb.heads * D, kv_stride = (size_t)pb.kv_heads * D;
    const size_t q_base = (size_t)n * pb.tq * q_stride + h * D;
    const T* kn = k + (size_t)n * pb.tk * kv_stride + kvh * D;
    const T* vn = v + (size_t)n * pb.tk * kv_stride + kvh * D;
    const float* mn = mask ? mask + n * pb.mask_sn : nullptr;
    const size_t row_base = ((size_t)n * pb.heads + h) * pb.tq;

    load_rows<D>(qs, q + q_base, q_stride, q0, G::ROWS, pb.tq);
    load_rows<D>(dos, dout + q_base, q_stride, q0, G::ROWS, pb.tq);
    float row_lse[R], row_delta[R];
#pragma unroll
    for (int i = 0; i < R; ++i) {
        const int query = q0 + ty * R + i;
        row_lse[i] = query < pb.tq ? lse[row_base + query] : 0.f;
        row_delta[i] = query < pb.tq ? delta[row_base + query] : 0.f;
    }
    float4 acc[R][G::C4];
    zero(acc);

    for (int k0 = 0; k0 < pb.tk; k0 += G::COLS) {
        __syncthreads();  // the previous tile's k and dS are read
        load_rows<D>(ks, kn, kv_stride, k0, G::COLS, pb.tk);
        load_rows<D>(vs, vn, kv_stride, k0, G::COLS, pb.tk);
        __syncthreads();
        float s[R][CJ], dp[R][CJ];
        tile_dots<D, R, CJ>(qs, ks, s);
        tile_dots<D, R, CJ>(dos, vs, dp);
#pragma unroll
        for (int i = 0; i < R; ++i) {
            const int query = min(q0 + ty * R + i, pb.tq - 1);
#pragma unroll
            for (int j = 0; j < CJ; ++j) {
                const int key = k0 + tx + 8 * j;
                float p = 0.f;
                if (key < pb.tk) {
                    const float score =
                        s[i][j] * pb.scale + mask_value(mn, pb.mask_sq, pb.mask_sk, query, key);
                    p = __expf(score - row_lse[i]);
                }
                dss[(ty * R + i) * G::SLD + tx + 8 * j] = p * (dp[i][j] - row_delta[i]);
            }
        }
        __syncthreads();
        tile_accumulate<D, R, CJ>(dss, ks, acc);
    }

#pragma unroll
    for (int i = 0; i < R; ++i) {
        const int query = q0 + ty * R + i;
        if (query < pb.tq)
            store_row<T, G::C4>(dq + q_base + (size_t)query * q_stride, acc[i], pb.scale);
    }
}

template <typename T, int D, int R, int CJ>
__device__ __forceinline__ void attention_grad_kv(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const T* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
    const float* __restrict__ mask, T* __restrict__ dk, T* __restrict__ dv, const Problem pb) {
    using G = Tiles<D, R, CJ>;
    extern __shared__ float4 smem[];
    float* ks = reinterpret_cast<float*>(smem);
    float* vs = ks + G::ROWS * G::LD;
    float* qs = vs + G::ROWS * G::LD;
    float* dos = qs + G::COLS * G::LD;
    float* pts = dos + G::COLS * G::LD;
    float* dsts = pts + G::ROWS * G::SLD;
    float* lses = dsts + G::ROWS * G::SLD;
    float* deltas = lses + G::COLS;
    const int ty = tile_row(), tx = tile_col();
    const int n = blockIdx.z, kvh = blockIdx.y, k0 = blockIdx.x * G::ROWS;
    const int group = pb.heads / pb.kv_heads;
    const size_t q_stride = (size_t)pb.heads * D, kv_stride = (size_t)pb.kv_heads * D;
    const size_t kv_base = (size_t)n * pb.tk * kv_stride + kvh * D;
    const float* mn = mask ? mask + n * pb.mask_sn : nullptr;

    load_rows<D>(ks, k + kv_base, kv_stride, k0, G::ROWS, pb.tk);
    load_rows<D>(vs, v + kv_base, kv_stride, k0, G::ROWS, pb.tk);
    float4 dk_acc[R][G::C4], dv_acc[R][G::C4];
    zero(dk_acc);
    zero(dv_acc);

    for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
        const size_t q_base = (size_t)n * pb.tq * q_stride + h * D;
        const size_t row_base = ((size_t)n * pb.heads + h) * pb.tq;
        for (int q0 = 0; q0 < pb.tq; q0 += G::COLS) {
            __syncthreads();  // the previous tile's q, dO, Pᵀ and dSᵀ are read
            load_rows<D>(qs, q + q_base, q_stride, q0, G::COLS, pb.tq);
            load_rows<D>(dos, dout + q_base, q_stride, q0, G::COLS, pb.tq);
            load_vector(lses, lse + row_base, q0, G::COLS, pb.tq);
            load_vector(deltas, delta + row_base, q0, G::COLS, pb.tq);
            __syncthreads();
            float s[R][CJ], dp[R][CJ];
            tile_dots<D, R, CJ>(ks, qs, s);   // s[i][j] = k_i · q_j
            tile_dots<D, R, CJ>(vs, dos, dp);  // dp[i][j] = v_i · dO_j
#pragma unroll
            for (int i = 0; i < R; ++i) {
                const int key = k0 + ty * R + i;
#pragma unroll
                for (int j = 0; j < CJ; ++j) {
                    const int col = tx + 8 * j, query = q0 + col;
                    float p = 0.f;
                    if (key < pb.tk && query < pb.tq) {
                        const float score = s[i][j] * pb.scale +
                                            mask_value(mn, pb.mask_sq, pb.mask_sk, query, key);
                        p = __expf(score - lses[col]);
                    }
                    pts[(ty * R + i) * G::SLD + col] = p;
                    dsts[(ty * R + i) * G::SLD + col] = p * (dp[i][j] - deltas[col]);
                }
            }
            __syncthreads();
            tile_accumulate<D, R, CJ>(pts, dos, dv_acc);
            tile_accumulate<D, R, CJ>(dsts, qs, dk_acc);
        }
    }

#pragma unroll
    for (int i = 0; i < R; ++i) {
        const int key = k0 + ty * R + i;
        if (key >= pb.tk) continue;
        const size_t at = kv_base + (size_t)key * kv_stride;
        store_row<T, G::C4>(dk + at, dk_acc[i], pb.scale);
        store_row<T, G::C4>(dv + at, dv_acc[i], 1.f);
    }
}

// delta[n, h, t] = Σ_c dO[n, t, h·D + c] · O[n, t, h·D + c]: a warp per (n, t, h), whose D values
// start at warp · D since (n, t, h) is row-major.
template <typename T>
__device__ __forceinline__ void attention_delta(const T* __restrict__ out,
                                                const T* __restrict__ dout,
                                                float* __restrict__ delta, int rows, int tq,
                                                int heads, int d) {
    const int warp = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (warp >= rows) return;
    const size_t base = (size_t)warp * d;
    float sum = 0.f;
    for (int c = lane; c < d; c += 32) sum += to_float(out[base + c]) * to_float(dout[base + c]);
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(FULL_MASK, sum, offset);
    const int h = warp % heads, nt = warp / heads, n = nt / tq, t = nt % tq;
    if (lane == 0) delta[((size_t)n * heads + h) * tq + t] = sum;
}

// Scalars travel one by one (no struct to mirror on the Rust side).
#define PROBLEM_PARAMS                                                                           \
    int tq, int tk, int heads, int kv_heads, float scale, long long mask_sn, long long mask_sq,  \
        long long mask_sk
#define PROBLEM Problem{tq, tk, heads, kv_heads, scale, mask_sn, mask_sq, mask_sk}

#define ATTENTION_KERNELS(T, NAME, D, R, CJ)                                                      \
    extern "C" __global__ void __launch_bounds__(THREADS) attention_fwd_##NAME##_d##D(           \
        const T* q, const T* k, const T* v, const float* mask, T* out, float* lse,               \
        PROBLEM_PARAMS) {                                                                        \
        attention_fwd<T, D, R, CJ>(q, k, v, mask, out, lse, PROBLEM);                            \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(THREADS) attention_grad_q_##NAME##_d##D(        \
        const T* q, const T* k, const T* v, const T* dout, const float* lse,                     \
        const float* delta, const float* mask, T* dq, PROBLEM_PARAMS) {                          \
        attention_grad_q<T, D, R, CJ>(q, k, v, dout, lse, delta, mask, dq, PROBLEM);             \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(THREADS) attention_grad_kv_##NAME##_d##D(       \
        const T* q, const T* k, const T* v, const T* dout, const float* lse,                     \
        const float* delta, const float* mask, T* dk, T* dv, PROBLEM_PARAMS) {                   \
        attention_grad_kv<T, D, R, CJ>(q, k, v, dout, lse, delta, mask, dk, dv, PROBLEM);        \
    }

// (D, R, CJ): 64 query rows per block; key tiles of 64, or 32 at D = 128 to bound shared memory.
ATTENTION_KERNELS(float, f32, 32, 2, 8)
ATTENTION_KERNELS(float, f32, 64, 2, 8)
ATTENTION_KERNELS(float, f32, 128, 2, 4)
ATTENTION_KERNELS(__nv_bfloat16, bf16, 32, 2, 8)
ATTENTION_KERNELS(__nv_bfloat16, bf16, 64, 2, 8)
ATTENTION_KERNELS(__nv_bfloat16, bf16, 128, 2, 4)

extern "C" __global__ void attention_delta_f32(const float* out, const float* dout, float* delta,
                                               int rows, int tq, int heads, int d) {
    attention_delta<float>(out, dout, delta, rows, tq, heads, d);
}

extern "C" __global__ void attention_delta_bf16(const __nv_bfloat16* out,
                                                const __nv_bfloat16* dout, float* delta,
                                                int rows, int tq, int heads, int d) {
    attention_delta<__nv_bfloat16>(out, dout, delta, rows, tq, heads, d);
}
