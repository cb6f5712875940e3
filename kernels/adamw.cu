// AdamW on one tensor of N elements (decoupled weight decay, bias-corrected; llmpy/cpu.py's math):
//   g = grad * grad_scale
//   m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2
//   p -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay p),
//        mhat = m * bias_correction1, vhat = v * bias_correction2, with 1/(1 - beta^step) for each
// p is the fp32 master weight where there is one (master != NULL), else the bf16 param read as
// fp32. The bf16 param is then written from the new p with stochastic rounding, its random bits
// hash32(element index, seed): reproducible for a seed, and unbiased, so updates smaller than
// half a bf16 step still move the weight on average. The host computes (1 - beta) and the bias
// corrections in fp64. param, grad bf16; m, v, master fp32; N a multiple of 8: each thread updates
// 8 elements with 128-bit accesses (one x128 of bf16, two f128 of fp32 per array).
#include "common.cuh"

extern "C" __global__ void adamw_update(bf16* param, const bf16* grad, float* m, float* v,
                                        float* master, int N, float lr, float beta1, float beta2,
                                        float one_minus_beta1, float one_minus_beta2,
                                        float bias_correction1, float bias_correction2, float eps,
                                        float weight_decay, float grad_scale, unsigned int seed) {
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
