// One AdamW step over a parameter, in place, in one pass: PyTorch's `torch.optim.AdamW`, in the
// order `train/optim.rs` computes it. bias_correction1/2 are 1 − β1ᵗ and 1 − β2ᵗ.
extern "C" __global__ void adamw_step(float* __restrict__ p, const float* __restrict__ g,
                                      float* __restrict__ m, float* __restrict__ v,
                                      unsigned long long n, float lr, float beta1, float beta2,
                                      float eps, float weight_decay, float bias_correction1,
                                      float bias_correction2) {
    const float step_size = lr / bias_correction1;
    const float sqrt_bc2 = sqrtf(bias_correction2);
    const float decay = 1.f - lr * weight_decay;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        const float gi = g[i];
        const float mi = m[i] * beta1 + gi * (1.f - beta1);
        const float vi = v[i] * beta2 + gi * gi * (1.f - beta2);
        m[i] = mi;
        v[i] = vi;
        const float update = mi / (sqrtf(vi) / sqrt_bc2 + eps) * step_size;
        p[i] = p[i] * decay - update;
    }
}
