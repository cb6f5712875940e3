// Earlier versions of the AdamW update; the latest is kernels/adamw.cu, with the same math,
// arguments and stochastic rounding (hash32 of the element's index), so the same bits.
#include "common.cuh"

// version 1: one thread per 8 elements: one x128 of bf16, two f128 of fp32 per array. The second
// half's loads wait for the first half's stores (the pointers may alias, as far as the compiler
// knows), so few bytes are in flight per thread.
extern "C" __global__ void adamw_update_v1(bf16* param, const bf16* grad, float* m, float* v,
                                           float* master, int N, float lr, float beta1,
                                           float beta2, float one_minus_beta1,
                                           float one_minus_beta2, float bias_correction1,
                                           float bias_correction2, float eps, float weight_decay,
                                           float grad_scale, unsigned int seed) {
    int i = (blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    if (i >= N) return;
    x128 g16 = load128cs(grad + i), p16, out;
    if (master == nullptr) p16 = load128(param + i);
    for (int half = 0; half < 2; half++) {
        int j = i + half * f128::size;
        f128 mj = load128cs(m + j), vj = load128cs(v + j), pj;
        if (master != nullptr) pj = load128cs(master + j);
        else for (int k = 0; k < f128::size; k++) pj[k] = to_float(p16[half * f128::size + k]);
        for (int k = 0; k < f128::size; k++) {
            float g = to_float(g16[half * f128::size + k]) * grad_scale;
            mj[k] = beta1 * mj[k] + one_minus_beta1 * g;
            vj[k] = beta2 * vj[k] + one_minus_beta2 * (g * g);
            float mhat = mj[k] * bias_correction1, vhat = vj[k] * bias_correction2;
            pj[k] -= lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * pj[k]);
            out[half * f128::size + k] = stochastic_round(pj[k], hash32(j + k, seed));
        }
        store128(m + j, mj);
        store128(v + j, vj);
        if (master != nullptr) store128(master + j, pj);
    }
    store128(param + i, out);
}
